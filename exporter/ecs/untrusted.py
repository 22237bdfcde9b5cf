"""Every string the API returns is untrusted: it is made safe here, once, where it is parsed.

A string from an answer may reach a metric label, a log line and the landing page. Whatever the
service (or something pretending to be it) sends, what leaves this module:

* encodes as UTF-8 and holds no control character: lone UTF-16 surrogates (``"\\ud800"`` in
  JSON), control and format characters and unassigned code points become U+FFFD, other spaces
  a plain space;
* is bounded: :data:`MAX_NAME_CHARS` for codes, statuses, ids and request ids,
  :data:`MAX_MESSAGE_CHARS` for an error message; a longer value is cut and ends with ``...``;
* holds no secret: the credentials of the call (AccessKey secret, STS token) and anything the
  exporter registered are replaced by ``***``, whichever field echoes them, as they are or
  percent-encoded (:func:`~exporter.validation.secret_forms`).

Values that repeat across records (statuses, codes, ids of an invocation) are cleaned once and
then shared (a bounded cache), so the hot path of parsing 10,000 records pays a dict look-up.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable
from sys import intern

from exporter.validation import secret_forms

MAX_NAME_CHARS = 256
MAX_MESSAGE_CHARS = 1024
REDACTED = "***"
_CUT = "..."
_MAX_CACHED = 65_536
# None is how a decoder says "absent": it reads as "".
_ABSENT: dict[str | None, str] = {None: "", "": ""}


def _safe_char(char: str) -> str:
    if char.isprintable():
        return char
    if unicodedata.category(char) == "Zs":  # no-break and other wide spaces
        return " "
    return "\ufffd"


def clean(text: str, limit: int) -> str:
    """Return ``text`` printable, encodable and at most ``limit`` characters long."""
    if not (text.isascii() and text.isprintable()):
        text = "".join(map(_safe_char, text))
    if len(text) > limit:
        text = text[: max(0, limit - len(_CUT))] + _CUT
    return text


def _as_text(value: object) -> str:
    """A JSON scalar as text: strings as they are, numbers as their digits, else ``""``."""
    if type(value) is str:
        return value
    if type(value) is int or type(value) is float:
        return str(value)
    return ""


class TextCleaner:
    """Cleans the strings of API answers for one set of secrets (see the module docstring).

    ``secrets`` are values to hide (shorter than 4 characters are ignored: they would redact
    ordinary words); ``redact`` is an extra redactor (the exporter's registry of every secret
    it loaded). Thread-safe: the cache is only ever a shortcut.
    """

    __slots__ = ("_cache", "_redact", "_secrets", "known")

    def __init__(
        self, secrets: Iterable[str] = (), *, redact: Callable[[str], str] | None = None
    ) -> None:
        forms = {form for s in secrets if len(s) >= 4 for form in secret_forms(s)}
        self._secrets = tuple(sorted(forms, key=len, reverse=True))
        self._redact = redact
        self._cache: dict[str | None, str] = dict(_ABSENT)
        #: :meth:`name` of a value cleaned before, else ``None``: one look-up, for the hot path.
        self.known: Callable[[str | None], str | None] = self._cache.get

    def _hide(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if self._redact is not None:
            text = self._redact(text)
        return text

    def forget(self) -> None:
        """Empty the cache of :meth:`name`. The client calls it when a walk ends: kept between
        walks, the cache would hold every id a target ever returned (about 37 bytes a result,
        11 MB for 300 targets of 1,000). The strings themselves stay shared while records use
        them (they are interned), so a later walk still shares them."""
        self._cache.clear()
        self._cache.update(_ABSENT)

    def name(self, value: object) -> str:
        """A short field (code, status, id, request id): cleaned, bounded, redacted, shared."""
        raw = value if type(value) is str else _as_text(value)
        cached = self._cache.get(raw)
        if cached is not None:
            return cached
        # Redact before cutting, so a cut never leaves half a secret behind.
        result = intern(clean(self._hide(raw), MAX_NAME_CHARS))
        if len(raw) <= MAX_NAME_CHARS:  # a huge value is not a name that repeats
            if len(self._cache) >= _MAX_CACHED:
                self.forget()
            # Keyed by the shared string when cleaning changed nothing: the decoder's own copy
            # (another target may have interned the same id first) is then not kept alive.
            self._cache[result if result == raw else raw] = result
        return result

    def names(self, values: tuple[str | None, ...]) -> list[str]:
        """:meth:`name` of each value (strings or ``None``), for the hot path: one call a record."""
        get = self._cache.get
        found = list(map(get, values))
        if None in found:
            found = [
                self.name(value) if hit is None else hit
                for value, hit in zip(values, found, strict=True)
            ]
        return found  # type: ignore[return-value]  # every None was replaced above

    def message(self, value: object) -> str:
        """A free-text field (an error message): cleaned, bounded and redacted."""
        return clean(self._hide(_as_text(value)), MAX_MESSAGE_CHARS)


#: A cleaner without secrets, for answers that come with no credentials (tests, tools).
PLAIN = TextCleaner()
