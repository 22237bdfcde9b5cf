"""The adaptive sweep: it spaces out while sweeps find nothing in newest-first order, and comes
back at the configured interval at once when a run was missed or the order breaks."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from exporter import arrivals
from exporter.ecs.models import InvocationResult
from exporter.refresh import TargetRefresher, TargetSnapshot
from exporter.refresh.sweeps import SweepSchedule
from tests.support.fakes import T0, FakeApi, FakeClock, backlog, make_refresher, result


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="test-sweeps")
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


def run_for(refresher: TargetRefresher, clock: FakeClock, seconds: float) -> TargetSnapshot:
    """Refresh once a minute for ``seconds``."""
    snap = refresher.latest()
    for _ in range(int(seconds // 60)):
        clock.now += 60
        snap = refresher.refresh_now()
        assert snap.up
    return snap


def paced_refresher(
    api: FakeApi, executor: ThreadPoolExecutor, clock: FakeClock, *, backoff: int
) -> TargetRefresher:
    """A refresher whose sweeps (every 600 s, up to ``backoff`` times that) read pages of 10,
    4 per refresh while spaced out."""
    return make_refresher(
        api,
        executor,
        clock,
        sweep_interval=600.0,
        sweep_backoff=backoff,
        max_results=10,
        sweep_pages_per_refresh=4,
    )


def test_the_schedule_doubles_while_quiet_up_to_its_bound_and_resets_at_once() -> None:
    schedule = SweepSchedule(600.0, max_factor=20)
    seen = []
    for _ in range(4):
        schedule.found_nothing()
        seen.append(schedule.interval)
    assert seen == [2400.0, 9600.0, 12000.0, 12000.0]  # x4 each time, up to 20 x 600
    schedule.alarm()
    assert schedule.interval == 600.0
    schedule.started(1000.0)
    assert not schedule.due(1599.0)
    assert schedule.due(1600.0)
    assert not SweepSchedule(0.0).due(1e9)  # 0: no sweep at all


def test_quiet_sweeps_space_out_and_a_run_they_find_brings_them_back(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    api = FakeApi(backlog(120))
    refresher = make_refresher(api, executor, clock, sweep_interval=600.0, sweep_backoff=4)
    assert refresher.refresh_now().sweep_interval_seconds == 600.0
    calls = len(api.calls)
    snap = run_for(refresher, clock, 3 * 3600)
    assert snap.sweep_interval_seconds == 2400.0  # 600, then the bound 4 x 600
    # 180 refreshes of one call each, and sweeps of 3 pages at 10, 50, 90, 130, 170 minutes.
    assert len(api.calls) - calls == 180 + 5 * 3

    # A new run the fast path cannot see (the API lists it among old records): only a sweep
    # finds it, and the sweeps come back at the configured interval.
    api.records.insert(100, result("t-missed", status="Failed", start=T0 + 50, error_code="X"))
    for _ in range(40):  # the bound: 2400 s
        snap = run_for(refresher, clock, 60)
        if snap.counters.found_by_sweep:
            break
    assert snap.counters.found_by_sweep == 1
    assert snap.sweep_interval_seconds == 600.0
    assert run_for(refresher, clock, 600).sweep_interval_seconds == 2400.0  # quiet again


def test_a_new_result_below_known_ones_brings_the_sweep_back_at_once(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    api = FakeApi(backlog(120))
    refresher = make_refresher(api, executor, clock, sweep_interval=600.0, sweep_backoff=16)
    refresher.refresh_now()
    assert run_for(refresher, clock, 2 * 3600).sweep_interval_seconds > 600.0
    # Not newest-first: a new result comes below known, unchanged ones.
    api.set(result("t-top", start=T0 + 10))
    api.records.insert(3, result("t-below", start=T0 + 5))
    calls = len(api.calls)
    clock.now += 60
    snap = refresher.refresh_now()
    assert snap.sweep_interval_seconds == 600.0
    # The last sweep is older than the configured interval: this refresh swept (3 pages).
    assert len(api.calls) - calls >= 1 + 3
    assert run_for(refresher, clock, 600).sweep_interval_seconds == 2400.0  # quiet again


def test_periodic_records_are_followed_once_per_sweep_interval_and_their_end_still_counts(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    # An endless periodic task between runs, below the pages a fast path reads on to.
    periodic = result("t-p", status="Scheduled", repeats=3, record_status="Running", start=T0 - 1)
    api = FakeApi([*backlog(200)[:199], periodic])
    refresher = make_refresher(api, executor, clock, sweep_interval=600.0)
    refresher.refresh_now()
    run_for(refresher, clock, 600)  # the first sweep: from now on periodic records go slowly
    followed = []
    for _ in range(20):
        calls = len(api.calls)
        run_for(refresher, clock, 60)
        followed.append(
            any(q.invoke_record_status == "Running" or q.invoke_id for q in api.calls[calls:])
        )
    assert 1 <= sum(followed) <= 2  # once per 600 s, not at every refresh
    # The schedule is stopped: its record shows the last run's status, counted once.
    api.set(replace_status(periodic))
    snap = run_for(refresher, clock, 600)
    assert dict(snap.counters.finished)[("Failed", "")] == 1


def replace_status(record: InvocationResult) -> InvocationResult:
    return result(
        record.invoke_id, status="Failed", repeats=4, record_status="Finished", start=T0 + 100
    )


def test_a_spaced_out_sweep_is_paced_over_refreshes_and_still_finds_a_missed_run(
    executor: ThreadPoolExecutor,
) -> None:
    clock = FakeClock()
    api = FakeApi(backlog(120), page_size=10)  # a sweep is 12 pages
    refresher = paced_refresher(api, executor, clock, backoff=4)
    refresher.refresh_now()
    # The first sweep (at the configured interval) reads everything at once; the next ones,
    # spaced out, 4 pages per refresh.
    most = 0
    for _ in range(60):
        calls = len(api.calls)
        run_for(refresher, clock, 60)
        most = max(most, len(api.calls) - calls)
    assert most == 1 + 12  # the first sweep
    api.records.insert(100, result("t-missed", status="Failed", start=T0 + 50, error_code="X"))
    most = 0
    for _ in range(45):
        calls = len(api.calls)
        snap = run_for(refresher, clock, 60)
        most = max(most, len(api.calls) - calls)
        if snap.counters.found_by_sweep:
            break
    assert snap.counters.found_by_sweep == 1
    assert most <= 1 + 4  # the fast path and a part of the sweep


def test_new_results_arriving_during_a_paced_sweep_do_not_bring_it_back(
    executor: ThreadPoolExecutor,
) -> None:
    """New results at the top shift the pages between two slices of a paced sweep: records at
    the end of one slice come again at the start of the next. That is not an order that broke,
    and the interval goes on spacing out (a busy target's sweeps are the ones worth sparing)."""
    clock = FakeClock()
    api = FakeApi(backlog(120), page_size=10)
    refresher = paced_refresher(api, executor, clock, backoff=16)
    refresher.refresh_now()
    newest = T0
    longest = 0.0
    for minute in range(6 * 60):
        for n in range(2):  # two new results a minute, finished, newest first
            newest += 1
            api.set(result(f"t-new{minute:03d}-{n}", start=newest))
        longest = max(longest, run_for(refresher, clock, 60).sweep_interval_seconds)
    assert longest == 16 * 600.0


def test_a_target_renumbering_its_results_between_two_slices_does_not_bring_the_sweep_back(
    executor: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A target renumbers the order of its results (exporter.arrivals) when results leave
    while new ones come; here at every refresh, as results leave by the size cap. The order a
    paced sweep checks is the same before and after: it is not a broken order."""
    monkeypatch.setattr(arrivals, "SPARSE_SLACK", -(10**9))  # renumber at every refresh
    clock = FakeClock()
    api = FakeApi(backlog(120), page_size=10)
    refresher = make_refresher(
        api,
        executor,
        clock,
        sweep_interval=600.0,
        sweep_backoff=16,
        max_results=10,
        sweep_pages_per_refresh=4,
        tracking_cap=200,
    )
    refresher.refresh_now()
    newest = T0
    longest = 0.0
    for minute in range(6 * 60):
        for n in range(3):  # results of one minute share their first reading: only their
            newest += 1  # numbers order them, and a slice often ends among them
            api.set(result(f"t-new{minute:03d}-{n}", start=newest))
        longest = max(longest, run_for(refresher, clock, 60).sweep_interval_seconds)
    assert refresher._tracker.last_arrival < refresher._tracker.arrivals  # it did renumber
    assert longest == 16 * 600.0


def test_sweeps_still_end_when_the_service_refuses_tokens_kept_between_refreshes(
    executor: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    """The API does not document how long a NextToken lasts. With tokens that do not outlive
    their walk, a paced slice that resumes from one starts over from the first page: the sweep
    must still read to the end (and stop pacing), not re-read its first pages for ever."""
    clock = FakeClock()
    api = FakeApi(backlog(120), page_size=10)  # a sweep is 12 pages
    api.token_max_age = 1  # a token is good for the next call only
    refresher = paced_refresher(api, executor, clock, backoff=4)
    refresher.refresh_now()
    snap = run_for(refresher, clock, 3 * 3600)
    assert not snap.results_truncated
    assert snap.sweep_interval_seconds == 2400.0  # starting over is not a moved order
    api.records.insert(100, result("t-missed", status="Failed", start=T0 + 50, error_code="X"))
    for _ in range(45):  # the bound, 2400 s, and a sweep
        snap = run_for(refresher, clock, 60)
        if snap.counters.found_by_sweep:
            break
    assert snap.counters.found_by_sweep == 1
    assert dict(snap.counters.finished)[("Failed", "X")] == 1
    warned = [r for r in caplog.records if "kept from the refresh before" in r.getMessage()]
    assert len(warned) == 1


def test_a_fresh_token_refused_once_does_not_stop_pacing(
    executor: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    # The token kept from the refresh before is accepted; the next one, issued in this refresh,
    # is refused once. That says nothing of kept tokens: sweeps stay paced.
    clock = FakeClock()
    api = FakeApi(backlog(120), page_size=10)  # a sweep is 12 pages
    refresher = paced_refresher(api, executor, clock, backoff=4)
    refresher.refresh_now()
    run_for(refresher, clock, 3 * 3600)  # spaced out: sweeps paced, 4 pages a refresh
    refused = 0
    previous = 0
    for _ in range(60):
        calls = len(api.calls)
        if previous == 1 + 4 and not refused:  # a slice ran: this refresh resumes the sweep
            # the fast path, the slice's first page (kept token), its second (a fresh token)
            api.refuse_token = {calls + 3}
            refused = calls + 3
        run_for(refresher, clock, 60)
        previous = len(api.calls) - calls
    assert refused  # the case happened
    api.refuse_token = set()
    most = 0
    for _ in range(60):
        calls = len(api.calls)
        run_for(refresher, clock, 60)
        most = max(most, len(api.calls) - calls)
    assert most == 1 + 4  # still paced
    assert not [r for r in caplog.records if "kept from the refresh before" in r.getMessage()]
