"""Every failure of the Alibaba layer, as one tree.

::

    EcsError                       base: .code .message .request_id .http_status
     ├── TransportError            connection refused/reset, DNS, TLS, truncated body (retried)
     │    └── RequestTimeoutError  connect/read timeout, or the call's deadline ran out (retried)
     │         └── RateLimitWaitError  the client-side rate limit would wait past the deadline
     ├── ApiError                  an error answer of the API ({RequestId, Code, Message, ...})
     │    ├── ThrottledError       Throttling*, HTTP 429; .retry_after seconds or None (retried)
     │    ├── ServerError          HTTP 5xx, ServiceUnavailable, InternalError*, UnknownError
     │    │                        (retried)
     │    ├── AuthenticationError  InvalidAccessKeyId*, SignatureDoesNotMatch, IncompleteSignature,
     │    │    │                   InvalidTimeStamp.Format, SignatureNonceUsed,
     │    │    │                   InvalidSecurityToken*
     │    │    └── ClockSkewError  InvalidTimeStamp.Expired, RequestTimeTooSkewed: the host's clock
     │    │                        is too far from the service's (fixed by NTP, not credentials)
     │    ├── AccessDeniedError    Forbidden*, NoPermission*, Operation.Forbidden
     │    └── InvalidRequestError  any other 4xx (InvalidParameter.*, MissingParameter.*, ...),
     │                             and a query refused before it is sent
     ├── MalformedResponseError    not JSON, wrong shape (a 200 answer: retried once), an empty
     │                             page with a token, a repeated token
     └── CredentialsError          no credentials found, or a provider failed

Each class has a ``reason``: the ``reason`` label of a failed refresh (:func:`failure_reason`).
:data:`FAILURE_REASONS` is every reason of the tree, plus ``internal`` for a bug in the exporter.

``str()`` of an error is ``"<Code>: <message> (HTTP <status>, RequestId <id>)"`` without the
empty parts. Every part that came from an answer (code, message, request id) was cleaned where it
was parsed (:mod:`exporter.ecs.untrusted`: printable, bounded, secrets redacted), and no error ever
formats a credential.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import ClassVar

from exporter.ecs.untrusted import PLAIN, TextCleaner

# Codes the service uses for transient failures whatever the HTTP status says.
_SERVER_CODES = frozenset({"ServiceUnavailable", "UnknownError"})
_AUTH_CODES = frozenset({"SignatureDoesNotMatch", "IncompleteSignature", "SignatureNonceUsed"})
_AUTH_PREFIXES = ("InvalidAccessKeyId", "InvalidTimeStamp", "InvalidSecurityToken")
# The request's date is too far from the service's clock (15 minutes for ECS).
_CLOCK_SKEW_CODES = frozenset({"InvalidTimeStamp.Expired", "RequestTimeTooSkewed"})
_PERMISSION_PREFIXES = ("Forbidden", "NoPermission")
_PERMISSION_CODES = frozenset({"Operation.Forbidden"})


class EcsError(Exception):
    """Base of every error raised by ``exporter.ecs``."""

    # The ``reason`` label of a refresh that failed with this error. The base class is never
    # raised on purpose: meeting it means a bug in the exporter.
    reason: ClassVar[str] = "internal"

    def __init__(
        self,
        message: str = "",
        *,
        code: str = "",
        request_id: str = "",
        http_status: int | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.request_id = request_id
        self.http_status = http_status
        super().__init__(self.__str__())

    def __str__(self) -> str:
        head = f"{self.code}: {self.message}" if self.code else self.message
        details = []
        if self.http_status is not None:
            details.append(f"HTTP {self.http_status}")
        if self.request_id:
            details.append(f"RequestId {self.request_id}")
        return f"{head} ({', '.join(details)})" if details else head

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__str__()!r})"


class TransportError(EcsError):
    """The request or its answer was lost on the way (connection, DNS, TLS, truncated body)."""

    reason = "transport"


class RequestTimeoutError(TransportError):
    """A connect or read timeout, or the call's total deadline ran out."""


class RateLimitWaitError(RequestTimeoutError):
    """The client-side rate limit would hold a request past its call's deadline (not sent)."""

    # The remedy is throttling's: fewer calls for the configured rate (or a higher rate).
    reason = "throttled"


class ApiError(EcsError):
    """The API answered with an error (a JSON body with ``Code`` and ``Message``)."""

    reason = "invalid_request"


class ThrottledError(ApiError):
    """The API refused the request because of flow control; ``retry_after`` is in seconds."""

    reason = "throttled"

    def __init__(
        self,
        message: str = "",
        *,
        code: str = "",
        request_id: str = "",
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, code=code, request_id=request_id, http_status=http_status)


class ServerError(ApiError):
    """A transient failure on the service side (HTTP 5xx or a server error code)."""

    reason = "server"


class AuthenticationError(ApiError):
    """The service did not accept the credentials or the signature."""

    reason = "auth"


class ClockSkewError(AuthenticationError):
    """The service refused the request's date: the host's clock is off (fix NTP, not keys)."""

    reason = "clock_skew"


