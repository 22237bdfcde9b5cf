"""End to end: simulator -> exporter -> Prometheus -> rules -> Alertmanager -> webhook.

Everything is real and on 127.0.0.1: the ECS API simulator runs in this process with one world
per region and a fault plan per AccessKey, the exporter runs as its own process
(``python -m exporter --config.file ...``), Prometheus 2.42 and Alertmanager 0.25 are the Debian
binaries. Prometheus loads a copy of the project's rules rendered from the same source (the
monitoring mixin, mixin/) with windows and ``for:`` durations in seconds. Each target is broken in
one way, so each alert must fire for exactly the target that earns it:

============  ==============  =======================================  ============================
account       region          what is wrong                            alerts
============  ==============  =======================================  ============================
acct-ok       cn-hangzhou     scripted runs: failures, timeouts,       every run-based alert
                              agent down, SG denied, released
                              instance, OSS failure, dropped output,
                              a run stuck in Running
acct-badkey   cn-hangzhou     unknown AccessKeyId                      TargetCredentialsFailing
acct-throttl  cn-shanghai     every request throttled                  TargetThrottled,
                                                                       ApiThrottling
acct-down     cn-beijing      every request answered 503               ApiUnavailable
acct-malform  cn-shenzhen     every answer not JSON                    TargetRefreshFailing
acct-big      ap-southeast-1  more results than page_cap allows        ResultsTruncated
(none)        (none)          a second scrape target that refuses      ExporterDown
(all)         (all)           most runs of the whole job fail          FleetInvocationsFailing
(none)        (none)          the shard job the mixin expects is not   ExporterAbsent
                              scraped at all
============  ==============  =======================================  ============================

Then every rule expression and every dashboard query is run against that Prometheus, and every
dashboard panel must return data.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from string import Template
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from exporter.simulator.faults import FaultPlan
from exporter.simulator.server import SimulatorServer
from exporter.simulator.world import World, WorldSpec
from mixin.render import alert_rules, evaluate, render_rules, runbook_anchor
from tests.monitoring_queries import (
    DASHBOARD_FILES,
    RULES_FILE,
    ShippedQuery,
    dashboard_queries,
    rule_queries,
)

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BINARIES = {
    "prometheus": shutil.which("prometheus"),
    "alertmanager": shutil.which("prometheus-alertmanager"),  # Debian's name for it
    "promtool": shutil.which("promtool"),
    "amtool": shutil.which("amtool"),
}
if not all(BINARIES.values()):
    pytest.skip(
        "needs Debian's prometheus and prometheus-alertmanager (make system-deps)",
        allow_module_level=True,
    )

# The same rules with seconds instead of minutes, and counts that a short run reaches.
E2E_CONFIG: dict[str, Any] = {
    "exporterSelector": 'job="aliyun-cloudassistant-exporter"',
    # A shard job that nothing scrapes: what a target gone from service discovery looks like.
    "absentSelector": 'job="aliyun-cloudassistant-exporter-shard-b"',
    "absentFor": "2s",
    "exporterDownFor": "2s",
    "refreshFailureWindow": "30s",
    "credentialsFailingFor": "2s",
    "throttledFailingFor": "2s",
    "apiUnavailableFor": "2s",
    "refreshFailingFor": "2s",
    "apiThrottlingWindow": "30s",
    "apiThrottlingFor": "2s",
    "resultsTruncatedFor": "2s",
    "finishedWindow": "1m",
    "failureMinFinished": 3,
    "failureRatioFor": "2s",
    "fleetFailureMinFinished": 3,
    "fleetFailureRatio": 0.3,
    "fleetFailureFor": "2s",
    "commandFailureMinFinished": 3,
    "commandFailureFor": "2s",
    "executionTimeoutMin": 1,
    "deliveryTimeoutMin": 1,
    "instanceGoneMin": 1,
    "errorCodeFor": "2s",
    "stuckRunningSeconds": 5,
    "stuckRunningFor": "2s",
    "ossFailureWindow": "1m",
    "ossFailureFor": "2s",
    "droppedWindow": "1m",
    "droppedMinIncrements": 1,
    "droppedFor": "2s",
}
E2E_MIXIN = evaluate(E2E_CONFIG)


def _job_name(selector: str) -> str:
    match = re.fullmatch(r'job="([^"]+)"', selector)
    assert match is not None, f'the e2e test needs a job="..." selector, not {selector}'
    return match.group(1)


JOB = _job_name(E2E_CONFIG["exporterSelector"])
ABSENT_JOB = _job_name(E2E_CONFIG["absentSelector"])
STARTUP_TIMEOUT = 30.0
ALERTS_TIMEOUT = 60.0
# Grafana's variables as the test substitutes them: "All" for the template variables.
RATE_INTERVAL = "10s"
RANGE = "1m"

# AccessKeyId -> secret the simulator accepts; "ak-unknown" is deliberately not among them.
ACCESS_KEYS = {
    "ak-ok": "sk-ok-secret",
    "ak-throttled": "sk-throttled-secret",
    "ak-down": "sk-down-secret",
    "ak-malformed": "sk-malformed-secret",
    "ak-big": "sk-big-secret",
}


@dataclass(frozen=True)
class ExpectedAlert:
    alertname: str
    labels: dict[str, str]


OK = {"account": "acct-ok", "region_id": "cn-hangzhou"}
EXPECTED_TARGET_ALERTS = (
    ExpectedAlert(
        "CloudAssistantTargetCredentialsFailing",
        {"account": "acct-badkey", "region_id": "cn-hangzhou", "reason": "auth"},
    ),
    ExpectedAlert(
        "CloudAssistantTargetThrottled",
        {"account": "acct-throttled", "region_id": "cn-shanghai", "reason": "throttled"},
    ),
    ExpectedAlert(
        "CloudAssistantApiThrottling", {"account": "acct-throttled", "region_id": "cn-shanghai"}
    ),
    ExpectedAlert(
        "CloudAssistantApiUnavailable",
        {"account": "acct-down", "region_id": "cn-beijing", "reason": "server"},
    ),
    ExpectedAlert(
        "CloudAssistantTargetRefreshFailing",
        {"account": "acct-malformed", "region_id": "cn-shenzhen", "reason": "malformed"},
    ),
    ExpectedAlert(
        "CloudAssistantResultsTruncated", {"account": "acct-big", "region_id": "ap-southeast-1"}
    ),
    ExpectedAlert("CloudAssistantInvocationFailureRatioHigh", OK),
    ExpectedAlert("CloudAssistantExecutionTimeouts", {**OK, "error_code": "ExecutionTimeout"}),
    ExpectedAlert("CloudAssistantDeliveryTimeouts", {**OK, "error_code": "DeliveryTimeout"}),
    ExpectedAlert("CloudAssistantAgentUnavailable", {**OK, "error_code": "ClientNotRunning"}),
    ExpectedAlert(
        "CloudAssistantSecurityGroupDenied", {**OK, "error_code": "SecurityGroupRuleDenied"}
    ),
    ExpectedAlert("CloudAssistantInstancesGone", {**OK, "error_code": "InstanceReleased"}),
    ExpectedAlert("CloudAssistantInvocationStuckRunning", OK),
    ExpectedAlert(
        "CloudAssistantOssOutputDeliveryFailing",
        {**OK, "oss_output_error_code": "OSS.AccessDenied"},
    ),
    ExpectedAlert("CloudAssistantOutputDropped", OK),
    ExpectedAlert("CloudAssistantCommandFailureRatioHigh", OK),
    ExpectedAlert("CloudAssistantFleetInvocationsFailing", {"job": JOB}),
    ExpectedAlert("CloudAssistantExporterAbsent", {"job": ABSENT_JOB}),
)

T = TypeVar("T")


# -- processes and servers ----------------------------------------------------------------------


def free_port() -> int:
    """A port nothing listens on right now (for the servers that cannot report a port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Processes:
    """Child processes with their logs; stopped by their own PIDs only."""

    workdir: Path
    running: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.running.append((name, process))
        return process

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        return "".join(
            f"\n----- {name}.log (last 3000 chars) -----\n{self.log(name)[-3000:]}"
            for name, _ in self.running
        )

    def check_alive(self) -> None:
        for name, process in self.running:
            if process.poll() is not None:
                raise AssertionError(
                    f"{name} exited early with code {process.returncode}{self.logs()}"
                )

    def stop_all(self) -> None:
        for _, process in reversed(self.running):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


class WebhookReceiver:
    """Alertmanager's webhook receiver: keeps every alert of every notification."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.alerts.extend(json.loads(body)["alerts"])
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/alerts"

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.alerts)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@dataclass
class Stack:
    processes: Processes
    prometheus: str
    webhook: WebhookReceiver
    dead_exporter: str
    http: httpx.Client

    def wait_for(self, what: str, check: Callable[[], T | None], timeout: float) -> T:
        """Poll ``check`` until it returns something truthy; fail with the logs at the deadline."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            self.processes.check_alive()
            try:
                result = check()
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                result, last_error = None, exc
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f}s waiting for {what} "
                    f"(last error: {last_error!r}){self.processes.logs()}"
                )
            time.sleep(0.25)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Run an instant query; raise AssertionError with Prometheus' error if it fails."""
        response = self.http.get(f"{self.prometheus}/api/v1/query", params={"query": expr})
        body = response.json()
        if body.get("status") != "success":
            raise AssertionError(f"{body.get('errorType')}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


def exporter_config(simulator_url: str) -> dict[str, Any]:
    def target(name: str, region: str, key_id: str, **extra: Any) -> dict[str, Any]:
        secret = ACCESS_KEYS.get(key_id, "not-a-known-secret")
        return {
            "name": name,
            "region_id": region,
            "endpoint": simulator_url,
            "credentials": {
                "source": "static",
                "access_key_id": key_id,
                "access_key_secret": secret,
            },
            **extra,
        }

    return {
        "targets": [
            target("acct-ok", "cn-hangzhou", "ak-ok", command_breakdown={"enabled": True}),
            target("acct-badkey", "cn-hangzhou", "ak-unknown"),
            target("acct-throttled", "cn-shanghai", "ak-throttled"),
            target("acct-down", "cn-beijing", "ak-down"),
            target("acct-malformed", "cn-shenzhen", "ak-malformed"),
            target("acct-big", "ap-southeast-1", "ak-big", page_cap=1),
        ],
        "refresh": {
            "min_interval_seconds": 1,
            "sweep_interval_seconds": 5,
            "scrape_max_wait_seconds": 0.5,  # below the 1 s scrape timeout
        },
        # Fail fast: one try per call, so a broken target fails every refresh.
        "api": {
            "max_attempts": 1,
            "timeout_seconds": 2,
            "deadline_seconds": 2,
            "rate_limit_per_second": 100,
        },
    }


def start_simulator() -> tuple[SimulatorServer, World]:
    scripted = World(seed=1, spec=WorldSpec(instances=20))
    worlds = {
        "cn-hangzhou": scripted,
        "cn-shanghai": World(seed=2, spec=WorldSpec(instances=5)),
        "cn-beijing": World(seed=3, spec=WorldSpec(instances=5)),
        "cn-shenzhen": World(seed=4, spec=WorldSpec(instances=5)),
        # 120 finished results: more than one page of 50, and acct-big may read one page.
        "ap-southeast-1": World(seed=5, spec=WorldSpec(instances=50, backlog=120)),
    }
    faults = FaultPlan(seed=0)
    faults.always("throttling_user", access_key_id="ak-throttled")
    faults.always("service_unavailable", access_key_id="ak-down")
    faults.always("malformed_json", access_key_id="ak-malformed")
    simulator = SimulatorServer(worlds, accounts=ACCESS_KEYS, faults=faults).start()
    return simulator, scripted


def script_failures(world: World) -> None:
    """Runs that start now and end within seconds, each earning acct-ok one alert."""

    def quick(instances: int, outcome: str, *, oss: str | None = None, dropped: int = 0) -> None:
        world.add_invocation(
            instances, outcome, pending=0.5, duration=1.0, oss=oss, oss_delay=0.5, dropped=dropped
        )

    quick(6, "Failed")  # ExitCodeNonzero: the failure ratio
    quick(2, "Timeout")  # ExecutionTimeout
    quick(1, "DeliveryTimeout")
    quick(1, "ClientNotRunning")
    quick(1, "SecurityGroupRuleDenied")
    quick(1, "InstanceReleased")
    quick(1, "Success", oss="Failed.OSS.AccessDenied")
    quick(1, "Success", dropped=40_000)


def script_long_run(world: World) -> None:
    """A run of the same command that stays Running: its per-command series exist at 0 before
    the failures end (a counter first seen at its value hides that value from increase())."""
    world.add_invocation(1, "Success", pending=0.2, duration=600.0)


def render_template(name: str, destination: Path, **values: str) -> Path:
    text = Template((HERE / name).read_text(encoding="utf-8")).substitute(values)
    destination.write_text(text, encoding="utf-8")
    return destination


def _check(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("e2e")
    processes = Processes(workdir)
    webhook = WebhookReceiver()
    simulator, scripted = start_simulator()
    # Bound but never listening: connections to it are refused, so its scrape fails.
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_exporter = f"127.0.0.1:{dead.getsockname()[1]}"
    http = httpx.Client(timeout=5.0)
    try:
        config_file = workdir / "exporter.yml"
        config_file.write_text(yaml.safe_dump(exporter_config(simulator.url)), encoding="utf-8")
        processes.spawn(
            "exporter",
            [
                sys.executable,
                "-m",
                "exporter",
                f"--config.file={config_file}",
                "--web.listen-address=127.0.0.1:0",
            ],
        )
        stack = Stack(processes, "", webhook, dead_exporter, http)
        exporter_address = stack.wait_for(
            "the exporter to listen",
            lambda: re.findall(r"address=http://(127\.0\.0\.1:\d+)", processes.log("exporter")),
            STARTUP_TIMEOUT,
        )[0]

        rules_file = workdir / "cloudassistant.rules.yml"
        rules_file.write_text(render_rules(E2E_CONFIG), encoding="utf-8")
        alertmanager = f"127.0.0.1:{free_port()}"
        prometheus = f"127.0.0.1:{free_port()}"
        prometheus_config = render_template(
            "prometheus.yml.tmpl",
            workdir / "prometheus.yml",
            rules_file=str(rules_file),
            alertmanager=alertmanager,
            job=JOB,
            exporter=exporter_address,
            dead_exporter=dead_exporter,
        )
        alertmanager_config = render_template(
            "alertmanager.yml.tmpl", workdir / "alertmanager.yml", webhook_url=webhook.url
        )
        _check([str(BINARIES["promtool"]), "check", "config", str(prometheus_config)])
        _check([str(BINARIES["amtool"]), "check-config", str(alertmanager_config)])

        processes.spawn(
            "alertmanager",
            [
                str(BINARIES["alertmanager"]),
                f"--config.file={alertmanager_config}",
                f"--storage.path={workdir / 'alertmanager-data'}",
                f"--web.listen-address={alertmanager}",
                "--cluster.listen-address=",  # no gossip, no settle delay
            ],
        )
        processes.spawn(
            "prometheus",
            [
                str(BINARIES["prometheus"]),
                f"--config.file={prometheus_config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address={prometheus}",
                "--rules.alert.resend-delay=1s",
            ],
        )
        stack.prometheus = f"http://{prometheus}"
        stack.wait_for(
            "acct-ok's first successful refresh, seen by Prometheus",
            lambda: stack.query('aliyun_cloudassistant_up{account="acct-ok"} == 1'),
            STARTUP_TIMEOUT,
        )
        # Only now: runs that end after the exporter's first refresh are counted (the backlog
        # found by the first refresh never is), and Prometheus has the counters' zero samples.
        script_long_run(scripted)
        stack.wait_for(
            "acct-ok's per-command series, seen by Prometheus",
            lambda: stack.query(
                'aliyun_cloudassistant_command_invocation_results_finished_total{account="acct-ok"}'
            ),
            STARTUP_TIMEOUT,
        )
        script_failures(scripted)
        yield stack
    finally:
        processes.stop_all()
        http.close()
        dead.close()
        simulator.close()
        webhook.close()


# -- the tests ----------------------------------------------------------------------------------


def _matches(alert: dict[str, Any], expected: ExpectedAlert) -> bool:
    labels = alert["labels"]
    return labels.get("alertname") == expected.alertname and all(
        labels.get(k) == v for k, v in expected.labels.items()
    )


def test_each_broken_target_raises_its_alerts_through_alertmanager(stack: Stack) -> None:
    expected = (
        *EXPECTED_TARGET_ALERTS,
        ExpectedAlert("CloudAssistantExporterDown", {"job": JOB, "instance": stack.dead_exporter}),
    )

    def missing() -> list[ExpectedAlert]:
        received = stack.webhook.received()
        return [e for e in expected if not any(_matches(a, e) for a in received)]

    try:
        stack.wait_for("every expected alert at the webhook", lambda: not missing(), ALERTS_TIMEOUT)
    except AssertionError as exc:
        names = ", ".join(f"{e.alertname} {e.labels}" for e in missing())
        raise AssertionError(f"never delivered: {names}\n{exc}") from None

    received = stack.webhook.received()
    severities = {a["alert"]: a["labels"]["severity"] for a in alert_rules(E2E_MIXIN)}
    config = E2E_MIXIN["config"]
    for want in expected:
        alert = next(a for a in received if _matches(a, want))
        labels, annotations = alert["labels"], alert["annotations"]
        assert labels["severity"] == severities[want.alertname]
        assert set(annotations) == {"summary", "description", "runbook_url", "dashboard_url"}
        assert annotations["runbook_url"] == (
            f"{config['runbookUrlBase']}#{runbook_anchor(want.alertname)}"
        )
        assert annotations["dashboard_url"].startswith(config["dashboardUrlBase"])
        for text in (annotations["summary"], annotations["description"]):
            assert "<no value>" not in text, f"{want.alertname}: a template had no value"
        for value in want.labels.values():
            if value != JOB:
                assert value in annotations["description"], (want.alertname, annotations)

    # One broken target never raises another target's alerts (and healthy ones raise none).
    allowed = {(e.alertname, e.labels.get("account")) for e in expected}
    assert any(a["labels"]["severity"] == "critical" for a in received), "no critical alert"
    unexpected = {
        (a["labels"]["alertname"], a["labels"].get("account")) for a in stack.webhook.received()
    } - allowed
    assert not unexpected, f"alerts that should not have fired: {sorted(map(str, unexpected))}"


def test_every_rule_expression_evaluates_without_error(stack: Stack) -> None:
    """The shipped rules (whose recording rules this Prometheus does not have: empty results)
    and the short-window copy it runs; a query error would fail."""
    shipped = rule_queries(RULES_FILE)
    e2e_rules = stack.processes.workdir / "cloudassistant.rules.yml"
    loaded = [ShippedQuery(f"e2e {q.source}", q.expr) for q in rule_queries(e2e_rules)]
    for query in shipped + loaded:
        try:
            stack.query(query.expr)
        except AssertionError as exc:
            raise AssertionError(f"{query.source}: {exc}\n{query.expr}") from None


def test_every_dashboard_panel_returns_data(stack: Stack) -> None:
    queries = dashboard_queries()
    assert len({q.source.split(":")[0] for q in queries}) == len(DASHBOARD_FILES)

    def empty() -> list[str]:
        failing = []
        for query in queries:
            promql = query.promql(rate_interval=RATE_INTERVAL, range_=RANGE)
            if not stack.query(promql):
                failing.append(f"{query.source}: {promql}")
        return failing

    # Rates need a few samples after the scripted runs; poll until every panel has data.
    still_empty: list[str] = []

    def all_have_data() -> bool:
        still_empty[:] = empty()
        return not still_empty

    try:
        stack.wait_for("data in every dashboard panel", all_have_data, ALERTS_TIMEOUT)
    except AssertionError:
        raise AssertionError("panels without data:\n" + "\n".join(still_empty)) from None
