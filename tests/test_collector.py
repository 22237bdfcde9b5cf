"""CloudAssistantCollector: what a scrape shows, read back with registry.get_sample_value."""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.collector import CloudAssistantCollector
from exporter.ecs.errors import AuthenticationError
from exporter.ecs.models import (
    ERROR_CODES,
    INVOCATION_STATUSES,
    OSS_OUTPUT_ERROR_CODES,
    TERMINAL_STATUSES,
    InvocationQuery,
)
from exporter.refresh import FAILURE_REASONS, RefreshOptions, TargetRefresher, TargetSnapshot
from exporter.tracking import CommandBreakdown
from tests.test_refresh import FakeApi, FakeClock, backlog
from tests.test_tracking import T0, result

P = "aliyun_cloudassistant_"


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="test-collector")
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


def refresher(
    name: str, api: FakeApi, executor: ThreadPoolExecutor, clock: FakeClock, **options: object
) -> TargetRefresher:
    return TargetRefresher(
        name,
        "cn-hangzhou",
        api,
        InvocationQuery(),
        RefreshOptions(**options),  # type: ignore[arg-type]
        executor,
        clock=clock,
    )


def registry_for(
    refreshers: list[TargetRefresher], max_wait: float = 5.0
) -> tuple[CollectorRegistry, CloudAssistantCollector]:
    registry = CollectorRegistry()
    collector = CloudAssistantCollector(refreshers, scrape_max_wait=max_wait, build_version="9.9.9")
    registry.register(collector)
    return registry, collector


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(
        P + name, {"account": "prod", "region_id": "cn-hangzhou", **labels}
    )


def test_a_scrape_shows_gauges_and_counters_of_the_target(executor: ThreadPoolExecutor) -> None:
    clock = FakeClock()
    api = FakeApi([result("t-run", status="Running", start=T0 - 120), *backlog(10)])
    target = refresher("prod", api, executor, clock)
    registry, _ = registry_for([target])

    assert value(registry, "up") == 1
    assert value(registry, "invocation_results", invocation_status="Success") == 10
    assert value(registry, "invocation_running") == 1
    assert value(registry, "invocation_running_oldest_age_seconds") == pytest.approx(120)

    failed = result(
        "t-run", status="Failed", error_code="ExitCodeNonzero", start=T0 - 120, finished=T0 + 20
    )
    api.set(failed)
    api.set(result("t-new", status="Success", oss="Finished", dropped=4096))
    clock.now += 30
    labels = {"invocation_status": "Failed", "error_code": "ExitCodeNonzero"}
    assert value(registry, "invocation_results_finished_total", **labels) == 1
    assert (
        value(
            registry,
            "invocation_results_finished_total",
            invocation_status="Success",
            error_code="",
        )
        == 1
    )
    assert value(registry, "invocation_duration_seconds_count", invocation_status="Failed") == 1
    assert (
        value(registry, "invocation_duration_seconds_bucket", invocation_status="Failed", le="60.0")
        == 0
    )
    assert (
        value(
            registry, "invocation_duration_seconds_bucket", invocation_status="Failed", le="300.0"
        )
        == 1
    )
    assert (
        value(
            registry,
            "oss_output_deliveries_total",
            oss_output_status="Finished",
            oss_output_error_code="",
        )
        == 1
    )
    assert value(registry, "output_dropped_bytes_total") == 4096
    assert value(registry, "invocation_results_with_dropped_output") == 1
    assert value(registry, "refreshes_total") == 2
    assert value(registry, "refresh_pages") == 1  # nothing left in flight: no Running walk
    assert value(registry, "last_refresh_success_timestamp_seconds") == T0 + 30


