"""The exporter's HTTP endpoints, on a threading HTTP server with graceful shutdown.

=================  ===========================================================================
``/metrics``       the application's registry, in the format the ``Accept`` header asks for
                   (Prometheus text or OpenMetrics), gzip when accepted. The scrape first lets
                   the refreshers work, bounded by ``X-Prometheus-Scrape-Timeout-Seconds``.
``/``              an HTML landing page: links and a table of targets (no secrets)
``/-/healthy``     200 ``Healthy`` while the process serves
``/-/ready``       200 once every target has finished its first refresh attempt, else 503
=================  ===========================================================================

Only GET and HEAD are allowed (405 otherwise); unknown paths are 404. With a web config, TLS
and basic auth apply to every path, health endpoints included (as exporter-toolkit does),
except the paths listed in the web config's ``auth_excluded_paths`` (for probes). An
exception while answering is logged on one line (no traceback) and becomes a 500; a client that
goes away mid-answer is only noted at debug level. The server keeps serving either way.

Each connection is served by its own thread, and a connection that sends nothing for
:data:`CONNECTION_TIMEOUT_SECONDS` is dropped, so silent or slow clients never hold up a scrape.
"""

from __future__ import annotations

import contextlib
import gzip
import html
import logging
import socket
import socketserver
import ssl
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from exporter import __version__
from exporter.logs import describe_exception
from exporter.webconfig import BASIC_AUTH_CHALLENGE, WebConfig

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_HEADER: Final = "X-Prometheus-Scrape-Timeout-Seconds"
# Time kept back from Prometheus' scrape timeout to encode and send the answer.
SCRAPE_TIMEOUT_MARGIN_SECONDS: Final = 0.5
# A connection that sends nothing (or stalls a TLS handshake) for this long is dropped.
CONNECTION_TIMEOUT_SECONDS: Final = 30.0
ALLOWED_METHODS: Final = "GET, HEAD"
LISTEN_BACKLOG: Final = 128
# The longest request path quoted in a log line.
_MAX_LOGGED_PATH: Final = 200


@dataclass(frozen=True)
class TargetStatus:
    """What the landing page and ``/-/ready`` show of one target."""

    account: str
    region_id: str
    up: bool | None
    """None until the first refresh attempt has finished."""
    last_success_time: float | None
    last_error: str
    """The failure reason of the last refresh (``throttled``, ``auth`` ...), "" after a success."""
    last_error_detail: str = ""
    """Its API code and message, "" after a success."""
    results_in_view: int | None = None
    """Results the API returns for the target, as of the last refresh."""
    state: str = "fresh"
    """``restored`` when its counters resumed from the state directory, else ``fresh``."""


def scrape_wait_seconds(header: str | None, max_wait: float) -> float:
    """How long a scrape may wait for refreshes: Prometheus' timeout minus a margin, capped."""
    if not header:
        return max_wait
    try:
        timeout = float(header)
    except ValueError:
        return max_wait
    if timeout != timeout or timeout <= 0:  # NaN or nonsense
        return max_wait
    return max(0.0, min(max_wait, timeout - SCRAPE_TIMEOUT_MARGIN_SECONDS))


class ExporterHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that counts requests in flight, so shutdown can wait for them.

    TLS handshakes happen in the request's thread, never in the accept loop, so a slow or
    silent client cannot stall other scrapes.
    """

    daemon_threads = True
    # The listen backlog. socketserver's default of 5 makes the kernel drop the SYNs of a burst
    # of connections (an HA pair, a flood, idle clients) and clients wait a second or more for
    # their retransmission.
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        address: tuple[str, int],
        *,
        registry: CollectorRegistry,
        target_statuses: Callable[[], Sequence[TargetStatus]],
        prepare_scrape: Callable[[float], None] = lambda max_wait: None,
        render_metrics: Callable[[str], tuple[bytes, str]] | None = None,
        scrape_max_wait: float = 9.0,
        telemetry_path: str = "/metrics",
        web_config: WebConfig | None = None,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.registry = registry
        self.target_statuses = target_statuses
        self.prepare_scrape = prepare_scrape
        # (Accept header) -> (body, content type); without it the registry is rendered.
        self.render_metrics = render_metrics
        self.scrape_max_wait = scrape_max_wait
        self.telemetry_path = telemetry_path
        self.web_config = web_config
        self.ssl_context: ssl.SSLContext | None = (
            web_config.ssl_context() if web_config is not None else None
        )
        self.response_headers = web_config.response_headers if web_config is not None else {}
        self._in_flight = 0
        # Open connections by serving thread: the socket, and whether a request is being
        # answered on it (an idle one is closed at shutdown instead of waited for).
        self._connections: dict[int, tuple[socket.socket, bool]] = {}
        self._idle = threading.Condition()
        super().__init__(address, ExporterRequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, a reverse DNS lookup that can hang
        # start-up where DNS is broken; nothing here uses the name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    @property
    def url(self) -> str:
        """The base URL clients use, e.g. ``http://127.0.0.1:9907``."""
        host, port = self.server_address[:2]
        host = str(host)
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{host}:{port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._idle:
            self._in_flight += 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._request_done()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        self._track_connection(request, busy=False)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._idle:
                self._connections.pop(threading.get_ident(), None)
            self._request_done()

    def _track_connection(self, connection: socket.socket, *, busy: bool) -> None:
        with self._idle:
            self._connections[threading.get_ident()] = (connection, busy)

    def mark_busy(self, connection: socket.socket) -> None:
        """Called by the handler once a request has arrived on ``connection``."""
        self._track_connection(connection, busy=True)

    def _request_done(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(CONNECTION_TIMEOUT_SECONDS)
        if _speaks_plain_http(request):
            # As Go's servers do: tell a client that forgot https:// instead of a bare reset.
            with contextlib.suppress(OSError):
                request.sendall(_PLAIN_HTTP_TO_TLS_ANSWER)
            return
        try:
            tls_socket = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS handshake failed", extra={"client": client_address[0], "err": exc})
            return
        self._track_connection(tls_socket, busy=False)
        try:
            super().finish_request(tls_socket, client_address)
        finally:
            tls_socket.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr; a dropped connection is not worth one.
        exc = sys.exc_info()[1]
        err = describe_exception(exc) if exc is not None else "unknown"
        log.debug("connection error", extra={"client": client_address[0], "err": err})

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight; False if ``timeout`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def stop(self, grace_seconds: float = 10.0) -> bool:
        """Stop accepting, close the listening socket and idle connections, wait for requests.

        Must be called from another thread than the one in ``serve_forever()``. Returns
        whether every request in flight finished within ``grace_seconds``.
        """
        self.shutdown()
        self.server_close()
        with self._idle:
            idle = [sock for sock, busy in self._connections.values() if not busy]
        for sock in idle:
            # A client that connected but sent nothing would hold its thread (and shutdown)
            # until the connection timeout: end its wait for a request line now.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return self.wait_idle(grace_seconds)


class ExporterRequestHandler(BaseHTTPRequestHandler):
    """Routes one request; see the module docstring for the endpoints."""

    server: ExporterHTTPServer
    server_version = f"aliyun-cloudassistant-exporter/{__version__}"
    sys_version = ""  # the Server header does not advertise the Python version
    timeout = CONNECTION_TIMEOUT_SECONDS

    def do_GET(self) -> None:
        self._dispatch(send_body=True)

    def do_HEAD(self) -> None:
        self._dispatch(send_body=False)

    def _method_not_allowed(self) -> None:
        self.server.mark_busy(self.connection)
        if self._authorized(send_body=True):
            self._send(
                HTTPStatus.METHOD_NOT_ALLOWED,
                b"Method Not Allowed\n",
                headers={"Allow": ALLOWED_METHODS},
            )

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = (
        _method_not_allowed
    )

    def _dispatch(self, *, send_body: bool) -> None:
        self.server.mark_busy(self.connection)
        if not self._authorized(send_body=send_body):
            return
        path = self.path.split("?", 1)[0]
        routes: dict[str, Callable[[bool], None]] = {
            self.server.telemetry_path: self._metrics,
            "/": self._landing_page,
            "/-/healthy": self._healthy,
            "/-/ready": self._ready,
        }
        route = routes.get(path)
        if route is None:
            self._send(HTTPStatus.NOT_FOUND, b"Not Found\n", send_body=send_body)
            return
        try:
            route(send_body)
        except (ConnectionError, TimeoutError) as exc:
            # The client went away (or stopped reading) mid-answer: nothing to answer to.
            self.close_connection = True
            log.debug(
                "client went away",
                extra={
                    "client": self.client_address[0],
                    "path": path[:_MAX_LOGGED_PATH],
                    "err": describe_exception(exc),
                },
            )
        except Exception as exc:
            log.error(
                "error while answering a request",
                extra={"path": path[:_MAX_LOGGED_PATH], "err": describe_exception(exc)},
            )
            self._send(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                b"Internal Server Error\n",
                send_body=send_body,
            )

    def _authorized(self, *, send_body: bool) -> bool:
        web_config = self.server.web_config
        if web_config is None or not web_config.auth_required_for(self.path):
            return True
        if web_config.check_basic_auth(self.headers.get("Authorization")):
            return True
        self._send(
            HTTPStatus.UNAUTHORIZED,
            b"Unauthorized\n",
            headers={"WWW-Authenticate": BASIC_AUTH_CHALLENGE},
            send_body=send_body,
        )
        return False

    def _metrics(self, send_body: bool) -> None:
        max_wait = scrape_wait_seconds(
            self.headers.get(SCRAPE_TIMEOUT_HEADER), self.server.scrape_max_wait
        )
        self.server.prepare_scrape(max_wait)
        accept = self.headers.get("Accept", "")
        if self.server.render_metrics is not None:
            body, content_type = self.server.render_metrics(accept)
        else:
            encoder, content_type = choose_encoder(accept)
            body = encoder(self.server.registry)
        headers: dict[str, str] = {}
        if gzip_accepted(self.headers.get("Accept-Encoding", "")):
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
        self._send(
            HTTPStatus.OK, body, content_type=content_type, headers=headers, send_body=send_body
        )

    def _healthy(self, send_body: bool) -> None:
        self._send(HTTPStatus.OK, b"Healthy\n", send_body=send_body)

    def _ready(self, send_body: bool) -> None:
        statuses = self.server.target_statuses()
        waiting = [status for status in statuses if status.up is None]
        if waiting:
            body = f"Not ready: {len(waiting)} of {len(statuses)} targets not refreshed yet\n"
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, body.encode(), send_body=send_body)
        else:
            self._send(HTTPStatus.OK, b"Ready\n", send_body=send_body)

    def _landing_page(self, send_body: bool) -> None:
        page = render_landing_page(self.server.telemetry_path, self.server.target_statuses())
        self._send(
            HTTPStatus.OK,
            page.encode(),
            content_type="text/html; charset=utf-8",
            send_body=send_body,
        )

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        *,
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
        send_body: bool = True,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        extra_headers = dict(self.server.response_headers)
        extra_headers.update(headers or {})
        for name, value in extra_headers.items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Access logs only at debug: Prometheus scrapes every few seconds.
        log.debug(format % args, extra={"client": self.client_address[0]})


_PLAIN_HTTP_TO_TLS_ANSWER: Final = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)


def _speaks_plain_http(connection: socket.socket) -> bool:
    """True when the client's first byte is a letter (``GET``, ``HEAD``...), not a TLS record."""
    try:
        first = connection.recv(1, socket.MSG_PEEK)
    except OSError:
        return False
    return first.isalpha()


def _format_time(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="seconds")


def render_landing_page(telemetry_path: str, statuses: Sequence[TargetStatus]) -> str:
    """The HTML of ``/``: links to the endpoints and one row per target."""
    rows = []
    for status in statuses:
        up = {None: "pending", True: "1", False: "0"}[status.up]
        if status.state == "restored":
            up = f"{up} (counters restored)"
        cells = (
            status.account,
            status.region_id,
            up,
            "-" if status.results_in_view is None else str(status.results_in_view),
            _format_time(status.last_success_time),
            status.last_error or "-",
            status.last_error_detail or "-",
        )
        rows.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>")
    path = html.escape(telemetry_path, quote=True)
    table_rows = "\n".join(rows) or '<tr><td colspan="7">no targets</td></tr>'
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Alibaba Cloud Assistant exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;text-align:left}}
tr:nth-child(even){{background:#f2f2f2}}</style></head>
<body>
<h1>Alibaba Cloud ECS Cloud Assistant exporter</h1>
<p>Version {html.escape(__version__)}</p>
<ul>
<li><a href="{path}">Metrics</a> ({path})</li>
<li><a href="/-/healthy">/-/healthy</a></li>
<li><a href="/-/ready">/-/ready</a></li>
</ul>
<h2>Targets</h2>
<table>
<tr><th>account</th><th>region</th><th>up</th><th>results in view</th>
<th>last successful refresh</th><th>last error</th><th>detail</th></tr>
{table_rows}
</table>
</body>
</html>
"""
