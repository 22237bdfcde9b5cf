"""Robustness of the real exporter process: bad input, failing APIs, hostile clients, shutdown.

The bar: a clear error for every bad input, never a traceback, never a crash that takes
``/metrics`` down, never a secret in a log line, a metric, a page or an error message. Each test
runs ``python -m exporter`` (or ``exporter.cli.main``) and greps everything it printed and served.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from exporter.cli import main
from exporter.connections import ConnectionLimits
from exporter.logs import REDACTOR, configure_logging, log_uncaught_exceptions
from exporter.server import ExporterHTTPServer
from exporter.simulator.faults import ALL_FAULT_KINDS, FaultPlan
from exporter.simulator.server import Account, SimulatorServer
from exporter.simulator.world import ManualClock, World, WorldSpec
from tests import exporter_process
from tests.conftest import StartExporter
from tests.exporter_process import PROJECT_ROOT, ExporterProcess, run_cli, taken_loopback_port
from tests.exposition import PREFIX, Samples, parse_samples, sample_key
from tests.support.http_fakes import FakeMetadataServer, FakeStsServer

REGION = "cn-hangzhou"
KEY_ID = "LTAI5tKey"  # the AccessKey ID of the targets start_reading configures

# Every secret the tests hand to the exporter; none may ever come out of it.
CONFIG_SECRET = "config-secret-0f1e2d3c4b5a"
CONFIG_TOKEN = "config-sts-token-a1b2c3d4e5f6"
FILE_SECRET = "file-secret-6a7b8c9d0e1f"
FILE_TOKEN = "file-sts-token-f6e5d4c3b2a1"
ENV_SECRET = "env-secret-1122334455aa"
ENV_TOKEN = "env-sts-token-ffeeddccbbaa"
SECRETS = (CONFIG_SECRET, CONFIG_TOKEN, FILE_SECRET, FILE_TOKEN, ENV_SECRET, ENV_TOKEN)


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get(sample_key(name, **labels))


def refreshes(samples: Samples, account: str) -> float:
    return value(samples, "refreshes_total", account=account, region_id=REGION) or 0.0


def scrape_until(
    url: str, condition: Callable[[Samples], bool], timeout: float = 15.0
) -> tuple[Samples, str]:
    """Scrape until ``condition`` holds; each scrape must answer 200 within 3 s."""
    deadline = time.monotonic() + timeout
    while True:
        started = time.monotonic()
        response = httpx.get(url + "/metrics", timeout=10)
        assert response.status_code == 200
        assert time.monotonic() - started < 3.0, "a scrape took too long"
        samples = parse_samples(response.text)
        if condition(samples):
            return samples, response.text
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def assert_clean(text: str) -> None:
    """No traceback and no secret in ``text``."""
    assert "Traceback" not in text
    assert 'File "' not in text
    for secret in SECRETS:
        assert secret not in text


def static(key_id: str, secret: str = CONFIG_SECRET, **more: str) -> dict[str, str]:
    return {"source": "static", "access_key_id": key_id, "access_key_secret": secret, **more}


def write_config(
    tmp_path: Path,
    targets: list[dict[str, Any]],
    *,
    api: Mapping[str, Any] | None = None,
    refresh: Mapping[str, Any] | None = None,
) -> Path:
    config = {
        "targets": targets,
        "refresh": {"min_interval_seconds": 0.1, "sweep_interval_seconds": 0, **(refresh or {})},
        "api": {
            "max_attempts": 2,
            "timeout_seconds": 0.5,
            "deadline_seconds": 1.0,
            "rate_limit_per_second": 1000,
            "max_results": 5,
            **(api or {}),
        },
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def start_reading(
    start_exporter: StartExporter,
    tmp_path: Path,
    simulator: SimulatorServer,
    names: Sequence[str] = ("prod",),
    *,
    api: Mapping[str, Any] | None = None,
) -> ExporterProcess:
    """An exporter with one target per name in ``REGION``, each reading ``simulator`` with
    ``KEY_ID`` and ``CONFIG_SECRET``."""
    targets: list[dict[str, Any]] = [
        {
            "name": name,
            "region_id": REGION,
            "endpoint": simulator.url,
            "credentials": static(KEY_ID),
        }
        for name in names
    ]
    return start_exporter(["--config.file", str(write_config(tmp_path, targets, api=api))])


def start_refreshed(
    start_exporter: StartExporter,
    tmp_path: Path,
    simulator: SimulatorServer,
    *,
    api: Mapping[str, Any] | None = None,
) -> ExporterProcess:
    """:func:`start_reading` with the one target ``prod``, once its first refresh is done."""
    exporter = start_reading(start_exporter, tmp_path, simulator, api=api)
    scrape_until(exporter.url, lambda s: refreshes(s, "prod") >= 1)
    return exporter


def one_default_target_config(tmp_path: Path) -> Path:
    """A valid config file with one target (default credentials), for tests of start-up."""
    config = tmp_path / "config.yml"
    config.write_text("targets: [{name: prod, region_id: cn-hangzhou}]\n", encoding="utf-8")
    return config


def host_and_port(url: str) -> tuple[str, int]:
    """The address an ``http://host:port`` URL names, for a raw socket."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


