"""RunTracker: the local mirror and exactly-once counting, as pure logic."""

from __future__ import annotations

import random

import pytest

from exporter.counters import RunCounters
from exporter.ecs.models import InvocationResult
from exporter.runledger import HistoryLedger
from exporter.tracking import (
    HISTORY_MISSES_ALLOWED,
    OTHER,
    Change,
    CommandBreakdown,
    CounterTotals,
    RunTracker,
    ValueFolder,
    ViewSummary,
    needs_follow_up,
    result_time,
)
from tests.support.fakes import DAY, T0, result

replace = InvocationResult.replace  # a copy of a record with changes


def finished_total(totals: CounterTotals, status: str | None = None, code: str = "") -> int:
    """Sum of finished runs, of one status and code, or of all when status is None."""
    if status is None:
        return sum(n for _, n in totals.finished)
    return dict(totals.finished).get((status, code), 0)


def oss_total(totals: CounterTotals, status: str, code: str = "") -> int:
    return dict(totals.oss_deliveries).get((status, code), 0)


def baseline(tracker: RunTracker, records: list[InvocationResult], now: float = T0) -> None:
    for record in records:
        tracker.observe(record, now=now)
    tracker.complete_baseline()


def test_baseline_backlog_shows_in_gauges_but_is_not_counted() -> None:
    tracker = RunTracker()
    backlog = [
        result("t-1", status="Success"),
        result("t-2", status="Failed", error_code="ExitCodeNonzero"),
        result("t-3", status="Running"),
    ]
    baseline(tracker, backlog)

    totals = tracker.counter_totals()
    assert finished_total(totals) == 0
    view = dict(tracker.view_summary(T0 + 100).by_status)
    assert (view["Success"], view["Failed"], view["Running"]) == (1, 1, 1)
    assert dict(tracker.view_summary(T0).by_error_code)["ExitCodeNonzero"] == 1


def test_run_finishing_after_the_baseline_is_counted_once() -> None:
    tracker = RunTracker()
    baseline(tracker, [result("t-1", status="Running")])

    done = result("t-1", status="Timeout", error_code="ExecutionTimeout", finished=T0 + 90)
    assert tracker.observe(done, now=T0 + 100) is Change.CHANGED
    assert tracker.observe(done, now=T0 + 130) is Change.UNCHANGED

    totals = tracker.counter_totals()
    assert finished_total(totals, "Timeout", "ExecutionTimeout") == 1
    assert finished_total(totals) == 1
    histogram = dict(totals.durations)["Timeout"]
    assert histogram.count == 1
    assert histogram.sum == pytest.approx(90)


def test_run_first_seen_already_terminal_after_the_baseline_is_counted() -> None:
    tracker = RunTracker()
    baseline(tracker, [])
    tracker.observe(result("t-9", status="Aborted", error_code="ClientNotRunning"), now=T0)
    assert finished_total(tracker.counter_totals(), "Aborted", "ClientNotRunning") == 1


def _lifecycle_world(
    rng: random.Random, invocations: int
) -> list[tuple[str, str, float, float, float, str]]:
    """(invoke_id, instance_id, created, started, ended, outcome) for random one-time runs."""
    runs = []
    for n in range(invocations):
        created = T0 + rng.uniform(-3600, 3600)
        started = created + rng.uniform(0, 30)
        ended = started + rng.uniform(1, 300)
        outcome = rng.choice(["Success", "Failed", "Timeout", "Cancelled"])
        for instance in range(rng.randint(1, 3)):
            runs.append((f"t-{n:04d}", f"i-{instance}", created, started, ended, outcome))
    return runs


def _records_at(
    runs: list[tuple[str, str, float, float, float, str]], now: float
) -> list[InvocationResult]:
    out = []
    for invoke_id, instance_id, created, started, ended, outcome in runs:
        if created > now:
            continue
        if now < started:
            out.append(result(invoke_id, instance_id, "Pending", start=None))
        elif now < ended:
            out.append(result(invoke_id, instance_id, "Running", start=started))
        else:
            out.append(result(invoke_id, instance_id, outcome, start=started, finished=ended))
    return out


