"""CloudAssistantCollector: what a scrape shows, read back with registry.get_sample_value."""

from __future__ import annotations

import platform
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import replace
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families

from exporter import metrics
from exporter.collector import (
    REVISION_VARIABLE,
    CloudAssistantCollector,
    Exposition,
    build_info,
    build_revision,
)
from exporter.ecs.errors import AuthenticationError
from exporter.ecs.models import (
    ERROR_CODES,
    INVOCATION_STATUSES,
    OSS_OUTPUT_ERROR_CODES,
    InvocationQuery,
)
from exporter.metrics import BuildInfoKey, TargetInfoKey, TargetKey
from exporter.refresh import FAILURE_REASONS, RefreshOptions, TargetRefresher, TargetSnapshot
from exporter.reload import ReloadStatus
from exporter.server import ExporterHTTPServer
from exporter.tracking import CommandBreakdown
from tests.support.fakes import T0, FakeApi, FakeClock, backlog, make_refresher, result

P = "aliyun_cloudassistant_"
BUILD = BuildInfoKey("9.9.9", "abc1234", platform.python_version())


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="test-collector")
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


def refresher(
    name: str, api: FakeApi, executor: ThreadPoolExecutor, clock: FakeClock, **options: Any
) -> TargetRefresher:
    return make_refresher(api, executor, clock, name, **options)


def refreshing(
    refreshers: Sequence[TargetRefresher], max_wait: float = 5.0
) -> Callable[[], list[TargetSnapshot]]:
    """A source of snapshots that first refreshes what is due, as a scrape of the exporter does
    (the application does that before rendering; here the source does it)."""

    def snapshots() -> list[TargetSnapshot]:
        futures = [f for f in (r.start_if_due() for r in refreshers) if f is not None]
        if futures and max_wait > 0:
            wait_futures(futures, timeout=max_wait)
        return [r.latest() for r in refreshers]

    return snapshots


LOADED = ReloadStatus()  # when the configuration was loaded, the same for every collector


def registry_for(
    refreshers: list[TargetRefresher],
    max_wait: float = 5.0,
    target_info: dict[TargetKey, TargetInfoKey] | None = None,
) -> tuple[CollectorRegistry, CloudAssistantCollector]:
    registry = CollectorRegistry()
    collector = CloudAssistantCollector(
        refreshing(refreshers, max_wait), build=BUILD, target_info=target_info, reload_status=LOADED
    )
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
            error_code="none",
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
            oss_output_error_code="none",
        )
        == 1
    )
    assert value(registry, "output_dropped_bytes_total") == 4096
    assert value(registry, "invocation_results_with_dropped_output") == 1
    assert value(registry, "refreshes_total") == 2
    assert value(registry, "refresh_pages") == 1  # nothing left in flight: no Running walk
    assert value(registry, "last_refresh_success_timestamp_seconds") == T0 + 30