@pytest.fixture
def world() -> World:
    """A small, still world: 20 finished results (4 pages of 5 with ``api.max_results: 5``)."""
    clock = ManualClock(start=float(int(time.time())))
    world = World(seed=3, clock=clock, spec=WorldSpec(instances=10))
    for outcome in ("Success", "Failed"):
        world.add_invocation(10, outcome, at=clock.now() - 600, duration=5)
    return world


# --- API faults --------------------------------------------------------------------------------

# fault kind -> the reason of refresh_failures_total it must count (None: the refresh succeeds).
FAULT_REASONS: dict[str, str | None] = {
    "throttling_user": "throttled",
    "throttling_api": "throttled",
    "internal_error": "server",
    "service_unavailable": "server",
    "slow": "transport",
    "drop_connection": "transport",
    "malformed_json": "malformed",
    "truncated_body": "transport",
    "wrong_types": None,  # the bad record is skipped, the rest is served
    "invalid_next_token": "invalid_request",  # every token refused: no walk can finish
    # Hostile answers (tests/test_hostile_api.py checks what they must not do to the surfaces).
    "surrogate_records": None,
    "surrogate_error": "invalid_request",
    "huge_records": None,
    "long_error_code": "invalid_request",
    "echo_token": "auth",  # its Code starts with InvalidSecurityToken.
    # Every answer empty with a new NextToken: the walk gives up after so many in a row.
    "empty_page": "malformed",
}


def test_the_fault_table_covers_every_fault_of_the_simulator() -> None:
    assert set(FAULT_REASONS) == set(ALL_FAULT_KINDS)


@pytest.mark.parametrize("log_format", ["logfmt", "json"])
def test_every_api_fault_fails_only_its_target_and_nothing_leaks(
    tmp_path: Path, world: World, start_exporter: StartExporter, log_format: str
) -> None:
    """One target per fault kind (on every page), one failing on some pages only, three healthy
    ones whose secrets come from the config, secret files and the environment."""
    secret_file, token_file = tmp_path / "secret", tmp_path / "token"
    secret_file.write_text(FILE_SECRET + "\n", encoding="utf-8")
    token_file.write_text(FILE_TOKEN, encoding="utf-8")
    accounts: dict[str, str | Account] = {
        "LTAI5tConfigKey": Account(CONFIG_SECRET, sts=True, security_token=CONFIG_TOKEN),
        "LTAI5tFileKey": Account(FILE_SECRET, sts=True, security_token=FILE_TOKEN),
        "LTAI5tEnvKey": Account(ENV_SECRET, sts=True, security_token=ENV_TOKEN),
        "LTAI5tFlakyKey": CONFIG_SECRET,
    }
    faults = FaultPlan(seed=1)
    for kind in ALL_FAULT_KINDS:
        accounts[f"LTAI5t-{kind}"] = CONFIG_SECRET
        faults.always(kind, access_key_id=f"LTAI5t-{kind}", delay=0.5, retry_after_ms=50)
    # Some pages only: about one request in three fails, mid-walk as often as not.
    faults.always("internal_error", 0.3, access_key_id="LTAI5tFlakyKey")
    with SimulatorServer(world, accounts=accounts, faults=faults) as simulator:
        targets: list[dict[str, Any]] = [
            {
                "name": "config",
                "credentials": static("LTAI5tConfigKey", security_token=CONFIG_TOKEN),
            },
            {
                "name": "files",
                "credentials": {
                    "source": "static",
                    "access_key_id": "LTAI5tFileKey",
                    "access_key_secret_file": str(secret_file),
                    "security_token_file": str(token_file),
                },
            },
            {"name": "env", "credentials": {"source": "environment"}},
            {"name": "flaky", "credentials": static("LTAI5tFlakyKey")},
            *({"name": kind, "credentials": static(f"LTAI5t-{kind}")} for kind in ALL_FAULT_KINDS),
        ]
        for target in targets:
            target.update(region_id=REGION, endpoint=simulator.url)
        config = write_config(
            tmp_path,
            targets,
            api={"timeout_seconds": 0.2, "deadline_seconds": 0.5},
            # Connecting within 0.2 s on a busy machine: not twenty connections at once.
            refresh={"workers": 4},
        )
        env = {
            "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI5tEnvKey",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ENV_SECRET,
            "ALIBABA_CLOUD_SECURITY_TOKEN": ENV_TOKEN,
        }
        args = ["--config.file", str(config), "--log.level", "debug", "--log.format", log_format]
        exporter = start_exporter(args, env)
        names = [target["name"] for target in targets]
        working = ("config", "files", "env", *(k for k, r in FAULT_REASONS.items() if r is None))

        def up(samples: Samples, account: str) -> float | None:
            return value(samples, "up", account=account, region_id=REGION)

        def failures_of(samples: Samples, kind: str) -> dict[str, float]:
            return {
                dict(labels)["reason"]: count
                for (name, labels), count in samples.items()
                if name == PREFIX + "refresh_failures_total" and ("account", kind) in labels
            }

        # (A stray failure of a working target, e.g. a pooled connection the simulator closed,
        # is retried: the condition waits for every working target to be up. On a loaded
        # machine a faulty target's refresh may also time out (0.2 s) before its fault shows:
        # the condition waits for each fault's own reason twice.)
        samples, text = scrape_until(
            exporter.url,
            lambda s: (
                all(refreshes(s, name) >= 2 for name in names)
                and all(up(s, name) == 1 for name in working)
                and all(
                    failures_of(s, kind).get(reason, 0) >= 2
                    for kind, reason in FAULT_REASONS.items()
                    if reason is not None
                )
            ),
        )
        for kind, reason in FAULT_REASONS.items():
            failures = failures_of(samples, kind)
            if reason is None:
                assert failures["malformed"] == 0, kind  # the bad record did not fail a refresh
            else:
                assert up(samples, kind) == 0, kind
                assert failures[reason] >= 2, kind
        page = httpx.get(exporter.url + "/", timeout=5).text
        assert exporter.process.poll() is None
        # Stopped while the simulator still answers: nothing fails at shutdown.
        assert exporter.stop() == 0
    for kind, reason in FAULT_REASONS.items():
        if reason is not None:
            # One line per failed refresh, naming the target and the reason.
            failed = [line for line in exporter.lines("refresh failed") if kind in line]
            assert len([line for line in failed if reason in line]) >= 2, failed
    # The record with wrong field types is skipped, and said so.
    assert exporter.lines("skipped a record that could not be parsed")
    if log_format == "json":
        for line in exporter.log:
            json.loads(line)  # every line is one JSON object
    for output in (exporter.output(), text, page):
        assert_clean(output)


