"""Error classification: the tree, what is retried, outcome codes, and the SDK's own vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from exporter.ecs import errors
from exporter.ecs.errors import (
    FAILURE_REASONS,
    AccessDeniedError,
    ApiError,
    AuthenticationError,
    ClockSkewError,
    CredentialsError,
    EcsError,
    InvalidRequestError,
    MalformedResponseError,
    RateLimitWaitError,
    RequestTimeoutError,
    ServerError,
    ThrottledError,
    TransportError,
    classify_api_error,
    failure_reason,
    is_retryable,
    outcome_code,
    parse_error_body,
    parse_retry_after,
)
from exporter.ecs.models import InvocationQuery
from exporter.ecs.untrusted import TextCleaner
from tests.support.fakes import mock_http, open_client, sequence
from tests.support.http_fakes import json_answer

VECTORS = Path(__file__).parent / "vectors"
SDK_ERRORS = sorted(VECTORS.glob("sdk_err_*.json"))
# How the official SDK's exception types map onto this tree.
SDK_TYPES: dict[str, type[EcsError]] = {
    "ServerException": ServerError,
    "ThrottlingException": ThrottledError,
    "ClientException": ApiError,
}


@pytest.mark.parametrize(
    ("status", "code", "expected", "retried", "reason"),
    [
        (400, "Throttling", ThrottledError, True, "throttled"),
        (400, "Throttling.User", ThrottledError, True, "throttled"),
        (429, "", ThrottledError, True, "throttled"),
        (500, "InternalError", ServerError, True, "server"),
        (500, "InternalError.Dispatch", ServerError, True, "server"),
        (503, "ServiceUnavailable", ServerError, True, "server"),
        (400, "ServiceUnavailable", ServerError, True, "server"),
        (500, "UnknownError", ServerError, True, "server"),
        (502, "", ServerError, True, "server"),
        (504, "", ServerError, True, "server"),
        (400, "SignatureDoesNotMatch", AuthenticationError, False, "auth"),
        (400, "IncompleteSignature", AuthenticationError, False, "auth"),
        (404, "InvalidAccessKeyId.NotFound", AuthenticationError, False, "auth"),
        (400, "InvalidAccessKeyId.Inactive", AuthenticationError, False, "auth"),
        (400, "InvalidTimeStamp.Expired", ClockSkewError, False, "clock_skew"),
        (403, "RequestTimeTooSkewed", ClockSkewError, False, "clock_skew"),
        (400, "InvalidTimeStamp.Format", AuthenticationError, False, "auth"),
        (400, "SignatureNonceUsed", AuthenticationError, False, "auth"),
        (400, "InvalidSecurityToken.Expired", AuthenticationError, False, "auth"),
        (403, "Forbidden.RAM", AccessDeniedError, False, "permission"),
        (403, "NoPermission", AccessDeniedError, False, "permission"),
        (403, "Operation.Forbidden", AccessDeniedError, False, "permission"),
        (400, "InvalidParameter.MaxResults", InvalidRequestError, False, "invalid_request"),
        (400, "MissingParameter.TagKey", InvalidRequestError, False, "invalid_request"),
        (404, "InvalidRegionId.NotFound", InvalidRequestError, False, "invalid_request"),
        (400, "RegionId.ApiNotSupported", InvalidRequestError, False, "invalid_request"),
        (404, "", InvalidRequestError, False, "invalid_request"),
        (302, "", MalformedResponseError, False, "malformed"),
    ],
)
def test_error_answers_are_classified(
    status: int, code: str, expected: type[EcsError], retried: bool, reason: str
) -> None:
    error = classify_api_error(status, code, "message", "REQ")
    assert type(error) is expected
    assert is_retryable(error) is retried
    assert failure_reason(error) == reason
    assert error.http_status == status
    assert outcome_code(error) == (code or f"http_{status}")


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (None, "", None),
        (RequestTimeoutError("read timeout"), "timeout", "transport"),
        (TransportError("connection refused"), "transport", "transport"),
        (MalformedResponseError("not JSON", http_status=200), "malformed", "malformed"),
        (CredentialsError("no credentials"), "credentials", "credentials"),
        (
            CredentialsError("refused", code="NoPermission", http_status=403),
            "NoPermission",
            "credentials",
        ),
        (ServerError("x", http_status=502), "http_502", "server"),
    ],
)
def test_outcome_code_and_reason_without_an_api_code(
    error: EcsError | None, code: str, reason: str | None
) -> None:
    assert outcome_code(error) == code
    if error is not None:
        assert failure_reason(error) == reason


def test_every_class_has_a_one_line_docstring_and_the_tree_is_drawn() -> None:
    classes = [
        EcsError,
        TransportError,
        RequestTimeoutError,
        RateLimitWaitError,
        ApiError,
        ThrottledError,
        ServerError,
        AuthenticationError,
        ClockSkewError,
        AccessDeniedError,
        InvalidRequestError,
        MalformedResponseError,
        CredentialsError,
    ]
    for cls in classes:
        assert cls.__doc__
        assert "\n" not in cls.__doc__.strip()
        assert cls.__name__ in (errors.__doc__ or "")
    assert issubclass(RequestTimeoutError, TransportError)
    assert issubclass(ThrottledError, ApiError)


def test_failure_reasons_are_the_reasons_of_the_classes() -> None:
    assert set(FAILURE_REASONS) == {cls.reason for cls in _tree(EcsError)}
    assert len(set(FAILURE_REASONS)) == len(FAILURE_REASONS)
    assert FAILURE_REASONS[-1] == "internal"
    assert "clock_skew" in FAILURE_REASONS
    # Anything that is not an EcsError, or the bare base class, is an exporter bug.
    assert failure_reason(RuntimeError("bug")) == "internal"
    assert failure_reason(EcsError("untyped")) == "internal"
    from exporter.refresh import FAILURE_REASONS as OLD_HOME

    assert OLD_HOME is FAILURE_REASONS


def _tree(cls: type[EcsError]) -> list[type[EcsError]]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _tree(direct))]


def test_str_carries_code_message_status_and_request_id() -> None:
    error = ServerError(
        "temporary failure", code="ServiceUnavailable", request_id="R-1", http_status=503
    )
    assert str(error) == "ServiceUnavailable: temporary failure (HTTP 503, RequestId R-1)"
    assert str(TransportError("connection refused")) == "connection refused"
    assert repr(error).startswith("ServerError(")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"Code": "X.Y", "Message": "m", "RequestId": "R"}', ("X.Y", "m", "R")),
        (b'{"code": "X.Y", "message": "m", "requestId": "R"}', ("X.Y", "m", "R")),
        (b'{"Code": 5, "Message": null}', ("", "", "")),
        (b"<html>Bad Gateway</html>", ("", "", "")),
        (b"[1, 2]", ("", "", "")),
        (b"\xff\xfe", ("", "", "")),
        (b"", ("", "", "")),
    ],
)
def test_error_bodies_are_read_tolerantly(body: bytes, expected: tuple[str, str, str]) -> None:
    assert parse_error_body(body) == expected


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"x-acs-retry-after": "1500"}, 1.5),
        ({"x-acs-retry-after": "0"}, 0.0),
        ({"retry-after": "3"}, 3.0),
        ({"x-acs-retry-after": "soon"}, None),
        ({"x-acs-retry-after": "-5"}, None),
        ({"x-acs-retry-after": "nan"}, None),
        ({}, None),
    ],
)
def test_retry_after_is_read_in_seconds(headers: dict[str, str], seconds: float | None) -> None:
    assert parse_retry_after(headers) == seconds


def test_error_bodies_are_cleaned_of_secrets_and_bounded() -> None:
    body = json.dumps(
        {"Code": "X.s3cr3t", "Message": "key s3cr3t in text " + "x" * 5000, "RequestId": "s3cr3t"}
    ).encode()
    code, message, request_id = parse_error_body(body, TextCleaner(["s3cr3t", ""]))
    assert (code, request_id) == ("X.***", "***")
    assert message.startswith("key *** in text ")
    assert len(message) <= 1024


def _vector(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("path", SDK_ERRORS, ids=[p.stem for p in SDK_ERRORS])
def test_sdk_error_vectors_classify_as_the_sdk_did(path: Path) -> None:
    """The SDK's error answers, served to this client, give the SDK's code, status and id."""
    vector = _vector(path)
    sdk = vector["sdk_error"]
    headers = {}
    if sdk["retry_after"] is not None:
        headers["x-acs-retry-after"] = str(sdk["retry_after"])
    http, checks = mock_http(sequence(json_answer(sdk["status_code"], sdk["data"], headers)))
    with open_client(http) as client, pytest.raises(ApiError) as caught:
        list(
            client.iter_pages(
                InvocationQuery(invoke_record_status="Finished", tags=(("env", "prod"),))
            )
        )
    error = caught.value
    assert checks.seen[0].raw_query == vector["captured"]["raw_query"]
    assert (error.code, error.http_status, error.request_id) == (
        sdk["code"],
        sdk["status_code"],
        sdk["request_id"],
    )
    assert error.message == sdk["data"]["Message"]
    assert isinstance(error, SDK_TYPES[sdk["type"].rsplit(".", 1)[-1]])
    if sdk["retry_after"] is not None:
        assert isinstance(error, ThrottledError)
        assert error.retry_after == sdk["retry_after"] / 1000
    # The SDK retries throttling and server errors and nothing else; so do we.
    sdk_retries = sdk["code"].startswith("Throttling") or sdk["status_code"] >= 500
    assert is_retryable(error) is sdk_retries
    assert len(checks.seen) == (4 if sdk_retries else 1)
