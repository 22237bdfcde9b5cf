"""The exporter's HTTP endpoints, served over HTTP/1.1 with keep-alive and graceful shutdown.

=================  ===========================================================================
``/metrics``       the application's registry, in the format the ``Accept`` header asks for
                   (Prometheus text or OpenMetrics), gzip when accepted. The scrape first lets
                   the refreshers work, bounded by ``X-Prometheus-Scrape-Timeout-Seconds``.
``/``              an HTML landing page: links and a table of targets (no secrets)
``/-/healthy``     200 ``Healthy`` while the process serves
``/-/ready``       200 once every target has finished its first refresh attempt, else 503
``/-/reload``      POST or PUT: reload the configuration (``--web.enable-lifecycle``; 403
                   without it, as in Prometheus); 200, or 500 with the reason it was refused
=================  ===========================================================================

Only GET and HEAD are allowed elsewhere (405 otherwise); unknown paths are 404. With a web
config, TLS and basic auth apply to every path, health endpoints included (as exporter-toolkit
does), except the paths listed in the web config's ``auth_excluded_paths`` (for probes; with or
without the route prefix); the web config's files are re-read when they change (see
:mod:`exporter.webwatch`). An exception while answering is logged on one line (no traceback)
and becomes a 500; a client that goes away mid-answer is only noted at debug level. The server
keeps serving either way.

Every path is under ``--web.route-prefix`` (by default the path of ``--web.external-url``, or
none), as in Prometheus; ``/`` and the bare prefix then redirect to ``PREFIX/``. The landing
page's links are relative, so it also works behind a reverse proxy that strips a prefix.

Connections, their limits and deadlines are :mod:`exporter.connections`' job: a silent, slow or
hostile client never holds up a scrape. Scrapes that arrive together share one rendering of
the registry, and a scrape's wait for refreshes counts the time it was queued, so it answers
within Prometheus' timeout (serving the last snapshots if it must).
"""

from __future__ import annotations

import html
import io
import logging
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Final
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import gzip_accepted

from exporter import __version__
from exporter.connections import Answer, Body, ConnectionLimits, ConnectionServer, Request
from exporter.listeners import ListenError, bind_all
from exporter.logs import describe_exception
from exporter.scrapecache import ExpositionCache
from exporter.validation import has_dot_segment, shown_value
from exporter.webconfig import BASIC_AUTH_CHALLENGE, WebConfig
from exporter.webwatch import WebConfigSource

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_HEADER: Final = "X-Prometheus-Scrape-Timeout-Seconds"
# Time kept back from Prometheus' scrape timeout to encode and send the answer.
SCRAPE_TIMEOUT_MARGIN_SECONDS: Final = 0.5
ALLOWED_METHODS: Final = "GET, HEAD"
LIFECYCLE_METHODS: Final = "POST, PUT"
SEPARATE_BODY_BYTES: Final = 65536
"""A body larger than this (``/metrics``) is sent after the head as it is (its pieces, not
joined), not copied first."""
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
    first_walk: str = ""
    """"done", or how far the first walk got while it is still reading (counting starts after)."""
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


def normalize_route_prefix(value: str) -> str:
    """``--web.route-prefix`` as Prometheus reads it: a leading ``/`` added, the trailing one
    dropped (``/`` and ``""`` mean no prefix). Raises ``ValueError`` for a query or fragment,
    and for a ``.`` or ``..`` segment (see :func:`~exporter.validation.has_dot_segment`)."""
    if (
        not value.isascii()
        or any(mark in value for mark in "?#%")
        or any(ord(char) < 33 or ord(char) == 127 for char in value)
        or has_dot_segment(value)
    ):
        raise ValueError(
            f"{shown_value(value)} must be a path like /exporter "
            "(ASCII, no query, no spaces, no %, no . or .. segment)"
        )
    return ("/" + value.strip("/")) if value.strip("/") else ""


