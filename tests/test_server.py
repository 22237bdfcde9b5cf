"""The HTTP endpoints, over real loopback HTTP, and graceful shutdown."""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import gzip
import http.client
import json
import os
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import bcrypt
import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from exporter import __version__
from exporter.connections import (
    WRITE_CHUNK_BYTES,
    Answer,
    ConnectionLimits,
    ConnectionServer,
    chunks,
)
from exporter.server import (
    SCRAPE_TIMEOUT_MARGIN_SECONDS,
    SEPARATE_BODY_BYTES,
    ExporterHTTPServer,
    TargetStatus,
    scrape_wait_seconds,
)
from exporter.webconfig import WebConfig, load_web_config
from exporter.workers import WorkerPool
from tests import exporter_process
from tests.conftest import StartExporter
from tests.exporter_process import UNREACHABLE_API, ExporterProcess
from tests.support.tls import self_signed

UP = TargetStatus(
    "prod", "cn-hangzhou", True, 1_767_225_600.0, "", results_in_view=812, first_walk="done"
)
DOWN = TargetStatus(
    "<b>lab</b>",
    "cn-beijing",
    False,
    None,
    "throttled",
    last_error_detail="Throttling.User: Request was denied due to user flow control. (HTTP 400)",
    first_walk="reading: 3 pages, 150 results so far",
)
PENDING = TargetStatus("new", "eu-central-1", None, None, "")


class GaugeCollector:
    """One gauge; ``fail`` makes the next collect() raise (a bug while rendering)."""

    def __init__(self) -> None:
        self.fail = False

    def collect(self) -> Iterable[Metric]:
        if self.fail:
            self.fail = False
            raise RuntimeError("render bug")
        gauge = GaugeMetricFamily("test_value", "A value.", labels=("account",))
        gauge.add_metric(("prod",), 42)
        return [gauge]


