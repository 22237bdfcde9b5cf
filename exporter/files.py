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
# Nodes of a YAML document once its aliases are expanded (an alias counts as a copy of what it
# names). A config of 10,000 targets, each with shared credentials and 20 tags through aliases,
# is under a million; a 1 KB "billion laughs" file of nested aliases is billions, and every walk
# of it (validation, error messages) would never end.
MAX_YAML_NODES: Final = 2_000_000


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


def _expanded_size(root: yaml.Node) -> int:
    """The nodes of the tree ``root`` stands for, an alias counting as a copy of its node.

    Each distinct node is visited once (sizes are memoised by identity), so a file of nested
    aliases is measured in the time of its text. Raises ``ConstructorError`` at the first node
    beyond :data:`MAX_YAML_NODES`, and at an alias of a collection that contains it (its
    expansion never ends).
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        if not children_done:
            open_nodes.add(id(node))
            stack.append((node, True))
            for child in children:
                if id(child) in open_nodes:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        "an alias names a list or mapping that contains it (a recursive alias)",
                        child.start_mark,
                    )
                if id(child) not in sizes:
                    stack.append((child, False))
            continue
        open_nodes.discard(id(node))
        size = 1 + sum(sizes[id(child)] for child in children)
        if size > MAX_YAML_NODES:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"the document expands to more than {MAX_YAML_NODES} values through its aliases",
                node.start_mark,
            )
        sizes[id(node)] = size
    return sizes[id(root)]


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping, a document that
    expands to more than :data:`MAX_YAML_NODES` values through aliases, and a value its tag's
    constructor cannot read (a number of 10,000 digits, ``!!int '0x'``).

    Plain YAML keeps the last value, so a second ``targets:`` (or ``api:``) section would
    silently drop the first one.
    """

    def get_single_node(self) -> yaml.Node | None:
        node: yaml.Node | None = super().get_single_node()
        if node is not None:  # measured before anything is built from it
            _expanded_size(node)
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> object:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError):
            # PyYAML's int/float/timestamp constructors raise Python's own error, which
            # quotes the value (it could be a secret) and names no position.
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value as {_kind(node.tag)}", node.start_mark
            ) from None

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


def _kind(tag: str) -> str:
    name = tag.rpartition(":")[2]
    return {"int": "a whole number", "float": "a number", "timestamp": "a date"}.get(
        name, f"a {name} value"
    )


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