def test_fifty_concurrent_scrapes_while_every_refresh_is_failing(
    tmp_path: Path, world: World, start_exporter: StartExporter
) -> None:
    faults = FaultPlan()
    faults.always("slow", delay=0.3)
    with SimulatorServer(world, accounts={KEY_ID: CONFIG_SECRET}, faults=faults) as simulator:
        exporter = start_reading(
            start_exporter,
            tmp_path,
            simulator,
            ["t0", "t1", "t2"],
            api={"timeout_seconds": 0.2, "deadline_seconds": 0.5},
        )
        scrape_until(exporter.url, lambda s: refreshes(s, "t0") >= 1)

        def scrape(_: int) -> tuple[int, float, str]:
            # http.client: httpx.get builds a TLS context per call, and 50 of them at once
            # measured the test's own CPU more than the exporter.
            return timed_scrape(exporter.url, timeout=1.5)

        with ThreadPoolExecutor(max_workers=50) as pool:
            answers = list(pool.map(scrape, range(50)))
        assert {status for status, _, _ in answers} == {200}
        # Bounded by the scrape timeout (1.5 s - 0.5 s margin), plus time to answer 50 at once.
        assert max(duration for _, duration, _ in answers) < 3.0
        assert all(f'{PREFIX}up{{account="t0"' in text for _, _, text in answers)
        # Stopped while the simulator still answers: nothing fails at shutdown.
        assert exporter.stop() == 0
    assert_clean(exporter.output())


# --- credentials -------------------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nobody listens on (connection refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_failing_credential_sources_give_up_0_and_reason_credentials(
    tmp_path: Path, world: World, start_exporter: StartExporter
) -> None:
    role_arn = "acs:ram::1234567890123456:role/not-trusted"
    with (
        SimulatorServer(world, accounts={"LTAI5tBaseKey": CONFIG_SECRET}) as simulator,
        FakeMetadataServer(role_name=None) as no_role,
        FakeStsServer(access_keys={"LTAI5tBaseKey": CONFIG_SECRET}, roles={}) as sts,
    ):
        targets: list[dict[str, Any]] = [
            {
                "name": "metadata-down",
                "credentials": {
                    "source": "ecs_ram_role",
                    "metadata_url": f"http://127.0.0.1:{closed_port()}",
                },
            },
            {
                "name": "no-instance-role",
                "credentials": {"source": "ecs_ram_role", "metadata_url": no_role.url},
            },
            {
                "name": "sts-refuses",
                "credentials": static("LTAI5tBaseKey"),
                "assume_role": {"role_arn": role_arn, "sts_endpoint": sts.url},
            },
            {"name": "chain-finds-nothing", "credentials": {"source": "default"}},
        ]
        for target in targets:
            target.update(region_id=REGION, endpoint=simulator.url)
        exporter = start_exporter(["--config.file", str(write_config(tmp_path, targets))])
        names = [target["name"] for target in targets]
        samples, text = scrape_until(
            exporter.url, lambda s: all(refreshes(s, name) >= 2 for name in names)
        )
        for name in names:
            assert value(samples, "up", account=name, region_id=REGION) == 0, name
            failures = value(
                samples,
                "refresh_failures_total",
                account=name,
                region_id=REGION,
                reason="credentials",
            )
            assert failures is not None, name
            assert failures >= 2, name
        page = httpx.get(exporter.url + "/", timeout=5).text
        assert page.count("<td>credentials</td>") == len(names)
        assert simulator.served == []  # nothing was sent without credentials
        # Stopped while the simulator still answers: nothing fails at shutdown.
        assert exporter.stop() == 0
    for name in names:
        failed = [line for line in exporter.lines("refresh failed") if f"target={name}" in line]
        assert failed, name
        assert all("reason=credentials" in line for line in failed), name
        # Each says why, not only which class of failure: the four causes read differently.
        assert all('detail="' in line for line in failed), name
    messages = {
        name: {
            line.split('detail="', 1)[1].split('"', 1)[0]
            for line in exporter.lines("refresh failed")
            if f"target={name}" in line
        }
        for name in names
    }
    assert len({frozenset(found) for found in messages.values()}) == len(names), messages
    for output in (exporter.output(), text, page):
        assert_clean(output)


