"""The one loopback HTTP layer of every fake service: the ECS simulator and the test fakes.

A :class:`LoopbackServer` listens on a loopback address (``port=0`` picks a free port), serves
on a background thread, and hands each request, read whole, to :meth:`LoopbackServer.answer`,
which returns an :class:`Answer`. Besides a status, headers and a body, an answer can misbehave
at the transport level as broken gateways do: close the connection without answering (``drop``)
or announce more bytes than it sends (``truncate``). A ``Date`` header in the answer replaces the
server's own (a fake service can run on a clock of its own).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, NamedTuple, Self
from urllib.parse import parse_qsl, urlsplit


class Answer(NamedTuple):
    """What a fake service sends back for one request."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    drop: bool = False  # close the connection without an answer
    truncate: bool = False  # announce more bytes than sent, then close


@dataclass(frozen=True)
class RecordedRequest:
    """One request as a fake service received it."""

    method: str
    path: str
    raw_query: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def target(self) -> str:
        """The request target as sent: the path and, when there is one, ``?`` and the query."""
        return f"{self.path}?{self.raw_query}" if self.raw_query else self.path

    @property
    def params(self) -> dict[str, str]:
        """The query parameters, decoded (a form body's are not included)."""
        return dict(parse_qsl(self.raw_query, keep_blank_values=True))

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        lower = name.lower()
        return next((v for k, v in self.headers if k.lower() == lower), None)


class LoopbackServer:
    """A small HTTP server on a background thread; a context manager (entering starts it).

    Subclasses implement :meth:`answer` (called on a server thread, so it must be thread-safe).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._httpd = _HTTPServer((host, port), self)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` where the server listens."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        """Start serving (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},  # shutdown() waits up to one interval
                name=type(self).__name__,
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def answer(self, request: RecordedRequest) -> Answer:
        """The answer to one request."""
        raise NotImplementedError


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], service: LoopbackServer) -> None:
        self.service = service
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client hangs up first: clients under test time out on purpose."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "loopback-fake"
    sys_version = ""
    timeout = 30.0  # idle keep-alive connections end after this
    # One buffered write per answer (flushed by handle_one_request) and no Nagle delay: with
    # headers and body in separate segments, delayed ACKs would cost ~40 ms per answer.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def _serve(self) -> None:
        server = self.server
        assert isinstance(server, _HTTPServer)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        body = self.rfile.read(length) if length > 0 else b""
        parts = urlsplit(self.path)
        request = RecordedRequest(
            self.command, parts.path or "/", parts.query, list(self.headers.items()), body
        )
        answer = server.service.answer(request)
        if answer.drop:
            self.close_connection = True
            return
        self.send_response_only(answer.status)
        self.send_header("Server", self.version_string())
        self.send_header("Date", answer.headers.get("Date") or self.date_time_string())
        for name, value in answer.headers.items():
            if name != "Date":
                self.send_header(name, value)
        if answer.truncate:
            self.send_header("Content-Length", str(len(answer.body) + 1024))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(answer.body[: max(1, len(answer.body) // 2)])
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the fakes keep their own record of what they served."""
