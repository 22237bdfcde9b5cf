"""One HTTP exchange of the ECS client: send a request, read its whole answer under a deadline.

Two ways to the network, one behaviour:

* :class:`CoreWire` calls an ``httpcore`` connection pool (httpx's own transport layer) with a
  request built from parts, so no URL is parsed and no header re-validated on the hot path: a
  refresh may page 10,000 results, and httpx's ``Request``/``URL`` layers cost about a third of
  each call's CPU. Production uses it when no proxy is configured.
* :class:`HttpxWire` goes through an ``httpx`` transport or ``httpx.Client`` (a ``Client`` applies
  the environment's proxies; tests give a ``MockTransport``).

Either way a read timeout only bounds the gap between two reads, so the answer is read here
under the call's deadline too (a server trickling bytes would otherwise hold a refresh worker for
ever), and its size is bounded. Failures are :class:`TransportError` or
:class:`RequestTimeoutError`, their text cleaned by the caller's :class:`TextCleaner`.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httpcore
import httpx

from exporter.ecs.errors import MalformedResponseError, RequestTimeoutError, TransportError
from exporter.ecs.untrusted import TextCleaner

# 50 results with 24 KB of Output each make about 1.3 MB: an answer far larger is not one.
MAX_ANSWER_BYTES = 16 * 1024 * 1024

_CORE_NETWORK_ERRORS = (
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.ProxyError,
    httpcore.UnsupportedProtocol,
)


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole answer: status, headers (names lower-cased; the last of duplicates), body."""

    status: int
    headers: dict[str, str]
    body: bytes


class Wire(Protocol):
    """Sends one ``POST`` to ``base_url`` + ``target`` and returns the whole answer."""

    def post(
        self,
        target: str,
        headers: dict[str, str],
        timeout: float,
        deadline: float,
        text: TextCleaner,
    ) -> Answer:
        """``target`` is the path and query; ``deadline`` is on the client's clock."""
        ...


def api_connection_pool(
    *, ssl_context: ssl.SSLContext, max_connections: int, max_keepalive_connections: int
) -> httpcore.ConnectionPool:
    """The connection pool production gives the ECS clients (HTTP/1.1, kept alive)."""
    return httpcore.ConnectionPool(
        ssl_context=ssl_context,
        max_connections=max_connections,
        max_keepalive_connections=max_keepalive_connections,
        keepalive_expiry=5.0,
    )


def _read(
    chunks: Iterable[bytes],
    expected: str,
    deadline: float,
    clock: Callable[[], float],
    host: str,
) -> bytes:
    """Read every chunk of an answer; stop at ``MAX_ANSWER_BYTES`` or the deadline.

    ``expected`` is the ``Content-Length`` (``""`` if none): an answer whose last byte arrives
    after the deadline is still taken, a longer one is not.
    """
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise MalformedResponseError(
                f"the answer from {host} is larger than {MAX_ANSWER_BYTES} bytes"
            )
        parts.append(chunk)
        if clock() > deadline and not (expected.isdigit() and size >= int(expected)):
            raise RequestTimeoutError(
                f"the answer from {host} was still arriving when the call's deadline ran out"
            )
    return b"".join(parts)


def _timed_out(exc: Exception, netloc: str, timeout: float) -> RequestTimeoutError:
    """The error for a timeout of either HTTP library."""
    return RequestTimeoutError(f"{type(exc).__name__} talking to {netloc} (timeout {timeout:g}s)")


def _lost(exc: Exception, netloc: str, text: TextCleaner) -> TransportError:
    """The error for a failed exchange of either HTTP library (its message cleaned)."""
    detail = text.message(str(exc))
    return TransportError(f"{type(exc).__name__} talking to {netloc}: {detail}".rstrip(": "))


class CoreWire:
    """A :class:`Wire` over an ``httpcore`` connection pool (shared; closed by its owner)."""

    def __init__(
        self, pool: httpcore.ConnectionPool, base_url: str, clock: Callable[[], float]
    ) -> None:
        parts = urlsplit(base_url)
        self._pool = pool
        self._scheme = parts.scheme.encode("ascii")
        self._host = (parts.hostname or "").encode("idna")
        self._port = parts.port
        self._netloc = parts.netloc
        self._clock = clock

    def post(
        self,
        target: str,
        headers: dict[str, str],
        timeout: float,
        deadline: float,
        text: TextCleaner,
    ) -> Answer:
        """See :class:`Wire`."""
        request = httpcore.Request(
            b"POST",
            httpcore.URL(
                scheme=self._scheme, host=self._host, port=self._port, target=target.encode()
            ),
            headers=[(name.encode(), value.encode()) for name, value in headers.items()],
            extensions={
                "timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
            },
        )
        try:
            response = self._pool.handle_request(request)
            try:
                found = {
                    name.decode("latin-1").lower(): value.decode("latin-1")
                    for name, value in response.headers
                }
                stream: Iterable[bytes] = response.stream  # type: ignore[assignment]
                body = _read(
                    stream, found.get("content-length", ""), deadline, self._clock, self._netloc
                )
            finally:
                response.close()
        except httpcore.TimeoutException as exc:
            raise _timed_out(exc, self._netloc, timeout) from None
        except _CORE_NETWORK_ERRORS as exc:
            raise _lost(exc, self._netloc, text) from None
        return Answer(response.status, found, body)


class HttpxWire:
    """A :class:`Wire` over an ``httpx`` transport or ``httpx.Client`` (closed by its owner)."""

    def __init__(
        self,
        http: httpx.BaseTransport | httpx.Client,
        base_url: str,
        clock: Callable[[], float],
    ) -> None:
        self._send: Callable[[httpx.Request], httpx.Response] = (
            http.handle_request
            if isinstance(http, httpx.BaseTransport)
            else lambda request: http.send(request, stream=True)
        )
        self._base_url = base_url.rstrip("/")
        self._netloc = urlsplit(base_url).netloc
        self._clock = clock

    def post(
        self,
        target: str,
        headers: dict[str, str],
        timeout: float,
        deadline: float,
        text: TextCleaner,
    ) -> Answer:
        """See :class:`Wire`."""
        request = httpx.Request(
            "POST",
            self._base_url + target,
            headers=headers,
            extensions={"timeout": httpx.Timeout(timeout).as_dict()},
        )
        try:
            response = self._send(request)
            try:
                # Content-Length counts the bytes on the wire, before any decoding.
                encoded = "content-encoding" in response.headers
                body = _read(
                    response.iter_bytes(),
                    "" if encoded else response.headers.get("content-length", ""),
                    deadline,
                    self._clock,
                    self._netloc,
                )
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            raise _timed_out(exc, self._netloc, timeout) from None
        except httpx.RequestError as exc:
            raise _lost(exc, self._netloc, text) from None
        found = {name.lower(): value for name, value in response.headers.items()}
        return Answer(response.status_code, found, body)