# --- shutdown ----------------------------------------------------------------------------------


def test_sigterm_during_a_refresh_stuck_on_a_slow_api_exits_promptly(
    tmp_path: Path, world: World, start_exporter: StartExporter
) -> None:
    faults = FaultPlan()
    with SimulatorServer(world, accounts={KEY_ID: CONFIG_SECRET}, faults=faults) as simulator:
        exporter = start_refreshed(
            start_exporter,
            tmp_path,
            simulator,
            api={"timeout_seconds": 30, "deadline_seconds": 60},
        )
        slow = faults.always("slow", delay=30)

        def scrape_until_stuck() -> None:
            # Each scrape starts a refresh when due and waits for it (up to 9 s by default).
            while slow.fired == 0:
                httpx.get(exporter.url + "/metrics", timeout=30)

        scraper = threading.Thread(target=scrape_until_stuck, daemon=True)
        scraper.start()
        deadline = time.monotonic() + 10
        while slow.fired == 0:  # until a refresh is waiting on the API
            assert time.monotonic() < deadline
            time.sleep(0.02)
        started = time.monotonic()
        code = exporter.stop(timeout=20)
        elapsed = time.monotonic() - started
        faults.clear()
    assert code == 0
    assert elapsed < 5.0, f"took {elapsed:.1f} s to stop:\n{exporter.output()}"
    assert exporter.lines("shutting down")
    assert exporter.lines("stopped")
    assert_clean(exporter.output())
    assert not [line for line in exporter.log if "level=error" in line]


def test_sigterm_with_silent_connections_open_exits_promptly(
    tmp_path: Path, world: World, start_exporter: StartExporter
) -> None:
    with SimulatorServer(world, accounts={KEY_ID: CONFIG_SECRET}) as simulator:
        exporter = start_refreshed(start_exporter, tmp_path, simulator)
        address = host_and_port(exporter.url)
        silent = [socket.create_connection(address) for _ in range(3)]
        silent[0].sendall(b"GET /metrics HTTP/1.0\r\n")  # half a request
        try:
            assert httpx.get(exporter.url + "/-/healthy", timeout=5).status_code == 200
            started = time.monotonic()
            code = exporter.stop(timeout=20)
            elapsed = time.monotonic() - started
        finally:
            for connection in silent:
                connection.close()
    assert code == 0
    # Not held up until the connections' timeout (or the 10 s grace period).
    assert elapsed < 3.0, exporter.output()
    assert not exporter.lines("requests still in flight at shutdown")
    assert_clean(exporter.output())


# --- the HTTP server ---------------------------------------------------------------------------


def test_the_server_has_bounded_connections_and_deadlines() -> None:
    # What each limit does is tested against the real process in test_server.py.
    limits = ConnectionLimits()
    assert 0 < limits.header_timeout <= 30
    assert limits.header_timeout < limits.idle_timeout <= 300
    assert 0 < limits.write_timeout <= 60
    assert 100 <= limits.max_connections <= 4096
    assert limits.scrape_workers >= 100  # 100 parallel scrapes never wait for a worker


