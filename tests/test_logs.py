"""Log lines: logfmt and JSON, one line per event, secrets redacted."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from exporter.ecs.credentials import Credentials, StaticProvider
from exporter.logs import (
    REDACTED,
    JsonFormatter,
    LogfmtFormatter,
    SecretRedactor,
    configure_logging,
    describe_exception,
)
from exporter.targets import RedactingProvider

SECRET = "Sup3rS3cretValue-DoNotLeak"


def make_logger(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.logs.{id(stream)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, restored after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers = handlers
    root.setLevel(level)


def test_logfmt_line_has_time_level_message_and_fields() -> None:
    logger, stream = make_logger(LogfmtFormatter(SecretRedactor()))
    logger.info('refresh "done"', extra={"target": "prod", "region": "cn-hangzhou", "pages": 3})
    line = stream.getvalue()
    assert line.count("\n") == 1
    assert line.startswith("ts=")
    assert "level=info logger=test.logs." in line
    assert r'msg="refresh \"done\"" target=prod region=cn-hangzhou pages=3' in line


def test_logfmt_warning_is_warn_and_newlines_stay_on_one_line() -> None:
    logger, stream = make_logger(LogfmtFormatter(SecretRedactor()))
    logger.warning("first\nsecond")
    line = stream.getvalue()
    assert line.count("\n") == 1
    assert "level=warn" in line
    assert r'msg="first\nsecond"' in line


# What a client or an API can put in a value: NUL, ESC (a terminal escape), DEL, C1 (NEL, CSI),
# line and paragraph separators, a bidi override, a lone surrogate (bytes decoded with
# surrogateescape), a format character beyond the BMP.
UNPRINTABLE = "\x00\x1b[31m\x7f\x85\x9b\u2028\u2029\u202e\udcff\U000e0001"


def _only_printable(line: str) -> bool:
    return line.endswith("\n") and line[:-1].isprintable()


def test_logfmt_escapes_every_character_that_is_not_printable() -> None:
    logger, stream = make_logger(LogfmtFormatter(SecretRedactor()))
    logger.debug(f"GET /{UNPRINTABLE} HTTP/1.1", extra={"client": UNPRINTABLE})
    line = stream.getvalue()
    assert _only_printable(line)  # raw NUL and ESC reached the log
    assert line.count("\n") == 1
    escaped = r"\u0000\u001b[31m\u007f\u0085\u009b\u2028\u2029\u202e\udcff\udb40\udc01"
    assert f'msg="GET /{escaped} HTTP/1.1" client="{escaped}"' in line


def test_logfmt_keys_stay_one_key() -> None:
    logger, stream = make_logger(LogfmtFormatter(SecretRedactor()))
    logger.info("x", extra={'a b="c\x1b': 1, "ok": 2})
    line = stream.getvalue()
    assert _only_printable(line)
    assert line.endswith(" msg=x a_b__c\\u001b=1 ok=2\n")


def test_json_escapes_every_character_that_is_not_printable_and_keeps_it() -> None:
    logger, stream = make_logger(JsonFormatter(SecretRedactor()))
    logger.debug(f"GET /{UNPRINTABLE}", extra={"client": UNPRINTABLE, UNPRINTABLE: "key"})
    line = stream.getvalue()
    assert _only_printable(line)  # json.dumps left DEL, C1 and separators raw
    event = json.loads(line)
    assert event["msg"] == f"GET /{UNPRINTABLE}"  # read back as it was
    assert event["client"] == UNPRINTABLE
    assert event[UNPRINTABLE] == "key"


def test_a_text_that_is_printable_is_written_as_it_is() -> None:
    text = "命令 café ✓ €"
    json_logger, json_stream = make_logger(JsonFormatter(SecretRedactor()))
    logfmt_logger, logfmt_stream = make_logger(LogfmtFormatter(SecretRedactor()))
    json_logger.info(text)
    logfmt_logger.info(text)
    assert f'"msg": "{text}"' in json_stream.getvalue()
    assert f'msg="{text}"' in logfmt_stream.getvalue()


def test_an_exception_described_for_stderr_has_no_control_character() -> None:
    described = describe_exception(ValueError(f"bad {UNPRINTABLE} value"))
    assert described.isprintable()
    assert described.startswith(r"ValueError: bad \u0000\u001b[31m\u007f")


def test_json_line_is_one_object_with_the_same_fields() -> None:
    logger, stream = make_logger(JsonFormatter(SecretRedactor()))
    logger.error("cannot listen", extra={"address": ":9907"})
    event = json.loads(stream.getvalue())
    assert event["level"] == "error"
    assert event["msg"] == "cannot listen"
    assert event["address"] == ":9907"
    assert event["ts"].endswith("Z")


def test_numbers_and_booleans_keep_their_type() -> None:
    json_logger, json_stream = make_logger(JsonFormatter(SecretRedactor()))
    logfmt_logger, logfmt_stream = make_logger(LogfmtFormatter(SecretRedactor()))
    fields = {"tls": True, "http_status": 404, "wait": 0.5, "code": None}
    json_logger.info("x", extra=fields)
    logfmt_logger.info("x", extra=fields)
    event = json.loads(json_stream.getvalue())
    assert (event["tls"], event["http_status"], event["wait"], event["code"]) == (
        True,
        404,
        0.5,
        None,
    )
    assert 'tls=true http_status=404 wait=0.5 code=""' in logfmt_stream.getvalue()


def test_an_exception_is_logged_on_one_line() -> None:
    logger, stream = make_logger(LogfmtFormatter(SecretRedactor()))
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("render failed")
    line = stream.getvalue()
    assert line.count("\n") == 1
    assert 'err="RuntimeError: boom"' in line
    assert "at=test_logs.py:" in line  # where it was raised, never a traceback
    assert "Traceback" not in line


@pytest.mark.parametrize("formatter_class", [LogfmtFormatter, JsonFormatter])
def test_registered_secrets_are_redacted_everywhere(
    formatter_class: type[LogfmtFormatter | JsonFormatter],
) -> None:
    redactor = SecretRedactor()
    redactor.add(SECRET)
    logger, stream = make_logger(formatter_class(redactor))
    logger.info("key %s in the message", SECRET, extra={"url": f"https://x/?s={SECRET}"})
    try:
        raise ValueError(f"server said {SECRET}")
    except ValueError:
        logger.exception("failed")
    output = stream.getvalue()
    assert SECRET not in output
    assert output.count(REDACTED) == 3  # message, field, exception text


def test_short_values_are_not_treated_as_secrets() -> None:
    redactor = SecretRedactor()
    redactor.add("")
    redactor.add("abc")
    assert redactor.redact("abc def") == "abc def"


def test_a_secret_containing_another_is_redacted_whole() -> None:
    redactor = SecretRedactor()
    redactor.add_all(["secret-one", "secret-one-and-more"])
    assert redactor.redact("x secret-one-and-more y") == f"x {REDACTED} y"


def test_a_secret_is_redacted_percent_encoded_too() -> None:
    # An API error may quote a signed request's string to sign: an STS token's "+", "/" and
    # "=" are percent-encoded there, once or twice, in either case of hex.
    token = "CAIS+token/with==padding"
    redactor = SecretRedactor()
    redactor.add(token)
    echoed = "a=CAIS%2Btoken%2Fwith%3D%3Dpadding b=CAIS%252Btoken%252Fwith%253D%253Dpadding"
    echoed += " c=CAIS%2btoken%2fwith%3d%3dpadding d=CAIS%252btoken%252fwith%253d%253dpadding"
    assert redactor.redact(echoed) == f"a={REDACTED} b={REDACTED} c={REDACTED} d={REDACTED}"
    redactor.discard(token)
    assert redactor.redact(echoed) == echoed


def test_configure_logging_sets_level_and_format(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure_logging("warn", "json", stream=stream)
    logging.getLogger("exporter.test").info("hidden")
    logging.getLogger("exporter.test").warning("shown")
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["msg"] for line in lines] == ["shown"]


def test_configure_logging_twice_does_not_duplicate_lines(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure_logging("info", "logfmt", stream=stream)
    configure_logging("info", "logfmt", stream=stream)
    logging.getLogger("exporter.test").info("once")
    assert stream.getvalue().count("msg=once") == 1


@pytest.mark.parametrize(("level", "log_format"), [("verbose", "logfmt"), ("info", "xml")])
def test_configure_logging_refuses_unknown_values(
    root_logger: logging.Logger, level: str, log_format: str
) -> None:
    with pytest.raises(ValueError, match="unknown log"):
        configure_logging(level, log_format, stream=io.StringIO())


def test_temporary_credentials_are_redacted_once_handed_out() -> None:
    redactor = SecretRedactor()
    provider = RedactingProvider(
        StaticProvider("STS.id", "temporary-secret-value", "temporary-token-value"), redactor
    )
    assert redactor.redact("temporary-secret-value") == "temporary-secret-value"
    provider.get_credentials()
    line = "secret=temporary-secret-value token=temporary-token-value id=STS.id"
    assert redactor.redact(line) == "secret=*** token=*** id=STS.id"


def test_the_redactor_keeps_only_the_current_and_previous_temporary_credentials() -> None:
    class Rotating:
        def __init__(self) -> None:
            self.round = 0

        def get_credentials(self) -> Credentials:
            self.round += 1
            return StaticProvider(
                "STS.id", f"rotated-secret-{self.round:04d}", f"rotated-token-{self.round:04d}"
            ).get_credentials()

    redactor = SecretRedactor()
    provider = RedactingProvider(Rotating(), redactor)
    for _ in range(5):
        provider.get_credentials()
    line = " ".join(f"rotated-secret-{n:04d} rotated-token-{n:04d}" for n in range(1, 6))
    redacted = redactor.redact(line).split()
    assert redacted[6:] == ["***"] * 4  # rounds 4 and 5
    assert redacted[:6] == line.split()[:6]  # rounds 1 to 3 forgotten
