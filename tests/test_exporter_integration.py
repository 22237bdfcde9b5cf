"""The real exporter process against the API simulator, over loopback HTTP.

The simulator runs in the test process with a manual world clock: the world only changes
between refreshes, so what the exporter shows can be compared with the simulator's ground truth
exactly. The exporter is ``python -m exporter --config.file ...`` on a free port.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from exporter.ecs.models import (
    ERROR_CODES,
    INVOCATION_STATUSES,
    OSS_OUTPUT_STATUSES,
    TERMINAL_STATUSES,
)
from exporter.metrics import NO_ERROR_CODE
from exporter.simulator.faults import FaultPlan
from exporter.simulator.server import Account, SimulatorServer
from exporter.simulator.world import FinishedRun, GroundTruth, ManualClock, World, WorldSpec
from tests.conftest import StartExporter
from tests.exporter_process import ExporterProcess
from tests.exposition import PREFIX, Samples, parse_samples, sample_key
from tests.support.http_fakes import FakeMetadataServer, FakeStsServer

pytestmark = pytest.mark.slow

KEY_ID, KEY_SECRET = "LTAI5tIntegrationKey", "integration-secret-value-1234"
OTHER_KEY_ID, OTHER_SECRET = "LTAI5tOtherAccount", "other-secret-value-5678"
REGION = "cn-hangzhou"
OSS_TERMINAL = ("Finished", "Failed")


# --- helpers -----------------------------------------------------------------------------------


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample, which must be there."""
    return samples[sample_key(name, **labels)]


def series(samples: Samples, name: str, account: str, label: str) -> dict[str, float]:
    """``{label value: sample value}`` of one family for one target."""
    found = {}
    for (sample_name, labels), sample_value in samples.items():
        label_map = dict(labels)
        if sample_name == PREFIX + name and label_map.get("account") == account:
            found[label_map[label]] = sample_value
    return found


def scrape(exporter: ExporterProcess) -> Samples:
    response = httpx.get(exporter.url + "/metrics", timeout=30)
    response.raise_for_status()
    return parse_samples(response.text)