def test_every_documented_value_is_exposed_with_zero(executor: ThreadPoolExecutor) -> None:
    target = refresher("prod", FakeApi(), executor, FakeClock())
    registry, _ = registry_for([target])
    for status in INVOCATION_STATUSES:
        assert value(registry, "invocation_results", invocation_status=status) == 0
    for code in ERROR_CODES:
        assert value(registry, "invocation_results_by_error_code", error_code=code) == 0
    for status in TERMINAL_STATUSES:
        for code in ("", *ERROR_CODES):
            labels = {"invocation_status": status, "error_code": code}
            assert value(registry, "invocation_results_finished_total", **labels) == 0
        assert value(registry, "invocation_duration_seconds_count", invocation_status=status) == 0
    for code in ("", *OSS_OUTPUT_ERROR_CODES):
        labels = {"oss_output_status": "Failed", "oss_output_error_code": code}
        assert value(registry, "oss_output_deliveries_total", **labels) == 0
    for reason in FAILURE_REASONS:
        assert value(registry, "refresh_failures_total", reason=reason) == 0
    for status in ("InProgress", "Finished", "Failed"):
        assert value(registry, "oss_output_results", oss_output_status=status) == 0
    assert value(registry, "api_requests_total", code="") == 0
    assert value(registry, "api_request_duration_seconds_bucket", le="0.05") == 0
    assert value(registry, "results_truncated") == 0


def test_build_info_has_no_target_labels(executor: ThreadPoolExecutor) -> None:
    registry, _ = registry_for([refresher("prod", FakeApi(), executor, FakeClock())])
    labels = {"version": "9.9.9", "python_version": platform.python_version()}
    assert registry.get_sample_value(P + "exporter_build_info", labels) == 1