@pytest.mark.parametrize("order", ["newest-first", "shuffled", "oldest-first"])
def test_exactly_once_over_many_refreshes_whatever_the_order(order: str) -> None:
    rng = random.Random(7)
    runs = _lifecycle_world(rng, 120)
    tracker = RunTracker()
    now = T0
    baseline(tracker, _records_at(runs, now), now)
    finished_at_baseline = {(r[0], r[1]) for r in runs if r[4] <= now and r[2] <= now}

    for _ in range(200):
        now += rng.uniform(5, 40)
        records = _records_at(runs, now)
        if order == "shuffled":
            rng.shuffle(records)
        elif order == "oldest-first":
            records.reverse()
        # Each refresh may see a record more than once (a restarted walk).
        for record in records + records[: len(records) // 3]:
            tracker.observe(record, now=now)

    expected = [r for r in runs if r[4] <= now and (r[0], r[1]) not in finished_at_baseline]
    totals = tracker.counter_totals()
    assert finished_total(totals) == len(expected)
    for outcome in ("Success", "Failed", "Timeout", "Cancelled"):
        assert finished_total(totals, outcome) == sum(1 for r in expected if r[5] == outcome)


def test_periodic_record_counts_each_new_repeats_seen_terminal() -> None:
    # The record of a periodic task shows its latest run; each run is counted when the record
    # shows it in a terminal status with a larger Repeats.
    tracker = RunTracker()

    def run(n: int, status: str) -> InvocationResult:
        return result("t-p", status=status, repeats=n, record_status="Running", start=T0 + 60 * n)

    baseline(tracker, [run(3, "Success")])

    tracker.observe(run(4, "Running"), now=T0 + 60)
    tracker.observe(run(4, "Failed"), now=T0 + 90)
    tracker.observe(run(4, "Failed"), now=T0 + 95)
    tracker.observe(run(5, "Success"), now=T0 + 150)
    # Between runs the service shows Scheduled: nothing to count.
    tracker.observe(run(5, "Scheduled"), now=T0 + 170)

    totals = tracker.counter_totals()
    assert finished_total(totals, "Failed") == 1
    assert finished_total(totals, "Success") == 1


def test_history_runs_are_counted_once_each_and_not_before_the_baseline() -> None:
    tracker = RunTracker(include_history=True)
    # At the baseline run 3 is in progress: runs 1 and 2 are backlog, run 3 is not.
    main = result("t-p", status="Running", repeats=3, record_status="Running")
    baseline(tracker, [main])

    def run(n: int, status: str = "Success") -> InvocationResult:
        return result("t-p", status=status, repeats=n, record_status="Running", start=T0 + n)

    key = ("t-p", "i-1", "")
    changed = replace(main, invocation_status="Scheduled")
    tracker.observe(changed, now=T0 + 60)
    assert tracker.history_due() == [key]
    assert list(tracker.history_needed(key)) == [3]
    history = [run(3, "Failed"), run(2), run(1)]
    for record in history:
        tracker.observe_history_run(record, now=T0 + 60)
    tracker.history_read(key, settled={3}, seen={3}, complete=False)
    assert tracker.history_due() == []
    assert finished_total(tracker.counter_totals()) == 1  # run 3 only

    # The next walk returns the same runs plus run 4 and 5; the record itself ends terminal
    # at run 5 (a finite schedule): every run still counted once.
    for record in [run(5, "Timeout"), run(4), *history]:
        tracker.observe_history_run(record, now=T0 + 200)
    tracker.observe(replace(run(5, "Timeout"), invoke_record_status="Finished"), now=T0 + 200)
    totals = tracker.counter_totals()
    assert finished_total(totals, "Failed") == 1
    assert finished_total(totals, "Success") == 1
    assert finished_total(totals, "Timeout") == 1
    assert finished_total(totals) == 3


def test_history_stays_due_until_the_ended_runs_are_settled() -> None:
    tracker = RunTracker(include_history=True)
    main = result("t-p", status="Scheduled", repeats=1, record_status="Running")
    baseline(tracker, [main])
    key = ("t-p", "i-1", "")
    tracker.observe(replace(main, repeats=3), now=T0 + 60)
    assert list(tracker.history_needed(key)) == [2, 3]
    # Run 3 ended but its OSS delivery is in progress: only run 2 is settled.
    tracker.history_read(key, settled={2}, seen={2, 3}, complete=False)
    assert tracker.history_due() == [key]
    assert list(tracker.history_needed(key)) == [3]
    # A run that complete reads keep not returning is gone (after a few tries).
    for _ in range(HISTORY_MISSES_ALLOWED):
        tracker.history_read(key, settled=set(), seen=set(), complete=True)
        assert tracker.history_due() == [key]
    tracker.history_read(key, settled=set(), seen=set(), complete=True)
    assert tracker.history_due() == []


def test_oss_delivery_is_counted_once_independently_of_the_run() -> None:
    tracker = RunTracker()
    baseline(tracker, [result("t-1", status="Success", oss="InProgress")])
    tracker.observe(result("t-2", status="Running"), now=T0 + 1)

    tracker.observe(result("t-1", status="Success", oss="Finished"), now=T0 + 30)
    tracker.observe(result("t-1", status="Success", oss="Finished"), now=T0 + 60)
    tracker.observe(result("t-2", status="Failed", oss="InProgress"), now=T0 + 60)
    failed = result("t-2", status="Failed", oss="Failed", oss_code="OSS.NoSuchBucket")
    tracker.observe(failed, now=T0 + 90)

    totals = tracker.counter_totals()
    assert oss_total(totals, "Finished") == 1  # its run was backlog; the delivery was not
    assert oss_total(totals, "Failed", "OSS.NoSuchBucket") == 1
    assert finished_total(totals) == 1  # t-2 only


def test_dropped_bytes_and_gauges_of_the_view() -> None:
    tracker = RunTracker()
    baseline(tracker, [result("t-0", status="Running", start=T0 - 500)])
    tracker.observe(result("t-1", status="Success", dropped=1000), now=T0)
    tracker.observe(result("t-2", status="Running", start=T0 - 50), now=T0)

    summary = tracker.view_summary(T0 + 100)
    assert summary.running == 2
    assert summary.running_oldest_age_seconds == pytest.approx(600)
    assert summary.with_dropped_output == 1
    assert tracker.counter_totals().dropped_bytes == 1000


def test_counters_keep_no_zeros_and_the_gauges_every_documented_value() -> None:
    # The pre-initialised counter series are the collector's, from the metric contract
    # (tests/test_collector.py): a fleet's trackers keep no zeros.
    tracker = RunTracker()
    totals = tracker.counter_totals()
    assert (totals.finished, totals.oss_deliveries) == ((), ())
    assert len(totals.durations) == 9
    summary = tracker.view_summary(T0)
    assert len(summary.by_status) == 13
    assert len(summary.by_error_code) == 18
    assert [s for s, _ in summary.oss_by_status] == ["InProgress", "Finished", "Failed"]


def test_unknown_values_are_kept_then_folded_into_other() -> None:
    tracker = RunTracker(max_unknown_values=2)
    baseline(tracker, [])
    for n in range(4):
        tracker.observe(result(f"t-{n}", status="Failed", error_code=f"NewCode{n}"), now=T0)
    finished = dict(tracker.counter_totals().finished)
    assert finished[("Failed", "NewCode0")] == 1
    assert finished[("Failed", "NewCode1")] == 1
    assert finished[("Failed", OTHER)] == 2
    assert ("Failed", "NewCode3") not in finished


def test_value_folder_admission_is_permanent() -> None:
    folder = ValueFolder(("Known",), max_unknown=1)
    assert folder.fold("A") == "A"
    assert folder.fold("B") == OTHER
    assert folder.fold("A") == "A"
    assert folder.fold("Known") == "Known"


def test_size_cap_drops_the_oldest_and_never_counts_them_again() -> None:
    tracker = RunTracker(tracking_cap=3)
    baseline(tracker, [])
    for n in range(5):
        tracker.observe(result(f"t-{n}", status="Success", start=T0 + n * 100), now=T0 + 1000)
    assert finished_total(tracker.counter_totals()) == 5
    tracker.expire(T0 + 1000)
    assert len(tracker) == 3
    assert tracker.view_summary(T0 + 1000).tracked_runs == 3

    # The API still returns the dropped runs: they are older than anything kept, so ignored.
    again = result("t-0", status="Success", start=T0)
    assert tracker.observe(again, now=T0 + 1100) is Change.IGNORED
    assert finished_total(tracker.counter_totals()) == 5
    # A new run is still counted.
    tracker.observe(result("t-9", status="Success", start=T0 + 1050), now=T0 + 1100)
    assert finished_total(tracker.counter_totals()) == 6


def test_entries_older_than_the_retention_expire() -> None:
    tracker = RunTracker()
    baseline(tracker, [result("t-old", start=T0), result("t-new", start=T0 + 20 * DAY)])
    tracker.expire(T0 + 31 * DAY)
    assert "t-old" not in {key[0] for key in tracker.follow_up_keys()}
    assert len(tracker) == 1
    assert tracker.get(("t-new", "i-1", "")) is not None


def test_a_record_the_api_keeps_returning_does_not_expire_whatever_its_times() -> None:
    # A periodic task started 40 days ago, between runs: its record keeps that StartTime.
    tracker = RunTracker()
    periodic = result("t-p", status="Scheduled", repeats=3, start=T0 - 40 * DAY)
    baseline(tracker, [periodic, result("t-old", start=T0 - 40 * DAY)], now=T0)
    tracker.expire(T0)
    assert tracker.get(periodic.key) is not None  # read just now
    tracker.observe(periodic, now=T0 + 29 * DAY)  # followed up, unchanged
    tracker.expire(T0 + 31 * DAY)
    assert tracker.get(periodic.key) is not None
    assert tracker.get(("t-old", "i-1", "")) is None  # not read for the retention
    ended = result("t-p", status="Failed", repeats=4, start=T0 + 31 * DAY)
    tracker.observe(ended, now=T0 + 31 * DAY)
    assert sum(n for _, n in tracker.counter_totals().finished) == 1


def test_a_target_gone_quiet_still_forgets_what_left_the_view() -> None:
    # No record newer than the last ones ever comes: the records' clock still runs on with the
    # host's since they were read, and what left the view is forgotten after the retention.
    tracker = RunTracker()
    baseline(tracker, [result(f"t-{n}", start=T0 - 100) for n in range(5)], now=T0)
    tracker.evict_keys([(f"t-{n}", "i-1", "") for n in range(5)])
    assert tracker.expire(T0 + 29 * DAY) == 0
    assert tracker.expire(T0 + 31 * DAY) == 5  # they were kept for ever


def test_one_record_dated_ahead_does_not_stop_the_records_clock_from_lagging() -> None:
    # The API's records are 40 days behind the host; one of them says 2099. New runs are still
    # new ones, not results the retention forgot.
    behind = T0 - 40 * DAY
    tracker = RunTracker()
    olds = [result(f"t-old-{n}", start=behind - 600 - n) for n in range(5)]
    baseline(tracker, [*olds, result("t-bogus", start=4_070_908_800.0)], now=T0)
    tracker.observe(result("t-new", start=behind + 60), now=T0 + 60)
    assert sum(n for _, n in tracker.counter_totals().finished) == 1


def test_evict_missing_keeps_entries_first_seen_during_the_walk() -> None:
    tracker = RunTracker()
    baseline(tracker, [result("t-1"), result("t-2")], now=T0)
    tracker.observe(result("t-3"), now=T0 + 60)
    dropped = tracker.evict_missing({("t-1", "i-1", "")}, seen_before=T0 + 60)
    assert dropped == 1
    assert tracker.get(("t-2", "i-1", "")) is None
    assert tracker.get(("t-3", "i-1", "")) is not None


def test_reapplying_a_partly_applied_refresh_does_not_double_count() -> None:
    # A refresh that failed after applying some pages, then the full retry.
    tracker = RunTracker()
    baseline(tracker, [result(f"t-{n}", status="Running") for n in range(6)])
    finished = [result(f"t-{n}", status="Success") for n in range(6)]
    for record in finished[:3]:
        tracker.observe(record, now=T0 + 30)
    for record in finished:
        tracker.observe(record, now=T0 + 60)
    assert finished_total(tracker.counter_totals(), "Success") == 6


def test_follow_up_keys_are_records_the_service_may_still_change() -> None:
    tracker = RunTracker()
    baseline(
        tracker,
        [
            result("t-run", status="Running"),
            result("t-pend", status="Pending", start=None),
            result("t-done", status="Success"),
            result("t-per", status="Success", repeats=2, record_status="Running"),
        ],
    )
    assert sorted(key[0] for key in tracker.follow_up_keys()) == ["t-pend", "t-per", "t-run"]


def test_command_breakdown_is_capped_and_counts_the_folded_ids() -> None:
    config = CommandBreakdown(enabled=True, max_command_ids=2, command_names={"c-a": "backup"})
    tracker = RunTracker(command_breakdown=config)
    baseline(tracker, [])
    for n, command_id in enumerate(["c-a", "c-b", "c-c", "c-d", "c-c"]):
        tracker.observe(result(f"t-{n}", status="Success", command_id=command_id), now=T0)
    totals = tracker.counter_totals()
    commands = dict(totals.commands)
    assert commands[("c-a", "backup", "Success")] == 1
    assert commands[("c-b", "", "Success")] == 1
    assert commands[("c-a", "backup", "Failed")] == 0
    assert commands[(OTHER, "", "Success")] == 3
    assert totals.command_ids_folded == 2


def test_a_command_seen_running_has_its_series_at_zero_before_its_run_ends() -> None:
    # Prometheus' increase() cannot see the first value of a series: a command's counters must
    # exist (at 0) before its first run ends, or a first burst of failures goes unnoticed.
    tracker = RunTracker(command_breakdown=CommandBreakdown(enabled=True))
    baseline(tracker, [])
    tracker.observe(result("t-1", status="Running", command_id="c-new"), now=T0)
    commands = dict(tracker.counter_totals().commands)
    assert commands[("c-new", "", "Failed")] == 0
    tracker.observe(result("t-1", status="Failed", command_id="c-new"), now=T0 + 5)
    assert dict(tracker.counter_totals().commands)[("c-new", "", "Failed")] == 1


def test_results_in_view_leave_out_the_history_runs_remembered() -> None:
    # The first-refresh log line and the landing page both say "results in view": the same
    # number, whatever history runs the tracker remembers besides.
    tracker = RunTracker(include_history=True)
    baseline(tracker, [result("t-p", status="Scheduled", repeats=2)])
    for run in (1, 2, 3):
        tracker.observe_history_run(result("t-p", status="Success", repeats=run), now=T0 + run)
    assert tracker.results_in_view == 1
    assert len(tracker) > tracker.results_in_view


def test_history_walk_is_refused_without_include_history() -> None:
    tracker = RunTracker()
    baseline(tracker, [])
    with pytest.raises(RuntimeError, match="include_history"):
        tracker.observe_history_run(result("t-p", repeats=2), now=T0)


# --- regressions found by tests/test_counting_properties.py ----------------------------------


@pytest.mark.parametrize("include_history", [False, True])
def test_a_periodic_task_stopped_between_runs_does_not_count_a_run_of_the_backlog(
    include_history: bool,
) -> None:
    # At the baseline the task shows Scheduled after run 3; StopInvocation then makes the result
    # show run 3 in its own terminal status. Run 3 ended before the baseline: backlog.
    tracker = RunTracker(include_history=include_history)
    scheduled = result(
        "t-p", status="Scheduled", repeats=3, record_status="Running", start=T0 - 100
    )
    scheduled = replace(scheduled, finished_time=None)  # the service may not show it
    baseline(tracker, [scheduled])
    stopped = replace(
        scheduled,
        invocation_status="Failed",
        invoke_record_status="Stopped",
        error_code="ExitCodeNonzero",
        finished_time=T0 - 90,
    )
    tracker.observe(stopped, now=T0 + 60)
    assert finished_total(tracker.counter_totals()) == 0
    assert tracker.history_due() == []


def _periodic_run(n: int, status: str, *, repeats: int | None = None) -> InvocationResult:
    """Run ``n`` of a periodic task (each run at its own time); ``repeats`` as the API sent it."""
    record = result("t-p", status=status, repeats=n, record_status="Running", start=T0 + 60 * n)
    return record if repeats is None else replace(record, repeats=repeats)


def test_a_result_read_with_a_garbled_repeats_is_not_counted_twice() -> None:
    # The last run of a schedule is first read with Repeats missing (0), then correctly: the
    # same run (same FinishedTime), counted once, with its delivery.
    tracker = RunTracker()
    baseline(tracker, [_periodic_run(1, "Scheduled")])
    last = replace(
        _periodic_run(2, "Failed"), invoke_record_status="Finished", oss_output_status="Finished"
    )
    tracker.observe(replace(last, repeats=0), now=T0 + 200)
    tracker.observe(last, now=T0 + 230)
    totals = tracker.counter_totals()
    assert finished_total(totals) == 1
    assert finished_total(totals, "Failed") == 1
    assert oss_total(totals, "Finished") == 1


def test_history_runs_without_a_usable_repeats_are_ignored() -> None:
    # A history page with Repeats missing cannot say which run a record is: counting it as
    # run 1 would count run 2 twice and run 1 never.
    tracker = RunTracker(include_history=True)
    baseline(tracker, [_periodic_run(1, "Running")])
    key = ("t-p", "i-1", "")
    tracker.observe(_periodic_run(2, "Scheduled"), now=T0 + 200)
    assert list(tracker.history_needed(key)) == [1, 2]
    for record in (_periodic_run(2, "Failed", repeats=0), _periodic_run(1, "Success", repeats=0)):
        assert not tracker.observe_history_run(record, now=T0 + 200)
    assert finished_total(tracker.counter_totals()) == 0
    for record in (_periodic_run(2, "Failed"), _periodic_run(1, "Success")):
        tracker.observe_history_run(record, now=T0 + 230)
    totals = tracker.counter_totals()
    assert (finished_total(totals, "Failed"), finished_total(totals, "Success")) == (1, 1)


def test_with_history_a_periodic_result_is_counted_from_its_history_only() -> None:
    # The result of a finished schedule, read with a garbled Repeats, must not take the slot of
    # run 1: the history counts each run under its own number.
    tracker = RunTracker(include_history=True)
    baseline(tracker, [_periodic_run(1, "Scheduled")])
    tracker.observe(_periodic_run(2, "Running"), now=T0 + 130)
    last = replace(_periodic_run(3, "Timeout", repeats=0), invoke_record_status="Finished")
    tracker.observe(last, now=T0 + 300)
    assert finished_total(tracker.counter_totals()) == 0
    assert tracker.history_due() == [("t-p", "i-1", "")]
    for n, status in ((3, "Timeout"), (2, "Failed"), (1, "Success")):
        tracker.observe_history_run(_periodic_run(n, status), now=T0 + 330)
    totals = tracker.counter_totals()
    assert finished_total(totals) == 2  # run 1 ended before the baseline
    assert (finished_total(totals, "Timeout"), finished_total(totals, "Failed")) == (1, 1)


def test_a_garbled_baseline_does_not_make_the_history_count_the_backlog() -> None:
    # At the baseline the result is read with Repeats missing: the runs that ended by the time
    # it showed then are backlog all the same.
    tracker = RunTracker(include_history=True)
    shown = replace(_periodic_run(3, "Scheduled", repeats=0), finished_time=T0 + 190)
    baseline(tracker, [shown], now=T0 + 200)
    tracker.observe(replace(shown, repeats=3), now=T0 + 230)
    for n in (3, 2, 1):
        tracker.observe_history_run(_periodic_run(n, "Success"), now=T0 + 230)
    assert finished_total(tracker.counter_totals()) == 0
    tracker.observe(_periodic_run(4, "Scheduled"), now=T0 + 300)
    tracker.observe_history_run(_periodic_run(4, "Success"), now=T0 + 300)
    assert finished_total(tracker.counter_totals()) == 1


def test_a_result_the_baseline_missed_that_finished_long_before_is_backlog() -> None:
    # A page cap with an order that is not newest-first, or a record that could not be parsed
    # at the baseline: the result turns up later, finished before the exporter started.
    tracker = RunTracker()
    tracker.complete_baseline(at=T0 + 3600)
    old = result("t-old", status="Failed", start=T0, oss="Finished")
    assert tracker.observe(old, now=T0 + 3630) is Change.NEW
    # A run that finished after the baseline, or just before it (clocks drift), is counted.
    tracker.observe(result("t-new", status="Success", start=T0 + 3590), now=T0 + 3630)
    totals = tracker.counter_totals()
    assert finished_total(totals) == 1
    assert finished_total(totals, "Success") == 1
    assert oss_total(totals, "Finished") == 0
    assert dict(tracker.view_summary(T0 + 3630).by_status)["Failed"] == 1


@pytest.mark.parametrize("history_order", [(2, 1), (1, 2)])
def test_a_periodic_result_first_read_with_a_garbled_repeats_keeps_every_run_label(
    history_order: tuple[int, int],
) -> None:
    # The last run of a schedule is first seen finished, with Repeats missing, before the task
    # is known to be periodic: counted from the result (as run 1). Its history then shows run 1
    # (Failed) and run 2 (the one counted): each run once, with its own status.
    tracker = RunTracker(include_history=True)
    baseline(tracker, [])
    last = replace(_periodic_run(2, "Error", repeats=0), invoke_record_status="Finished")
    tracker.observe(last, now=T0 + 200)
    assert finished_total(tracker.counter_totals(), "Error") == 1
    tracker.observe(replace(last, repeats=2), now=T0 + 230)
    assert tracker.history_due() == [("t-p", "i-1", "")]
    for n in history_order:
        status = {1: "Failed", 2: "Error"}[n]
        tracker.observe_history_run(_periodic_run(n, status), now=T0 + 230)
    totals = tracker.counter_totals()
    assert (finished_total(totals, "Error"), finished_total(totals, "Failed")) == (1, 1)
    assert finished_total(totals) == 2


def test_a_result_that_left_the_view_and_comes_back_is_never_counted_again() -> None:
    # A walk that missed it (an order that moves between pages) took it out of the view.
    tracker = RunTracker()
    baseline(tracker, [])
    done = result("t-1", status="Success", start=T0 + 10)
    tracker.observe(done, now=T0 + 60)
    tracker.evict_keys([done.key])
    assert tracker.get(done.key) is None
    assert dict(tracker.view_summary(T0 + 60).by_status)["Success"] == 0
    assert tracker.observe(done, now=T0 + 120) is Change.CHANGED
    assert finished_total(tracker.counter_totals()) == 1
    assert dict(tracker.view_summary(T0 + 120).by_status)["Success"] == 1


def test_a_run_the_baseline_saw_unfinished_counts_whatever_the_api_clock_says() -> None:
    # The API's clock is 300 s behind the host's: the run ends "before" the host's baseline.
    tracker = RunTracker()
    tracker.observe(result("t-1", status="Running", start=T0 - 310), now=T0)
    tracker.complete_baseline(at=T0)
    tracker.observe(result("t-1", status="Success", start=T0 - 310, finished=T0 - 290), now=T0 + 30)
    assert finished_total(tracker.counter_totals()) == 1


def test_a_result_the_baseline_missed_is_judged_by_the_api_clock() -> None:
    tracker = RunTracker()
    tracker.complete_baseline(at=T0, api_at=T0 - 300, tolerance=2.0)
    tracker.observe(result("t-old", start=T0 - 400, finished=T0 - 310), now=T0 + 30)
    tracker.observe(result("t-new", start=T0 - 298, finished=T0 - 290), now=T0 + 30)
    totals = tracker.counter_totals()
    assert finished_total(totals) == 1  # t-new: after the baseline by the API's clock


def test_results_that_left_the_view_stay_within_the_cap_and_never_count_twice() -> None:
    tracker = RunTracker(tracking_cap=10)
    baseline(tracker, [])
    gone = [result(f"t-{n}", start=T0 + n) for n in range(10)]
    for record in gone:
        tracker.observe(record, now=T0 + 100)
    tracker.evict_keys(record.key for record in gone)
    for n in range(5):
        tracker.observe(result(f"t-new-{n}", start=T0 + 50 + n), now=T0 + 200)
    tracker.expire(T0 + 200)
    assert len(tracker) == 5  # the view; what left it takes only the room the cap leaves
    for record in gone:  # the API shows them all again: none counts twice
        tracker.observe(record, now=T0 + 300)
    assert finished_total(tracker.counter_totals()) == 15


@pytest.mark.parametrize("include_history", [False, True])
def test_the_first_walk_page_by_page_leaves_what_record_by_record_observing_leaves(
    include_history: bool,
) -> None:
    # observe_backlog() is the first walk's quick way; what it remembers (every saved field of
    # every entry, the counters) and counts later must be exactly what observe() gives.
    rng = random.Random(11)
    statuses = ["Success", "Failed", "Running", "Pending", "Scheduled", "Stopped", "Timeout"]
    records = []
    for n in range(300):
        status = rng.choice(statuses)
        records.append(
            result(
                f"t-{n % 40}",
                f"i-{n % 7}",
                status,
                repeats=rng.choice([None, 0, 1, 2, 5]),
                start=rng.choice([None, T0 - 500, T0 - 100]),
                finished=rng.choice([None, T0 - 50]) if status != "Running" else None,
                oss=rng.choice(["", "InProgress", "Finished", "Failed"]),
                command_id=f"c-{n % 3}",
            )
        )
    pages = [records[i : i + 50] for i in range(0, len(records), 50)]
    pages.append(records[10:20])  # read twice (the order moved between pages)
    one_by_one, by_page = (RunTracker(include_history=include_history) for _ in range(2))
    for page in pages:
        for record in page:
            one_by_one.observe(record, now=T0)
        assert by_page.observe_backlog(page, now=T0) == [r.key for r in page]

    def state(tracker: RunTracker) -> tuple[bytes | None, list[tuple[bytes, bytes | None]]]:
        changes = tracker.export_changes()
        return changes.summary, sorted(changes.rows, key=lambda row: row[0])

    assert state(by_page) == state(one_by_one)
    # What the view's index keeps (follow-ups, gauges) is the same whichever way it came in.
    assert set(by_page.follow_up_keys()) == set(one_by_one.follow_up_keys())
    assert by_page.view_summary(T0) == one_by_one.view_summary(T0)
    later = [replace(r, invocation_status="Success", finished_time=T0 + 60) for r in records[::3]]
    for tracker in (one_by_one, by_page):
        tracker.complete_baseline(at=T0)
        for record in later:
            tracker.observe(record, now=T0 + 100)
    assert by_page.counter_totals() == one_by_one.counter_totals()
    assert finished_total(by_page.counter_totals()) > 0
    assert state(by_page) == state(one_by_one)


# --- what a refresh with nothing new asks without scanning the view ---------------------------


def _scanned_summary(tracker: RunTracker, now: float) -> ViewSummary:
    """The gauges computed from the whole view, as if nothing had been kept from before."""
    counters = RunCounters(CommandBreakdown(), tracking_cap=1_000_000)
    return counters.view_counts(tracker.view.values()).summary(now, tracked_runs=len(tracker))


@pytest.mark.parametrize("seed", range(6))
def test_the_kept_summary_follow_ups_and_expiry_equal_a_scan_of_the_view(seed: int) -> None:
    rng = random.Random(seed)
    tracker = RunTracker(retention_seconds=5 * DAY, tracking_cap=1_000_000)
    statuses = ["Pending", "Running", "Success", "Failed", "Stopped", "Scheduled"]
    now = T0
    for step in range(300):
        action = rng.random()
        if action < 0.7:
            status = rng.choice(statuses)
            record = result(
                f"t-{rng.randrange(40)}",
                f"i-{rng.randrange(3)}",
                status,
                start=now - rng.uniform(0, 6 * DAY) if rng.random() < 0.9 else None,
                error_code=rng.choice(["", "ExitCodeNonzero"]) if status == "Failed" else "",
                oss=rng.choice(["", "InProgress", "Finished"]),
                dropped=rng.choice([0, 0, 10]),
                record_status="Running" if rng.random() < 0.2 else None,
            )
            tracker.observe(record, now=now)
        elif action < 0.8 and tracker.results_in_view:
            tracker.evict_keys(rng.sample(list(tracker.view), k=1))
        elif action < 0.9:
            now += rng.uniform(0, 2 * DAY)
        else:
            horizon = now - 5 * DAY
            # Old by its record's times (else when first seen) and not read since the horizon.
            kept = {
                key
                for key, entry in tracker.view.items()
                if result_time(entry.result, entry.first_seen) >= horizon
                or entry.seen_at >= horizon
            }
            tracker.expire(now)
            assert set(tracker.view) == kept, step
        if step == 100:
            tracker.complete_baseline(now)
        scanned = {key for key, entry in tracker.view.items() if needs_follow_up(entry.result)}
        assert set(tracker.follow_up_keys()) == scanned, step
        assert len(tracker.follow_up_keys()) == len(scanned), step
        assert tracker.view_summary(now) == _scanned_summary(tracker, now), step


def test_history_runs_older_than_the_horizon_are_forgotten_whenever_they_came_in() -> None:
    ledger = HistoryLedger()
    first, second = ("t-1", "i-1", ""), ("t-2", "i-1", "")
    ledger.restore_runs(second, [(1, T0 - 50, True, False)])  # restored from the state
    ledger.claim(first, 1, T0, oss=False)
    assert ledger.expire(T0 - 60) == []
    assert ledger.expire(T0 - 40) == [second]
    ledger.claim(first, 2, T0 - 100, oss=False)  # an older run, claimed later
    assert ledger.expire(T0 - 10) == [first]
    assert (ledger.remembers(first, 1), ledger.remembers(first, 2)) == (True, False)
    assert ledger.expire(T0 + 1) == [first]
    assert len(ledger) == 0