def test_the_text_reused_across_refreshes_equals_a_fresh_rendering(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    api = FakeApi([result("t-run", status="Running", start=T0 - 120), *backlog(10)])
    target = refresher("prod", api, executor, clock)
    info = {TargetKey("prod", "cn-hangzhou"): TargetInfoKey("public", "static")}

    def collector() -> CloudAssistantCollector:
        return CloudAssistantCollector(
            lambda: [target.latest()], build=BUILD, target_info=info, reload_status=LOADED
        )

    kept = collector()  # renders each snapshot from the one before, as a running exporter does
    changes: list[Callable[[], None]] = [
        lambda: None,  # nothing new: only some refresh families move
        lambda: api.set(result("t-run", status="Failed", error_code="ExitCodeNonzero")),
        lambda: api.set(result("t-new", status="Success", oss="Finished", dropped=4096)),
        lambda: api.errors.update({len(api.calls) + 1: AuthenticationError("no")}),
        lambda: None,  # up again
    ]
    for change in changes:
        change()
        clock.now += 30
        kept.prerender(target.refresh_now())
        assert kept.render() == collector().render()


def test_every_preinitialised_value_is_exposed_with_zero(executor: ThreadPoolExecutor) -> None:
    target = refresher("prod", FakeApi(), executor, FakeClock())
    registry, _ = registry_for([target])
    for status in INVOCATION_STATUSES:
        assert value(registry, "invocation_results", invocation_status=status) == 0
    for code in ERROR_CODES:
        assert value(registry, "invocation_results_by_error_code", error_code=code) == 0
    for pair in metrics.FINISHED_PAIRS:
        assert value(registry, "invocation_results_finished_total", **pair.key._asdict()) == 0
    for status in metrics.STARTED_STATUSES:
        assert value(registry, "invocation_duration_seconds_count", invocation_status=status) == 0
    for code in OSS_OUTPUT_ERROR_CODES:
        labels = {"oss_output_status": "Failed", "oss_output_error_code": code}
        assert value(registry, "oss_output_deliveries_total", **labels) == 0
    labels = {"oss_output_status": "Finished", "oss_output_error_code": "none"}
    assert value(registry, "oss_output_deliveries_total", **labels) == 0
    for reason in FAILURE_REASONS:
        assert value(registry, "refresh_failures_total", reason=reason) == 0
    for status in ("InProgress", "Finished", "Failed"):
        assert value(registry, "oss_output_results", oss_output_status=status) == 0
    assert value(registry, "api_requests_total", code="ok") == 0
    assert value(registry, "api_request_duration_seconds_bucket", le="0.05") == 0
    assert value(registry, "results_truncated") == 0
    assert value(registry, "label_values_folded") == 0


def samples_of(registry: CollectorRegistry) -> dict[str, set[tuple[tuple[str, str], ...]]]:
    """Every series of a scrape: family sample name -> label sets."""
    found: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    for family in registry.collect():
        for sample in family.samples:
            found.setdefault(sample.name, set()).add(tuple(sorted(sample.labels.items())))
    return found


def test_no_series_that_can_never_move(executor: ThreadPoolExecutor) -> None:
    # Issue 13: only the status x ErrorCode pairs the API produces, and durations only for
    # statuses of runs that started.
    registry, _ = registry_for([refresher("prod", FakeApi(backlog(3)), executor, FakeClock())])
    found = samples_of(registry)
    finished = {
        (labels["invocation_status"], labels["error_code"])
        for labels in map(dict, found[P + "invocation_results_finished_total"])
    }
    assert finished == {tuple(pair.key) for pair in metrics.FINISHED_PAIRS}
    started = {
        dict(labels)["invocation_status"]
        for labels in found[P + "invocation_duration_seconds_count"]
    }
    assert started == set(metrics.STARTED_STATUSES)
    for status in ("Aborted", "Invalid", "Cancelled"):
        assert status not in started
    # A pair the API was not expected to produce still gets its series, from its first run on.
    assert ("Failed", "none") not in finished


def test_a_pair_outside_the_table_appears_when_it_happens(executor: ThreadPoolExecutor) -> None:
    clock = FakeClock()
    api = FakeApi(backlog(2))
    registry, _ = registry_for([refresher("prod", api, executor, clock)])
    generate_latest(registry)
    api.set(result("t-odd", status="Failed", error_code="", start=T0, finished=T0 + 5))
    api.set(result("t-aborted", status="Aborted", error_code="DeliveryTimeout", start=None))
    clock.now += 30
    finished = "invocation_results_finished_total"
    assert value(registry, finished, invocation_status="Failed", error_code="none") == 1
    assert value(registry, finished, invocation_status="Aborted", error_code="DeliveryTimeout") == 1
    assert value(registry, "invocation_duration_seconds_count", invocation_status="Failed") == 1


def test_at_most_200_series_per_target_with_defaults(executor: ThreadPoolExecutor) -> None:
    clock = FakeClock()
    targets = [refresher(name, FakeApi(backlog(5)), executor, clock) for name in ("a", "b")]
    info = {TargetKey(name, "cn-hangzhou"): TargetInfoKey("public", "static") for name in "ab"}
    registry, _ = registry_for(targets, target_info=info)
    per_target: dict[str, int] = {}
    for family in registry.collect():
        for sample in family.samples:
            account = sample.labels.get("account")
            if account is not None:
                per_target[account] = per_target.get(account, 0) + 1
    assert per_target["a"] == per_target["b"]
    assert per_target["a"] == sum(n for _, n in metrics.per_target_series())
    # What shows once it is known (the API's clock, from its first answer's Date) counts too.
    later = sum(
        1
        for spec in metrics.METRICS
        if spec.per_target and spec.absent_until_known and not spec.opt_in
    )
    assert per_target["a"] + later <= 200


def test_first_walk_progress_and_the_api_clock_offset_are_exposed(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    api = FakeApi(backlog(5))
    api.errors[1] = AuthenticationError("no", code="InvalidAccessKeyId.NotFound")
    target = refresher("prod", api, executor, clock)
    snapshots: list[TargetSnapshot] = []
    collector = CloudAssistantCollector(lambda: snapshots, build=BUILD)
    registry = CollectorRegistry()
    registry.register(collector)
    snapshots[:] = [target.refresh_now(timeout=5)]  # the first walk failed: still reading
    assert value(registry, "first_walk_complete") == 0
    assert value(registry, "api_clock_offset_seconds") is None  # no answer said its time yet
    done = replace(target.refresh_now(timeout=5), api_clock_offset_seconds=-300.0)
    snapshots[:] = [done]
    assert value(registry, "first_walk_complete") == 1
    assert value(registry, "api_clock_offset_seconds") == -300.0


def test_build_info_has_no_target_labels_and_a_revision(executor: ThreadPoolExecutor) -> None:
    registry, _ = registry_for([refresher("prod", FakeApi(), executor, FakeClock())])
    labels = {
        "version": "9.9.9",
        "revision": "abc1234",
        "python_version": platform.python_version(),
    }
    assert registry.get_sample_value(P + "exporter_build_info", labels) == 1


@pytest.mark.parametrize(
    ("environ", "revision"),
    [
        ({}, "unknown"),
        ({REVISION_VARIABLE: ""}, "unknown"),
        ({REVISION_VARIABLE: " 3f2c1e9 "}, "3f2c1e9"),
        ({REVISION_VARIABLE: "x" * 500}, "unknown"),
        ({REVISION_VARIABLE: "bad\nvalue"}, "unknown"),
    ],
)
def test_the_revision_comes_from_the_build(environ: dict[str, str], revision: str) -> None:
    assert build_revision(environ) == revision
    assert build_info("1.0", build_revision(environ)).revision == revision


def test_target_info_names_how_each_target_is_reached(executor: ThreadPoolExecutor) -> None:
    targets = [refresher(name, FakeApi(), executor, FakeClock()) for name in ("prod", "dev")]
    info = {
        TargetKey("prod", "cn-hangzhou"): TargetInfoKey("vpc", "oidc_role+assume_role"),
        TargetKey("dev", "cn-hangzhou"): TargetInfoKey("public", "static"),
    }
    registry, _ = registry_for(targets, target_info=info)
    assert (
        value(
            registry,
            "target_info",
            endpoint_kind="vpc",
            credential_source="oidc_role+assume_role",
        )
        == 1
    )
    dev = {"account": "dev", "region_id": "cn-hangzhou"}
    labels = {**dev, "endpoint_kind": "public", "credential_source": "static"}
    assert registry.get_sample_value(P + "target_info", labels) == 1


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
    finished = {**staging, "invocation_status": "Success", "error_code": "none"}
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
            error_code="none",
        )
        == 1
    )


