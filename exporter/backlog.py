"""The backlog: what the tracker remembers of a record it takes in without counting it.

Until the first walk is complete (and for a record first read later that ended before it), a
record is backlog: the runs it shows as ended are remembered as seen, never counted, so that a
restart or a later read of the same run counts nothing (see :mod:`exporter.tracking`). This
module is that one rule (:func:`record_backlog`) and the quick way the first walk takes a record
it has not seen yet into the view (:func:`new_backlog_entry`): a walk of 10,000 results makes
10,000 of them. Pure logic, no I/O.
"""

from __future__ import annotations

from exporter.ecs.models import InvocationResult
from exporter.runledger import ResultKey, RunLedger
from exporter.viewentry import OSS_TERMINAL, TERMINAL, ViewEntry, result_time, run_number


def is_periodic(result: InvocationResult) -> bool:
    """True when a record shows a Period/EveryReboot task: ``Scheduled`` (between runs) or
    ``Repeats`` of 2 or more."""
    state = result.state
    return state.invocation_status == "Scheduled" or state.repeats >= 2


def record_backlog(
    entry: ViewEntry,
    result: InvocationResult,
    key: ResultKey,
    run: int,
    now: float,
    ledger: RunLedger,
) -> None:
    """Remember what ``result`` (its ``key``, run ``run``) shows as ended, as seen and not
    counted.

    The run the record shows is over when its status is terminal or ``Scheduled`` (between runs
    of a periodic task); a run in progress is counted when it ends. ``entry`` already holds the
    record's ``max_repeats`` and ``periodic``; ``now`` is when it was read.
    """
    last = entry.last_ended_run()
    if last > entry.floor_run:
        entry.floor_run = last
    entry.history_through = entry.floor_run
    # Only a time something ended: a run that started at the baseline's latest time may well
    # have ended after it (the API's times may be coarse).
    # The stop time and OSS delivery from the record's extras (most records have none): this
    # runs for every record of a first walk.
    finished, extras = result.finished_time, result.extras
    if finished is not None and finished > entry.floor_time:
        entry.floor_time = finished
    if extras is not None and extras.stop_time is not None and extras.stop_time > entry.floor_time:
        entry.floor_time = extras.stop_time
    terminal = result.state.invocation_status in TERMINAL
    delivered = extras is not None and extras.oss_output_status in OSS_TERMINAL
    if not (terminal or delivered):
        return
    # Only a history ledger keeps a run's time (a record ledger's claims keep nothing): this
    # runs for every record of a first walk.
    time = result_time(result, now) if ledger.counts_history else now
    if terminal:
        if entry.max_repeats > run:
            run = entry.max_repeats
        if run > entry.counted_run:
            entry.counted_run = run
            entry.counted_finish = finished
        ledger.claim(key, run, time, oss=False)
    if delivered:
        if run > entry.oss_counted_run:
            entry.oss_counted_run = run
            entry.oss_counted_finish = finished
        ledger.claim(key, run, time, oss=True)


def new_backlog_entry(
    result: InvocationResult, key: ResultKey, now: float, ledger: RunLedger
) -> ViewEntry:
    """The view entry of a record the tracker has never held, read ``now`` before the baseline
    is complete: what ``RunTracker.observe`` makes of it, without its general path (and
    without its ``arrival``: the tracker numbers a page's new entries at once)."""
    repeats = result.state.repeats
    entry = ViewEntry(result, now, max_repeats=repeats if repeats > 0 else 0, seen_at=now)
    if is_periodic(result):
        entry.periodic = True
    record_backlog(entry, result, key, run_number(result), now, ledger)
    return entry
