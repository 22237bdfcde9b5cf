"""Log output: one line per event, as logfmt or JSON, with known secrets redacted.

    ts=2026-11-29T07:20:16.123Z level=info logger=exporter.server msg="listening" address=:9907
    {"ts": "2026-11-29T07:20:16.123Z", "level": "info", "logger": "exporter.server", ...}

Structured fields travel in ``extra``: ``log.info("refresh failed", extra={"target": "prod"})``.
Every value is passed through a :class:`SecretRedactor` before it is encoded: the exporter
registers each secret it loads (AccessKey secrets, STS tokens, passwords), so a secret that
reaches a log line by accident (an exception text, a URL) comes out as ``***``. That is defence
in depth; the code never logs secrets on purpose.

An exception attached to a record (``log.exception``, ``exc_info=True``) becomes two fields,
``err="Type: message"`` and ``at="file.py:123"`` (where it was raised), never a traceback: a log
line is for operators, and a traceback is many lines of noise to them (and can quote values).
:func:`log_uncaught_exceptions` makes exceptions nobody caught, in any thread, take the same form.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import IO, Final

from exporter.validation import secret_forms

LOG_LEVELS: Final = ("debug", "info", "warn", "error")
LOG_FORMATS: Final = ("logfmt", "json")
REDACTED: Final = "***"

_LEVEL_NUMBERS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
_LEVEL_NAMES: Final = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "error",
}
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRIBUTES: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime", "taskName"}
)
# Shorter secrets would redact ordinary words; real secrets are far longer.
_MIN_SECRET_LENGTH: Final = 6


class SecretRedactor:
    """A thread-safe set of secret values that :meth:`redact` replaces by ``***``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()

    def add(self, secret: str) -> None:
        """Register a secret value, in each of its :func:`~exporter.validation.secret_forms`
        (ignored when empty or too short to redact safely)."""
        if len(secret) < _MIN_SECRET_LENGTH:
            return
        with self._lock:
            new = [form for form in secret_forms(secret) if form not in self._secrets]
            if new:
                # Longest first, so a secret containing another is replaced whole.
                self._secrets = tuple(sorted((*self._secrets, *new), key=len, reverse=True))

    def discard(self, secret: str) -> None:
        """Forget a secret value (a temporary credential that was replaced)."""
        forms = set(secret_forms(secret))
        with self._lock:
            self._secrets = tuple(known for known in self._secrets if known not in forms)

    def add_all(self, secrets: Iterable[str]) -> None:
        """Register several secret values."""
        for secret in secrets:
            self.add(secret)

    def redact(self, text: str) -> str:
        """Return ``text`` with every registered secret replaced by ``***``."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


#: The process-wide redactor the exporter's formatters use.
REDACTOR: Final = SecretRedactor()


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


Scalar = str | int | float | bool | None


def _event_fields(record: logging.LogRecord, redactor: SecretRedactor) -> dict[str, Scalar]:
    """The ordered fields of one event: numbers, booleans and None as they are (JSON keeps
    their type), everything else a redacted string."""
    fields: dict[str, Scalar] = {
        "ts": _timestamp(record),
        "level": _LEVEL_NAMES.get(record.levelno, record.levelname.lower()),
        "logger": record.name,
        "msg": redactor.redact(record.getMessage()),
    }
    for key, value in vars(record).items():
        if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
            if value is None or isinstance(value, bool | int | float):
                fields[key] = value
            else:
                fields[key] = redactor.redact(str(value))
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        fields["err"] = redactor.redact(_exception_text(exc))
        fields["at"] = raised_at(exc)
    return fields


def _text(value: Scalar) -> str:
    """A field value as logfmt writes it (``true``/``false`` as Go's logfmt does)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _exception_text(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def raised_at(exc: BaseException) -> str:
    """``file.py:123`` of the innermost frame of ``exc``'s traceback (``?`` without one)."""
    tb = exc.__traceback__
    if tb is None:
        return "?"
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"


def describe_exception(exc: BaseException, redactor: SecretRedactor = REDACTOR) -> str:
    """``Type: message (at file.py:123)`` on one line, registered secrets redacted, characters
    that are not printable escaped (it is also printed to stderr as it is)."""
    text = f"{_exception_text(exc)} (at {raised_at(exc)})"
    return _escape_unprintable(redactor.redact(" ".join(text.split())))


def log_uncaught_exceptions() -> None:
    """Log an exception nobody caught (main thread or any other) as one error line.

    Replaces the interpreter's hooks, which print a traceback to stderr.
    """
    uncaught = logging.getLogger("exporter.uncaught")

    def main_thread_hook(
        kind: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, exc, tb)
            return
        uncaught.error("uncaught exception", exc_info=(kind, exc, tb))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or issubclass(args.exc_type, SystemExit):
            return
        thread = args.thread.name if args.thread is not None else "?"
        uncaught.error(
            "uncaught exception in a thread",
            extra={"thread_name": thread},
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    sys.excepthook = main_thread_hook
    threading.excepthook = thread_hook


# Log lines carry what others sent (an HTTP request line, an API's message): no character of a
# value may act on a terminal or a log viewer. Every character that is not printable (C0, DEL,
# C1, line and paragraph separators, bidi and other format controls, lone surrogates) is written
# as a JSON escape, ``\u001b``, in both formats (as Go's logfmt writes control characters).


def _escape_unprintable(text: str) -> str:
    if text.isprintable():  # the common case, in C
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # beyond the BMP: a UTF-16 pair, as JSON has it
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _logfmt_value(value: str) -> str:
    if value and not any(c in value for c in ' ="\\') and value.isprintable():
        return value
    escaped = (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{_escape_unprintable(escaped)}"'


def _logfmt_key(key: str) -> str:
    # A key cannot be quoted: what would end it or the pair becomes "_", the rest is escaped.
    if key and key.isprintable() and not any(c in key for c in ' ="'):
        return key
    return _escape_unprintable("".join("_" if c in ' ="' else c for c in key)) or "_"


class LogfmtFormatter(logging.Formatter):
    """``ts=... level=... logger=... msg="..." key=value`` on a single line."""

    def __init__(self, redactor: SecretRedactor = REDACTOR) -> None:
        super().__init__()
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        fields = _event_fields(record, self._redactor)
        return " ".join(
            f"{_logfmt_key(key)}={_logfmt_value(_text(value))}" for key, value in fields.items()
        )


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the same fields as :class:`LogfmtFormatter`."""

    def __init__(self, redactor: SecretRedactor = REDACTOR) -> None:
        super().__init__()
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        # json.dumps escapes C0 only. Outside its strings a JSON line holds only printable
        # ASCII: what is escaped here is in a key or a value.
        line = json.dumps(_event_fields(record, self._redactor), ensure_ascii=False)
        return _escape_unprintable(line)


def make_formatter(log_format: str, redactor: SecretRedactor = REDACTOR) -> logging.Formatter:
    """The formatter for ``--log.format`` (``logfmt`` or ``json``)."""
    if log_format == "json":
        return JsonFormatter(redactor)
    if log_format == "logfmt":
        return LogfmtFormatter(redactor)
    raise ValueError(f"unknown log format {log_format!r}, expected one of {', '.join(LOG_FORMATS)}")


def configure_logging(
    level: str = "info",
    log_format: str = "logfmt",
    stream: IO[str] | None = None,
    redactor: SecretRedactor = REDACTOR,
) -> logging.Handler:
    """Send every log record of the process to ``stream`` (stderr by default), one line each.

    Replaces the root logger's handlers, so calling it twice does not duplicate lines.
    Returns the installed handler.
    """
    if level not in _LEVEL_NUMBERS:
        raise ValueError(f"unknown log level {level!r}, expected one of {', '.join(LOG_LEVELS)}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(make_formatter(log_format, redactor))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVEL_NUMBERS[level])
    # httpx logs every request at INFO with its full URL; keep that for --log.level=debug.
    logging.getLogger("httpx").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.INFO)
    return handler
