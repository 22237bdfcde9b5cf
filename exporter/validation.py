"""Plain one-line messages for validation errors, in the exporter's words.

The config file and the web config are validated with pydantic; what a user reads must not be
pydantic's wording ("Input should be a valid boolean, unable to interpret input"). Each error
type a config can produce has a message here; anything else falls back to a neutral one. No
message ever contains the value that was refused: the caller adds a value only where it is
known not to be a secret.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final
from urllib.parse import quote

# A key worth repeating in a message (a field name someone misspelt). Anything else (a key with
# spaces, colons, a long token) may be a value written in the wrong place, a secret even.
_KEY_WORTH_SHOWING: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")
REDACTED: Final = "<redacted>"
_PERCENT_HEX: Final = re.compile(r"%[0-9A-F]{2}")
MAX_SHOWN_CHARS: Final = 64
"""A refused value is repeated in a message up to this many characters (a 100 KB name is a
mistake the first characters identify; the whole would drown the line)."""
MAX_SHOWN_PATH_CHARS: Final = 512
"""The same for a file path, which a user needs whole to find the file (a real one is shorter)."""


def _bound(ctx: Mapping[str, Any], name: str) -> str:
    value = ctx.get(name)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _items(ctx: Mapping[str, Any]) -> str:
    count = ctx.get("min_length", 1)
    return f"{count} item" if count == 1 else f"{count} items"


_MESSAGES: Final[dict[str, Callable[[Mapping[str, Any]], str]]] = {
    "missing": lambda ctx: "required field is missing",
    "greater_than_equal": lambda ctx: f"must be at least {_bound(ctx, 'ge')}",
    "greater_than": lambda ctx: f"must be more than {_bound(ctx, 'gt')}",
    "less_than_equal": lambda ctx: f"must be at most {_bound(ctx, 'le')}",
    "less_than": lambda ctx: f"must be less than {_bound(ctx, 'lt')}",
    "too_short": lambda ctx: f"must have at least {_items(ctx)}",
    "too_long": lambda ctx: f"must have at most {ctx.get('max_length')} items",
    "string_too_short": lambda ctx: (
        "must not be empty"
        if ctx.get("min_length") == 1
        else f"must be at least {ctx.get('min_length')} characters long"
    ),
    "string_too_long": lambda ctx: f"must be at most {ctx.get('max_length')} characters long",
    "bool_type": lambda ctx: "must be true or false",
    "bool_parsing": lambda ctx: "must be true or false",
    "int_type": lambda ctx: "must be a whole number",
    "int_parsing": lambda ctx: "must be a whole number",
    "int_from_float": lambda ctx: "must be a whole number",
    "float_type": lambda ctx: "must be a number",
    "float_parsing": lambda ctx: "must be a number",
    "finite_number": lambda ctx: "must be a finite number",
    "string_type": lambda ctx: "must be a text value",
    "string_unicode": lambda ctx: "must be a text value",
    "dict_type": lambda ctx: "must be a mapping (key: value lines)",
    "model_type": lambda ctx: "must be a mapping (key: value lines)",
    "model_attributes_type": lambda ctx: "must be a mapping (key: value lines)",
    "list_type": lambda ctx: "must be a list",
    "tuple_type": lambda ctx: "must be a list",
    "path_type": lambda ctx: "must be a file path",
    "literal_error": lambda ctx: f"must be one of {ctx.get('expected', '')}".rstrip(),
    "enum": lambda ctx: f"must be one of {ctx.get('expected', '')}".rstrip(),
    "frozen_instance": lambda ctx: "cannot be changed",
}


def plain_message(error: Mapping[str, Any]) -> str:
    """The message of one pydantic error (``ValidationError.errors()`` item), in plain words.

    Our own validators raise ``ValueError``/``PydanticCustomError`` with finished sentences,
    which are kept as they are.
    """
    kind = str(error.get("type", ""))
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    if kind in ("value_error", "assertion_error"):
        message = str(error.get("msg", ""))
        return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    translate = _MESSAGES.get(kind)
    if translate is not None:
        return translate(ctx)
    if kind.startswith(("union_tag", "extra_forbidden")):  # callers say these better
        return "invalid value"
    if ":" not in kind and error.get("msg") and not str(error["msg"]).startswith("Input "):
        return str(error["msg"])  # a PydanticCustomError: our own sentence
    return "invalid value"


def shown_key(key: object) -> str | None:
    """``key`` as it may appear in a message, or ``None`` when it must not be repeated."""
    if isinstance(key, str) and _KEY_WORTH_SHOWING.match(key):
        return key
    return None


def did_you_mean(word: str, choices: Iterable[str], *, cutoff: float = 0.75) -> str | None:
    """The choice closest to ``word``, when one is close enough to be a likely typo."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=cutoff)
    return close[0] if close else None


def secret_forms(secret: str) -> tuple[str, ...]:
    """The forms a secret may be echoed in: as it is, and percent-encoded once and twice (as a
    signed request's string to sign holds it, which an API may echo in an error), with upper-
    and lower-case hex. An STS token holds ``+``, ``/`` and ``=``: its encoded forms differ."""
    once = quote(secret, safe="-_.~")
    lower = _lower_hex(once)
    forms = {secret, once, lower, quote(once, safe="-_.~"), quote(lower, safe="-_.~")}
    return tuple(sorted(forms, key=len, reverse=True))


def _lower_hex(encoded: str) -> str:
    return _PERCENT_HEX.sub(lambda match: match.group(0).lower(), encoded)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each non-empty secret (in any of its
    :func:`secret_forms`) replaced by a marker."""
    forms = {form for secret in secrets if secret for form in secret_forms(secret)}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, REDACTED)
    return text


def has_dot_segment(path: str) -> bool:
    """True when ``path`` has a ``.`` or ``..`` segment: clients resolve those before they send
    a request, so a route under one can never be reached."""
    return any(segment in (".", "..") for segment in path.split("/"))


def shown_value(value: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """``repr(value)``, cut to its first ``limit`` characters with a note of the length when it
    is longer. Only for a value known not to be a secret (or already redacted)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"