def wait_for(
    exporter: ExporterProcess, condition: Callable[[Samples], bool], timeout: float = 20.0
) -> Samples:
    """Scrape until ``condition`` holds (each scrape may start a refresh)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(exporter)
        if condition(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in time; exporter log:\n{exporter.log_text()}")
        time.sleep(0.05)


def refreshes(samples: Samples, account: str = "prod") -> float:
    return value(samples, "refreshes_total", account=account, region_id=REGION)


def next_refresh(exporter: ExporterProcess, last: Samples, account: str = "prod") -> Samples:
    """Scrape until the target has finished a refresh after the one ``last`` showed."""
    before = refreshes(last, account)
    return wait_for(exporter, lambda samples: refreshes(samples, account) > before)


def static_credentials(key_id: str = KEY_ID, secret: str = KEY_SECRET) -> dict[str, str]:
    return {"source": "static", "access_key_id": key_id, "access_key_secret": secret}


def static_target(
    name: str = "prod", key_id: str = KEY_ID, secret: str = KEY_SECRET, **options: Any
) -> dict[str, Any]:
    """A target in ``REGION`` with an AccessKey in the config, plus target ``options``."""
    return {
        "name": name,
        "region_id": REGION,
        "credentials": static_credentials(key_id, secret),
        **options,
    }


def write_config(
    tmp_path: Path,
    simulator: SimulatorServer,
    targets: list[dict[str, Any]] | None = None,
    refresh: Mapping[str, Any] | None = None,
) -> Path:
    default_target = static_target()
    for target in targets or [default_target]:
        target.setdefault("endpoint", simulator.url)
    config = {
        "targets": targets or [default_target],
        "refresh": {"min_interval_seconds": 0.2, "sweep_interval_seconds": 1, **(refresh or {})},
        "api": {
            "max_attempts": 1,
            "timeout_seconds": 5,
            "deadline_seconds": 5,
            # The client-side rate limit (5/s by default) would make each refresh take seconds.
            "rate_limit_per_second": 1000,
        },
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def countable_runs(
    world: World, truth: GroundTruth, since: float, *, history: bool = False
) -> list[FinishedRun]:
    """The runs finished after ``since`` that the exporter can see finish.

    Without ``include_history`` a periodic task's record only shows Scheduled/Running between
    runs; just the last run of a finished schedule is visible with its terminal status.
    """
    visible_terminal = {
        (record["InvokeId"], record["InstanceId"], record["ContainerId"] or "", record["Repeats"])
        for record in world.records(truth.now)
        if record["InvocationStatus"] in TERMINAL_STATUSES
    }
    return [
        run
        for run in truth.finished_between(since, truth.now)
        if history or run.repeat_mode == "Once" or run.key in visible_terminal
    ]


def expected_finished(
    world: World, truth: GroundTruth, since: float, *, history: bool = False
) -> Counter[tuple[str, str]]:
    runs = countable_runs(world, truth, since, history=history)
    return Counter((run.status, run.error_code or NO_ERROR_CODE) for run in runs)


def exported_counts(
    samples: Samples, name: str, status_label: str, code_label: str, account: str
) -> Counter[tuple[str, str]]:
    """The non-zero counters of family ``name`` for one account, by (status, error code)."""
    counted: Counter[tuple[str, str]] = Counter()
    for (sample_name, labels), sample_value in samples.items():
        label_map = dict(labels)
        if sample_name == PREFIX + name and sample_value and label_map["account"] == account:
            key = (label_map[status_label], label_map[code_label])
            counted[key] = int(sample_value)
    return counted


def exported_finished(samples: Samples, account: str = "prod") -> Counter[tuple[str, str]]:
    return exported_counts(
        samples, "invocation_results_finished_total", "invocation_status", "error_code", account
    )


def exported_deliveries(samples: Samples, account: str = "prod") -> Counter[tuple[str, str]]:
    return exported_counts(
        samples,
        "oss_output_deliveries_total",
        "oss_output_status",
        "oss_output_error_code",
        account,
    )


def assert_gauges_match(samples: Samples, truth: GroundTruth) -> None:
    by_status = series(samples, "invocation_results", "prod", "invocation_status")
    assert by_status == {status: float(truth.by_status[status]) for status in INVOCATION_STATUSES}
    by_code = series(samples, "invocation_results_by_error_code", "prod", "error_code")
    assert by_code == {code: float(truth.by_error_code[code]) for code in ERROR_CODES}
    oss = series(samples, "oss_output_results", "prod", "oss_output_status")
    assert oss == {status: float(truth.by_oss_status[status]) for status in OSS_OUTPUT_STATUSES}
    target = {"account": "prod", "region_id": REGION}
    assert value(samples, "invocation_running", **target) == truth.running
    assert value(samples, "invocation_results_with_dropped_output", **target) == (
        truth.with_dropped_output
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=float(int(time.time())))


def simulator_for(world: World, **options: Any) -> SimulatorServer:
    accounts = {KEY_ID: KEY_SECRET, OTHER_KEY_ID: OTHER_SECRET}
    return SimulatorServer(world, accounts=accounts, **options)


# --- the tests ---------------------------------------------------------------------------------


def test_gauges_match_the_ground_truth_for_every_status_code_and_oss_state(
    tmp_path: Path, clock: ManualClock, start_exporter: StartExporter
) -> None:
    world = World(seed=11, clock=clock, spec="demo")  # every ErrorCode and OSS state on show
    with simulator_for(world) as simulator:
        exporter = start_exporter(["--config.file", str(write_config(tmp_path, simulator))])
        samples = wait_for(exporter, lambda s: refreshes(s) >= 1)
        truth = world.ground_truth()
        # Nearly every documented value is on show (so the comparison below means something).
        assert sum(1 for code in ERROR_CODES if truth.by_error_code[code]) >= 15
        assert sum(1 for status in INVOCATION_STATUSES if truth.by_status[status]) >= 11
        assert value(samples, "up", account="prod", region_id=REGION) == 1
        assert_gauges_match(samples, truth)
        # The backlog found by the first refresh is recorded, not counted.
        assert exported_finished(samples) == Counter()
        baseline = truth.now

        for _ in range(3):
            clock.advance(20)
            samples = next_refresh(exporter, samples)
            truth = world.ground_truth()
            assert_gauges_match(samples, truth)
        expected = expected_finished(world, truth, baseline)
        assert sum(expected.values()) > 0
        final = wait_for(exporter, lambda s: exported_finished(s) == expected)
        assert_gauges_match(final, truth)


@pytest.mark.parametrize("order", ["newest", "shuffled"])
def test_runs_are_counted_exactly_once_across_many_refreshes(
    tmp_path: Path, clock: ManualClock, start_exporter: StartExporter, order: str
) -> None:
    world = World(seed=5, clock=clock, spec=WorldSpec(instances=20))
    for outcome in ("Success", "Failed", "Timeout"):  # backlog, finished before the exporter
        world.add_invocation(3, outcome, at=clock.now() - 3600, duration=5)
    periodic = world.add_invocation(
        2, "Success", repeat_mode="Period", period=20, duration=2, runs=6
    )
    assert periodic
    with simulator_for(world, order=order) as simulator:
        exporter = start_exporter(["--config.file", str(write_config(tmp_path, simulator))])
        samples = wait_for(exporter, lambda s: refreshes(s) >= 1)
        baseline = clock.now()
        outcomes = [
            "Success",
            "Failed",
            "Timeout",
            "Error",
            "Cancelled",
            "Stopped",
            "Terminated.ExecutionInterrupted",
            "Aborted.ClientNotRunning",
            "Invalid.CommandNotApplicable",
        ]
        for step in range(8):
            world.add_invocation(
                4,
                outcomes[step % len(outcomes)],
                pending=1,
                duration=3 + step,
                dropped=100 * step,
                oss="Finished" if step % 2 else "Failed.OSS.AccessDenied",
                oss_delay=4,
            )
            clock.advance(5)
            samples = next_refresh(exporter, samples)
            expected = expected_finished(world, world.ground_truth(), baseline)
            # Never counted twice, whatever the order and however often it is seen.
            assert exported_finished(samples) - expected == Counter()
        clock.advance(60)  # let everything finish, and the OSS deliveries settle
        truth = world.ground_truth()
        expected = expected_finished(world, truth, baseline)
        counted = countable_runs(world, truth, baseline)
        deliveries = Counter(
            (run.oss_status, run.oss_error_code or NO_ERROR_CODE)
            for run in counted
            if run.oss_status in OSS_TERMINAL
        )
        # OSS states that settle after a run ended may wait for the periodic sweep (1 s here).
        samples = wait_for(
            exporter,
            lambda s: exported_finished(s) == expected and exported_deliveries(s) == deliveries,
        )
        target = {"account": "prod", "region_id": REGION}
        assert value(samples, "output_dropped_bytes_total", **target) == sum(
            run.dropped for run in counted
        )
        durations = Counter(run.status for run in counted if run.duration is not None)
        assert durations == {
            status: value(
                samples, "invocation_duration_seconds_count", **target, invocation_status=status
            )
            for status in durations
        }
        # More refreshes of an unchanged world count nothing more.
        for _ in range(3):
            samples = next_refresh(exporter, samples)
        assert exported_finished(samples) == expected


def test_periodic_task_history_counts_every_run(
    tmp_path: Path, clock: ManualClock, start_exporter: StartExporter
) -> None:
    world = World(seed=9, clock=clock, spec=WorldSpec(instances=5))
    invoke_id = world.add_invocation(
        1, ["Success", "Failed"], repeat_mode="Period", period=10, duration=1, runs=20
    )
    with simulator_for(world) as simulator:
        target = static_target(filters={"invoke_id": invoke_id}, include_history=True)
        config = write_config(tmp_path, simulator, targets=[target])
        exporter = start_exporter(["--config.file", str(config)])
        wait_for(exporter, lambda s: refreshes(s) >= 1)
        baseline = clock.now()
        clock.advance(95)  # nine or ten runs in one go: only the history shows them all
        truth = world.ground_truth()
        expected = expected_finished(world, truth, baseline, history=True)
        assert sum(expected.values()) >= 9
        wait_for(exporter, lambda s: exported_finished(s) == expected)


def test_a_failing_target_does_not_stop_the_others(
    tmp_path: Path, clock: ManualClock, start_exporter: StartExporter
) -> None:
    world = World(seed=3, clock=clock, spec="demo")
    faults = FaultPlan()
    faults.always("throttling_user", access_key_id=OTHER_KEY_ID)
    with simulator_for(world, faults=faults) as simulator:
        targets = [
            static_target("prod"),
            static_target("throttled", OTHER_KEY_ID, OTHER_SECRET),
            static_target("revoked", "LTAI5tRevokedKey", "revoked-secret-value-9999"),
        ]
        config = write_config(tmp_path, simulator, targets=targets)
        exporter = start_exporter(["--config.file", str(config)])
        samples = wait_for(
            exporter,
            lambda s: all(
                refreshes(s, account) >= 2 for account in ("prod", "throttled", "revoked")
            ),
        )

        def up(account: str) -> float:
            return value(samples, "up", account=account, region_id=REGION)

        assert (up("prod"), up("throttled"), up("revoked")) == (1, 0, 0)
        failures = {
            account: series(samples, "refresh_failures_total", account, "reason")
            for account in ("prod", "throttled", "revoked")
        }
        assert sum(failures["prod"].values()) == 0
        assert failures["throttled"]["throttled"] >= 2
        assert failures["revoked"]["auth"] >= 2
        assert_gauges_match(samples, world.ground_truth())
        assert httpx.get(exporter.url + "/-/ready").status_code == 200
        page = httpx.get(exporter.url + "/").text
        assert "<td>throttled</td><td>cn-hangzhou</td><td>0</td>" in page
        assert "<td>auth</td>" in page
        for secret in (KEY_SECRET, OTHER_SECRET, "revoked-secret-value-9999"):
            assert secret not in page
            assert secret not in exporter.log_text()


def test_concurrent_scrapes_share_one_refresh(
    tmp_path: Path, clock: ManualClock, start_exporter: StartExporter
) -> None:
    world = World(seed=4, clock=clock, spec=WorldSpec(instances=10))
    world.add_invocation(5, "Success", at=clock.now() - 600, duration=5)
    with simulator_for(world) as simulator:
        config = write_config(
            tmp_path, simulator, refresh={"min_interval_seconds": 1, "sweep_interval_seconds": 0}
        )
        exporter = start_exporter(["--config.file", str(config)])
        samples = wait_for(exporter, lambda s: refreshes(s) >= 1)
        # One scrape alone: how many API calls one steady-state refresh makes.
        time.sleep(1.1)  # past the minimum refresh interval
        simulator.reset_served()
        samples = next_refresh(exporter, samples)
        calls_of_one_refresh = len(simulator.served)
        assert calls_of_one_refresh >= 1

        simulator.faults.latency = 0.3  # keep the refresh in flight while the scrapes arrive
        time.sleep(1.1)
        simulator.reset_served()
        before = refreshes(samples)
        barrier = threading.Barrier(8)
        results: list[Samples] = []

        def concurrent_scrape() -> None:
            barrier.wait()
            results.append(scrape(exporter))

        threads = [threading.Thread(target=concurrent_scrape) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(results) == 8
        assert len(simulator.served) == calls_of_one_refresh
        assert {refreshes(result) for result in results} == {before + 1}


def test_promtool_accepts_the_exposition(
    tmp_path: Path, clock: ManualClock, start_exporter: StartExporter
) -> None:
    world = World(seed=2, clock=clock, spec="demo")
    with simulator_for(world) as simulator:
        target = static_target(command_breakdown={"enabled": True, "max_command_ids": 3})
        exporter = start_exporter(
            ["--config.file", str(write_config(tmp_path, simulator, targets=[target]))]
        )
        samples = wait_for(exporter, lambda s: refreshes(s) >= 1)
        clock.advance(60)
        next_refresh(exporter, samples)
        text = httpx.get(exporter.url + "/metrics").text
    checked = subprocess.run(
        ["/usr/bin/promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == ""
    assert "aliyun_cloudassistant_command_invocation_results_finished_total" in text


ROLE_ARN = "acs:ram::1234567890123456:role/cloudassistant-reader"
OIDC_TOKEN = "eyJhbGciOiJSUzI1NiJ9.oidc-token-for-the-test"


@pytest.mark.parametrize("source", ["static+assume_role", "oidc_role", "ecs_ram_role"])
def test_temporary_credentials_reach_the_api(
    tmp_path: Path, clock: ManualClock, start_exporter: StartExporter, source: str
) -> None:
    world = World(seed=8, clock=clock, spec=WorldSpec(instances=5))
    world.add_invocation(2, "Success", at=clock.now() - 600, duration=5)
    token_file = tmp_path / "oidc-token"
    token_file.write_text(OIDC_TOKEN, encoding="utf-8")
    with (
        simulator_for(world) as simulator,
        FakeStsServer(
            access_keys={KEY_ID: KEY_SECRET},
            roles={ROLE_ARN: "external-id-42"},
            oidc_tokens=[OIDC_TOKEN],
        ) as sts,
        FakeMetadataServer(role_name="EcsRamRoleTest") as metadata,
    ):
        target: dict[str, Any] = {"name": "prod", "region_id": REGION}
        if source == "static+assume_role":
            target["credentials"] = static_credentials()
            target["assume_role"] = {
                "role_arn": ROLE_ARN,
                "external_id": "external-id-42",
                "sts_endpoint": sts.url,
            }
        elif source == "oidc_role":
            sts.roles[ROLE_ARN] = None
            target["credentials"] = {
                "source": "oidc_role",
                "role_arn": ROLE_ARN,
                "oidc_provider_arn": sts.oidc_provider_arn,
                "oidc_token_file": str(token_file),
                "sts_endpoint": sts.url,
            }
        else:
            target["credentials"] = {"source": "ecs_ram_role", "metadata_url": metadata.url}
        config = write_config(tmp_path, simulator, targets=[target])
        exporter = start_exporter(["--config.file", str(config)])
        issuer = metadata if source == "ecs_ram_role" else sts
        samples = wait_for(exporter, lambda s: refreshes(s) >= 1)
        # The simulator learns the temporary key once the exporter has been given it.
        [issued] = issuer.issued
        simulator.add_account(
            issued.access_key_id,
            Account(issued.access_key_secret, sts=True, security_token=issued.security_token),
        )
        samples = wait_for(
            exporter, lambda s: value(s, "up", account="prod", region_id=REGION) == 1
        )
        assert_gauges_match(samples, world.ground_truth())
        served = simulator.served
        assert served[-1].access_key_id == issued.access_key_id
        assert served[-1].code == ""
        for secret in (KEY_SECRET, issued.access_key_secret, issued.security_token, OIDC_TOKEN):
            assert secret not in exporter.log_text()