def raw_request(url: str, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` as is and read the whole answer."""
    with socket.create_connection(host_and_port(url), timeout=timeout) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_hostile_and_clumsy_clients_do_not_disturb_scrapes(
    tmp_path: Path, world: World, start_exporter: StartExporter
) -> None:
    with SimulatorServer(world, accounts={KEY_ID: CONFIG_SECRET}) as simulator:
        exporter = start_reading(start_exporter, tmp_path, simulator)
        address = host_and_port(exporter.url)
        # Slowloris: connections that send nothing (or half a request) and stay open. Opened
        # all at once, they are accepted at once (no SYN dropped by a short listen backlog).
        started = time.monotonic()
        silent = [socket.create_connection(address) for _ in range(30)]
        assert time.monotonic() - started < 0.9
        for connection in silent[::2]:
            connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        try:
            scrape_until(exporter.url, lambda s: refreshes(s, "prod") >= 1)
            cases = {
                b"GET /" + b"a" * 70_000 + b" HTTP/1.0\r\n\r\n": b" 414 ",
                b"GET /metrics HTTP/1.0\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n": b" 431 ",
                b"GET /metrics HTTP/1.0\r\n" + b"X-Many: 1\r\n" * 200 + b"\r\n": b" 431 ",
                b"BREW /metrics HTTP/1.0\r\n\r\n": b" 501 ",
                b"DELETE /metrics HTTP/1.0\r\n\r\n": b" 405 ",
                b"GET /metrics HTTP/9.9\r\n\r\n": b" 505 ",
                b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n": b" 400 ",
                b"GET /%00%ff\xc3\xa9 HTTP/1.0\r\n\r\n": b" 404 ",
                b"GET /metrics?" + b"x=1&" * 1000 + b" HTTP/1.0\r\n\r\n": b" 200 ",
            }
            for request, status in cases.items():
                answer = raw_request(exporter.url, request)
                assert status in answer.split(b"\r\n", 1)[0], (request[:40], answer[:80])
            head = raw_request(exporter.url, b"HEAD /metrics HTTP/1.0\r\n\r\n")
            headers, _, body = head.partition(b"\r\n\r\n")
            assert b" 200 " in headers.split(b"\r\n", 1)[0]
            assert body == b""
            assert b"Python/" not in headers  # the Server header does not advertise it
            # Clients that hang up in the middle of a big answer.
            for _ in range(5):
                with socket.create_connection(address) as connection:
                    connection.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                    connection.recv(10)
            scrape_until(exporter.url, lambda s: True)
            assert httpx.get(exporter.url + "/-/healthy", timeout=5).status_code == 200
        finally:
            for connection in silent:
                connection.close()
        # Stopped while the simulator still answers: nothing fails at shutdown.
        assert exporter.stop() == 0
    assert_clean(exporter.output())
    assert not exporter.lines("error while answering a request")


def timed_scrape(url: str, timeout: float) -> tuple[int, float, str]:
    """One scrape as Prometheus sends it (its timeout in the header, a fresh connection):
    the status, how long it took and the body; status 0 when it failed."""
    host, port = host_and_port(url)
    started = time.monotonic()
    connection = http.client.HTTPConnection(host, port, timeout=timeout + 5)
    try:
        connection.request(
            "GET", "/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": str(timeout)}
        )
        response = connection.getresponse()
        body = response.read().decode()
        status = response.status
    except OSError:
        status, body = 0, ""
    finally:
        connection.close()
    return status, time.monotonic() - started, body


def threads_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("Threads:", 1)[1].split()[0])


def lower_fd_limit() -> None:
    """In the child: a 1,024 file-descriptor limit, as many hosts have."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def test_1100_idle_connections_under_a_1024_fd_limit_do_not_block_scrapes(
    tmp_path: Path, world: World
) -> None:
    with SimulatorServer(world, accounts={KEY_ID: CONFIG_SECRET}) as simulator:
        config = write_config(
            tmp_path,
            [
                {
                    "name": "prod",
                    "region_id": REGION,
                    "endpoint": simulator.url,
                    "credentials": static(KEY_ID),
                }
            ],
        )
        exporter = exporter_process.start(["--config.file", str(config)], preexec_fn=lower_fd_limit)
        idle: list[socket.socket] = []
        try:
            scrape_until(exporter.url, lambda s: refreshes(s, "prod") >= 1)
            address = host_and_port(exporter.url)
            for _ in range(1100):
                idle.append(socket.create_connection(address, timeout=5))
            for _ in range(5):
                status, duration, body = timed_scrape(exporter.url, timeout=3)
                assert status == 200
                assert duration < 3.0
                assert f'{PREFIX}up{{account="prod"' in body
            assert httpx.get(exporter.url + "/-/healthy", timeout=3).status_code == 200
            assert threads_of(exporter.process.pid) < 100  # idle connections cost no thread
        finally:
            for connection in idle:
                connection.close()
        assert exporter.stop() == 0
    assert_clean(exporter.output())
    assert not exporter.lines("error while answering a request")
    assert exporter.lines("too many connections: closing the ones waiting longest for a request")


def test_slowloris_connections_neither_delay_scrapes_nor_live_past_the_deadline(
    tmp_path: Path, world: World, start_exporter: StartExporter
) -> None:
    with SimulatorServer(world, accounts={KEY_ID: CONFIG_SECRET}) as simulator:
        exporter = start_refreshed(start_exporter, tmp_path, simulator)
        address = host_and_port(exporter.url)
        slow = [socket.create_connection(address, timeout=5) for _ in range(100)]
        head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: a\r\n" * 1000
        try:
            for offset in range(30):  # a byte per connection every 0.1 s, for 3 s
                for connection in slow:
                    with contextlib.suppress(OSError):
                        connection.send(head[offset : offset + 1])
                status, duration, _ = timed_scrape(exporter.url, timeout=1)
                assert (status, duration < 1.0) == (200, True)
                time.sleep(0.1)
        finally:
            for connection in slow:
                connection.close()
        assert exporter.stop() == 0
    assert_clean(exporter.output())


@pytest.mark.parametrize("scrapes", [100, 200])
def test_parallel_scrapes_during_a_slow_refresh_answer_within_the_timeout(
    tmp_path: Path, world: World, start_exporter: StartExporter, scrapes: int
) -> None:
    faults = FaultPlan()
    with SimulatorServer(world, accounts={KEY_ID: CONFIG_SECRET}, faults=faults) as simulator:
        exporter = start_refreshed(
            start_exporter,
            tmp_path,
            simulator,
            api={"timeout_seconds": 20, "deadline_seconds": 30},
        )
        slow = faults.always("slow", delay=10)
        deadline = time.monotonic() + 15
        while slow.fired == 0:  # until a refresh is stuck on the API
            assert time.monotonic() < deadline
            timed_scrape(exporter.url, timeout=0.6)

        def scrape(_: int) -> tuple[int, float, str]:
            return timed_scrape(exporter.url, timeout=2)

        with ThreadPoolExecutor(max_workers=scrapes) as pool:
            answers = list(pool.map(scrape, range(scrapes)))
        assert [status for status, _, _ in answers] == [200] * scrapes
        durations = sorted(duration for _, duration, _ in answers)
        assert durations[-1] < 2.0, durations[-10:]
        # The last snapshot, served while the refresh is stuck.
        assert all(
            f'{PREFIX}up{{account="prod",region_id="{REGION}"}} 1.0' in body
            for _, _, body in answers
        )
        faults.clear()
        assert exporter.stop(timeout=20) == 0
    assert_clean(exporter.output())


class BigCollector:
    """About 6 MB of exposition: more than the kernel's largest TCP send buffer (4 MB), so the
    server is still writing when the client resets the connection."""

    def collect(self) -> list[Metric]:
        gauge = GaugeMetricFamily("big_value", "A big family.", labels=("index",))
        for index in range(160_000):
            gauge.add_metric((str(index),), index)
        return [gauge]


@pytest.fixture
def captured_log() -> Iterator[io.StringIO]:
    """The root logger writing logfmt at debug level to a buffer, restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("debug", "logfmt", stream=stream)
    yield stream
    root.handlers = handlers
    root.setLevel(level)


def test_a_client_hanging_up_mid_answer_is_a_debug_line_not_an_error(
    captured_log: io.StringIO,
) -> None:
    registry = CollectorRegistry()
    registry.register(BigCollector())
    server = ExporterHTTPServer(("127.0.0.1", 0), registry=registry, target_statuses=list)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        host, port = server.server_address[:2]
        for _ in range(3):
            with socket.socket() as connection:
                # Before connecting, so the small window is what the server sees.
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                connection.connect((str(host), int(port)))
                connection.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                connection.recv(10)
                # Reset (not a clean close): the server's next write fails at once.
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        assert server.wait_idle(10)
        assert httpx.get(server.url + "/metrics", timeout=10).status_code == 200
    finally:
        server.stop(5)
        thread.join(5)
    log = captured_log.getvalue()
    assert "level=error" not in log
    assert "Traceback" not in log
    assert 'msg="client went away"' in log


def test_an_exception_while_answering_is_one_error_line_without_traceback(
    captured_log: io.StringIO,
) -> None:
    def broken_statuses() -> list[Any]:
        raise RuntimeError(f"bug holding {CONFIG_SECRET}")

    REDACTOR.add(CONFIG_SECRET)
    server = ExporterHTTPServer(
        ("127.0.0.1", 0), registry=CollectorRegistry(), target_statuses=broken_statuses
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        assert httpx.get(server.url + "/", timeout=5).status_code == 500
        assert httpx.get(server.url + "/-/healthy", timeout=5).status_code == 200
    finally:
        server.stop(5)
        thread.join(5)
    [line] = [line for line in captured_log.getvalue().splitlines() if "level=error" in line]
    assert 'msg="error while answering a request"' in line
    assert 'err="RuntimeError: bug holding *** (at test_robustness.py:' in line
    assert_clean(captured_log.getvalue())


def test_an_exception_nobody_catches_in_a_thread_is_one_log_line(
    captured_log: io.StringIO,
) -> None:
    previous = threading.excepthook, sys.excepthook
    log_uncaught_exceptions()
    try:

        def crash() -> None:
            raise ValueError("thread bug")

        thread = threading.Thread(target=crash, name="crasher")
        thread.start()
        thread.join(5)
    finally:
        threading.excepthook, sys.excepthook = previous
    [line] = captured_log.getvalue().splitlines()
    assert 'msg="uncaught exception in a thread"' in line
    assert "thread_name=crasher" in line
    assert 'err="ValueError: thread bug"' in line
    assert "Traceback" not in line


# --- bad input at start-up ---------------------------------------------------------------------


def deeply_nested(path: Path) -> Path:
    path.write_text("[" * 5_000 + "]" * 5_000, encoding="utf-8")
    return path


def huge(path: Path) -> Path:
    with path.open("w", encoding="utf-8") as file:
        file.write("targets:\n")
        file.write("# padding\n" * 500_000)
    return path


def binary(path: Path) -> Path:
    path.write_bytes(bytes(range(256)) * 8)
    return path


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def directory(path: Path) -> Path:
    path.mkdir()
    return path


def missing(path: Path) -> Path:
    return path


def same_mistake_everywhere(path: Path) -> Path:
    targets = "".join(f"  - {{name: t{n}, region_id: cn-hangzhou, typo: 1}}\n" for n in range(500))
    path.write_text("targets:\n" + targets, encoding="utf-8")
    return path


def secret_in_a_device(path: Path) -> Path:
    path.write_text(
        "targets:\n  - name: prod\n    region_id: cn-hangzhou\n    credentials: {source: static, "
        "access_key_id: LTAI5tKey, access_key_secret_file: /dev/zero}\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (deeply_nested, "invalid YAML: nested too deeply"),
        (huge, "is larger than 4194304 bytes"),
        (binary, "not UTF-8 text"),
        (fifo, "is not a regular file"),
        (directory, "is a directory, not a regular file"),
        (missing, "No such file or directory"),
        (same_mistake_everywhere, "... and 480 more"),
        (secret_in_a_device, "access_key_secret_file '/dev/zero': is not a regular file"),
    ],
)
def test_a_bad_config_file_is_one_clear_error_and_exit_2(
    tmp_path: Path, make: Callable[[Path], Path], expected: str
) -> None:
    path = make(tmp_path / "config.yml")
    checks = (["--config.check"], []) if make is deeply_nested else ([],)
    for args in checks:
        result = run_cli(["--config.file", str(path), "--web.listen-address", "127.0.0.1:0", *args])
        assert result.code == 2, result.stderr[-2000:]
        assert expected in result.stderr
        assert str(path) in result.stderr
        assert len(result.stderr.splitlines()) <= 22
        assert_clean(result.stdout + result.stderr)


def test_config_file_to_dev_zero_is_refused_without_reading_it() -> None:
    result = run_cli(["--config.file", "/dev/zero", "--config.check"])
    assert result.code == 2
    assert "'/dev/zero': is not a regular file" in result.stderr


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (deeply_nested, "nested too deeply"),
        (huge, "is larger than"),
        (binary, "not UTF-8 text"),
        (fifo, "is not a regular file"),
        (directory, "is a directory"),
        (missing, "No such file or directory"),
    ],
)
def test_a_bad_web_config_file_is_one_clear_error_and_exit_2(
    tmp_path: Path, make: Callable[[Path], Path], expected: str
) -> None:
    config = one_default_target_config(tmp_path)
    web_config = make(tmp_path / "web.yml")
    result = run_cli(
        [
            "--config.file",
            str(config),
            "--web.config.file",
            str(web_config),
            "--web.listen-address",
            "127.0.0.1:0",
        ]
    )
    assert result.code == 2, result.stderr[-2000:]
    [line] = result.stderr.splitlines()
    assert expected in line
    assert line.startswith(f"aliyun-cloudassistant-exporter: error: web config {web_config}: ")
    assert_clean(result.stderr)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"ALIYUN_CLOUDASSISTANT_REFRESH": "not json"},
            "ALIYUN_CLOUDASSISTANT_REFRESH: not valid JSON",
        ),
        ({"ALIYUN_CLOUDASSISTANT_API": "[1, 2"}, "ALIYUN_CLOUDASSISTANT_API: not valid JSON"),
        (
            {"ALIYUN_CLOUDASSISTANT_USE_VPC_ENDPOINT": "perhaps"},
            "ALIYUN_CLOUDASSISTANT_USE_VPC_ENDPOINT: must be true or false",
        ),
        (
            {"ALIYUN_CLOUDASSISTANT_ENDPOINT": f"https://u:{ENV_SECRET}@ecs.example.com"},
            "the URL must not contain credentials",
        ),
        (
            {"ALIBABA_CLOUD_ACCESS_KEY_SECRET": ENV_SECRET},
            "ALIBABA_CLOUD_ACCESS_KEY_ID is required when ALIBABA_CLOUD_ACCESS_KEY_SECRET is set",
        ),
        (
            {"ALIBABA_CLOUD_SECURITY_TOKEN": ENV_TOKEN},
            "ALIBABA_CLOUD_ACCESS_KEY_ID is required when ALIBABA_CLOUD_SECURITY_TOKEN is set",
        ),
    ],
)
def test_a_bad_environment_is_one_clear_error_and_exit_2(
    env: dict[str, str], expected: str
) -> None:
    environment = {"ALIYUN_CLOUDASSISTANT_REGIONS": REGION, **env}
    result = run_cli(["--config.check"], environment)
    assert result.code == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert expected in line
    assert_clean(result.stdout + result.stderr)


def test_a_directory_in_the_secrets_dir_is_an_error_not_a_missing_secret(tmp_path: Path) -> None:
    (tmp_path / "ALIBABA_CLOUD_ACCESS_KEY_SECRET").mkdir()
    result = run_cli(
        ["--config.check"],
        {
            "ALIYUN_CLOUDASSISTANT_REGIONS": REGION,
            "ALIYUN_CLOUDASSISTANT_SECRETS_DIR": str(tmp_path),
            "ALIBABA_CLOUD_ACCESS_KEY_ID": KEY_ID,
        },
    )
    assert result.code == 2
    [line] = result.stderr.splitlines()
    assert "ALIYUN_CLOUDASSISTANT_SECRETS_DIR" in line
    assert "the file ALIBABA_CLOUD_ACCESS_KEY_SECRET is a directory, not a regular file" in line


def test_secrets_from_the_secrets_dir_reach_neither_the_check_nor_the_log(
    tmp_path: Path, world: World, start_exporter: StartExporter
) -> None:
    (tmp_path / "ALIBABA_CLOUD_ACCESS_KEY_SECRET").write_text(FILE_SECRET, encoding="utf-8")
    (tmp_path / "ALIBABA_CLOUD_SECURITY_TOKEN").write_text(FILE_TOKEN, encoding="utf-8")
    accounts = {KEY_ID: Account(FILE_SECRET, sts=True, security_token=FILE_TOKEN)}
    with SimulatorServer(world, accounts=accounts) as simulator:
        env = {
            "ALIYUN_CLOUDASSISTANT_REGIONS": REGION,
            "ALIYUN_CLOUDASSISTANT_ACCOUNT": "prod",
            "ALIYUN_CLOUDASSISTANT_ENDPOINT": simulator.url,
            "ALIYUN_CLOUDASSISTANT_SECRETS_DIR": str(tmp_path),
            "ALIYUN_CLOUDASSISTANT_REFRESH__MIN_INTERVAL_SECONDS": "0.1",
            "ALIBABA_CLOUD_ACCESS_KEY_ID": KEY_ID,
        }
        check = run_cli(["--config.check"], env)
        assert check.code == 0, check.stderr
        assert check.stdout == "environment: OK: 1 target: prod/cn-hangzhou (environment)\n"
        exporter = start_exporter(["--log.level", "debug", "--log.format", "json"], env)
        _, text = scrape_until(
            exporter.url, lambda s: value(s, "up", account="prod", region_id=REGION) == 1
        )
        page = httpx.get(exporter.url + "/", timeout=5).text
        # Stopped while the simulator still answers: nothing fails at shutdown.
        assert exporter.stop() == 0
    for output in (check.stdout + check.stderr, exporter.output(), text, page):
        assert_clean(output)


def test_a_port_in_use_exits_1_with_one_line(tmp_path: Path) -> None:
    config = one_default_target_config(tmp_path)
    with taken_loopback_port() as port:
        result = run_cli(
            ["--config.file", str(config), "--web.listen-address", f"127.0.0.1:{port}"]
        )
    assert result.code == 1
    [line] = result.stderr.splitlines()
    assert 'msg="cannot listen"' in line
    assert f"address=127.0.0.1:{port}" in line


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["--web.listen-address", "[::1"], 2, "write an IPv6 address as [addr]:port"),
        (["--web.listen-address", "é" * 70 + ":0"], 2, "is not a valid host name"),
        (["--web.listen-address", "999.1.1.1:80"], 1, 'msg="cannot listen"'),
        (["--web.telemetry-path", "/-/ready"], 2, "must be a path like /metrics"),
    ],
)
def test_bad_flags_are_one_clear_error(
    tmp_path: Path, args: list[str], code: int, expected: str
) -> None:
    config = one_default_target_config(tmp_path)
    result = run_cli(["--config.file", str(config), *args])
    assert result.code == code, result.stderr
    assert expected in result.stderr
    assert_clean(result.stderr)
    if code == 1:
        assert len(result.stderr.splitlines()) == 1


def test_an_unexpected_error_in_main_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bug (here: main called with a non-string argument) never prints a traceback."""
    code = main([42])  # type: ignore[list-item]
    err = capsys.readouterr().err
    assert code == 1
    [line] = err.splitlines()
    assert "unexpected error" in line
    assert "TypeError" in line
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--listen", "é" * 70 + ":0"], "is not a valid host name"),
        (["--backlog", "99999999999"], "must be between 0 and 1000000"),
        (["--latency", "nan"], "must be a finite number"),
        (["--token-ttl", "inf"], "must be a finite number"),
        (["--faults", "slow,delay=soon"], "is not a number"),
    ],
)
def test_bad_simulator_flags_exit_2_with_one_clear_line(args: list[str], expected: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "exporter.simulator", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 2
    assert expected in completed.stderr.splitlines()[-1]
    assert "Traceback" not in completed.stderr
