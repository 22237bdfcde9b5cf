"""Hostile API answers against the real exporter process (issue 10, "From the API").

Any string the API returns is untrusted. Whatever the simulator's hostile faults send (a lone
UTF-16 surrogate, 500 KB error codes, a 300-character error Code, the caller's STS token echoed
back), every surface a user reads must stay usable: ``/metrics`` answers 200 on every scrape,
during the hostile answers and after they stop, with an exposition promtool accepts, small, with
label values of at most 128 characters (what was cut counted in ``label_values_folded``); the
landing page answers 200; and the STS token shows on no surface (``/metrics``, the landing page,
stdout and stderr, in logfmt and JSON).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from exporter.metrics import MAX_LABEL_VALUE_CHARS
from exporter.simulator.faults import (
    HOSTILE_ERROR_FAULTS,
    HOSTILE_RECORD_FAULTS,
    HUGE_VALUE_CHARS,
    LONG_CODE_CHARS,
    FaultPlan,
    parse_fault_rule,
)
from exporter.simulator.server import Account, SimulatorServer
from exporter.simulator.world import ManualClock, World, WorldSpec
from tests.conftest import StartExporter
from tests.exporter_process import ExporterProcess
from tests.exposition import Samples, parse_samples, sample_key
from tests.support.simulator_calls import call, error, results

REGION = "cn-hangzhou"
TARGET = "prod"
KEY_ID = "LTAI5tHostileKey"
SECRET = "hostile-secret-9a8b7c6d5e4f"
TOKEN = "hostile-sts-token-0a1b2c3d4e5f6a7b"
# What must show nowhere: the secrets, and the ends of the token (a cut must not leave half).
SECRET_PARTS = (SECRET, TOKEN, TOKEN[:24], TOKEN[-16:])
MAX_EXPOSITION_BYTES = 200_000  # one target: the exposition is a few tens of KB
OLD_RECORDS = 10  # finished before the exporter started: seen, not counted
NEW_FAILED_RECORDS = 20  # finished after the exporter started, so they are counted
PROMTOOL = shutil.which("promtool")
# label -> (start, end) of the value the surrogate_records fault sends, around the surrogate.
SURROGATE_VALUES = {
    "error_code": ("Bad", "Code"),
    "invocation_status": ("Odd", "Status"),
    "oss_output_status": ("Odd", "Delivery"),
}
LONE_SURROGATE_ESCAPE = b"\\ud800"  # as the answer's bytes carry it


def hostile_world(clock: ManualClock, failed: int = 0) -> World:
    """``OLD_RECORDS`` results that finished 10 minutes ago, plus ``failed`` finished ones."""
    world = World(seed=5, clock=clock, spec=WorldSpec(instances=10))
    world.add_invocation(OLD_RECORDS, "Success", at=clock.now() - 600, duration=5)
    for _ in range(failed // 10):
        world.add_invocation(10, "Failed", at=clock.now() - 300, duration=5)
    return world


# --- the simulator sends the hostile answers it claims to ----------------------------------


@pytest.mark.parametrize("kind", HOSTILE_RECORD_FAULTS + HOSTILE_ERROR_FAULTS)
def test_the_simulator_sends_each_hostile_answer(kind: str) -> None:
    clock = ManualClock(start=float(int(time.time())))
    faults = FaultPlan([parse_fault_rule(f"{kind},n=1")])  # as the command line gives it
    accounts = {KEY_ID: Account(SECRET, sts=True, security_token=TOKEN)}
    with (
        SimulatorServer(hostile_world(clock, 20), accounts=accounts, faults=faults) as server,
        httpx.Client(timeout=30) as client,
    ):
        token = {"x-acs-security-token": TOKEN}
        response = call(
            client, server, {"MaxResults": "50"}, key=KEY_ID, secret=SECRET, headers=token
        )
        normal = call(
            client, server, {"MaxResults": "50"}, key=KEY_ID, secret=SECRET, headers=token
        )
    assert len(results(normal)) == OLD_RECORDS + 20  # the fault was spent: a normal answer
    body = response.json()
    if kind == "surrogate_records":
        assert LONE_SURROGATE_ESCAPE in response.content  # raw in the body, not valid UTF-16
        records = results(response)
        for field in ("ErrorCode", "InvocationStatus", "OssOutputStatus"):
            assert any("\ud800" in record[field] for record in records), field
    elif kind == "huge_records":
        records = results(response)
        codes = {r["ErrorCode"] for r in records if len(r["ErrorCode"]) > LONG_CODE_CHARS}
        assert len(codes) == 20  # distinct: 20 label values, were they not bounded
        assert {len(code) for code in codes} == {HUGE_VALUE_CHARS}
    elif kind == "surrogate_error":
        assert error(response)[0] == 400
        assert response.content.count(LONE_SURROGATE_ESCAPE) >= 2
        assert "\ud800" in body["Code"]
        assert "\ud800" in body["Message"]
    elif kind == "long_error_code":
        assert error(response)[0] == 400
        assert len(body["Code"]) == LONG_CODE_CHARS
    else:
        assert error(response)[0] == 400
        for field in ("Code", "RequestId", "Message"):
            assert TOKEN in body[field], field


# --- the real exporter ---------------------------------------------------------------------


def promtool_accepts(text: str) -> None:
    """``promtool check metrics`` reads ``text`` from stdin and exits 0.

    Outside CI a missing promtool skips; in CI (``CI`` set) it is an error, as for tests/e2e.
    """
    if PROMTOOL is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI (make system-deps installs it)")
        pytest.skip("promtool is not installed (make system-deps)")
    checked = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get(sample_key(name, account=TARGET, region_id=REGION, **labels))


def refreshes(samples: Samples) -> float:
    return value(samples, "refreshes_total") or 0.0


def folded(samples: Samples) -> float:
    return value(samples, "label_values_folded") or 0.0


def assert_no_secret(text: str) -> None:
    for part in SECRET_PARTS:
        assert part not in text, part


def assert_usable(exporter: ExporterProcess) -> tuple[Samples, str]:
    """One scrape and one landing page: 200, small, no secret, label values bounded."""
    response = httpx.get(exporter.url + "/metrics", timeout=10)
    assert response.status_code == 200, response.text[:500]
    assert len(response.content) < MAX_EXPOSITION_BYTES, len(response.content)
    text = response.content.decode("utf-8")  # strict: a lone surrogate would not encode
    assert_no_secret(text)
    samples = parse_samples(text)
    for _, labels in samples:
        for label, label_value in labels:
            assert len(label_value) <= MAX_LABEL_VALUE_CHARS, (label, label_value[:200])
    page = httpx.get(exporter.url + "/", timeout=10)
    assert page.status_code == 200, page.text[:500]
    assert len(page.content) < MAX_EXPOSITION_BYTES, len(page.content)
    assert_no_secret(page.text)
    return samples, text


def scrape_until(
    exporter: ExporterProcess, condition: Callable[[Samples], bool], timeout: float = 15.0
) -> tuple[Samples, str]:
    """Scrape (each one checked by :func:`assert_usable`) until ``condition`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        samples, text = assert_usable(exporter)
        if condition(samples):
            return samples, text
        assert exporter.process.poll() is None, exporter.output()[-2000:]
        assert time.monotonic() < deadline, "condition not met in time"


def start(
    start_exporter: StartExporter, tmp_path: Path, simulator: SimulatorServer, log_format: str
) -> ExporterProcess:
    """An exporter with one target reading ``simulator`` with STS credentials."""
    config: dict[str, Any] = {
        "targets": [
            {
                "name": TARGET,
                "region_id": REGION,
                "endpoint": simulator.url,
                "credentials": {
                    "source": "static",
                    "access_key_id": KEY_ID,
                    "access_key_secret": SECRET,
                    "security_token": TOKEN,
                },
            }
        ],
        "refresh": {"min_interval_seconds": 0.1, "sweep_interval_seconds": 0},
        "api": {
            "max_attempts": 2,
            "timeout_seconds": 2.0,
            "deadline_seconds": 5.0,
            "rate_limit_per_second": 1000,
            "max_results": 5,
        },
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    args = ["--config.file", str(path), "--log.level", "debug", "--log.format", log_format]
    return start_exporter(args)


CASES = [
    *((kind, "logfmt") for kind in HOSTILE_RECORD_FAULTS + HOSTILE_ERROR_FAULTS),
    ("echo_token", "json"),
    ("surrogate_records", "json"),
]


@pytest.mark.parametrize(("kind", "log_format"), CASES)
def test_a_hostile_answer_takes_no_surface_down_and_leaks_no_secret(
    tmp_path: Path, start_exporter: StartExporter, kind: str, log_format: str
) -> None:
    clock = ManualClock(start=float(int(time.time())))
    world = hostile_world(clock)
    faults = FaultPlan()
    rule = faults.always(kind)
    accounts = {KEY_ID: Account(SECRET, sts=True, security_token=TOKEN)}
    with SimulatorServer(world, accounts=accounts, faults=faults) as simulator:
        exporter = start(start_exporter, tmp_path, simulator, log_format)
        samples, _ = scrape_until(exporter, lambda s: refreshes(s) >= 1)
        # Runs that finish after the first walk are counted: their codes reach labels.
        for _ in range(NEW_FAILED_RECORDS // 10):
            world.add_invocation(10, "Failed", at=clock.now(), duration=5)
        clock.advance(30)
        seen = refreshes(samples)
        samples, hostile = scrape_until(exporter, lambda s: refreshes(s) >= seen + 2)
        assert any(request.fault == kind for request in simulator.served)
        promtool_accepts(hostile)

        if kind == "surrogate_records":
            # Each hostile value reached its label, made safe (or folded into "other").
            for label, (head, tail) in SURROGATE_VALUES.items():
                shown = {v for _, labels in samples for k, v in labels if k == label}
                assert "other" in shown or any(
                    v.startswith(head) and v.endswith(tail) for v in shown
                ), (label, shown)
        if kind == "huge_records":
            # Every record in view has its own 500 KB code: each is shown as "other" and
            # counted as folded; the runs that finished since the start are counted there too.
            in_view = OLD_RECORDS + NEW_FAILED_RECORDS
            assert folded(samples) == in_view
            assert value(samples, "invocation_results_by_error_code", error_code="other") == in_view
            finished = value(
                samples,
                "invocation_results_finished_total",
                error_code="other",
                invocation_status="Failed",
            )
            assert finished == NEW_FAILED_RECORDS
        if kind == "long_error_code":
            # The 300-character code (the same on every answer) is shown as "other".
            assert folded(samples) == 1
            assert (value(samples, "api_requests_total", code="other") or 0) >= 2
        if kind in HOSTILE_ERROR_FAULTS:
            assert value(samples, "up") == 0

        # The hostile answers stop: nothing they left behind breaks a scrape.
        faults.remove(rule)
        seen = refreshes(samples)
        samples, after = scrape_until(
            exporter, lambda s: refreshes(s) >= seen + 2 and value(s, "up") == 1
        )
        promtool_accepts(after)
        assert exporter.process.poll() is None
        assert exporter.stop() == 0

    output = exporter.output()
    assert_no_secret(output)
    assert "Traceback" not in output
    if log_format == "json":
        for line in exporter.log:
            json.loads(line)
    if kind in HOSTILE_ERROR_FAULTS:
        # Each failed refresh was logged (with the answer's Code and Message, cleaned).
        assert len(exporter.lines("refresh failed")) >= 2
    if kind == "echo_token":
        # The token did reach the exporter (so redaction, not luck, kept it off every surface).
        assert [r for r in simulator.served if r.fault == kind and TOKEN in r.code]