class Exporter:
    """A server on a free port with a controllable collector, statuses and scrape hook."""

    def __init__(
        self,
        web_config: WebConfig | None = None,
        *,
        address: tuple[str, int] | None = ("127.0.0.1", 0),
        addresses: Sequence[tuple[str, int]] = (),
        route_prefix: str = "",
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.collector = GaugeCollector()
        registry = CollectorRegistry()
        registry.register(self.collector)
        self.statuses: list[TargetStatus] = [UP, DOWN]
        self.shard = ""
        self.waits: list[float] = []
        self.hold: threading.Event | None = None
        self.server = ExporterHTTPServer(
            address,
            addresses=addresses,
            registry=registry,
            target_statuses=lambda: self.statuses,
            shard_summary=lambda: self.shard,
            prepare_scrape=self._prepare,
            scrape_max_wait=9.0,
            web_config=web_config,
            route_prefix=route_prefix,
            limits=limits,
        )
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.url = self.server.url

    def _prepare(self, max_wait: float) -> None:
        self.waits.append(max_wait)
        if self.hold is not None:
            self.hold.wait(10)

    def close(self) -> None:
        self.server.stop(grace_seconds=5)
        self.thread.join(5)


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    running = Exporter()
    yield running
    running.close()


def test_metrics_default_to_the_prometheus_text_format(exporter: Exporter) -> None:
    response = httpx.get(exporter.url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'test_value{account="prod"} 42.0' in response.text


def test_metrics_in_openmetrics_when_asked(exporter: Exporter) -> None:
    response = httpx.get(
        exporter.url + "/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0; charset=utf-8"},
    )
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


def test_metrics_are_gzipped_when_accepted(exporter: Exporter) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", _port(exporter))
    connection.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.getheader("Content-Encoding") == "gzip"
    assert b'test_value{account="prod"} 42.0' in gzip.decompress(body)


def test_head_has_headers_and_no_body(exporter: Exporter) -> None:
    response = httpx.head(exporter.url + "/metrics")
    assert response.status_code == 200
    assert int(response.headers["content-length"]) > 0
    assert response.content == b""


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_not_allowed(exporter: Exporter, method: str) -> None:
    response = httpx.request(method, exporter.url + "/metrics")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("path", ["/nope", "/metrics/extra", "/-/quit", "/-/reload/x"])
def test_unknown_paths_are_404(exporter: Exporter, path: str) -> None:
    assert httpx.get(exporter.url + path).status_code == 404


def test_healthy(exporter: Exporter) -> None:
    response = httpx.get(exporter.url + "/-/healthy")
    assert (response.status_code, response.text) == (200, "Healthy\n")


def test_ready_once_every_target_was_refreshed(exporter: Exporter) -> None:
    exporter.statuses = [UP, PENDING]
    response = httpx.get(exporter.url + "/-/ready")
    assert response.status_code == 503
    assert "1 of 2 targets" in response.text
    exporter.statuses = [UP, DOWN]
    assert httpx.get(exporter.url + "/-/ready").status_code == 200


def test_the_landing_page_says_which_shard_this_is_as_it_is_now(exporter: Exporter) -> None:
    assert "Sharded" not in httpx.get(exporter.url + "/").text
    exporter.shard = "shard 1 of 3 (counted from 0): 4 of 11 targets"
    assert "<p>Sharded: shard 1 of 3 (counted from 0): 4 of 11 targets</p>" in (
        httpx.get(exporter.url + "/").text
    )
    exporter.shard = "shard 1 of 3 (counted from 0): 5 of 12 targets"  # after a reload
    assert "5 of 12 targets" in httpx.get(exporter.url + "/").text


def test_landing_page_links_and_targets(exporter: Exporter) -> None:
    response = httpx.get(exporter.url + "/")
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = response.text
    # Relative, so they work under a route prefix or behind a proxy that strips one.
    for link in ('href="metrics"', 'href="-/healthy"', 'href="-/ready"'):
        assert link in page
    assert 'href="/' not in page
    assert (
        "<td>prod</td><td>cn-hangzhou</td><td>1</td><td>812</td><td>done</td>"
        "<td>2026-01-01T00:00:00+00:00</td>" in page
    )
    # A first walk that could not finish yet says how far it got (counting starts after it).
    assert "<td>reading: 3 pages, 150 results so far</td>" in page
    assert "<td>&lt;b&gt;lab&lt;/b&gt;</td>" in page  # escaped
    assert (
        "<td>throttled</td><td>Throttling.User: Request was denied due to user flow control. "
        "(HTTP 400)</td>" in page
    )


def test_a_render_exception_is_a_500_and_the_server_keeps_serving(exporter: Exporter) -> None:
    exporter.collector.fail = True
    assert httpx.get(exporter.url + "/metrics").status_code == 500
    assert httpx.get(exporter.url + "/metrics").status_code == 200


def test_the_scrape_waits_no_longer_than_prometheus_allows(exporter: Exporter) -> None:
    httpx.get(exporter.url + "/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": "4"})
    httpx.get(exporter.url + "/metrics")
    # Less the moment between the request's arrival and the wait (counted against it).
    expected = [4 - SCRAPE_TIMEOUT_MARGIN_SECONDS, 9.0]
    assert all(0 <= want - got < 0.1 for want, got in zip(expected, exporter.waits, strict=True))


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, 9.0),
        ("", 9.0),
        ("10", 9.0),
        ("5", 4.5),
        ("0.2", 0.0),
        ("soon", 9.0),
        ("nan", 9.0),
        ("-3", 9.0),
    ],
)
def test_scrape_wait_seconds(header: str | None, expected: float) -> None:
    assert scrape_wait_seconds(header, 9.0) == expected


def test_stop_lets_a_request_in_flight_finish(exporter: Exporter) -> None:
    exporter.hold = threading.Event()
    results: list[int] = []
    scrape = threading.Thread(
        target=lambda: results.append(httpx.get(exporter.url + "/metrics").status_code)
    )
    scrape.start()
    _wait_until(lambda: bool(exporter.waits))
    stopper = threading.Thread(target=exporter.server.stop, kwargs={"grace_seconds": 10})
    stopper.start()
    _wait_until(lambda: _refuses_connections(exporter))
    exporter.hold.set()
    scrape.join(10)
    stopper.join(10)
    assert results == [200]


# --- HTTP/1.1, listening, route prefix ------------------------------------------------------


def test_connections_are_kept_alive_and_the_server_header_is_clean(exporter: Exporter) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", _port(exporter), timeout=5)
    try:
        for path in ("/metrics", "/-/healthy", "/nope", "/metrics"):
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            assert response.version == 11
            assert response.getheader("Connection") != "close"
            assert response.getheader("Server") == f"aliyun-cloudassistant-exporter/{__version__}"
        local = connection.sock.getsockname()
        connection.request("GET", "/metrics")
        connection.getresponse().read()
        assert connection.sock.getsockname() == local  # the same TCP connection throughout
    finally:
        connection.close()