class AccessDeniedError(ApiError):
    """The credentials are valid but not allowed to call the API (RAM policy)."""

    reason = "permission"


class InvalidRequestError(ApiError):
    """The request itself is wrong: refused by the service (other 4xx) or before sending it."""


class MalformedResponseError(EcsError):
    """A success answer that cannot be used: not JSON, wrong shape, or a paging loop."""

    reason = "malformed"


class CredentialsError(EcsError):
    """No credentials could be found, or a credentials provider failed."""

    reason = "credentials"


def _reasons(cls: type[EcsError]) -> list[str]:
    found = [cls.reason]
    for sub in cls.__subclasses__():
        found.extend(_reasons(sub))
    return found


# Every reason the tree can give, in the order the classes are defined, and "internal" (the base
# class's: a bug in the exporter) last. The label values the exporter pre-initialises.
FAILURE_REASONS: tuple[str, ...] = (
    *(reason for reason in dict.fromkeys(_reasons(EcsError)) if reason != EcsError.reason),
    EcsError.reason,
)

RETRYABLE_ERRORS: tuple[type[EcsError], ...] = (TransportError, ThrottledError, ServerError)


def is_retryable(exc: EcsError) -> bool:
    """Tell whether a failed try may be repeated (throttling, server errors, transport)."""
    return isinstance(exc, RETRYABLE_ERRORS)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Return the wait the service asked for, in seconds, or ``None``.

    ``x-acs-retry-after`` is in milliseconds (the official SDK's vector answers 1500 for 1.5 s);
    a standard ``Retry-After`` from a gateway is in seconds.
    """
    for name, scale in (("x-acs-retry-after", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw.strip())
        except ValueError:
            continue
        if value >= 0 and value == value and value != float("inf"):
            return value * scale
    return None


def _field(body: Mapping[str, object], *names: str) -> str:
    for name in names:
        value = body.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def parse_error_body(body: bytes, text: TextCleaner = PLAIN) -> tuple[str, str, str]:
    """Return ``(code, message, request_id)`` of an error answer; empty strings when unknown.

    Accepts ``Code``/``Message``/``RequestId`` and the lower-case variants some gateways send.
    Each is cleaned by ``text`` (give it the call's secrets): safe for any surface.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "", "", ""
    if not isinstance(data, dict):
        return "", "", ""
    return (
        text.name(_field(data, "Code", "code")),
        text.message(_field(data, "Message", "message", "Msg", "msg")),
        text.name(_field(data, "RequestId", "requestId", "request_id")),
    )


def classify_api_error(
    http_status: int,
    code: str,
    message: str,
    request_id: str,
    retry_after: float | None = None,
) -> ApiError | MalformedResponseError:
    """Build the error for a non-200 answer from its status and its body's ``Code``."""
    if not message:
        message = f"the service answered HTTP {http_status}"
    if code.startswith("Throttling") or http_status == 429:
        return ThrottledError(
            message,
            code=code,
            request_id=request_id,
            http_status=http_status,
            retry_after=retry_after,
        )
    cls: type[ApiError]
    if code in _CLOCK_SKEW_CODES:
        cls = ClockSkewError
    elif code in _AUTH_CODES or code.startswith(_AUTH_PREFIXES):
        cls = AuthenticationError
    elif code in _PERMISSION_CODES or code.startswith(_PERMISSION_PREFIXES):
        cls = AccessDeniedError
    elif code in _SERVER_CODES or code.startswith("InternalError") or 500 <= http_status <= 599:
        cls = ServerError
    elif 400 <= http_status <= 499:
        cls = InvalidRequestError
    else:
        # 1xx/3xx or another status no API answer uses: a proxy in the way, not the service.
        return MalformedResponseError(
            f"unexpected HTTP {http_status} answer",
            code=code,
            request_id=request_id,
            http_status=http_status,
        )
    return cls(message, code=code, request_id=request_id, http_status=http_status)


def outcome_code(exc: EcsError | None) -> str:
    """Return the short outcome of one try: ``""`` on success, else the API ``Code`` or a kind.

    Without an API code: ``credentials``, ``http_<status>`` for an error answer, ``malformed``
    for an unusable success answer, ``timeout`` or ``transport``.
    """
    if exc is None:
        return ""
    if exc.code:
        return exc.code
    if isinstance(exc, CredentialsError):
        return "credentials"
    if exc.http_status is not None and exc.http_status != 200:
        return f"http_{exc.http_status}"
    if isinstance(exc, MalformedResponseError):
        return "malformed"
    if isinstance(exc, RequestTimeoutError):
        return "timeout"
    if isinstance(exc, TransportError):
        return "transport"
    return "error"


def failure_reason(exc: BaseException) -> str:
    """Return the ``reason`` label of a failed refresh: one of :data:`FAILURE_REASONS`.

    Anything that is not an :class:`EcsError` is a bug in the exporter: ``internal``.
    """
    return exc.reason if isinstance(exc, EcsError) else EcsError.reason
