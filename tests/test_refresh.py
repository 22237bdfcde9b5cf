"""TargetRefresher: what it reads, how often, and what it shows when things go wrong.

The first half drives the refresher with :class:`FakeApi`, a small stand-in for the client's
``iter_pages`` contract; the second half runs it against the ECS simulator over loopback HTTP
and compares its counters with the simulator's ground truth.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client import CollectorRegistry

from exporter.app import Application
from exporter.ecs.client import MAX_EMPTY_PAGES_IN_A_ROW, EcsClient, RequestEvent, RetryPolicy
from exporter.ecs.credentials import StaticProvider
from exporter.ecs.errors import (
    AuthenticationError,
    InvalidRequestError,
    ThrottledError,
    classify_api_error,
)
from exporter.ecs.models import InvalidRecord, InvocationQuery, InvocationResult
from exporter.refresh import ApiStatistics, RefreshOptions, TargetRefresher, TargetSnapshot
from exporter.refresh.sweeps import OrderWatch
from exporter.settings import ExporterSettings
from exporter.simulator.faults import FaultPlan
from exporter.simulator.server import SimulatorServer
from exporter.simulator.world import GroundTruth, ManualClock, World, WorldSpec
from tests.support.fakes import (
    DAY,
    T0,
    FakeApi,
    FakeClock,
    PagedResults,
    api_record,
    backlog,
    make_client,
    make_refresher,
    mock_http,
    result,
)

replace = InvocationResult.replace  # a copy of a record with changes


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="test-refresh")
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


SETTINGS = ExporterSettings.model_validate(
    {
        "targets": [
            {"name": "prod", "region_id": "cn-hangzhou", "credentials": {"source": "environment"}}
        ]
    }
)


def scrape(refresher: TargetRefresher, *, max_wait: float) -> TargetSnapshot:
    """What a scrape of ``refresher``'s target shows: the production path
    (``Application.prepare_scrape``, then the newest snapshot)."""
    app = Application(
        settings=SETTINGS,
        targets=[],
        refreshers=[refresher],
        registry=CollectorRegistry(),
        executor=ThreadPoolExecutor(max_workers=1),
        http_clients=[],
    )
    app.prepare_scrape(max_wait)
    return refresher.latest()


def finished(snapshot: TargetSnapshot) -> Counter[tuple[str, str]]:
    return Counter({label: n for label, n in snapshot.counters.finished if n})


def failures(snapshot: TargetSnapshot) -> dict[str, int]:
    return {reason: n for reason, n in snapshot.refresh_failures if n}


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


# --- fake-driven tests -----------------------------------------------------------------------


def test_first_refresh_records_the_backlog_without_counting_it(
    executor: ThreadPoolExecutor,
) -> None:
    api = FakeApi(backlog(120))
    refresher = make_refresher(api, executor, FakeClock())
    snap = refresher.refresh_now()
    assert snap.up
    assert snap.attempted
    assert snap.refresh_pages == 3
    assert dict(snap.view.by_status)["Success"] == 120
    assert sum(finished(snap).values()) == 0


def test_steady_state_costs_one_call_and_two_with_runs_in_flight_beyond_the_first_page(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    api = FakeApi(backlog(120))
    refresher = make_refresher(api, executor, clock)
    refresher.refresh_now()
    for _ in range(3):
        clock.now += 30
        assert refresher.refresh_now().refresh_pages == 1

    api.set(result("t-live", status="Running", start=T0))
    clock.now += 30
    # The fast path found it on page 1 and stopped; what it just read needs no follow-up.
    assert refresher.refresh_now().refresh_pages == 1
    for _ in range(3):
        clock.now += 30
        assert refresher.refresh_now().refresh_pages == 1  # still on page 1: read by it
    # Newer results push it to the second page: the fast path reads on to it.
    for n in range(60):
        api.set(result(f"t-new{n:03d}", start=T0 + 100 + n))
    clock.now += 30
    refresher.refresh_now()
    for _ in range(3):
        clock.now += 30
        calls_before = len(api.calls)
        assert refresher.refresh_now().refresh_pages == 2
        assert all(q == InvocationQuery() for q in api.calls[calls_before:])
    # Beyond the pages a fast path reads on: one InvokeRecordStatus=Running walk follows it.
    for n in range(60, 260):
        api.set(result(f"t-new{n:03d}", start=T0 + 100 + n))
    clock.now += 30
    refresher.refresh_now()
    for _ in range(3):
        clock.now += 30
        calls_before = len(api.calls)
        snap = refresher.refresh_now()
        assert snap.refresh_pages == 2  # fast path + one InvokeRecordStatus=Running walk
        assert api.calls[calls_before + 1].invoke_record_status == "Running"


def test_runs_that_left_running_are_looked_up_by_invoke_id_and_counted_once(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    api = FakeApi([result("t-a", status="Running"), *backlog(200)])
    refresher = make_refresher(api, executor, clock)
    refresher.refresh_now()

    # t-a finished; it is now an older record (page 4) that the fast path does not reach.
    api.records.remove(result("t-a", status="Running"))
    api.records.insert(195, result("t-a", status="Failed", error_code="ExitCodeNonzero"))
    for _ in range(3):
        clock.now += 30
        snap = refresher.refresh_now()
    assert finished(snap) == Counter({("Failed", "ExitCodeNonzero"): 1})
    lookups = [q for q in api.calls if q.invoke_id == "t-a"]
    assert len(lookups) == 1


def test_new_results_after_the_baseline_are_counted_exactly_once(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    api = FakeApi(backlog(30))
    refresher = make_refresher(api, executor, clock)
    refresher.refresh_now()

    api.set(result("t-new1", status="Pending", start=None))
    api.set(result("t-new2", status="Success", start=T0 + 5))
    clock.now += 30
    refresher.refresh_now()
    api.set(result("t-new1", status="Running", start=T0 + 31))
    clock.now += 30
    refresher.refresh_now()
    api.set(result("t-new1", status="Success", start=T0 + 31))
    for _ in range(4):
        clock.now += 30
        snap = refresher.refresh_now()
    assert finished(snap) == Counter({("Success", ""): 2})
    assert dict(snap.counters.durations)["Success"].count == 2


@pytest.mark.parametrize("empty", [{0: 1}, {0: 3, 50: 2}], ids=["first", "several"])
def test_empty_pages_with_a_token_do_not_end_the_fast_path(
    executor: ThreadPoolExecutor, empty: dict[int, int]
) -> None:
    # A service that filters after paging answers pages without a record that still carry a
    # NextToken, at every walk: they say nothing of what follows (no sweep to catch up here).
    clock = FakeClock()
    api = FakeApi(backlog(120))
    api.empty_pages = empty
    refresher = make_refresher(api, executor, clock, sweep_interval=0.0)
    snap = refresher.refresh_now()
    assert snap.up
    assert snap.baseline_done
    for n in range(60):  # new results, on to the second page
        api.set(result(f"t-new{n:03d}", status="Failed", error_code="X", start=T0 + 100 + n))
    for _ in range(3):
        clock.now += 30
        snap = refresher.refresh_now()
        assert snap.up
        assert finished(snap) == Counter({("Failed", "X"): 60})
    # Steady: the empty pages before the first one with results, and that one.
    assert snap.refresh_pages == empty[0] + 1


def test_endless_empty_pages_fail_the_refresh_clearly_and_it_recovers(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    api = FakeApi(backlog(120))
    refresher = make_refresher(api, executor, clock, sweep_interval=0.0)
    refresher.refresh_now()
    api.empty_pages = {0: 10_000}  # a new token every time, never a record
    api.set(result("t-new", status="Failed", error_code="X", start=T0 + 5))
    clock.now += 30
    calls = len(api.calls)
    snap = refresher.refresh_now()
    assert not snap.up
    assert failures(snap) == {"malformed": 1}
    assert "in a row came back empty" in snap.last_failure_detail
    assert len(api.calls) - calls == MAX_EMPTY_PAGES_IN_A_ROW + 1  # bounded, not the page cap
    api.empty_pages = {}
    clock.now += 30
    snap = refresher.refresh_now()
    assert snap.up
    assert finished(snap) == Counter({("Failed", "X"): 1})


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@pytest.mark.parametrize("empty_at", [{20}, {0}, {0, 10, 20, 50}])
def test_pages_emptied_at_every_walk_stall_neither_the_first_walk_nor_counting(
    executor: ThreadPoolExecutor, empty_at: set[int]
) -> None:
    # The real client over HTTP: every walk meets an empty page with a working NextToken at
    # these offsets. The first walk used to fail there, and resume there, for good.
    records = [
        api_record(n, StartTime=_iso(T0 - 1000 - n), FinishedTime=_iso(T0 - 990 - n))
        for n in range(60)
    ]
    script = PagedResults(records, empty_at=empty_at)
    http, _ = mock_http(script)
    clock = FakeClock()
    with http:
        refresher = TargetRefresher(
            "prod",
            "cn-hangzhou",
            make_client(http),
            InvocationQuery(),
            RefreshOptions(max_results=10, sweep_interval=0.0),
            executor,
            clock=clock,
        )
        snap = refresher.refresh_now()
        assert snap.up
        assert snap.baseline_done
        assert snap.baseline_results == 60
        for n in range(3):
            new = api_record(
                1000 + n,
                InvokeId=f"t-new{n}",
                InvocationStatus="Failed",
                ErrorCode="ExitCodeNonzero",
                ExitCode=1,
                StartTime=_iso(T0 + 10 * n),
                FinishedTime=_iso(T0 + 10 * n + 5),
            )
            script.records.insert(0, new)
            clock.now += 30
            snap = refresher.refresh_now()
            assert snap.up
        assert finished(snap) == Counter({("Failed", "ExitCodeNonzero"): 3})
        assert failures(snap) == {}


def test_results_not_newest_first_are_caught_by_the_sweep_and_logged_once(
    executor: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    api = FakeApi(backlog(120))
    refresher = make_refresher(api, executor, clock, sweep_interval=300.0)
    refresher.refresh_now()

    api.records.append(result("t-late", status="Success"))  # comes last: not newest-first
    with caplog.at_level(logging.WARNING):
        clock.now += 30
        assert sum(finished(refresher.refresh_now()).values()) == 0  # the fast path missed it
        clock.now += 300
        snap = refresher.refresh_now()
        clock.now += 300
        refresher.refresh_now()
    assert finished(snap) == Counter({("Success", ""): 1})
    assert snap.counters.found_by_sweep == 1
    assert caplog.text.count("newest-first") == 1
    assert {getattr(r, "target", None) for r in caplog.records} == {"prod"}


def test_sweep_drops_results_that_left_retention_unless_truncated(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    api = FakeApi(backlog(20), page_size=5)
    refresher = make_refresher(api, executor, clock, sweep_interval=60.0, page_cap=10)
    refresher.refresh_now()
    del api.records[15:]  # the oldest five left the API's view
    clock.now += 60
    snap = refresher.refresh_now()
    assert snap.view.tracked_runs == 15
    assert not snap.results_truncated

    capped = make_refresher(api, executor, clock, sweep_interval=60.0, page_cap=2)
    snap = capped.refresh_now()
    assert snap.results_truncated
    del api.records[12:]  # still more than two pages
    clock.now += 60
    snap = capped.refresh_now()
    assert snap.results_truncated
    assert snap.view.tracked_runs == 10  # nothing dropped: the walk was incomplete


def test_failure_mid_refresh_keeps_state_and_does_not_double_count(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    records = [result(f"t-{i:03d}", status="Running") for i in range(60)]
    api = FakeApi(records)
    refresher = make_refresher(api, executor, clock)
    refresher.refresh_now()
    api.records = [replace(r, invocation_status="Success", finished_time=T0 + 9) for r in records]
    # The fast path reads page 1 (50 runs finished), then page 2 fails.
    api.errors[len(api.calls) + 2] = ThrottledError("slow down", code="Throttling.User")
    clock.now += 30
    snap = refresher.refresh_now()
    assert not snap.up
    assert failures(snap) == {"throttled": 1}
    assert finished(snap) == Counter({("Success", ""): 50})

    for _ in range(3):
        clock.now += 30
        snap = refresher.refresh_now()
    assert snap.up
    assert finished(snap) == Counter({("Success", ""): 60})
    assert snap.refreshes == 5


def test_an_unexpected_error_marks_the_target_down_without_crashing(
    executor: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    api = FakeApi(backlog(3))
    api.errors[1] = RuntimeError("secret-looking detail")
    refresher = make_refresher(api, executor, FakeClock())
    with caplog.at_level(logging.ERROR):
        snap = refresher.refresh_now()
    assert not snap.up
    assert snap.attempted
    assert failures(snap) == {"internal": 1}  # counted, so failure alerts see it
    (record,) = caplog.records
    assert record.getMessage() == "refresh failed with an unexpected error"
    assert getattr(record, "error", None) == "RuntimeError"
    assert "secret-looking detail" not in str(record.__dict__)


def test_the_snapshot_tells_the_reason_of_the_last_refresh_only(
    executor: ThreadPoolExecutor,
) -> None:
    api = FakeApi(backlog(3))
    api.errors[1] = AuthenticationError("bad key", code="InvalidAccessKeyId.NotFound")
    api.errors[2] = ThrottledError("slow down", code="Throttling.User")
    api.errors[3] = RuntimeError("a bug")
    refresher = make_refresher(api, executor, FakeClock())
    snapshots = [refresher.refresh_now() for _ in range(4)]
    assert [s.last_failure_reason for s in snapshots] == ["auth", "throttled", "internal", ""]
    assert snapshots[0].last_failure_detail == "InvalidAccessKeyId.NotFound: bad key"
    assert snapshots[2].last_failure_detail.startswith("RuntimeError at ")
    assert "a bug" not in snapshots[2].last_failure_detail  # a bug's message may hold anything
    assert snapshots[3].last_failure_detail == ""


def test_no_refresh_starts_once_stopping(executor: ThreadPoolExecutor) -> None:
    api = FakeApi(backlog(3))
    refresher = make_refresher(api, executor, FakeClock(), min_refresh_interval=0.0)
    refresher.refresh_now()
    calls = len(api.calls)
    refresher.stop_refreshing()
    assert refresher.start_if_due() is None
    assert len(api.calls) == calls


def test_a_filter_that_matches_nothing_is_logged_at_the_first_refresh(
    executor: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    quiet = make_refresher(FakeApi([]), executor, FakeClock())
    filtered = TargetRefresher(
        "prod",
        "cn-hangzhou",
        FakeApi([]),
        InvocationQuery(tags=(("team", "nobody"),)),
        RefreshOptions(),
        executor,
        clock=FakeClock(),
    )
    with caplog.at_level(logging.INFO):
        quiet.refresh_now()
        filtered.refresh_now()
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert messages == [
        (logging.INFO, "first refresh done: results in view recorded, not counted"),
        (logging.WARNING, "the first refresh found no results: check the target's filters"),
    ]


def test_a_recovery_is_logged_with_the_failures_before_it(
    executor: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    api = FakeApi(backlog(3))
    api.errors[1] = ThrottledError("slow down", code="Throttling.User")
    api.errors[2] = ThrottledError("slow down", code="Throttling.User")
    refresher = make_refresher(api, executor, FakeClock())
    with caplog.at_level(logging.INFO):
        for _ in range(4):
            refresher.refresh_now()
    recovered = [r for r in caplog.records if r.getMessage() == "refresh recovered"]
    assert len(recovered) == 1
    assert getattr(recovered[0], "failed_refreshes", None) == 2


def test_refresh_waits_for_the_minimum_interval(executor: ThreadPoolExecutor) -> None:
    clock = FakeClock()
    api = FakeApi(backlog(3))
    refresher = make_refresher(api, executor, clock, min_refresh_interval=30.0)
    scrape(refresher, max_wait=5)
    clock.now += 10
    scrape(refresher, max_wait=5)
    assert len(api.calls) == 1
    clock.now += 20
    snap = scrape(refresher, max_wait=5)
    assert len(api.calls) == 2
    assert snap.refreshes == 2


def test_a_throttled_target_spaces_its_refreshes_out_until_it_recovers(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    api = FakeApi(backlog(3))
    api.errors[1] = ThrottledError("slow down", code="Throttling.User")
    api.errors[2] = ThrottledError("slow down", code="Throttling.User")
    refresher = make_refresher(api, executor, clock, min_refresh_interval=30.0)
    started_at = []
    for _ in range(20):  # a scrape every 15 s for 5 minutes
        calls = len(api.calls)
        scrape(refresher, max_wait=5)
        if len(api.calls) > calls:
            started_at.append(clock.now - T0)
        clock.now += 15
    # Throttled at 0 and 60 (interval x2, then x4), recovered at 180: back to every 30 s.
    assert started_at == [0, 60, 180, 210, 240, 270]


def test_concurrent_scrapes_share_one_refresh(executor: ThreadPoolExecutor) -> None:
    api = FakeApi(backlog(120))
    api.gate = threading.Event()
    refresher = make_refresher(api, executor, FakeClock())
    snapshots: list[TargetSnapshot] = []

    def one_scrape() -> None:
        snapshots.append(scrape(refresher, max_wait=10))

    threads = [threading.Thread(target=one_scrape) for _ in range(8)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(api.calls) == 1)
    api.gate.set()
    for thread in threads:
        thread.join(10)
    assert len(api.calls) == 3  # one baseline walk of three pages, not eight
    assert {s.refreshes for s in snapshots} == {1}


def test_a_slow_refresh_returns_the_previous_snapshot_and_keeps_running(
    executor: ThreadPoolExecutor,
) -> None:
    api = FakeApi(backlog(3))
    api.gate = threading.Event()
    refresher = make_refresher(api, executor, FakeClock())
    started = time.monotonic()
    snap = scrape(refresher, max_wait=0.05)
    assert time.monotonic() - started < 2
    assert not snap.attempted
    assert not snap.up
    api.gate.set()
    wait_until(lambda: refresher.attempted)
    snap = scrape(refresher, max_wait=0)  # within the interval: no new refresh
    assert snap.up
    assert len(api.calls) == 1


def test_invalid_records_are_counted_once_and_logged_without_output(
    executor: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    api = FakeApi(backlog(3))
    bad = InvalidRecord("t-bad", "i-bad", "empty InstanceId")
    api.invalid = [bad]
    refresher = make_refresher(api, executor, clock)
    with caplog.at_level(logging.WARNING):
        refresher.refresh_now()
        api.invalid = [bad]
        clock.now += 30
        snap = refresher.refresh_now()
    assert snap.invalid_records == 1
    (record,) = caplog.records
    assert (getattr(record, "invoke_id", None), getattr(record, "instance_id", None)) == (
        "t-bad",
        "i-bad",
    )


def test_request_events_become_self_metrics(executor: ThreadPoolExecutor) -> None:
    api = FakeApi(backlog(1))
    refresher = make_refresher(api, executor, FakeClock())
    events = [
        RequestEvent("DescribeInvocationResults", "cn-hangzhou", "", 0.2, 200, 1, 0.0),
        RequestEvent("DescribeInvocationResults", "cn-hangzhou", "Throttling.User", 0.03, 400, 1),
        RequestEvent("DescribeInvocationResults", "cn-hangzhou", "", 7.0, 200, 2, 1.5),
    ]
    for event in events:
        refresher.api_stats.record_request(event)
    snap = refresher.refresh_now()
    assert dict(snap.api_requests) == {"": 2, "Throttling.User": 1}
    assert snap.api_rate_limit_wait_seconds == pytest.approx(1.5)
    histogram = snap.api_request_duration
    assert histogram.count == 3
    assert dict(histogram.buckets)[0.05] == 1
    assert dict(histogram.buckets)[5] == 2


def test_history_of_periodic_tasks_counts_every_run_once(executor: ThreadPoolExecutor) -> None:
    clock = FakeClock()

    def run(n: int, status: str) -> InvocationResult:
        return result("t-p", status=status, repeats=n, record_status="Running", start=T0 + n)

    api = FakeApi([run(2, "Running"), *backlog(5)])
    api.history = [run(2, "Running"), run(1, "Success")]
    refresher = make_refresher(api, executor, clock, include_history=True)
    refresher.refresh_now()

    api.set(run(4, "Scheduled"))
    api.history = [run(4, "Failed"), run(3, "Success"), run(2, "Timeout"), run(1, "Success")]
    clock.now += 30
    snap = refresher.refresh_now()
    assert finished(snap) == Counter({("Failed", ""): 1, ("Success", ""): 1, ("Timeout", ""): 1})
    clock.now += 30
    snap = refresher.refresh_now()
    assert sum(finished(snap).values()) == 3
    assert len([q for q in api.calls if q.include_history]) == 1


def test_history_refused_for_a_one_time_task_does_not_fail_the_target(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    api = FakeApi(backlog(2))
    refresher = make_refresher(api, executor, clock, include_history=True)
    refresher.refresh_now()
    api.set(result("t-odd", status="Scheduled", repeats=0, record_status="Running"))
    api.errors[len(api.calls) + 4] = InvalidRequestError("not periodic", code="InvalidParameter")
    clock.now += 30
    snap = refresher.refresh_now()
    assert snap.up


# --- against the simulator over loopback HTTP ------------------------------------------------

ACCOUNTS = {"good": "good-secret", "other": "other-secret"}


class SimTarget:
    """A refresher with its own EcsClient against the simulator."""

    def __init__(
        self,
        server: SimulatorServer,
        executor: ThreadPoolExecutor,
        clock: ManualClock,
        *,
        name: str = "prod",
        key: tuple[str, str] = ("good", "good-secret"),
        **options: object,
    ) -> None:
        self.http = httpx.Client()
        self.api_stats = ApiStatistics()
        self.client = EcsClient(
            region_id="cn-hangzhou",
            credentials=StaticProvider(*key),
            http=self.http,
            endpoint=server.url,
            retry=RetryPolicy(max_attempts=1),
            on_request=self.api_stats.record_request,
        )
        self.refresher = TargetRefresher(
            name,
            "cn-hangzhou",
            self.client,
            InvocationQuery(),
            RefreshOptions(**options),  # type: ignore[arg-type]
            executor,
            clock=clock.now,
            api_stats=self.api_stats,
        )

    def close(self) -> None:
        self.http.close()


def expected_finished(world: World, after: float) -> Counter[tuple[str, str]]:
    truth = world.ground_truth()
    return Counter((r.status, r.error_code) for r in truth.finished_between(after, truth.now))


def expected_deliveries(world: World, at_baseline: GroundTruth) -> Counter[tuple[str, str]]:
    """OSS deliveries Finished/Failed now that were not yet at the baseline."""
    done = ("Finished", "Failed")
    before = {r.key for r in at_baseline.finished_runs if r.oss_status in done}
    return Counter(
        (r.oss_status, r.oss_error_code)
        for r in world.ground_truth().finished_runs
        if r.oss_status in done and r.key not in before
    )


def deliveries(snapshot: TargetSnapshot) -> Counter[tuple[str, str]]:
    return Counter({label: n for label, n in snapshot.counters.oss_deliveries if n})


MIX = {
    "Success": 6.0,
    "Failed": 2.0,
    "Timeout": 1.0,
    "Cancelled": 1.0,
    "Aborted.ClientNotRunning": 1.0,
    "Stopped": 1.0,
}


@pytest.mark.parametrize("order", ["newest", "shuffled"])
def test_counters_match_the_simulators_ground_truth(
    executor: ThreadPoolExecutor, order: str
) -> None:
    clock = ManualClock()
    spec = WorldSpec(
        instances=30,
        arrival_rate=0.05,
        outcome_mix=MIX,
        duration_seconds=(1.0, 200.0),
        oss_share=0.3,
        oss_failure_share=0.3,
        dropped_share=0.1,
        backlog=150,
        backlog_span=3600.0,
    )
    world = World(seed=3, clock=clock, spec=spec)
    with SimulatorServer(world, accounts=ACCOUNTS, order=order) as server:
        target = SimTarget(server, executor, clock, sweep_interval=600.0)
        try:
            baseline_time = clock.now()
            truth_at_baseline = world.ground_truth()
            assert target.refresher.refresh_now().up
            for _ in range(40):
                clock.advance(30)
                snap = target.refresher.refresh_now()
                assert snap.up
            clock.advance(600)  # a last sweep catches what a shuffled order hid
            snap = target.refresher.refresh_now()
        finally:
            target.close()
    truth = world.ground_truth()
    assert finished(snap) == expected_finished(world, baseline_time)
    assert sum(finished(snap).values()) > 20
    assert snap.view.running == truth.running
    assert dict(snap.view.by_status) == {s: n for s, n in truth.by_status.items()}
    assert snap.view.with_dropped_output == truth.with_dropped_output
    assert dict(snap.view.oss_by_status) == truth.by_oss_status
    assert deliveries(snap) == expected_deliveries(world, truth_at_baseline)
    if order == "newest":
        assert snap.counters.found_by_sweep == 0


def test_steady_state_costs_at_most_two_calls_per_refresh(executor: ThreadPoolExecutor) -> None:
    clock = ManualClock()
    world = World(seed=5, clock=clock, spec=WorldSpec(instances=20, backlog=300))
    # Long-running, and the newest: the fast path reads it on page 1 at every refresh, so it
    # needs no follow-up of its own.
    world.add_invocation(3, "Success", duration=3600.0)
    with SimulatorServer(world, accounts=ACCOUNTS) as server:
        target = SimTarget(server, executor, clock, sweep_interval=0.0)
        try:
            target.refresher.refresh_now()
            per_refresh = []
            for _ in range(5):
                clock.advance(30)
                server.reset_served()
                snap = target.refresher.refresh_now()
                per_refresh.append(server.request_count)
        finally:
            target.close()
    assert per_refresh == [1, 1, 1, 1, 1]
    assert snap.refresh_pages == 1
    assert dict(snap.api_requests)[""] >= 5 + 7  # baseline: 7 pages of 50


def test_concurrent_scrapes_over_http_share_one_refresh(executor: ThreadPoolExecutor) -> None:
    clock = ManualClock()
    world = World(seed=6, clock=clock, spec=WorldSpec(instances=10, backlog=120))
    with SimulatorServer(world, accounts=ACCOUNTS, faults=FaultPlan(latency=0.05)) as server:
        target = SimTarget(server, executor, clock)
        try:
            threads = [
                threading.Thread(target=scrape, args=(target.refresher,), kwargs={"max_wait": 10.0})
                for _ in range(6)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
        finally:
            target.close()
    assert server.request_count == 3  # one walk of 120 results, not six


def test_one_failing_target_does_not_affect_another(executor: ThreadPoolExecutor) -> None:
    clock = ManualClock()
    world = World(seed=7, clock=clock, spec=WorldSpec(instances=10, backlog=20))
    faults = FaultPlan()
    with SimulatorServer(world, accounts=ACCOUNTS, faults=faults) as server:
        good = SimTarget(server, executor, clock, name="good")
        throttled = SimTarget(server, executor, clock, name="thr", key=("other", "other-secret"))
        bad_key = SimTarget(server, executor, clock, name="bad", key=("good", "wrong-secret"))
        faults.always("throttling_user", access_key_id="other")
        try:
            world.add_invocation(2, "Failed")
            snaps = [t.refresher.refresh_now() for t in (good, throttled, bad_key)]
        finally:
            for t in (good, throttled, bad_key):
                t.close()
    assert [s.up for s in snaps] == [True, False, False]
    assert failures(snaps[1]) == {"throttled": 1}
    assert failures(snaps[2]) == {"auth": 1}
    assert dict(snaps[1].api_requests) == {"": 0, "Throttling.User": 1}
    assert dict(snaps[0].view.by_status)["Success"] == 20


def test_periodic_history_matches_the_ground_truth(executor: ThreadPoolExecutor) -> None:
    clock = ManualClock()
    world = World(seed=8, clock=clock, spec=WorldSpec(instances=10, backlog=10))
    world.add_invocation(2, ["Success", "Failed", "Timeout"], repeat_mode="Period", period=60)
    world.add_invocation(1, "Success", duration=5.0)
    clock.advance(200)  # a few runs before the exporter starts
    with SimulatorServer(world, accounts=ACCOUNTS) as server:
        target = SimTarget(server, executor, clock, include_history=True, sweep_interval=0.0)
        try:
            baseline_time = clock.now()
            target.refresher.refresh_now()
            world.add_invocation(3, "Failed", duration=20.0)
            for _ in range(30):
                clock.advance(25)
                snap = target.refresher.refresh_now()
                assert snap.up
        finally:
            target.close()
    expected = expected_finished(world, baseline_time)
    assert finished(snap) == expected
    assert expected[("Timeout", "ExecutionTimeout")] >= 4


def test_refresh_failures_are_retried_and_recover_over_http(executor: ThreadPoolExecutor) -> None:
    clock = ManualClock()
    world = World(seed=9, clock=clock, spec=WorldSpec(instances=10, backlog=60))
    faults = FaultPlan()
    with SimulatorServer(world, accounts=ACCOUNTS, faults=faults) as server:
        target = SimTarget(server, executor, clock)
        try:
            baseline_time = clock.now()
            target.refresher.refresh_now()
            world.add_invocation(5, "Failed", duration=5.0)
            faults.next("internal_error", 1)
            clock.advance(30)
            assert not target.refresher.refresh_now().up
            clock.advance(30)
            snap = target.refresher.refresh_now()
            clock.advance(30)
            snap = target.refresher.refresh_now()
        finally:
            target.close()
    assert snap.up
    assert failures(snap) == {"server": 1}
    assert finished(snap) == expected_finished(world, baseline_time)
    assert sum(finished(snap).values()) == 5


def test_a_query_with_include_history_reads_history_per_task_only(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    periodic = result("t-p", status="Scheduled", repeats=1, record_status="Running")
    api = FakeApi([periodic])
    query = InvocationQuery(invoke_id="t-p", include_history=True)
    refresher = TargetRefresher(
        "prod", "cn-hangzhou", api, query, RefreshOptions(), executor, clock=clock
    )
    refresher.refresh_now()
    api.set(replace(periodic, repeats=2))
    api.history = [replace(periodic, invocation_status="Success", repeats=n) for n in (2, 1)]
    clock.now += 30
    snap = refresher.refresh_now()
    assert not api.calls[0].include_history
    assert [q.include_history for q in api.calls].count(True) == 1
    assert finished(snap) == Counter({("Success", ""): 1})  # run 2; run 1 was before


def test_a_scrape_after_the_pool_shut_down_serves_the_last_snapshot() -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    refresher = make_refresher(FakeApi(backlog(2)), pool, FakeClock(), min_refresh_interval=0.0)
    refresher.refresh_now()
    pool.shutdown(wait=True)
    snap = scrape(refresher, max_wait=1)
    assert snap.up
    assert snap.refreshes == 1


def test_a_mixed_periodic_workload_matches_the_ground_truth_with_history(
    executor: ThreadPoolExecutor,
) -> None:
    clock = ManualClock()
    spec = WorldSpec(
        instances=12,
        arrival_rate=0.02,
        instances_per_invocation=(1, 3),
        outcome_mix={**MIX, "Aborted.DeliveryTimeout": 1.0, "Invalid.BadCronExpression": 1.0},
        periodic_share=0.4,
        every_reboot_share=0.2,
        period_seconds=(30.0, 90.0),
        duration_seconds=(1.0, 40.0),
        oss_share=0.3,
        oss_failure_share=0.3,
        backlog=40,
        backlog_span=1800.0,
    )
    world = World(seed=11, clock=clock, spec=spec)
    with SimulatorServer(world, accounts=ACCOUNTS, order="shuffled") as server:
        target = SimTarget(server, executor, clock, include_history=True, sweep_interval=300.0)
        try:
            baseline_time = clock.now()
            truth_at_baseline = world.ground_truth()
            target.refresher.refresh_now()
            for _ in range(60):
                clock.advance(30)
                snap = target.refresher.refresh_now()
                assert snap.up
            for _ in range(3):  # settle: nothing new happens, the reads catch up
                snap = target.refresher.refresh_now()
        finally:
            target.close()
    expected = expected_finished(world, baseline_time)
    assert finished(snap) == expected
    assert sum(expected.values()) > 100
    assert deliveries(snap) == expected_deliveries(world, truth_at_baseline)


def test_lookups_that_never_settle_do_not_starve_the_others(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    api = FakeApi([result("t-a", status="Running"), result("t-b", status="Running"), *backlog(60)])
    refresher = make_refresher(api, executor, clock, max_lookups=1)
    refresher.refresh_now()
    # Both left Running (older records, past the fast path); t-a's OSS delivery never ends.
    del api.records[:2]
    api.records.insert(55, result("t-a", status="Success", oss="InProgress"))
    api.records.insert(55, result("t-b", status="Failed"))
    for _ in range(3):
        clock.now += 30
        snap = refresher.refresh_now()
    assert finished(snap) == Counter({("Success", ""): 1, ("Failed", ""): 1})


# --- regressions found by tests/test_counting_properties.py ----------------------------------


def test_a_sweep_with_unusable_records_forgets_nothing_and_counts_nothing_twice(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    api = FakeApi(backlog(3))
    refresher = make_refresher(api, executor, clock, sweep_interval=60.0)
    refresher.refresh_now()
    api.set(result("t-new", status="Success", start=T0 + 10))
    clock.now += 30
    assert finished(refresher.refresh_now()) == Counter({("Success", ""): 1})
    clock.now += 60
    api.garbled.add(len(api.calls) + 2)  # the fast path's page reads well, the sweep's not
    refresher.refresh_now()
    for _ in range(2):
        clock.now += 30
        snap = refresher.refresh_now()
    assert finished(snap) == Counter({("Success", ""): 1})
    assert snap.view.tracked_runs == 4


def test_a_look_up_with_unusable_records_does_not_lose_the_run(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    # t-a is an old record (page 4), beyond what a fast path reads on to.
    api = FakeApi([result("t-a", status="Running"), *backlog(200)])
    refresher = make_refresher(api, executor, clock, sweep_interval=0.0)
    refresher.refresh_now()
    api.records.remove(result("t-a", status="Running"))
    api.records.insert(195, result("t-a", status="Failed", error_code="ExitCodeNonzero"))
    clock.now += 30
    api.garbled.add(len(api.calls) + 3)  # fast path, Running walk, then the look-up of t-a
    assert sum(finished(refresher.refresh_now()).values()) == 0
    for _ in range(2):
        clock.now += 30
        snap = refresher.refresh_now()
    assert finished(snap) == Counter({("Failed", "ExitCodeNonzero"): 1})


def test_a_fast_path_that_failed_half_way_is_resumed_by_the_next_one(
    executor: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    # A burst of new results over three pages; the fast path fails on page 2. Without a sweep,
    # the next fast path must read past the page the failed one saw.
    clock = FakeClock()
    api = FakeApi(backlog(10), page_size=5)
    refresher = make_refresher(api, executor, clock, sweep_interval=0.0)
    refresher.refresh_now()
    for n in range(12):
        api.set(result(f"t-new{n:02d}", status="Success", start=T0 + n))
    api.errors[len(api.calls) + 2] = ThrottledError("slow down", code="Throttling.User")
    clock.now += 30
    with caplog.at_level(logging.WARNING):
        snap = refresher.refresh_now()
        assert not snap.up
        assert finished(snap) == Counter({("Success", ""): 5})
        clock.now += 30
        snap = refresher.refresh_now()
        assert finished(snap) == Counter({("Success", ""): 12})
        clock.now += 30
        assert refresher.refresh_now().refresh_pages == 1  # steady state again
    assert "newest-first" not in caplog.text


def test_a_truncated_baseline_in_another_order_does_not_count_the_backlog(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    api = FakeApi(backlog(10), page_size=5)
    refresher = make_refresher(api, executor, clock, page_cap=1)
    assert refresher.refresh_now().results_truncated
    api.records.reverse()  # the API's order is undocumented
    clock.now += 30
    snap = refresher.refresh_now()
    assert sum(finished(snap).values()) == 0
    assert snap.view.tracked_runs == 10


def test_a_wall_clock_set_back_does_not_stop_the_refreshes(executor: ThreadPoolExecutor) -> None:
    clock = FakeClock()
    api = FakeApi(backlog(3))
    refresher = make_refresher(
        api, executor, clock, min_refresh_interval=30.0, sweep_interval=600.0
    )
    scrape(refresher, max_wait=5)
    clock.now -= 3600  # NTP (or an operator) sets the clock back an hour
    snap = scrape(refresher, max_wait=5)
    assert snap.refreshes == 2
    assert len(api.calls) == 3  # the fast path and the sweep, not an hour later
    clock.now += 10
    assert scrape(refresher, max_wait=5).refreshes == 2  # the interval holds again


def test_a_target_filtered_on_another_record_status_never_reads_outside_its_filter(
    executor: ThreadPoolExecutor,
) -> None:
    # The target shows failed invocations only: following its delivery in progress must not
    # bring running invocations of the account into its view (or its counters).
    clock = FakeClock()
    delivering = result("t-f", status="Failed", record_status="Failed", oss="InProgress")
    running = result("t-run", status="Running", record_status="Running")
    api = FakeApi([running, delivering])
    refresher = TargetRefresher(
        "prod",
        "cn-hangzhou",
        api,
        InvocationQuery(invoke_record_status="Failed"),
        RefreshOptions(),
        executor,
        clock=clock,
    )
    refresher.refresh_now()
    clock.now += 30
    assert refresher.refresh_now().view.running == 0
    api.set(replace(running, invocation_status="Success", finished_time=T0 + 5))
    api.set(replace(delivering, oss_output_status="Finished"))
    for _ in range(2):
        clock.now += 30
        snap = refresher.refresh_now()
    assert snap.view.tracked_runs == 1
    assert sum(finished(snap).values()) == 0
    assert dict(snap.counters.oss_deliveries)[("Finished", "")] == 1
    assert all(q.invoke_record_status == "Failed" for q in api.calls)


@pytest.mark.parametrize("garbling", ["repeats", "record"])
def test_history_reads_that_do_not_read_well_never_give_a_run_up(
    executor: ThreadPoolExecutor, garbling: str
) -> None:
    # A run that complete history reads keep not returning is taken as gone after a few
    # reads; reads with unusable records (or Repeats) must not count as such reads.
    clock = FakeClock()

    def run(n: int, status: str, repeats: int | None = None) -> InvocationResult:
        record = result("t-p", status=status, repeats=n, record_status="Running", start=T0 + n)
        return record if repeats is None else replace(record, repeats=repeats)

    api = FakeApi([run(1, "Scheduled"), *backlog(3)])
    refresher = make_refresher(api, executor, clock, include_history=True, sweep_interval=0.0)
    refresher.refresh_now()
    api.set(run(2, "Scheduled"))
    api.history = [run(2, "Failed", repeats=0 if garbling == "repeats" else None)]
    for _ in range(6):
        clock.now += 30
        if garbling == "record":
            # The fast path (which reads the periodic record: no follow-up), then the history.
            api.garbled.add(len(api.calls) + 2)
        snap = refresher.refresh_now()
        assert sum(finished(snap).values()) == 0
    api.history = [run(2, "Failed"), run(1, "Success")]
    clock.now += 30
    snap = refresher.refresh_now()
    assert finished(snap) == Counter({("Failed", ""): 1})


def test_prepare_scrape_waits_for_every_due_refresh_together_and_not_past_shutdown(
    executor: ThreadPoolExecutor,
) -> None:
    apis = [FakeApi(backlog(2)), FakeApi(backlog(3))]
    refreshers = [make_refresher(api, executor, FakeClock()) for api in apis]
    app = Application(
        settings=SETTINGS,
        targets=[],
        refreshers=refreshers,
        registry=CollectorRegistry(),
        executor=executor,
        http_clients=[],
    )
    app.prepare_scrape(5.0)
    assert [r.latest().up for r in refreshers] == [True, True]
    # A slow API: the scrape waits no longer than it may, then shows the last snapshots.
    gate = threading.Event()
    for api in apis:
        api.gate = gate
    refreshers[0].refresh_now(timeout=0)
    started = time.monotonic()
    app.prepare_scrape(0.2)
    assert time.monotonic() - started < 2
    # Shutdown begun: a scrape waiting for a refresh answers at once.
    app.begin_stop()
    started = time.monotonic()
    app.prepare_scrape(30.0)
    assert time.monotonic() - started < 2
    gate.set()
    assert refreshers[1].start_if_due() is None  # no new refresh after the stop


# --- quirks the API may show (issue 9): exact counts whichever way it behaves -----------------


def burst(prefix: str, n: int, start: float, **fields: object) -> list[InvocationResult]:
    """``n`` finished one-time runs, newest first."""
    runs = [result(f"{prefix}-{i:04d}", start=start + i, **fields) for i in range(n)]  # type: ignore[arg-type]
    return runs[::-1]


def test_a_refused_next_token_is_not_mistaken_for_the_end_of_the_news(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    api = FakeApi(backlog(50), page_size=50)
    refresher = make_refresher(api, executor, clock, sweep_interval=0.0)
    refresher.refresh_now()
    for round_, prefix in enumerate(("a", "b")):
        api.records[:0] = burst(prefix, 120, T0 + 100 * (round_ + 1))
        clock.now += 30
        api.refuse_token = {len(api.calls) + 2}  # the fast path's second page
        snap = refresher.refresh_now()
        assert snap.up
        assert sum(finished(snap).values()) == 120 * (round_ + 1)


def test_an_unstable_order_among_equal_start_times_never_counts_a_run_twice(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    old = [result(f"old-{i:03d}", start=T0 - 1000 - i // 30) for i in range(100)]
    api = FakeApi(old, page_size=20)
    api.unstable = random.Random(9)
    refresher = make_refresher(api, executor, clock, sweep_interval=60.0, min_refresh_interval=0)
    refresher.refresh_now()
    # 200 runs in groups of 30 of equal StartTime (pages of 20), arriving over 10 refreshes.
    new = [result(f"new-{i:03d}", start=T0 + 10 + i // 30) for i in range(200)]
    for step in range(12):
        api.records[:0] = new[step * 20 : (step + 1) * 20] if step < 10 else []
        clock.now += 61  # a sweep every refresh
        snap = refresher.refresh_now()
        assert snap.up
        assert sum(finished(snap).values()) <= 200
    assert sum(finished(snap).values()) == 200
    assert snap.view.tracked_runs == 300  # nothing the API still has was forgotten


@pytest.mark.parametrize("instances", [1, 3])
def test_a_target_of_running_invocations_counts_every_run_of_them(
    instances: int, executor: ThreadPoolExecutor
) -> None:
    # InvokeRecordStatus is the whole invocation's: once its last instance ends, none of its
    # results match the target's filter any more. The last instance's run was never counted
    # (and an invocation of one instance never counted at all).
    clock = FakeClock()
    api = FakeApi()
    refresher = make_refresher(
        api, executor, clock, query=InvocationQuery(invoke_record_status="Running")
    )
    assert refresher.refresh_now().baseline_done
    ids = [f"i-{n}" for n in range(instances)]
    api.records = [result("t-run", i, "Running", start=clock.now + 5) for i in ids]
    clock.now += 30
    refresher.refresh_now()
    for i in ids[:-1]:  # all but the last end while the invocation still runs
        api.set(
            result(
                "t-run", i, start=clock.now - 25, finished=clock.now + 5, record_status="Running"
            )
        )
    clock.now += 30
    assert sum(finished(refresher.refresh_now()).values()) == instances - 1
    # The last one ends: the invocation is Finished, and the target's walks no longer return it.
    api.records = [
        result("t-run", i, start=clock.now - 55, finished=clock.now + 5, record_status="Finished")
        for i in ids
    ]
    clock.now += 30
    refresher.refresh_now()
    clock.now += 30
    assert sum(finished(refresher.refresh_now()).values()) == instances


def test_credentials_of_another_account_count_only_what_ends_after_the_last_read(
    executor: ThreadPoolExecutor,
) -> None:
    # The target keeps its name, region and endpoint, but its AccessKey is now another
    # account's: that account's results were all judged against the first account's first
    # walk, and every one that ended after it (or started after all it saw) was counted.
    clock = FakeClock()
    api = FakeApi(backlog(5))
    refresher = make_refresher(api, executor, clock)
    refresher.use_credentials("account-a")
    assert refresher.refresh_now().baseline_done
    clock.now += 300
    refresher.refresh_now()  # the last read with account A's key, at T0 + 300
    last_read = clock.now
    other = [
        *(result(f"b-old-{n}", start=T0 - 900 - n) for n in range(20)),  # before A's baseline
        # After it, but before the last read (by more than the 60 s tolerance of a first walk)
        *(result(f"b-since-{n}", start=T0 + 10 + 30 * n) for n in range(5)),
    ]
    api.records = other
    refresher.use_credentials("account-b")
    clock.now += 60
    assert sum(finished(refresher.refresh_now()).values()) == 0
    # What account B finishes from the last read on is counted, once.
    api.records[:0] = [result("b-new", start=last_read + 5)]
    clock.now += 60
    assert sum(finished(refresher.refresh_now()).values()) == 1
    clock.now += 60
    assert sum(finished(refresher.refresh_now()).values()) == 1


def test_a_target_of_running_invocations_counts_the_history_of_a_task_that_stopped(
    executor: ThreadPoolExecutor,
) -> None:
    # Its history was read with the target's filter: once the task is stopped the invocation no
    # longer matches Running, the history read came back empty, and its last runs were lost.
    clock = FakeClock()

    def run(n: int, status: str, record_status: str) -> InvocationResult:
        return result("t-p", status=status, repeats=n, record_status=record_status, start=T0 + n)

    api = FakeApi()
    refresher = make_refresher(
        api,
        executor,
        clock,
        include_history=True,
        query=InvocationQuery(invoke_record_status="Running"),
    )
    refresher.refresh_now()
    api.records = [run(2, "Running", "Running")]
    api.history = [run(2, "Running", "Running"), run(1, "Success", "Running")]
    clock.now += 30
    refresher.refresh_now()
    api.records = [run(4, "Success", "Finished")]  # stopped after its 4th run
    api.history = [run(n, "Success", "Finished") for n in (4, 3, 2, 1)]
    for _ in range(5):
        clock.now += 30
        snap = refresher.refresh_now()
    assert sum(finished(snap).values()) == 4
    assert len([query for query in api.calls if query.include_history]) <= 3


def test_a_target_of_running_invocations_forgets_those_that_ended(
    executor: ThreadPoolExecutor,
) -> None:
    # A look-up without the target's filter returns an invocation that ended: kept in view, it
    # was one the sweep "missed" at every sweep, looked up again, and the sweep never spaced out.
    clock = FakeClock()
    api = FakeApi()
    refresher = make_refresher(
        api,
        executor,
        clock,
        query=InvocationQuery(invoke_record_status="Running"),
        sweep_interval=600.0,
    )
    assert refresher.refresh_now().baseline_done
    long = result("t-long", "i-0", "Running", start=clock.now + 1)
    shorts = [result(f"t-s{n}", "i-1", "Running", start=clock.now + 2 + n) for n in range(5)]
    api.records = [*shorts[::-1], long]
    clock.now += 30
    refresher.refresh_now()
    clock.now += 30
    ended = [
        result(
            f"t-s{n}", "i-1", start=clock.now - 50, finished=clock.now - 5, record_status="Finished"
        )
        for n in range(5)
    ]
    api.records = [*ended[::-1], long]
    before = len(api.calls)
    for _ in range(4 * 60 * 2):  # 4 hours of refreshes every 30 s
        clock.now += 30
        snap = refresher.refresh_now()
    assert sum(finished(snap).values()) == 5
    lookups = [q for q in api.calls[before:] if q.invoke_id and q.invoke_id.startswith("t-s")]
    assert len(lookups) <= 10
    assert snap.sweep_interval_seconds > 600


def test_an_api_clock_behind_the_hosts_loses_no_run(executor: ThreadPoolExecutor) -> None:
    # The API's timestamps are 300 s behind the exporter host's clock.
    clock = FakeClock(T0 + 300)
    running = [result(f"r-{i:02d}", status="Running", start=T0 - 5) for i in range(50)]
    api = FakeApi([*running, *backlog(20)])
    refresher = make_refresher(api, executor, clock)
    refresher.refresh_now()
    # Seen Running by the baseline, they end just after it (by the API's clock).
    for record in running:
        api.set(result(record.invoke_id, start=T0 - 5, finished=T0 + 5))
    # New runs that start and end between two refreshes.
    api.records[:0] = burst("short", 30, T0 + 10, finished=T0 + 45)
    clock.now += 60
    snap = refresher.refresh_now()
    assert sum(finished(snap).values()) == 80


@pytest.mark.parametrize("share", [0.3, 0.5])
def test_the_first_walk_makes_progress_under_sustained_throttling(
    share: float, executor: ThreadPoolExecutor
) -> None:
    clock = FakeClock()
    api = FakeApi(backlog(2000), page_size=50)  # 40 pages
    api.throttle = (random.Random(int(share * 100)), share)
    refresher = make_refresher(api, executor, clock, min_refresh_interval=0.0)
    for _ in range(200):
        snap = refresher.refresh_now()
        if snap.baseline_done:
            break
        clock.now += 30
    assert snap.baseline_done
    assert snap.baseline_results == 2000
    assert sum(finished(snap).values()) == 0  # the backlog is recorded, not counted
    # Counting goes on under the same throttling.
    api.records[:0] = burst("n", 30, clock.now + 10)
    for _ in range(50):
        clock.now += 30
        snap = refresher.refresh_now()
    assert sum(finished(snap).values()) == 30


def test_a_first_walk_cut_short_reports_how_far_it_got(executor: ThreadPoolExecutor) -> None:
    api = FakeApi(backlog(200), page_size=50)
    api.errors[3] = ThrottledError("slow down", code="Throttling.User")
    refresher = make_refresher(api, executor, FakeClock())
    snap = refresher.refresh_now()
    assert not snap.up
    assert not snap.baseline_done
    assert (snap.baseline_pages, snap.baseline_results) == (2, 100)
    snap = refresher.refresh_now()
    assert snap.baseline_done
    assert (snap.baseline_pages, snap.baseline_results) == (4, 200)
    # Resumed at page 3 (not started over), then page 1 again for what came in meanwhile.
    assert len(api.calls) == 6


def test_a_first_walk_resumed_from_a_refused_token_reads_the_whole_page_cap_again(
    executor: ThreadPoolExecutor,
) -> None:
    # Tokens good for the next call only: the resumed walk's token is refused and the walk
    # starts over. The page cap (exactly the API's pages) must not be cut by the pages of the
    # attempt before: nothing is truncated and every result is recorded.
    api = FakeApi(backlog(200), page_size=50)
    api.token_max_age = 1
    api.errors[3] = ThrottledError("slow down", code="Throttling.User")
    refresher = make_refresher(api, executor, FakeClock(), page_cap=4)
    assert not refresher.refresh_now().up
    snap = refresher.refresh_now()
    assert snap.up
    assert snap.baseline_done
    assert not snap.results_truncated
    assert snap.baseline_results == 200
    assert sum(finished(snap).values()) == 0


def test_an_api_whose_times_are_weeks_behind_the_host_loses_nothing(
    executor: ThreadPoolExecutor,
) -> None:
    # Its records are 40 days old by the host's clock (a clock behind, a test double's):
    # what it returns now is not old to it. They stayed tracked for no refresh, and every new
    # run was ignored as one forgotten.
    clock = FakeClock()
    behind = T0 - 40 * DAY
    api = FakeApi([result(f"t-old-{i}", start=behind - 600 - i) for i in range(20)])
    refresher = make_refresher(api, executor, clock)
    assert refresher.refresh_now().baseline_done
    for minute in range(1, 4):
        api.records[:0] = [
            result(f"t-new-{minute}-{n}", start=behind + 60 * minute + n) for n in range(3)
        ]
        clock.now += 60
        snap = refresher.refresh_now()
    assert sum(finished(snap).values()) == 9
    assert snap.view.tracked_runs == 29


def test_a_request_clock_the_api_refuses_is_reported_as_clock_skew(
    executor: ThreadPoolExecutor,
) -> None:
    api = FakeApi(backlog(3))
    api.errors[1] = classify_api_error(400, "InvalidTimeStamp.Expired", "too old", "R-1", None)
    snap = make_refresher(api, executor, FakeClock()).refresh_now()
    assert not snap.up
    assert snap.last_failure_reason == "clock_skew"
    assert failures(snap) == {"clock_skew": 1}


def test_a_sweep_that_fails_half_way_goes_on_where_it_stopped(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    api = FakeApi(backlog(300), page_size=50)  # six pages
    refresher = make_refresher(api, executor, clock, sweep_interval=600.0)
    refresher.refresh_now()
    # A new result the fast path cannot see (the API put it last).
    api.records.append(result("t-late", start=T0 + 50))
    clock.now += 600
    calls = len(api.calls)
    api.errors[calls + 5] = ThrottledError("slow down", code="Throttling.User")  # sweep page 4
    assert not refresher.refresh_now().up
    clock.now += 30  # long before the next sweep is due
    snap = refresher.refresh_now()
    assert snap.up
    assert finished(snap) == Counter({("Success", ""): 1})
    assert snap.counters.found_by_sweep == 1
    # Fast path (1), then the sweep's pages 4 to 7 (301 results now): not all of them again.
    assert len(api.calls) == calls + 5 + 1 + 4


def test_the_api_clock_is_estimated_from_the_date_header_and_start_times() -> None:
    clock = FakeClock()
    stats = ApiStatistics(clock)
    assert stats.api_clock.offset() is None  # nothing told yet
    stats.api_clock.observe_start(T0 - 3600)  # a quiet account says nothing
    assert stats.api_clock.offset() is None
    stats.api_clock.observe_start(T0 + 120)  # a StartTime in the host's future: the API is ahead
    assert stats.api_clock.offset() == 120
    for _ in range(3):
        stats.record_request(
            RequestEvent(
                "DescribeInvocationResults", "cn-hangzhou", "", 0.1, 200, 1, server_time=T0 + 200
            )
        )
    assert stats.api_clock.measured
    assert stats.api_clock.offset() == pytest.approx(200.5)


def test_a_start_time_further_ahead_than_the_api_accepts_says_nothing_of_its_clock() -> None:
    # The API refuses a request dated more than 15 minutes off: a record of 2099 is a bad one.
    clock = FakeClock()
    stats = ApiStatistics(clock)
    stats.api_clock.observe_start(T0 + 4e9)
    assert stats.api_clock.offset() is None
    stats.api_clock.observe_start(T0 + 600)
    assert stats.api_clock.offset() == 600
    stats.record_request(
        RequestEvent("DescribeInvocationResults", "cn-hangzhou", "", 0.1, 200, 1, server_time=T0)
    )
    stats.api_clock.observe_start(T0 + 850)  # within 15 minutes of the Date: it counts
    assert stats.api_clock.offset() == 850
    stats.api_clock.observe_start(T0 + 1000)  # beyond them: it does not
    assert stats.api_clock.offset() == 850


def test_one_record_dated_far_in_the_future_hides_no_new_run(
    executor: ThreadPoolExecutor,
) -> None:
    # A backlog record whose StartTime says 2099: new runs first seen finished are still new.
    clock = FakeClock()
    bogus = result("t-bogus", start=4_070_908_800.0)
    api = FakeApi([bogus, *backlog(20)])
    refresher = make_refresher(api, executor, clock)
    assert refresher.refresh_now().baseline_done
    api.records[:0] = burst("n", 5, clock.now + 5)  # short runs, never seen running
    clock.now += 30
    snap = refresher.refresh_now()
    assert sum(finished(snap).values()) == 5
    assert snap.api_clock_offset_seconds is None or abs(snap.api_clock_offset_seconds) < 900


def test_new_results_pushing_the_pages_on_are_not_an_order_that_moves() -> None:
    def keys(*names: str) -> list[tuple[str, str, str]]:
        return [(name, "i-1", "") for name in names]

    pushed = OrderWatch()
    pushed.page(keys("e", "d", "c"))
    pushed.page(keys("d", "c", "b", "a"))  # two new results came in at the top meanwhile
    assert not pushed.moved
    moved = OrderWatch()
    moved.page(keys("e", "d", "c"))
    moved.page(keys("b", "d", "a"))  # "d" again, out of place: another may have been missed
    assert moved.moved
    # An empty page (with a NextToken) between two pages says nothing of the order.
    pushed_past_empty = OrderWatch()
    pushed_past_empty.page(keys("e", "d", "c"))
    pushed_past_empty.page([])
    pushed_past_empty.page(keys("d", "c", "b", "a"))
    assert not pushed_past_empty.moved


def test_a_run_stuck_in_flight_at_the_bottom_of_the_backlog_costs_no_extra_pages(
    executor: ThreadPoolExecutor,
) -> None:
    """The first walk takes the oldest results in last: one of them still Running is not "near
    the top", so the fast path does not read on for it (the Running walk follows it up)."""
    clock = FakeClock()
    records = backlog(1000)
    records[-1] = result("t-stuck", status="Running", start=T0 - 5000)
    api = FakeApi(records)
    refresher = make_refresher(api, executor, clock)
    refresher.refresh_now()
    for _ in range(3):
        clock.now += 30
        assert refresher.refresh_now().refresh_pages == 2  # fast path + the Running walk