def test_a_request_with_a_body_is_answered_and_its_connection_closed(exporter: Exporter) -> None:
    with socket.create_connection(("127.0.0.1", _port(exporter)), timeout=5) as connection:
        # The body looks like a second request: it must not be served as one.
        body = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        connection.sendall(
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        answer = _read_until_closed(connection)
    assert answer.startswith(b"HTTP/1.1 405 ")
    assert answer.count(b"HTTP/1.1 ") == 1


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this host")


@needs_ipv6
@pytest.mark.parametrize("host", ["", "0.0.0.0", "::"])
def test_an_unspecified_host_serves_ipv4_and_ipv6(host: str) -> None:
    running = Exporter(address=(host, 0))
    try:
        port = _port(running)
        for url in (f"http://127.0.0.1:{port}", f"http://[::1]:{port}"):
            assert httpx.get(url + "/metrics", timeout=5).status_code == 200, url
    finally:
        running.close()


@needs_ipv6
def test_several_listen_addresses_are_all_served() -> None:
    running = Exporter(address=None, addresses=[("127.0.0.1", 0), ("::1", 0)])
    try:
        assert len(running.server.urls) == 2
        assert running.server.urls[1].startswith("http://[::1]:")
        for url in running.server.urls:
            assert httpx.get(url + "/-/healthy", timeout=5).status_code == 200, url
    finally:
        running.close()


@needs_ipv6
def test_an_ipv4_address_is_not_served_on_ipv6(exporter: Exporter) -> None:
    with socket.socket(socket.AF_INET6) as probe:
        probe.settimeout(2)
        with pytest.raises(ConnectionRefusedError):
            probe.connect(("::1", _port(exporter)))


@pytest.mark.parametrize("prefix", ["/exporter", "exporter/", "/a/b"])
def test_every_route_is_under_the_route_prefix(prefix: str) -> None:
    running = Exporter(route_prefix=prefix)
    base = running.url + "/" + prefix.strip("/")
    try:
        assert httpx.get(base + "/metrics").status_code == 200
        assert httpx.get(base + "/-/healthy").text == "Healthy\n"
        assert httpx.get(running.url + "/metrics").status_code == 404
        for path in ("/", "/" + prefix.strip("/")):
            response = httpx.get(running.url + path)
            assert response.status_code == 302
            assert response.headers["location"] == "/" + prefix.strip("/") + "/"
        page = httpx.get(base + "/")
        assert page.status_code == 200
        links = re.findall(r'href="([^"]+)"', page.text)
        assert len(links) == 3
        for link in links:  # relative: resolved against the page, each one works
            assert httpx.get(urljoin(base + "/", link)).status_code in (200, 503), link
    finally:
        running.close()


# --- limits: connections, deadlines --------------------------------------------------------


def test_a_slow_request_head_is_cut_at_the_deadline_however_it_trickles() -> None:
    running = Exporter(limits=ConnectionLimits(header_timeout=1.0))
    try:
        with socket.create_connection(("127.0.0.1", _port(running)), timeout=5) as slow:
            started = time.monotonic()
            closed_after = None
            for byte in b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 100:
                try:
                    slow.sendall(bytes([byte]))
                    time.sleep(0.1)  # slowloris: a byte now and then, never the whole head
                    if _closed(slow):
                        closed_after = time.monotonic() - started
                        break
                except OSError:
                    closed_after = time.monotonic() - started
                    break
            assert closed_after is not None
            assert 0.9 <= closed_after < 2.5
        assert httpx.get(running.url + "/metrics", timeout=5).status_code == 200
    finally:
        running.close()


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n", b" 414 "),
        (b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", b" 431 "),
    ],
    ids=["request-line", "headers"],
)
def test_a_request_head_beyond_the_limit_is_refused(
    exporter: Exporter, head: bytes, status: bytes
) -> None:
    assert len(head) > ConnectionLimits().max_header_bytes
    with socket.create_connection(("127.0.0.1", _port(exporter)), timeout=5) as connection:
        connection.sendall(head)
        answer = _read_until_closed(connection)
    assert status in answer.split(b"\r\n", 1)[0]
    assert httpx.get(exporter.url + "/metrics", timeout=5).status_code == 200


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_a_large_exposition_arrives_whole_on_a_kept_alive_connection(
    tmp_path: Path, tls: bool
) -> None:
    # Larger than SEPARATE_BODY_BYTES: sent after the head, not copied into one buffer first.
    def many() -> list[Metric]:
        gauge = GaugeMetricFamily("test_value", "A value.", labels=("account",))
        for n in range(20_000):
            gauge.add_metric((f"account{n}",), n)
        return [gauge]

    web_config, context = None, None
    if tls:
        cert_file, key_file = self_signed(tmp_path, "127.0.0.1")
        web_config_file = tmp_path / "web.yml"
        files = {"cert_file": str(cert_file), "key_file": str(key_file)}
        web_config_file.write_text(json.dumps({"tls_server_config": files}))
        web_config = load_web_config(web_config_file)
        context = ssl.create_default_context(cafile=str(cert_file))
        context.check_hostname = False
    running = Exporter(web_config=web_config)
    running.collector.collect = many  # type: ignore[method-assign]
    connection = (
        http.client.HTTPSConnection("127.0.0.1", _port(running), context=context, timeout=5)
        if tls
        else http.client.HTTPConnection("127.0.0.1", _port(running), timeout=5)
    )
    try:
        for _ in range(3):
            connection.request("GET", "/metrics")
            response = connection.getresponse()
            body = response.read()
            assert len(body) == int(response.getheader("Content-Length", "0")) > SEPARATE_BODY_BYTES
            assert body.count(b"\ntest_value{") == 20_000
    finally:
        connection.close()
        running.close()


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() -> None:
    running = Exporter(limits=ConnectionLimits(header_timeout=0.5, idle_timeout=1.0))
    try:
        with socket.create_connection(("127.0.0.1", _port(running)), timeout=5) as idle:
            idle.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
            assert idle.recv(65536).startswith(b"HTTP/1.1 200 ")
            started = time.monotonic()
            assert idle.recv(100) == b""  # blocks until the server closes it
            assert 0.9 <= time.monotonic() - started < 2.5
    finally:
        running.close()


