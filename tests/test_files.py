"""The one reader of named files: bounded, regular files only, strict YAML, the secret rule."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exporter.files import (
    MAX_SECRET_FILE_BYTES,
    MAX_YAML_NODES,
    check_secret_text,
    load_yaml_file,
    parse_yaml,
    read_secret_file,
    read_text_file,
)

SECRET = "Sup3rS3cretValue-DoNotLeak"
# "Billion laughs": ten levels of nine aliases each, 9^10 values in under 1 KB of text.
_ALIAS_BOMB = "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]\n" for n in range(1, 10)
)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(lambda p: os.mkfifo(p), "is not a regular file", id="fifo-never-blocks"),
        pytest.param(lambda p: p.mkdir(), "is a directory, not a regular file", id="directory"),
        pytest.param(lambda p: p.write_bytes(b"\xff\xfe"), "is not UTF-8 text", id="binary"),
        pytest.param(lambda p: None, "No such file or directory", id="missing"),
    ],
)
def test_unreadable_files_are_one_short_reason(tmp_path: Path, make: object, reason: str) -> None:
    path = tmp_path / "file"
    make(path)  # type: ignore[operator]
    with pytest.raises(ValueError, match=f"^{reason}$"):
        read_text_file(path, max_bytes=100)


def test_only_the_cap_plus_one_byte_is_read_of_a_huge_file(tmp_path: Path) -> None:
    path = tmp_path / "huge"
    with path.open("wb") as file:
        file.truncate(1 << 30)  # 1 GiB of NUL bytes, sparse
    with pytest.raises(ValueError, match=f"^is larger than {MAX_SECRET_FILE_BYTES} bytes$"):
        read_secret_file(path)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "is empty"),
        (" \n\t", "is empty"),
        ("a\x00b", "contains non-printable characters"),
        ("line one\nline two", "contains non-printable characters"),
    ],
)
def test_a_secret_is_printable_and_not_empty(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{reason}$"):
        check_secret_text(text)


def test_a_secret_file_is_stripped(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(f"  {SECRET}\n", encoding="utf-8")
    assert read_secret_file(path) == SECRET


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param(
            "a: 1\nb: 2\na: 3\n",
            "invalid YAML: line 3, column 1: duplicate key (first given on line 1)",
            id="duplicate-key",
        ),
        pytest.param(
            f"{SECRET}: 1\n{SECRET}: 2\n",
            "invalid YAML: line 2, column 1: duplicate key (first given on line 1)",
            id="duplicate-secret-key-not-repeated",
        ),
        pytest.param(
            "x: !!python/object/apply:os.system [echo hi]\n",
            "invalid YAML: line 1, column 4: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object/apply:os.system'",
            id="no-arbitrary-objects",
        ),
        pytest.param("[" * 5000, "invalid YAML: nested too deeply", id="deep-nesting"),
        pytest.param(
            _ALIAS_BOMB,
            "invalid YAML: line 7, column 5: the document expands to more than "
            f"{MAX_YAML_NODES} values through its aliases",
            id="alias-bomb",
        ),
        pytest.param(
            "a: &a {b: [1, *a]}\n",
            "invalid YAML: line 1, column 4: an alias names a list or mapping that contains it "
            "(a recursive alias)",
            id="recursive-alias",
        ),
        pytest.param(
            "x: 1\ny: " + "7" * 10_000 + "\n",
            "invalid YAML: line 2, column 4: cannot read this value as a whole number",
            id="integer-beyond-pythons-digit-limit",
        ),
        pytest.param(
            "x: !!int '0x'\n",
            "invalid YAML: line 1, column 4: cannot read this value as a whole number",
            id="integer-without-digits",
        ),
        pytest.param(
            f"x: !!float '{SECRET}'\n",
            "invalid YAML: line 1, column 4: cannot read this value as a number",
            id="float-not-a-number-not-repeated",
        ),
        pytest.param(
            "x: [2024-02-30]\n",
            "invalid YAML: line 1, column 5: cannot read this value as a date",
            id="impossible-date",
        ),
    ],
)
def test_yaml_is_strict_and_its_errors_are_one_line(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid YAML: ") as caught:
        parse_yaml(text)
    assert str(caught.value) == reason


def test_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("base: &b {x: 1, y: 2}\nthis:\n  <<: *b\n  y: 3\n", encoding="utf-8")
    assert load_yaml_file(path) == {"base": {"x": 1, "y": 2}, "this": {"x": 1, "y": 3}}


def test_aliases_below_the_node_limit_are_shared_not_refused() -> None:
    # 9^5 values through aliases: a large config that shares sections is accepted.
    text = _ALIAS_BOMB.split("l6:")[0] + "top: *l5\n"
    assert len(parse_yaml(text)["top"]) == 9  # type: ignore[index]