def test_a_failing_target_goes_down_while_the_other_keeps_working(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    good_api = FakeApi(backlog(5))
    bad_api = FakeApi(backlog(7))
    good = refresher("prod", good_api, executor, clock)
    bad = refresher("staging", bad_api, executor, clock)
    registry, _ = registry_for([good, bad])
    assert value(registry, "up") == 1

    bad_api.set(result("t-x", status="Success"))
    clock.now += 30
    generate_latest(registry)
    bad_api.errors[len(bad_api.calls) + 1] = AuthenticationError(
        "bad key", code="InvalidAccessKeyId.NotFound"
    )
    good_api.set(result("t-y", status="Success"))
    clock.now += 30

    staging = {"account": "staging", "region_id": "cn-hangzhou"}
    assert value(registry, "up") == 1
    assert registry.get_sample_value(P + "up", staging) == 0
    assert (
        registry.get_sample_value(P + "refresh_failures_total", {**staging, "reason": "auth"}) == 1
    )
    # Its counters keep their values; its gauges show the last known view.
    finished = {**staging, "invocation_status": "Success", "error_code": ""}
    assert registry.get_sample_value(P + "invocation_results_finished_total", finished) == 1
    assert (
        registry.get_sample_value(
            P + "invocation_results", {**staging, "invocation_status": "Success"}
        )
        == 8
    )
    assert (
        value(
            registry,
            "invocation_results_finished_total",
            invocation_status="Success",
            error_code="",
        )
        == 1
    )


def test_a_slow_target_delays_the_scrape_by_at_most_max_wait(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    slow_api = FakeApi(backlog(3))
    slow_api.gate = threading.Event()
    fast = refresher("prod", FakeApi(backlog(4)), executor, clock)
    slow = refresher("slow", slow_api, executor, clock)
    registry, _ = registry_for([slow, fast], max_wait=0.2)
    try:
        started = time.monotonic()
        text = generate_latest(registry).decode()
        elapsed = time.monotonic() - started
    finally:
        slow_api.gate.set()
    assert elapsed < 2
    assert 'aliyun_cloudassistant_up{account="slow",region_id="cn-hangzhou"} 0.0' in text
    assert value(registry, "invocation_results", invocation_status="Success") == 4


def test_no_ids_on_default_series(executor: ThreadPoolExecutor) -> None:
    api = FakeApi([result("t-secretid", instance_id="i-hidden", command_id="c-hidden")])
    registry, _ = registry_for([refresher("prod", api, executor, FakeClock())])
    text = generate_latest(registry).decode()
    for forbidden in ("t-secretid", "i-hidden", "c-hidden"):
        assert forbidden not in text
    label_names = {
        name for family in registry.collect() for s in family.samples for name in s.labels
    }
    assert label_names == {
        "account",
        "region_id",
        "invocation_status",
        "error_code",
        "oss_output_status",
        "oss_output_error_code",
        "reason",
        "code",
        "le",
        "version",
        "python_version",
    }


def test_command_breakdown_is_opt_in_and_capped(executor: ThreadPoolExecutor) -> None:
    clock = FakeClock()
    api = FakeApi()
    breakdown = CommandBreakdown(enabled=True, max_command_ids=1, command_names={"c-a": "backup"})
    target = refresher("prod", api, executor, clock, command_breakdown=breakdown)
    registry, _ = registry_for([target])
    generate_latest(registry)
    api.set(result("t-1", status="Success", command_id="c-a"))
    api.set(result("t-2", status="Failed", command_id="c-b"))
    clock.now += 30
    name = "command_invocation_results_finished_total"
    assert (
        value(registry, name, command_id="c-a", command_name="backup", invocation_status="Success")
        == 1
    )
    assert (
        value(registry, name, command_id="other", command_name="", invocation_status="Failed") == 1
    )
    assert value(registry, "command_ids_folded") == 1


def test_unknown_status_values_are_shown_as_they_come(executor: ThreadPoolExecutor) -> None:
    api = FakeApi([result("t-1", status="Hibernating"), result("t-2", status="Success")])
    registry, _ = registry_for([refresher("prod", api, executor, FakeClock())])
    assert value(registry, "invocation_results", invocation_status="Hibernating") == 1


def test_registration_does_not_start_a_refresh(executor: ThreadPoolExecutor) -> None:
    api = FakeApi(backlog(2))
    registry_for([refresher("prod", api, executor, FakeClock())])
    assert api.calls == []


def test_without_a_wait_collect_only_renders(executor: ThreadPoolExecutor) -> None:
    # The exporter's server starts and waits for refreshes itself; collect() must not start
    # more of them.
    api = FakeApi(backlog(3))
    target = refresher("prod", api, executor, FakeClock())
    registry, _ = registry_for([target], max_wait=0)
    generate_latest(registry)
    assert api.calls == []
    assert (
        registry.get_sample_value(
            "aliyun_cloudassistant_up", {"account": "prod", "region_id": "cn-hangzhou"}
        )
        == 0
    )


def test_help_says_how_fresh_the_gauges_are(executor: ThreadPoolExecutor) -> None:
    target = refresher("prod", FakeApi(), executor, FakeClock(), min_refresh_interval=45.0)
    registry, _ = registry_for([target])
    text = generate_latest(registry).decode()
    assert "as of the last refresh (at most every 45 s)" in text


class _BrokenSnapshots(TargetRefresher):
    """A refresher whose snapshots cannot be built once ``broken`` is set (a bug)."""

    broken = False

    def _build_snapshot(self, *, up: bool, duration: float) -> TargetSnapshot:
        if self.broken:
            raise ZeroDivisionError("a bug")
        return super()._build_snapshot(up=up, duration=duration)


@pytest.mark.parametrize("bug", ["refresh", "snapshot"])
def test_a_bug_never_takes_the_scrape_down(executor: ThreadPoolExecutor, bug: str) -> None:
    clock = FakeClock()
    api = FakeApi(backlog(3))
    other = refresher("other", FakeApi(backlog(2)), executor, clock)
    broken = _BrokenSnapshots(
        "prod", "cn-hangzhou", api, InvocationQuery(), RefreshOptions(), executor, clock=clock
    )
    registry, _ = registry_for([broken, other])
    assert value(registry, "up") == 1
    if bug == "refresh":
        api.errors[len(api.calls) + 1] = KeyError("unexpected")
    else:
        broken.broken = True
    clock.now += 30
    text = generate_latest(registry).decode()
    assert 'aliyun_cloudassistant_up{account="prod",region_id="cn-hangzhou"} 0.0' in text
    assert 'aliyun_cloudassistant_up{account="other",region_id="cn-hangzhou"} 1.0' in text
    assert value(registry, "refreshes_total") == 2
    assert value(registry, "invocation_results", invocation_status="Success") == 3