def test_beyond_the_connection_cap_the_longest_idle_are_closed_and_scrapes_get_in() -> None:
    running = Exporter(limits=ConnectionLimits(max_connections=20))
    address = ("127.0.0.1", _port(running))
    idle = [socket.create_connection(address, timeout=5) for _ in range(60)]
    try:
        _wait_until(lambda: running.server.connections.open_connections <= 20)
        started = time.monotonic()
        for _ in range(5):
            assert httpx.get(running.url + "/metrics", timeout=5).status_code == 200
        assert time.monotonic() - started < 2.0
        assert running.server.connections.open_connections <= 20
        # The oldest idle connections were closed to make room; the newest are still open.
        assert _closed(idle[0])
        assert not _closed(idle[-1])
    finally:
        for connection in idle:
            connection.close()
        running.close()


def test_a_flood_of_slow_landing_page_requests_leaves_room_for_scrapes() -> None:
    running = Exporter(limits=ConnectionLimits(max_connections=10, other_workers=1))
    release = threading.Event()

    def slow_statuses() -> list[TargetStatus]:
        release.wait(10)
        return [UP]

    running.server.target_statuses = slow_statuses
    address = ("127.0.0.1", _port(running))
    flood = [socket.create_connection(address, timeout=5) for _ in range(30)]
    try:
        for connection in flood:
            with contextlib.suppress(OSError):
                connection.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        _wait_until(lambda: running.server.connections.requests_in_flight >= 5)
        for _ in range(3):
            assert httpx.get(running.url + "/metrics", timeout=5).status_code == 200
    finally:
        release.set()
        for connection in flood:
            connection.close()
        running.close()


def test_when_every_connection_is_busy_a_new_one_is_closed_at_once() -> None:
    running = Exporter(limits=ConnectionLimits(max_connections=2))
    running.hold = threading.Event()
    address = ("127.0.0.1", _port(running))
    busy = [socket.create_connection(address, timeout=5) for _ in range(2)]
    try:
        for connection in busy:
            connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        _wait_until(lambda: len(running.waits) == 2)
        started = time.monotonic()
        with socket.create_connection(address, timeout=5) as refused:
            assert _read_until_closed(refused) == b""
        assert time.monotonic() - started < 1.0
        running.hold.set()
        for connection in busy:
            assert connection.recv(100).startswith(b"HTTP/1.1 200 ")
    finally:
        running.hold.set()
        for connection in busy:
            connection.close()
        running.close()