def route_prefix_of(external_url: str) -> str:
    """The route prefix ``--web.external-url`` implies (its path); ``ValueError`` if it is not
    an absolute http(s) URL."""
    parsed = urlsplit(external_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(
            f"{shown_value(external_url)} must be an absolute http(s) URL, e.g. https://host/path"
        )
    return normalize_route_prefix(parsed.path)


class ExporterHTTPServer:
    """The exporter's endpoints on one or more listening sockets (see the module docstring).

    Listens on ``address`` and ``addresses`` (bound here: ``ListenError`` when one cannot be),
    plus already listening ``sockets`` (systemd socket activation). Every route is under
    ``route_prefix``. ``render_metrics`` (Accept header -> pieces of the body and its content
    type) renders
    ``/metrics`` instead of encoding ``registry``; ``data_version`` tells when the data behind
    it changed (see :class:`ExpositionCache`). Connections are served by
    :class:`~exporter.connections.ConnectionServer` within ``limits``.
    """

    def __init__(
        self,
        address: tuple[str, int] | None = None,
        *,
        addresses: Sequence[tuple[str, int]] = (),
        sockets: Sequence[socket.socket] = (),
        registry: CollectorRegistry,
        target_statuses: Callable[[], Sequence[TargetStatus]],
        prepare_scrape: Callable[[float], None] = lambda max_wait: None,
        render_metrics: Callable[[str], tuple[Sequence[bytes], str]] | None = None,
        scrape_max_wait: float = 9.0,
        telemetry_path: str = "/metrics",
        route_prefix: str = "",
        web_config: WebConfig | None = None,
        limits: ConnectionLimits | None = None,
        data_version: Callable[[], Sequence[object]] | None = None,
        shard_summary: Callable[[], str] = str,
        web_config_source: WebConfigSource | None = None,
        reload: Callable[[str], str | None] | None = None,
    ) -> None:
        self.registry = registry
        self.shard_summary = shard_summary  # the landing page's line about sharding ("": none)
        self.exposition = ExpositionCache(registry, data_version, render_metrics)
        self.target_statuses = target_statuses
        self.prepare_scrape = prepare_scrape
        self.scrape_max_wait = scrape_max_wait
        self.telemetry_path = telemetry_path
        self.route_prefix = normalize_route_prefix(route_prefix)
        # The web config of the moment (re-read when its files change).
        self.web_config_source = (
            web_config_source if web_config_source is not None else WebConfigSource(web_config)
        )
        self.ssl_context: ssl.SSLContext | None = self.web_config_source.ssl_context()
        # POST /-/reload (None: --web.enable-lifecycle is off); returns why a reload was refused.
        self.reload = reload
        wanted = ([address] if address is not None else []) + list(addresses)
        listeners = [*bind_all(wanted), *sockets]
        if not listeners:
            raise ListenError("no address to listen on", address="")
        self._scrape_target = (self.route_prefix + telemetry_path).encode()
        self.connections = ConnectionServer(
            listeners,
            self.answer,
            is_scrape=self._is_scrape,
            ssl_context=self.ssl_context,
            ssl_contexts=self.web_config_source.ssl_context,
            limits=limits if limits is not None else ConnectionLimits(),
        )

    @property
    def web_config(self) -> WebConfig | None:
        """The web config to apply to a request now."""
        return self.web_config_source.current()

    @property
    def response_headers(self) -> dict[str, str]:
        """Headers added to every response (``http_server_config.headers``)."""
        web_config = self.web_config
        return web_config.response_headers if web_config is not None else {}

    @property
    def server_address(self) -> tuple[str, int]:
        """The first listening socket's address (host, port)."""
        host, port = self.connections.listeners[0].getsockname()[:2]
        return str(host), int(port)

    @property
    def urls(self) -> list[str]:
        """The base URL of every listening socket, e.g. ``http://127.0.0.1:9907``."""
        scheme = "https" if self.ssl_context is not None else "http"
        urls = []
        for listener in self.connections.listeners:
            host, port = listener.getsockname()[:2]
            host = str(host)
            urls.append(f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}")
        return urls

    @property
    def url(self) -> str:
        """The first listening socket's base URL (see :attr:`urls`)."""
        return self.urls[0]

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until :meth:`stop` (``poll_interval`` is accepted for compatibility, unused)."""
        self.connections.serve_forever()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight; False if ``timeout`` passed first."""
        return self.connections.wait_idle(timeout)

    def stop(self, grace_seconds: float = 10.0) -> bool:
        """Stop accepting, close idle connections, wait for requests in flight, close.

        Must be called from another thread than the one in ``serve_forever()``. Returns
        whether every request in flight finished within ``grace_seconds``.
        """
        return self.connections.stop(grace_seconds)

    def answer(self, request: Request) -> Answer:
        """Answer one request (in a worker thread)."""
        return ExporterRequestHandler(request, self).answer()

    def _is_scrape(self, head: bytes) -> bool:
        words = head.split(b"\n", 1)[0].split()
        return len(words) > 1 and words[1].split(b"?", 1)[0] == self._scrape_target


class ExporterRequestHandler(BaseHTTPRequestHandler):
    """Routes one request, whose head the connection layer has read; see the module docstring.

    Not socketserver's life cycle: the handler reads the head from memory and writes the
    whole response to memory, which the connection layer sends.
    """

    protocol_version = "HTTP/1.1"
    server_version = f"aliyun-cloudassistant-exporter/{__version__}"

    def __init__(self, request: Request, exporter: ExporterHTTPServer) -> None:
        # BaseRequestHandler.__init__ would serve a socket; set up what handle_one_request uses.
        self.exporter = exporter
        self.received = request.received
        self.client_address = (request.client, 0)
        self.rfile = io.BytesIO(request.head)
        self._output = io.BytesIO()
        self.wfile = self._output
        self._body: Body = ()  # a large body, sent after _output as it is (SEPARATE_BODY_BYTES)
        self.close_connection = True

    def answer(self) -> Answer:
        """Parse the head, route it and return the response."""
        self.handle_one_request()
        headers = getattr(self, "headers", None)
        if headers is not None and (
            headers.get("Content-Length", "0").strip() not in ("", "0")
            or "Transfer-Encoding" in headers
        ):
            # Bodies are never read: what follows the head is not the next request.
            self.close_connection = True
        return Answer(
            self._output.getvalue(), keep_alive=not self.close_connection, body=self._body
        )

    def version_string(self) -> str:
        # The default appends the Python version after a space (or a trailing space).
        return self.server_version

    def do_GET(self) -> None:
        self._dispatch(send_body=True)

    def do_HEAD(self) -> None:
        self._dispatch(send_body=False)

    def _method_not_allowed(self) -> None:
        if self._authorized(send_body=True):
            self._send(
                HTTPStatus.METHOD_NOT_ALLOWED,
                b"Method Not Allowed\n",
                headers={"Allow": ALLOWED_METHODS},
            )

    do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _method_not_allowed

    def do_POST(self) -> None:
        if self._is_reload():
            self._reload()
        else:
            self._method_not_allowed()

    do_PUT = do_POST

    def _is_reload(self) -> bool:
        return self.path.split("?", 1)[0] == self.exporter.route_prefix + "/-/reload"

    def _reload(self) -> None:
        if not self._authorized(send_body=True):
            return
        reload = self.exporter.reload
        if reload is None:  # Prometheus' answer and words
            self._send(HTTPStatus.FORBIDDEN, b"Lifecycle API is not enabled.\n")
            return
        refused = reload("http")
        if refused is None:
            self._send(HTTPStatus.OK, b"")
        else:
            body = f"failed to reload config: {refused}\n".encode("utf-8", "replace")
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, body)

    def _dispatch(self, *, send_body: bool) -> None:
        if not self._authorized(send_body=send_body):
            return
        if self._is_reload():
            self._send(
                HTTPStatus.METHOD_NOT_ALLOWED,
                b"Only POST or PUT requests allowed\n",
                headers={"Allow": LIFECYCLE_METHODS},
                send_body=send_body,
            )
            return
        path = self.path.split("?", 1)[0]
        prefix = self.exporter.route_prefix
        routes: dict[str, Callable[[bool], None]] = {
            prefix + self.exporter.telemetry_path: self._metrics,
            prefix + "/": self._landing_page,
            prefix + "/-/healthy": self._healthy,
            prefix + "/-/ready": self._ready,
        }
        if prefix and path in ("/", prefix):
            # As Prometheus does: the root and the bare prefix lead to the landing page.
            self._send(
                HTTPStatus.FOUND,
                b"Found\n",
                headers={"Location": prefix + "/"},
                send_body=send_body,
            )
            return
        route = routes.get(path)
        if route is None:
            self._send(HTTPStatus.NOT_FOUND, b"Not Found\n", send_body=send_body)
            return
        try:
            route(send_body)
        except Exception as exc:
            log.error(
                "error while answering a request",
                extra={"path": path[:_MAX_LOGGED_PATH], "err": describe_exception(exc)},
            )
            # Whatever was written before the exception is not sent.
            self._output.seek(0)
            self._output.truncate()
            self._body = ()
            self._headers_buffer: list[bytes] = []
            self._send(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                b"Internal Server Error\n",
                send_body=send_body,
            )

    def _authorized(self, *, send_body: bool) -> bool:
        web_config = self.exporter.web_config
        prefix = self.exporter.route_prefix
        # auth_excluded_paths may name a path with the route prefix or without it.
        under_prefix = self.path[len(prefix) :] if prefix else self.path
        if web_config is None or not (
            web_config.auth_required_for(self.path)
            and (
                not self.path.startswith(prefix + "/") or web_config.auth_required_for(under_prefix)
            )
        ):
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
            self.headers.get(SCRAPE_TIMEOUT_HEADER), self.exporter.scrape_max_wait
        )
        # Time spent queued for a worker counts: the answer is due by Prometheus' deadline.
        self.exporter.prepare_scrape(max(0.0, self.received + max_wait - time.monotonic()))
        compress = gzip_accepted(self.headers.get("Accept-Encoding", ""))
        body, content_type = self.exporter.exposition.render(
            self.headers.get("Accept", ""), time.monotonic(), compress=compress
        )
        headers = {"Content-Encoding": "gzip"} if compress else {}
        self._send(
            HTTPStatus.OK, body, content_type=content_type, headers=headers, send_body=send_body
        )

    def _healthy(self, send_body: bool) -> None:
        self._send(HTTPStatus.OK, b"Healthy\n", send_body=send_body)

    def _ready(self, send_body: bool) -> None:
        statuses = self.exporter.target_statuses()
        waiting = [status for status in statuses if status.up is None]
        if waiting:
            body = f"Not ready: {len(waiting)} of {len(statuses)} targets not refreshed yet\n"
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, body.encode(), send_body=send_body)
        else:
            self._send(HTTPStatus.OK, b"Ready\n", send_body=send_body)

    def _landing_page(self, send_body: bool) -> None:
        page = render_landing_page(
            self.exporter.telemetry_path,
            self.exporter.target_statuses(),
            shard_summary=self.exporter.shard_summary(),
        )
        self._send(
            HTTPStatus.OK,
            page.encode(),
            content_type="text/html; charset=utf-8",
            send_body=send_body,
        )

    def _send(
        self,
        status: HTTPStatus,
        body: bytes | Body,
        *,
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
        send_body: bool = True,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        pieces = (body,) if isinstance(body, bytes) else body
        length = sum(len(piece) for piece in pieces)
        self.send_header("Content-Length", str(length))
        extra_headers = dict(self.exporter.response_headers)
        extra_headers.update(headers or {})
        for name, value in extra_headers.items():
            self.send_header(name, value)
        self.end_headers()
        if send_body and length > SEPARATE_BODY_BYTES:
            self._body = pieces
        elif send_body:
            self.wfile.writelines(pieces)  # one write (and one packet) for a small answer

    def log_message(self, format: str, *args: Any) -> None:
        # Access logs only at debug: Prometheus scrapes every few seconds.
        log.debug(format % args, extra={"client": self.client_address[0]})


def _format_time(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="seconds")


def render_landing_page(
    telemetry_path: str, statuses: Sequence[TargetStatus], *, shard_summary: str = ""
) -> str:
    """The HTML of ``/``: links to the endpoints (relative) and one row per target (of this
    shard, which ``shard_summary`` describes when sharded)."""
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
            status.first_walk or "-",
            _format_time(status.last_success_time),
            status.last_error or "-",
            status.last_error_detail or "-",
        )
        rows.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>")
    # Relative links, so the page works behind a reverse proxy's path prefix and under
    # --web.route-prefix: the page is served at PREFIX/, so "metrics" is PREFIX/metrics.
    path = html.escape(telemetry_path.lstrip("/"), quote=True)
    table_rows = "\n".join(rows) or '<tr><td colspan="8">no targets</td></tr>'
    shard = f"<p>Sharded: {html.escape(shard_summary)}</p>\n" if shard_summary else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Alibaba Cloud Assistant exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;text-align:left}}
tr:nth-child(even){{background:#f2f2f2}}</style></head>
<body>
<h1>Alibaba Cloud ECS Cloud Assistant exporter</h1>
<p>Version {html.escape(__version__)}</p>
<ul>
<li><a href="{path}">Metrics</a></li>
<li><a href="-/healthy">Health</a></li>
<li><a href="-/ready">Readiness</a></li>
</ul>
<h2>Targets</h2>
{shard}<table>
<tr><th>account</th><th>region</th><th>up</th><th>results in view</th><th>first walk</th>
<th>last successful refresh</th><th>last error</th><th>detail</th></tr>
{table_rows}
</table>
</body>
</html>
"""
