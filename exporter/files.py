"""Reading the files a user points the exporter at: bounded, regular files only, strict YAML.

One reader for every file the exporter is given by name: the config file, the web config, and
secret files (``access_key_secret_file``, the files of ``ALIYUN_CLOUDASSISTANT_SECRETS_DIR``).
Every failure is a ``ValueError`` whose message is a short reason that repeats neither the path
nor the content (the caller names the file; the content could be a secret).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

import yaml

# A config of thousands of targets is far smaller; a larger file is a mistake (a log, a dump,
# /dev/zero) and reading it whole would only waste memory.
MAX_CONFIG_FILE_BYTES: Final = 4 * 1024 * 1024
# An AccessKey secret is 30 characters and an STS token about 1-2 KB: a larger "secret" is the
# wrong file.
MAX_SECRET_FILE_BYTES: Final = 64 * 1024


def read_text_file(path: Path, *, max_bytes: int) -> str:
    """The UTF-8 text of the regular file ``path`` (symlinks followed), at most ``max_bytes``.

    Raises ``ValueError``: missing, unreadable, a directory, not a regular file (a FIFO or a
    device would block or never end), too large, not UTF-8.
    """
    try:
        # O_NONBLOCK: opening a FIFO does not wait for a writer (it is refused below).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ValueError(exc.strerror or type(exc).__name__) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ValueError("is a directory, not a regular file")
        if not stat.S_ISREG(mode):
            raise ValueError("is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(max_bytes + 1)
    except OSError as exc:
        raise ValueError(exc.strerror or type(exc).__name__) from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ValueError(f"is larger than {max_bytes} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("is not UTF-8 text") from None


def check_secret_text(text: str) -> str:
    """``text`` without surrounding whitespace, if it can be a secret; else ``ValueError``.

    AccessKey secrets and STS tokens are printable ASCII: an empty value or one with control
    characters (a NUL-filled file, two lines) is a mistake that would only fail later, at every
    signature, with a less helpful error.
    """
    secret = text.strip()
    if not secret:
        raise ValueError("is empty")
    if not secret.isprintable():
        raise ValueError("contains non-printable characters")
    return secret


def read_secret_file(path: Path) -> str:
    """The secret held in the file ``path``: read with the secret cap, checked like any secret."""
    return check_secret_text(read_text_file(path, max_bytes=MAX_SECRET_FILE_BYTES))


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping.

    Plain YAML keeps the last value, so a second ``targets:`` (or ``api:``) section would
    silently drop the first one.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        first_lines: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                seen = key in first_lines
            except TypeError:  # unhashable: the base constructor reports it
                continue
            if seen:
                # The key is not repeated: it could be a secret written in the wrong place.
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key (first given on line {first_lines[key] + 1})",
                    key_node.start_mark,
                )
            first_lines[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> object:
    """Parse YAML safely (no arbitrary objects) and strictly (a duplicate key is an error).

    Raises ``ValueError`` with the position and the problem, never the offending text.
    """
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "cannot parse"
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ValueError(f"invalid YAML: {where}{problem}") from None
    except RecursionError:  # thousands of nested [ or {: PyYAML's composer recurses
        raise ValueError("invalid YAML: nested too deeply") from None


def load_yaml_file(path: Path) -> object:
    """The YAML document of the config-sized file ``path`` (``None`` when it is empty)."""
    return parse_yaml(read_text_file(path, max_bytes=MAX_CONFIG_FILE_BYTES))