def test_the_worker_pool_runs_at_most_its_size_at_once_and_every_call() -> None:
    pool: WorkerPool[int] = WorkerPool(2, "test")
    running, most = 0, 0
    lock = threading.Lock()
    release = threading.Event()

    def call(number: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        release.wait(5)
        with lock:
            running -= 1
        return number

    futures = [pool.submit(functools.partial(call, number)) for number in range(6)]
    _wait_until(lambda: running == 2)
    release.set()
    assert [future.result(5) for future in futures] == list(range(6))
    assert most == 2


class OutOfDescriptors(socket.socket):
    """A listening socket whose accept() fails as in a process out of file descriptors."""

    accepts = 0

    def accept(self) -> tuple[socket.socket, Any]:
        OutOfDescriptors.accepts += 1
        raise OSError(errno.EMFILE, "Too many open files")


def test_out_of_file_descriptors_accepting_backs_off_instead_of_spinning() -> None:
    listener = OutOfDescriptors()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    server = ConnectionServer([listener], lambda request: Answer(b"", False), is_scrape=bool)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # A connection waits in the backlog: the listener stays readable the whole time.
    with socket.create_connection(listener.getsockname(), timeout=5):
        started = time.monotonic()
        _wait_until(lambda: OutOfDescriptors.accepts >= 1)
        while time.monotonic() - started < 1.5:  # the window in which accepts are counted
            time.sleep(0.05)
        # Back-off from 50 ms doubling: a handful of tries, where a busy loop makes thousands.
        assert 3 <= OutOfDescriptors.accepts <= 10
    server.stop(2)
    thread.join(5)


def test_a_scrape_queued_for_a_worker_waits_less() -> None:
    # Queue time counts against Prometheus' timeout: a scrape that waited 1 s for a worker
    # may wait 1 s less for refreshes.
    limits = ConnectionLimits(scrape_workers=1)
    running = Exporter(limits=limits)
    running.hold = threading.Event()
    try:
        headers = {"X-Prometheus-Scrape-Timeout-Seconds": "5"}
        results: list[int] = []
        scrapes = [
            threading.Thread(
                target=lambda: results.append(
                    httpx.get(running.url + "/metrics", headers=headers, timeout=10).status_code
                )
            )
            for _ in range(2)
        ]
        for scrape in scrapes:
            scrape.start()
        _wait_until(lambda: running.server.connections.requests_in_flight == 2)
        assert len(running.waits) == 1
        time.sleep(1.0)  # the time the second scrape spends queued (what is under test)
        running.hold.set()
        for scrape in scrapes:
            scrape.join(10)
        assert results == [200, 200]
        first, second = running.waits
        assert first == pytest.approx(4.5, abs=0.1)
        assert second <= 3.6
    finally:
        running.hold.set()
        running.close()


# --- basic auth and TLS ------------------------------------------------------------------------


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def exporter_with_auth() -> Iterator[Exporter]:
    password_hash = bcrypt.hashpw(b"s3cret-pass", bcrypt.gensalt(rounds=4)).decode()
    config = WebConfig.model_validate({"basic_auth_users": {"prometheus": password_hash}})
    running = Exporter(web_config=config)
    yield running
    running.close()


@pytest.mark.parametrize("path", ["/metrics", "/", "/-/healthy", "/-/ready", "/nope"])
@pytest.mark.parametrize(
    "headers",
    [{}, _basic("prometheus", "wrong"), _basic("nobody", "s3cret-pass"), {"Authorization": "x"}],
    ids=["none", "bad-password", "unknown-user", "malformed"],
)
def test_basic_auth_is_required_everywhere(
    exporter_with_auth: Exporter, path: str, headers: dict[str, str]
) -> None:
    response = httpx.get(exporter_with_auth.url + path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic ")


def test_basic_auth_with_the_right_password(exporter_with_auth: Exporter) -> None:
    response = httpx.get(
        exporter_with_auth.url + "/metrics", headers=_basic("prometheus", "s3cret-pass")
    )
    assert response.status_code == 200


def test_probes_can_be_excluded_from_basic_auth() -> None:
    password_hash = bcrypt.hashpw(b"s3cret-pass", bcrypt.gensalt(rounds=4)).decode()
    config = WebConfig.model_validate(
        {
            "basic_auth_users": {"prometheus": password_hash},
            "auth_excluded_paths": ["/-/healthy", "/-/ready"],
        }
    )
    running = Exporter(web_config=config)
    try:
        assert httpx.get(running.url + "/-/healthy").status_code == 200
        assert httpx.get(running.url + "/-/ready?verbose=1").status_code in (200, 503)
        assert httpx.get(running.url + "/metrics").status_code == 401
    finally:
        running.close()


@pytest.mark.parametrize("excluded", ["/-/healthy", "/x/-/healthy"])
def test_auth_excluded_paths_apply_under_a_route_prefix(excluded: str) -> None:
    password_hash = bcrypt.hashpw(b"s3cret-pass", bcrypt.gensalt(rounds=4)).decode()
    config = WebConfig.model_validate(
        {"basic_auth_users": {"prometheus": password_hash}, "auth_excluded_paths": [excluded]}
    )
    running = Exporter(web_config=config, route_prefix="/x")
    try:
        assert httpx.get(running.url + "/x/-/healthy").status_code == 200
        assert httpx.get(running.url + "/x/metrics").status_code == 401
        assert httpx.get(running.url + "/x/-/ready").status_code == 401
    finally:
        running.close()


def _tls_exporter(tmp_path: Path) -> tuple[Exporter, Path]:
    """An exporter serving HTTPS with a self-signed certificate for 127.0.0.1, and that
    certificate's file."""
    cert_file, key_file = self_signed(tmp_path, "127.0.0.1")
    web_config_file = tmp_path / "web.yml"
    web_config_file.write_text(
        json.dumps({"tls_server_config": {"cert_file": str(cert_file), "key_file": str(key_file)}})
    )
    return Exporter(web_config=load_web_config(web_config_file)), cert_file


@pytest.mark.parametrize(
    "sizes",
    [[], [0], [10] * 20, [100, 70_000, 5, 131_072, 65_536, 1], [30_000] * 10 + [200_000]],
)
def test_a_body_is_sent_in_chunks_that_make_it_whole(sizes: list[int]) -> None:
    pieces = [bytes([n % 256]) * size for n, size in enumerate(sizes)]
    sent = list(chunks(pieces, WRITE_CHUNK_BYTES))
    assert b"".join(sent) == b"".join(pieces)
    assert all(0 < len(chunk) < 2 * WRITE_CHUNK_BYTES for chunk in sent)
    # A large piece is sent as slices of it, not copies.
    slices = [chunk for chunk in sent if isinstance(chunk, memoryview)]
    assert bool(slices) == any(size >= WRITE_CHUNK_BYTES for size in sizes)
    assert all(any(chunk.obj is piece for piece in pieces) for chunk in slices)


def _rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.parametrize("gzip_wanted", [False, True])
def test_clients_that_do_not_read_hold_no_copy_of_the_exposition(gzip_wanted: bool) -> None:
    # 100 such clients of a 300-target fleet (8 MB of text) took the exporter from 77 MB to
    # 478 MB: each connection's transport copied what the socket did not take.
    line = b'test_value{account="' + b"a" * 1000 + b'"} 1\n'
    pieces = [line] * 8192  # 8 MB to send, 1 kB held by the test: any copy shows in the RSS
    served = ExporterHTTPServer(
        ("127.0.0.1", 0),
        registry=CollectorRegistry(),
        target_statuses=list,
        render_metrics=lambda accept: (pieces, "text/plain; version=0.0.4"),
        data_version=lambda: [pieces],  # one rendering for every scrape, as in the exporter
    )
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    port = served.server_address[1]
    clients: list[socket.socket] = []
    try:
        accept = b"Accept-Encoding: gzip\r\n" if gzip_wanted else b""
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + accept + b"\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as first:
            first.sendall(request)  # renders (and compresses) the body before the others
            assert first.recv(12) == b"HTTP/1.1 200"
            before = _rss_bytes()
            for _ in range(20):
                client = socket.socket()
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                client.settimeout(10)
                client.connect(("127.0.0.1", port))
                client.sendall(request)
                clients.append(client)
            for client in clients:
                assert client.recv(12) == b"HTTP/1.1 200"  # the answer is being sent
            # Every connection holds at most a chunk (64 kB) of the body, not a copy of it.
            assert _rss_bytes() - before < 16 * 2**20
        # A client that does read gets the whole body.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as reader:
            reader.sendall(request.replace(b"HTTP/1.1", b"HTTP/1.0"))
            answer = b""
            while chunk := reader.recv(1 << 20):
                answer += chunk
        body = answer.partition(b"\r\n\r\n")[2]
        assert (gzip.decompress(body) if gzip_wanted else body) == line * 8192
    finally:
        for client in clients:
            client.close()
        served.stop(grace_seconds=5)
        thread.join(5)


def test_tls_serves_https_and_a_bad_handshake_does_not_stop_it(tmp_path: Path) -> None:
    running, cert_file = _tls_exporter(tmp_path)
    try:
        assert running.url.startswith("https://")
        with socket.create_connection(("127.0.0.1", _port(running))) as plain:
            plain.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")  # forgot https://
            answer = plain.recv(1000)
        assert answer.startswith(b"HTTP/1.0 400 Bad Request\r\n")
        assert answer.endswith(b"Client sent an HTTP request to an HTTPS server.\n")
        with socket.create_connection(("127.0.0.1", _port(running))) as garbage:
            garbage.sendall(b"\x00\x01\x02 not a TLS record")  # the server hangs up
            with contextlib.suppress(ConnectionResetError):
                assert not garbage.recv(100).startswith(b"HTTP/")
        context = ssl.create_default_context(cafile=str(cert_file))
        context.check_hostname = False
        response = httpx.get(running.url + "/metrics", verify=context)
        assert response.status_code == 200
        assert "test_value" in response.text
        # Keep-alive over TLS: one handshake for several scrapes.
        tls = http.client.HTTPSConnection("127.0.0.1", _port(running), context=context, timeout=5)
        try:
            for _ in range(3):
                tls.request("GET", "/metrics")
                assert tls.getresponse().read().count(b"test_value") >= 1
            local = tls.sock.getsockname()
            tls.request("GET", "/-/healthy")
            assert tls.getresponse().read() == b"Healthy\n"
            assert tls.sock.getsockname() == local
        finally:
            tls.close()
    finally:
        running.close()


def test_over_tls_an_answer_is_sent_and_closed_at_once(tmp_path: Path) -> None:
    # The answer's drain() waited for the client's next bytes (or the 30 s write timeout): a
    # "Connection: close" answer stayed open 30 s, keep-alive connections were dropped after
    # 30 s instead of the idle timeout, and a stop waited for the whole grace period.
    running, cert_file = _tls_exporter(tmp_path)
    try:
        context = ssl.create_default_context(cafile=str(cert_file))
        context.check_hostname = False
        with (
            socket.create_connection(("127.0.0.1", _port(running)), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            started = time.monotonic()
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
            assert time.monotonic() - started < 5  # the end of the stream, well before 30 s
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert answer.endswith(b"Healthy\n")
    finally:
        running.close()


# --- a real process ----------------------------------------------------------------------------


def test_sigterm_stops_a_real_exporter_cleanly(start_exporter: StartExporter) -> None:
    exporter = start_exporter(
        [],
        env=UNREACHABLE_API,
    )
    assert httpx.get(exporter.url + "/-/healthy").status_code == 200
    assert exporter.stop() == 0
    assert "msg=stopped" in exporter.log_text()
    assert "Traceback" not in exporter.log_text()
    assert "Sup3rS3cretValue-DoNotLeak" not in exporter.log_text()


def _started(args: Sequence[str], **options: Any) -> ExporterProcess:
    return exporter_process.start(args, UNREACHABLE_API, **options)


@needs_ipv6
def test_a_real_exporter_on_an_unspecified_host_serves_ipv4_and_ipv6() -> None:
    exporter = _started(["--web.listen-address", ":0"], listen_address=None)
    try:
        port = exporter.url.rsplit(":", 1)[1]
        for url in (f"http://127.0.0.1:{port}", f"http://[::1]:{port}"):
            assert httpx.get(url + "/-/healthy", timeout=5).status_code == 200, url
    finally:
        exporter_process.stop_all([exporter])


@needs_ipv6
def test_a_real_exporter_listens_on_every_listen_address() -> None:
    exporter = _started(["--web.listen-address", "[::1]:0"])
    try:
        _wait_until(lambda: len(exporter.lines("listening")) == 2)
        urls = [exporter_process.listening_url(line) or "" for line in exporter.lines("listening")]
        assert urls[0].startswith("http://127.0.0.1:")
        assert urls[1].startswith("http://[::1]:")
        for url in urls:
            assert httpx.get(url + "/-/healthy", timeout=5).status_code == 200, url
    finally:
        exporter_process.stop_all([exporter])


def test_a_real_exporter_takes_its_socket_from_systemd() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def as_fd_3() -> None:  # where systemd puts the first socket
            os.dup2(listener.fileno(), 3)

        exporter = _started(
            ["--web.systemd-socket"],
            listen_address=None,
            # LISTEN_PID must be the exporter's: the shell's, which exec keeps.
            wrapper=["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"', "sh"],
            preexec_fn=as_fd_3,
            pass_fds=(3,),
        )
    try:
        assert exporter.url == f"http://127.0.0.1:{port}"
        assert httpx.get(exporter.url + "/metrics", timeout=5).status_code == 200
    finally:
        exporter_process.stop_all([exporter])


def test_without_a_socket_from_systemd_the_exporter_exits_1_with_one_line() -> None:
    result = exporter_process.run_cli(["--web.systemd-socket"], UNREACHABLE_API)
    assert result.code == 1
    [line] = result.stderr.splitlines()
    assert 'msg="cannot listen"' in line
    assert "systemd passed no socket" in line


def test_a_real_exporter_under_an_external_url_and_without_exporter_metrics() -> None:
    exporter = _started(
        [
            "--web.external-url",
            "https://proxy.example/monitoring/ca/",
            "--web.disable-exporter-metrics",
        ]
    )
    try:
        base = exporter.url + "/monitoring/ca"
        metrics = httpx.get(base + "/metrics", timeout=5)
        assert metrics.status_code == 200
        assert "aliyun_cloudassistant_up{" in metrics.text
        assert "process_" not in metrics.text
        assert "python_info" not in metrics.text
        assert httpx.get(exporter.url + "/metrics", timeout=5).status_code == 404
        assert httpx.get(exporter.url + "/", timeout=5).headers["location"] == "/monitoring/ca/"
    finally:
        exporter_process.stop_all([exporter])


def test_a_real_exporter_has_exporter_metrics_by_default(start_exporter: StartExporter) -> None:
    exporter = start_exporter([], env=UNREACHABLE_API)
    text = httpx.get(exporter.url + "/metrics", timeout=5).text
    assert "process_cpu_seconds_total" in text
    assert "python_info" in text


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--web.route-prefix", "/a?b", "no query"),
        ("--web.route-prefix", "/caf\u00e9", "ASCII"),
        ("--web.route-prefix", "/a b", "no spaces"),
        # Clients resolve dot segments before sending: routes there could never be reached.
        ("--web.route-prefix", "../..", "no . or .. segment"),
        ("--web.route-prefix", "/a/./b", "no . or .. segment"),
        ("--web.external-url", "https://proxy.example/a/../b", "no . or .. segment"),
        ("--web.external-url", "proxy.example/x", "absolute http(s) URL"),
        ("--web.max-connections", "0", "at least 1"),
    ],
)
def test_bad_web_flags_are_one_clear_error(flag: str, value: str, expected: str) -> None:
    result = exporter_process.run_cli([flag, value], UNREACHABLE_API)
    assert result.code == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


# --- helpers -----------------------------------------------------------------------------------


def _port(exporter: Exporter) -> int:
    return int(exporter.server.server_address[1])


def _closed(connection: socket.socket) -> bool:
    """Whether the server closed ``connection`` (without waiting for it to)."""
    readable, _, _ = select.select([connection], [], [], 0.2)
    if not readable:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _read_until_closed(connection: socket.socket) -> bytes:
    answer = b""
    try:
        while chunk := connection.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass
    return answer


def _refuses_connections(exporter: Exporter) -> bool:
    try:
        socket.create_connection(("127.0.0.1", _port(exporter)), timeout=0.5).close()
    except OSError:
        return True
    return False


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