def test_a_refresh_in_flight_never_holds_the_rendering(executor: ThreadPoolExecutor) -> None:
    # How long a scrape waits for refreshes is Application.prepare_scrape's business
    # (tests/test_refresh.py); rendering itself shows the newest snapshots whatever is in flight.
    clock = FakeClock()
    slow_api = FakeApi(backlog(3))
    slow_api.gate = threading.Event()
    fast = refresher("prod", FakeApi(backlog(4)), executor, clock)
    fast.refresh_now()
    slow = refresher("slow", slow_api, executor, clock)
    registry = CollectorRegistry()
    collector = CloudAssistantCollector(lambda: [slow.latest(), fast.latest()], build=BUILD)
    registry.register(collector)
    try:
        in_flight = slow.start_if_due()
        assert in_flight is not None
        text = generate_latest(registry).decode()
        rendered, _ = collector.render()
        assert not in_flight.done()
    finally:
        slow_api.gate.set()
    for body in (text, rendered):
        assert 'aliyun_cloudassistant_up{account="slow",region_id="cn-hangzhou"} 0.0' in body
        assert 'aliyun_cloudassistant_up{account="prod",region_id="cn-hangzhou"} 1.0' in body
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
        "revision",
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


def test_a_command_id_too_long_for_a_label_is_counted_under_other(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    api = FakeApi()
    target = refresher("prod", api, executor, clock, command_breakdown=CommandBreakdown(True))
    registry, _ = registry_for([target])
    generate_latest(registry)
    api.set(result("t-1", status="Success", command_id="c-" + "x" * 200))
    clock.now += 30
    text = generate_latest(registry).decode()
    assert "x" * 129 not in text
    name = "command_invocation_results_finished_total"
    labels = {"command_id": "other", "command_name": "", "invocation_status": "Success"}
    assert value(registry, name, **labels) == 1


def test_unknown_status_values_are_shown_as_they_come(executor: ThreadPoolExecutor) -> None:
    api = FakeApi([result("t-1", status="Hibernating"), result("t-2", status="Success")])
    registry, _ = registry_for([refresher("prod", api, executor, FakeClock())])
    assert value(registry, "invocation_results", invocation_status="Hibernating") == 1


def test_registration_does_not_start_a_refresh(executor: ThreadPoolExecutor) -> None:
    api = FakeApi(backlog(2))
    registry_for([refresher("prod", api, executor, FakeClock())])
    assert api.calls == []


def test_collect_only_renders(executor: ThreadPoolExecutor) -> None:
    # Who starts refreshes, and how long a scrape waits for them, is the application's business:
    # collect() reads the source and starts nothing.
    api = FakeApi(backlog(3))
    target = refresher("prod", api, executor, FakeClock())
    registry = CollectorRegistry()
    registry.register(CloudAssistantCollector(lambda: [target.latest()], build=BUILD))
    generate_latest(registry)
    assert api.calls == []
    assert (
        registry.get_sample_value(
            "aliyun_cloudassistant_up", {"account": "prod", "region_id": "cn-hangzhou"}
        )
        == 0
    )


def test_help_and_types_come_from_the_contract(executor: ThreadPoolExecutor) -> None:
    registry, _ = registry_for([refresher("prod", FakeApi(), executor, FakeClock())])
    families = {family.name: family for family in registry.collect()}
    for spec in metrics.METRICS:
        if spec.opt_in or spec is metrics.TARGET_INFO:
            continue
        if spec is metrics.STATE_FILES_MOVED_ASIDE:
            continue  # the state directory's own collector (exporter/state.py)
        family = families[spec.family]
        assert (family.type, family.documentation) == (spec.type, spec.help)


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


def families_of(text: str, *, openmetrics: bool) -> dict[str, set[tuple[str, str, float]]]:
    parse = parse_om if openmetrics else text_string_to_metric_families
    found: dict[str, set[tuple[str, str, float]]] = {}
    for family in parse(text):
        rows = found.setdefault(family.name, set())
        for sample in family.samples:
            rows.add((sample.name, repr(sorted(sample.labels.items())), sample.value))
    return found


@pytest.mark.parametrize("openmetrics", [False, True])
def test_the_cached_text_is_what_the_registry_renders(
    executor: ThreadPoolExecutor, openmetrics: bool
) -> None:
    clock = FakeClock()
    api = FakeApi([result("t-run", status="Running"), *backlog(20)])
    breakdown = CommandBreakdown(enabled=True)
    targets = [
        refresher("prod", api, executor, clock, command_breakdown=breakdown),
        refresher("dev", FakeApi(backlog(3)), executor, clock),
    ]
    info = {TargetKey("prod", "cn-hangzhou"): TargetInfoKey("custom", "default")}
    registry, collector = registry_for(targets, target_info=info)
    generate_latest(registry)
    api.set(result("t-run", status="Failed", error_code="ExitCodeNonzero", finished=T0 + 9))
    clock.now += 30
    for target in targets:
        target.refresh_now()

    runtime = CollectorRegistry()
    accept = "application/openmetrics-text; version=1.0.0" if openmetrics else "text/plain"
    body, content_type = Exposition(runtime, collector).render(accept)
    text = body.decode()
    assert ("openmetrics" in content_type) == openmetrics
    assert text.endswith("# EOF\n") == openmetrics
    expected = CloudAssistantCollector(
        lambda: [t.latest() for t in targets], build=BUILD, target_info=info, reload_status=LOADED
    )
    reference = CollectorRegistry()
    reference.register(expected)
    encoder, _ = choose_encoder(accept)
    rendered = encoder(reference).decode()
    assert families_of(text, openmetrics=openmetrics) == families_of(
        rendered, openmetrics=openmetrics
    )
    assert text.count("# TYPE " + P + "up ") == 1  # one header per family, every target below


class _CountingCollector(CloudAssistantCollector):
    rendered: list[str]

    def _target_text(self, snap: TargetSnapshot, previous: Any) -> Any:
        self.rendered.append(snap.name)
        return super()._target_text(snap, previous)


def test_each_target_is_rendered_once_per_snapshot(executor: ThreadPoolExecutor) -> None:
    clock = FakeClock()
    targets = [refresher(f"acct{n}", FakeApi(backlog(50)), executor, clock) for n in range(3)]
    for target in targets:
        target.refresh_now()
    collector = _CountingCollector(lambda: [t.latest() for t in targets], build=BUILD)
    collector.rendered = []
    first, _ = collector.render()
    assert sorted(collector.rendered) == ["acct0", "acct1", "acct2"]
    assert collector.render()[0] == first
    assert len(collector.rendered) == 3  # nothing rendered again
    clock.now += 30
    targets[1].refresh_now()
    collector.render()
    assert collector.rendered[3:] == ["acct1"]  # only the target with a new snapshot
    clock.now += 30
    targets[0].refresh_now()
    collector.prerender(targets[0].latest())  # what the refresh does when it made a snapshot
    assert collector.rendered[4:] == ["acct0"]
    openmetrics, _ = collector.render("application/openmetrics-text; version=1.0.0")
    assert len(collector.rendered) == 5  # the sample lines are the same in both formats
    text = collector.render()[0]
    assert [x for x in openmetrics.splitlines() if not x.startswith("#")] == [
        x for x in text.splitlines() if not x.startswith("#")
    ]


def test_label_values_from_the_api_are_bounded(executor: ThreadPoolExecutor) -> None:
    clock = FakeClock()
    api = FakeApi(backlog(2))
    registry, _ = registry_for([refresher("prod", api, executor, clock)])
    generate_latest(registry)
    huge = "E" * 500_000
    for n in range(20):
        api.set(result(f"t-big{n}", status="Failed", error_code=f"{huge}{n}", finished=T0 + 5))
    api.set(result("t-long", status="Failed", error_code="C" * 129, finished=T0 + 5))
    api.set(result("t-fits", status="Failed", error_code="C" * 128, finished=T0 + 5))
    clock.now += 30
    text = generate_latest(registry).decode()
    assert len(text) < 100_000
    finished = "invocation_results_finished_total"
    assert value(registry, finished, invocation_status="Failed", error_code="other") == 21
    assert value(registry, finished, invocation_status="Failed", error_code="C" * 128) == 1
    assert value(registry, "invocation_results_by_error_code", error_code="other") == 21
    assert value(registry, "label_values_folded") == 21


LONE_SURROGATES = ["\ud800", "x\udfffy", "\udc80" * 3]


@pytest.mark.parametrize("bad", LONE_SURROGATES)
def test_metrics_answers_200_whatever_string_reaches_a_label(
    executor: ThreadPoolExecutor, bad: str
) -> None:
    # The API layer sanitises what it parses; the collector must hold even if a string slips by.
    target = refresher("prod", FakeApi(backlog(1)), executor, FakeClock())
    target.refresh_now()
    good = target.latest()
    hostile = replace(
        good,
        api_requests=(*good.api_requests, (bad, 1)),
        refresh_failures=(*good.refresh_failures, (bad, 2)),
        view=replace(good.view, by_status=(*good.view.by_status, (bad, 3))),
        counters=replace(good.counters, finished=(*good.counters.finished, (("Failed", bad), 4))),
    )
    collector = CloudAssistantCollector(lambda: [hostile], build=BUILD)
    registry = CollectorRegistry()
    registry.register(collector)
    assert generate_latest(registry)
    server = ExporterHTTPServer(
        ("127.0.0.1", 0),
        registry=registry,
        target_statuses=list,
        render_metrics=Exposition(CollectorRegistry(), collector).pieces,
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        for accept in ("text/plain", "application/openmetrics-text; version=1.0.0"):
            answer = httpx.get(server.url + "/metrics", headers={"Accept": accept}, timeout=10)
            assert answer.status_code == 200
            families = families_of(answer.text, openmetrics="openmetrics" in accept)
            assert any("\ufffd" in labels for labels in map(repr, families[P + "api_requests"]))
    finally:
        server.stop(grace_seconds=5)
        thread.join(5)


def test_a_refresh_renders_its_snapshot_before_the_scrape(executor: ThreadPoolExecutor) -> None:
    clock = FakeClock()
    api = FakeApi(backlog(5))
    targets: list[TargetRefresher] = []
    collector = _CountingCollector(lambda: [t.latest() for t in targets], build=BUILD)
    collector.rendered = []
    target = TargetRefresher(
        "prod",
        "cn-hangzhou",
        api,
        InvocationQuery(),
        RefreshOptions(),
        executor,
        clock=clock,
        on_snapshot=collector.prerender,
    )
    targets.append(target)
    target.refresh_now()
    assert collector.rendered == ["prod"]
    text, _ = collector.render()
    assert collector.rendered == ["prod"]  # the scrape only joined the text
    assert 'aliyun_cloudassistant_up{account="prod",region_id="cn-hangzhou"} 1.0' in text
