"""The local mirror of one target's results and exactly-once counting of finished runs.

:class:`RunTracker` is pure logic: no Prometheus, no HTTP, no threads. The refresher feeds it
every record it reads and asks it for immutable summaries (:class:`ViewSummary`,
:class:`CounterTotals`) that the collector renders.

State
  * the *view*: one entry per result the target's query returns, keyed
    ``(invoke_id, instance_id, container_id)``; the gauges are computed from it;
  * for targets with ``include_history``: one entry per run of a periodic task, keyed
    ``(invoke_id, instance_id, container_id, repeats)``, that remembers what was counted (the
    counting strategy is a :mod:`~exporter.runledger` ledger);
  * results that left the view (a complete walk and a look-up no longer returned them): what
    they counted is kept until the retention or the cap forgets it, so a result the API missed
    once and shows again is never counted again.

Counting rules
  * Until :meth:`RunTracker.complete_baseline` is called (after the first walk), records are
    remembered as seen *without* being counted: counters start when the exporter has read the
    target once, the backlog shows in the gauges only.
  * After that, each run is counted once in the finished counters when it is first seen with a
    terminal ``InvocationStatus``, whatever order the records come in. A run is identified by
    its key and its run number ``max(Repeats, 1)``: a one-time task has one run; a periodic task
    (RepeatMode Period/EveryReboot) has one record whose ``Repeats`` grows, and each new
    ``Repeats`` seen in a terminal status is a new run — unless it is a run that ended before
    the baseline (the record showed it ``Scheduled`` then), or the run already counted read
    again with another ``Repeats`` (same ``FinishedTime``: a garbled or missing ``Repeats``).
  * What is backlog is decided by what the exporter saw, not by clocks: a record the baseline
    read is backlog up to the run (and the time) it showed then; a run the exporter saw
    unfinished after the baseline, or that started after every result of a complete baseline,
    is counted. Only a record the baseline did not see otherwise (a page cap with an order
    that is not newest-first, a record that could not be parsed then, an order that moved
    between pages) is judged by time: finished more than :data:`BASELINE_TOLERANCE_SECONDS`
    (2 s when the API's clock was measured from its ``Date``) before the baseline by the API's
    clock (the host's plus the estimated offset) is backlog.
  * An OSS delivery is counted once per run when ``OssOutputStatus`` is first seen ``Finished``
    or ``Failed``, independently of the run's own status.
  * Limitation without ``include_history``: a periodic task's record shows ``Scheduled``
    between runs and a terminal status only after its last run, so only runs seen in a terminal
    status are counted (when ``Repeats`` grew since the last one counted); runs in between are
    not visible. With ``include_history``, when a periodic record shows that a run ended, the
    result is due (:meth:`RunTracker.history_due`): the refresher reads its history and
    :meth:`RunTracker.observe_history_run` counts every run exactly once (the record itself
    then counts nothing for that task: only the history numbers each run reliably);
    :meth:`RunTracker.history_read` records how far the history is settled.

Bounds
  * Entries older than the retention (30 days) expire: in view, not read for that long and no
    record time within it (a record the API keeps returning is not old); out of the view, and
    history runs, by their record's times on the records' own clock (counted back from the
    newest time a record showed when that is behind the host's), by which a new record older
    than it is ignored (it may be one forgotten).
  * A size cap drops the oldest entries. Everything not newer than the newest dropped entry is
    from then on ignored when it shows up again, so a forgotten run is never counted twice.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from functools import partial
from types import MappingProxyType

from exporter import viewqueries
from exporter.arrivals import ArrivalNumbers
from exporter.backlog import is_periodic, new_backlog_entry, record_backlog
from exporter.counters import DEFAULT_MAX_UNKNOWN_VALUES, RunCounters, ValueFolder
from exporter.ecs.models import MAX_CLOCK_SKEW_SECONDS, InvocationResult
from exporter.runledger import HistoryLedger, RecordLedger, ResultKey, RunLedger
from exporter.summaries import (
    DURATION_BUCKETS,
    OTHER,
    CommandBreakdown,
    CounterTotals,
    Histogram,
    HistogramValue,
    ViewSummary,
)
from exporter.trackerstate import ChangeLog, SavedState, TrackerChanges, decode_rows, decode_state
from exporter.viewentry import (
    OSS_TERMINAL,
    TERMINAL,
    Aged,
    Change,
    ViewEntry,
    needs_follow_up,
    result_time,
    run_number,
    with_key_of,
)
from exporter.viewindex import ViewIndex

# What other modules import from here (the summaries and counters are re-exported for them).
__all__ = [
    "BASELINE_TOLERANCE_SECONDS",
    "DEFAULT_MAX_UNKNOWN_VALUES",
    "DURATION_BUCKETS",
    "HISTORY_MISSES_ALLOWED",
    "OTHER",
    "RETENTION_SECONDS",
    "Change",
    "CommandBreakdown",
    "CounterTotals",
    "Histogram",
    "HistogramValue",
    "ResultKey",
    "RunTracker",
    "TrackerChanges",
    "ValueFolder",
    "ViewSummary",
    "needs_follow_up",
    "result_time",
    "run_number",
]

RETENTION_SECONDS = 30 * 86400.0
"""The API keeps results for 30 days."""
BASELINE_TOLERANCE_SECONDS = 60.0
"""How much earlier than the baseline a run must have finished to be taken as backlog when the
baseline did not see it (the API's times have whole seconds; clocks drift a little)."""
HISTORY_MISSES_ALLOWED = 3
"""Complete history reads that may miss an ended run before it is taken as gone."""


class RunTracker:
    """The mirror of one target's results and its counters (see the module docstring).

    Not thread-safe: the refresher runs one refresh at a time per target.
    """

    def __init__(
        self,
        *,
        include_history: bool = False,
        tracking_cap: int = 50_000,
        retention_seconds: float = RETENTION_SECONDS,
        command_breakdown: CommandBreakdown | None = None,
        max_unknown_values: int = DEFAULT_MAX_UNKNOWN_VALUES,
    ) -> None:
        self._ledger: RunLedger = HistoryLedger() if include_history else RecordLedger()
        self._cap = tracking_cap
        self._retention = retention_seconds
        self._view: dict[ResultKey, ViewEntry] = {}
        self._baseline_done = False
        # The baseline's time by the API's clock (estimated), for the only judgement that needs
        # a clock: a record the baseline did not see, first read finished after it.
        self._baseline_time = float("-inf")
        self._baseline_consistent = False
        self._tolerance = BASELINE_TOLERANCE_SECONDS
        self._newest_baseline_time = float("-inf")
        # Results that left the view (a walk or a look-up no longer returned them), kept until
        # the retention or the cap forgets them: if one comes back, it is not counted again.
        self._ghosts: dict[ResultKey, ViewEntry] = {}
        # Everything at or before this time may have been dropped by the cap: ignore it.
        self._dropped_until = float("-inf")
        self._history_due: set[ResultKey] = set()
        self._index = ViewIndex()  # what a refresh with nothing new asks, without a scan
        self._numbers = ArrivalNumbers()  # the order the view took results in
        self.returned = 0  # results back after leaving the view (a walk or a trim missed them)
        self.credentials = ""  # who the results were read as (opaque; saved with the state)

        self._counters = RunCounters(
            command_breakdown or CommandBreakdown(), tracking_cap, max_unknown_values
        )
        # What changed since the last save (see export_changes).
        self._changes = ChangeLog()

    # --- state ---------------------------------------------------------------------------

    @property
    def baseline_done(self) -> bool:
        """True once the first successful refresh has recorded the backlog."""
        return self._baseline_done

    def complete_baseline(
        self,
        at: float | None = None,
        *,
        api_at: float | None = None,
        consistent: bool = False,
        tolerance: float | None = None,
    ) -> None:
        """Mark the backlog as recorded: from now on terminal runs are counted.

        ``at`` is when the baseline's last walk started (by the exporter's clock), ``api_at``
        the same moment by the API's clock (estimated; ``at`` when not given). Records read
        since ``at`` are known as they were then: what was finished is backlog, what was not is
        counted when it finishes, whatever the clocks say. ``consistent``: one walk returned
        every record; a record it did not see that started after the newest one it saw is new.
        A record the baseline did not see otherwise, finished more than ``tolerance`` seconds
        (:data:`BASELINE_TOLERANCE_SECONDS` when not given) before ``api_at``, is backlog (see
        the module docstring).
        """
        self._baseline_done = True
        if tolerance is not None:
            self._tolerance = tolerance
        self._baseline_consistent = consistent
        if at is not None:
            self._baseline_time = at if api_at is None else api_at
        # A record dated further ahead than the API's clock can be must not hide new runs.
        bound = self._baseline_time + MAX_CLOCK_SKEW_SECONDS if at is not None else float("inf")
        latest = (result_time(e.result, float("-inf")) for e in self._view.values())
        self._newest_baseline_time = max((t for t in latest if t <= bound), default=float("-inf"))
        for entry in self._view.values():
            entry.baseline_state = at is None or entry.seen_at >= at
        self._changes.mark_all(self._view)

    @property
    def values_folded(self) -> int:
        """Distinct API values its labels counted under ``"other"`` (see :class:`ValueFolder`)."""
        return self._counters.values_folded

    def __len__(self) -> int:
        """Number of entries in the tracking state (view plus remembered history runs)."""
        return len(self._view) + len(self._ledger)

    @property
    def results_in_view(self) -> int:
        """Results the target's query returns now (the landing page's "results in view")."""
        return len(self._view)

    def __contains__(self, key: object) -> bool:
        return key in self._view

    def get(self, key: ResultKey) -> InvocationResult | None:
        """The record the view holds for ``key``."""
        entry = self._view.get(key)
        return None if entry is None else entry.result

    def follow_up_keys(self) -> list[ResultKey]:
        """Keys of the results the service may still change (see :func:`needs_follow_up`)."""
        return self._index.in_flight(self._view)

    @property
    def view(self) -> Mapping[ResultKey, ViewEntry]:
        """The view, read-only (see :mod:`exporter.viewqueries`)."""
        return MappingProxyType(self._view)

    @property
    def arrivals(self) -> int:
        """How many results the view took in so far (each once)."""
        return self._numbers.taken

    @property
    def last_arrival(self) -> int:
        """The largest ``arrival`` held (see :attr:`ArrivalNumbers.last`)."""
        return self._numbers.last

    def history_due(self) -> list[ResultKey]:
        """Periodic results whose history holds runs that ended and are not settled yet."""
        gone = [key for key in self._history_due if key not in self._view]
        self._history_due.difference_update(gone)
        return sorted(self._history_due)

    def history_needed(self, key: ResultKey) -> range:
        """The run numbers a history read of ``key`` must see (empty when none)."""
        entry = self._view.get(key)
        if entry is None:
            return range(0)
        return range(entry.history_through + 1, entry.last_ended_run() + 1)

    def history_read(
        self, key: ResultKey, *, settled: set[int], seen: set[int], complete: bool
    ) -> None:
        """Record what a history read of ``key`` found.

        ``settled``: runs seen terminal with no OSS delivery in progress; ``seen``: every run
        seen; ``complete``: the read reached the last page. The result stays due while an ended
        run is not settled (an OSS delivery in progress, or a run that overlapped the next one
        and is not in the history yet); a run that complete reads keep not returning is taken
        as gone after :data:`HISTORY_MISSES_ALLOWED` of them.
        """
        entry = self._view.get(key)
        if entry is None:
            self._history_due.discard(key)
            return
        self._changes.mark(key)
        last = entry.last_ended_run()
        through = entry.history_through
        while through < last:
            run = through + 1
            if run in settled:
                through = run
                entry.history_misses = 0
            elif complete and run not in seen:
                entry.history_misses += 1
                if entry.history_misses <= HISTORY_MISSES_ALLOWED:
                    break
                through = run  # gone from the API (retention): nothing left to count
                entry.history_misses = 0
            else:
                break
        entry.history_through = through
        if through >= last:
            self._history_due.discard(key)

    def history_abandoned(self, key: ResultKey) -> None:
        """Stop reading the history of ``key`` (the API refuses it): its runs are counted from
        the record itself from now on."""
        self._history_due.discard(key)
        entry = self._view.get(key)
        if entry is not None:
            entry.history_refused = True
            self._changes.mark(key)

    # --- observing ---------------------------------------------------------------------------

    def _forgotten(self, time: float, now: float) -> bool:
        horizon = self._index.record_horizon(now, self._retention)
        return time <= self._dropped_until or time < horizon

    def _take_in(
        self, result: InvocationResult, key: ResultKey, run: int, now: float
    ) -> tuple[ViewEntry, Change, bool] | None:
        """The view entry for ``result`` (updated), what changed, and whether a record first
        read now is backlog; None when it is too old to remember."""
        entry = self._view.get(key)
        if entry is not None:
            if entry.result == result:
                entry.seen_at = now
                return entry, Change.UNCHANGED, False
            entry.result = with_key_of(result, entry.result)
            return entry, Change.CHANGED, False
        entry = self._ghosts.pop(key, None)
        if entry is not None:
            # Back in the view: what it counted before still stands.
            self.returned += 1
            self._view[key] = entry
            entry.result = result
            return entry, Change.CHANGED, False
        if self._baseline_done and self._forgotten(result_time(result, now), now):
            return None
        entry = self._view[key] = ViewEntry(result, now, arrival=self._numbers.next())
        missed = self._baseline_done and self._first_seen_as_backlog(entry, run)
        return entry, Change.NEW, missed

    def observe(self, result: InvocationResult, *, now: float, from_sweep: bool = False) -> Change:
        """Take one record of the target's view into account and count what it finished.

        Idempotent: observing the same record again changes nothing.
        """
        run, key = run_number(result), result.key  # one key tuple for the view and the log
        taken = self._take_in(result, key, run, now)
        if taken is None:
            return Change.IGNORED
        entry, change, missed_by_baseline = taken
        if change is Change.UNCHANGED:
            return change
        self._changes.mark(key)
        entry.seen_at = now
        self._index.taken_in(key, entry)
        self._counters.commands.see(result.command_id)
        if is_periodic(result):
            entry.periodic = True
        entry.max_repeats = max(entry.max_repeats, result.repeats)
        if not self._baseline_done or missed_by_baseline:
            record_backlog(entry, result, key, run, now, self._ledger)
            return change
        if result.invocation_status not in TERMINAL:
            # Seen unfinished after the baseline: the runs after the last one that ended end
            # after it, whatever the clocks say.
            entry.watched_run = min(entry.watched_run, entry.last_ended_run() + 1)
        counts_history = (
            self._ledger.counts_history and entry.periodic and not entry.history_refused
        )
        if counts_history and entry.last_ended_run() > entry.history_through:
            # A run ended that the history has not settled: the record itself shows Scheduled
            # between runs, the history has every run with its own status.
            self._history_due.add(result.key)
        # With include_history the runs of a periodic task are counted from its history, where
        # each run has its own record and number; the result itself only says a run ended (and
        # its Repeats may be garbled). A task without any numbered run (stopped before its first
        # one) has no history to read: its result is counted.
        by_history = counts_history and entry.max_repeats >= 1
        terminal = result.invocation_status in TERMINAL
        if terminal:
            # A terminal record shows the task's latest run: never an older one than seen before
            # (a smaller Repeats is a garbled value).
            run = max(run, entry.max_repeats)
        if terminal and run > entry.counted_run:
            same_run = (
                entry.counted_run > 0
                and result.finished_time is not None
                and result.finished_time == entry.counted_finish
            )
            entry.counted_run = run
            entry.counted_finish = result.finished_time
            # Not counted here: a run the history counts, the run already counted read with
            # another Repeats, or a run that ended before the baseline: by its FinishedTime, or
            # by its number when the Repeats is not garbled (smaller than one seen before).
            backlog = self._is_backlog(result, entry, run) or (
                run <= entry.floor_run and result.repeats >= entry.max_repeats
            )
            if not (by_history or same_run or backlog) and self._ledger.claim(
                result.key, run, result_time(result, now), oss=False
            ):
                self._note_result_claim(entry, result, run, now, oss=False)
                self._counters.count_finish(result, from_sweep)
        if result.oss_output_status in OSS_TERMINAL and run > entry.oss_counted_run:
            same_run = (
                entry.oss_counted_run > 0
                and result.finished_time is not None
                and result.finished_time == entry.oss_counted_finish
            )
            entry.oss_counted_run = run
            entry.oss_counted_finish = result.finished_time
            if not (by_history or same_run) and self._ledger.claim(
                result.key, run, result_time(result, now), oss=True
            ):
                self._note_result_claim(entry, result, run, now, oss=True)
                self._counters.count_oss(result)
        return change

    def observe_backlog(self, page: Iterable[InvocationResult], *, now: float) -> list[ResultKey]:
        """:meth:`observe` each record of a page of the first walk (before the baseline), the
        quick way for one the tracker has never held (:func:`~exporter.backlog.new_backlog_entry`:
        nearly all of a first walk); returns their keys, in order."""
        view, ghosts, ledger = self._view, self._ghosts, self._ledger
        commands, taken_in = self._counters.commands, self._index.taken_in
        keys, entries = [], []
        for result in page:
            key = result.key
            keys.append(key)
            if self._baseline_done or key in view or key in ghosts:
                self.observe(result, now=now)  # takes in nothing new unless baseline_done
                continue
            entry = view[key] = new_backlog_entry(result, key, now, ledger)
            entries.append(entry)
            taken_in(key, entry)
            if commands.enabled:
                commands.see(result.command_id)
        self._numbers.number(entries)
        self._changes.mark_all([entry.result.key for entry in entries])
        return keys

    def _note_result_claim(
        self, entry: ViewEntry, result: InvocationResult, run: int, now: float, *, oss: bool
    ) -> None:
        # Only a missing (garbled) Repeats can put a claim under the wrong number.
        if result.repeats == 0:
            claims = entry.result_claims if entry.result_claims is not None else []
            self._ledger.note_result_claim(claims, run, result_time(result, now), oss=oss)
            entry.result_claims = claims or None

    def _first_seen_as_backlog(self, entry: ViewEntry, run: int) -> bool:
        """For a result first read after the baseline: True when its run ended before it."""
        start = entry.result.start_time
        if self._baseline_consistent and start is not None and start > self._newest_baseline_time:
            # The baseline returned every result, and this run started after every time any of
            # them showed: it is new.
            entry.watched_run = run
        return self._is_backlog(entry.result, entry, run)

    def _is_backlog(self, result: InvocationResult, entry: ViewEntry | None, run: int) -> bool:
        """True when the record's run ``run`` finished before the baseline.

        Decided by what the exporter saw, not by clocks: by the time the result showed at the
        baseline, and never for a record the baseline read or a run seen unfinished after it.
        Only a record the baseline did not see is judged by time: finished well before the
        baseline by the API's clock (estimated).
        """
        finished = result.finished_time
        if finished is None:
            return False
        if entry is not None:
            if finished <= entry.floor_time:
                return True
            if entry.baseline_state or run >= entry.watched_run:
                return False
        return finished < self._baseline_time - self._tolerance

    def observe_history_run(
        self, result: InvocationResult, *, now: float, from_sweep: bool = False
    ) -> bool:
        """Count one run record of an ``IncludeHistory=true`` answer once; True if counted.

        Runs that finished before the baseline (up to the ``Repeats`` the view held then) are
        remembered without being counted. A record without a usable ``Repeats`` (0: every run in
        a history has started, so it has a number) is ignored: it cannot say which run it is.
        """
        if result.repeats < 1:
            return False
        self._changes.mark(result.key)
        run = run_number(result)
        time = result_time(result, now)
        if not self._ledger.remembers(result.key, run) and self._forgotten(time, now):
            return False
        entry = self._view.get(result.key) or self._ghosts.get(result.key)
        claims = entry.result_claims if entry is not None else None
        before_baseline = (
            not self._baseline_done
            or (entry is not None and run <= entry.floor_run)
            or self._is_backlog(result, entry, run)
        )
        counted = False
        # The claim comes first: a run before the baseline is remembered, just not counted.
        if (
            result.invocation_status in TERMINAL
            and self._ledger.claim_history(claims, result.key, run, time, oss=False)
            and not before_baseline
        ):
            self._counters.count_finish(result, from_sweep)
            counted = True
        if (
            result.oss_output_status in OSS_TERMINAL
            and self._ledger.claim_history(claims, result.key, run, time, oss=True)
            and not before_baseline
        ):
            self._counters.count_oss(result)
        return counted

    # --- forgetting --------------------------------------------------------------------------

    def evict_missing(self, seen: Iterable[ResultKey], *, seen_before: float) -> int:
        """Take out of the view the entries first seen before ``seen_before`` that a complete
        walk did not return (see :meth:`evict_keys`). Returns how many left the view."""
        gone = viewqueries.missing(self._view, seen, seen_before=seen_before)
        self.evict_keys(gone)
        return len(gone)

    def evict_keys(self, keys: Iterable[ResultKey]) -> None:
        """Take the given entries out of the view (the API no longer returns them).

        What they counted is remembered until the retention or the cap forgets it: a result
        that comes back (an API that missed it once) is never counted again.
        """
        for key in keys:
            entry = self._view.pop(key, None)
            if entry is not None:
                self._ghosts[key] = entry
                self._changes.mark(key)
                self._index.left_view(entry)

    def expire(self, now: float) -> int:
        """Drop entries older than the retention, then the oldest beyond the size cap.

        Returns how many entries were dropped.
        """
        horizon = self._index.record_horizon(now, self._retention)
        old = self._index.drop_expired(now - self._retention, horizon, self._view, self._ghosts)
        forgotten = self._ledger.expire(horizon)
        self._changes.mark_all(old)  # their rows are deleted (or rewritten) at the next save
        self._changes.mark_all(forgotten)
        dropped = len(old) + len(forgotten)
        # Results that left the view get what room the cap leaves; past it the oldest tenth go
        # at once (not a few at every refresh: each pass sorts them).
        room = self._cap - len(self._view) - len(self._ledger)
        if len(self._ghosts) > max(room, 0):
            keep = max(0, room - room // 10)
            dropped += self._drop_oldest(len(self._ghosts) - keep, ghosts_only=True)
        excess = len(self._view) + len(self._ledger) - self._cap
        if excess > 0:
            dropped += self._drop_oldest(excess)
        if dropped:
            self._index.removed()
        if self._numbers.compact(self._view.values(), self._ghosts.values()):
            self._changes.mark_all((*self._view, *self._ghosts))  # saved with their new numbers
        return dropped

    def _drop_oldest(self, excess: int, *, ghosts_only: bool = False) -> int:
        aged = [
            Aged(result_time(e.result, e.first_seen), key, partial(self._ghosts.pop, key, None))
            for key, e in self._ghosts.items()
        ]
        if not ghosts_only:
            aged.extend(
                Aged(result_time(e.result, e.first_seen), key, partial(self._view.pop, key, None))
                for key, e in self._view.items()
            )
            aged.extend(Aged(time, key, drop) for time, key, drop in self._ledger.aged())
        oldest = heapq.nsmallest(excess, aged)
        for item in oldest:
            item.drop()
            self._changes.mark(item.key)
            self._dropped_until = max(self._dropped_until, item.time)
        return len(oldest)

    # --- persistence -------------------------------------------------------------------------

    def export_changes(self) -> TrackerChanges:
        """What changed since the last :meth:`changes_saved`: the counters and scalars (when
        they changed) and one row per result whose entries changed (``None``: delete it)."""
        return self._changes.export(self._saved_state(), self._view, self._ghosts, self._ledger)

    def changes_saved(self, changes: TrackerChanges) -> None:
        """``changes`` (from :meth:`export_changes`) are stored: forget them."""
        self._changes.saved(changes)

    def restore(self, summary: bytes, rows: Iterable[tuple[bytes, bytes]]) -> int | None:
        """Take back a state :meth:`export_changes` exported (a fresh tracker only).

        Returns how many results were restored. Raises ``ValueError`` when the counters cannot
        be read (the tracker is left fresh). When only the rows cannot be read, returns None:
        the counters are kept and the baseline is taken again (nothing is counted twice).
        """
        if self._baseline_done or self._view or self._ghosts or len(self._ledger):
            raise RuntimeError("restore() needs a fresh tracker")
        state = decode_state(summary)
        restored = decode_rows(rows)
        self._counters.restore(state)
        self.credentials = state.credentials
        if restored is None:
            return None
        view = self._view = restored.view
        self._ghosts = restored.ghosts
        self._index.rebuild(view, self._ghosts)
        self._numbers.restored((*view.values(), *self._ghosts.values()))
        for key, key_runs in restored.runs:
            self._ledger.restore_runs(key, key_runs)
        self._changes.restored(summary)
        self._baseline_done = state.baseline_done
        self._baseline_time = state.baseline_time
        self._baseline_consistent = state.baseline_consistent
        if state.tolerance is not None:
            self._tolerance = state.tolerance
        self._newest_baseline_time = state.newest_baseline_time
        self._dropped_until = state.dropped_until
        if self._ledger.counts_history:
            self._history_due = {
                key
                for key, entry in view.items()
                if entry.periodic
                and not entry.history_refused
                and entry.last_ended_run() > entry.history_through
            }
        return len(view)

    def _saved_state(self) -> SavedState:
        return SavedState(
            baseline_done=self._baseline_done,
            baseline_time=self._baseline_time,
            baseline_consistent=self._baseline_consistent,
            tolerance=self._tolerance,
            newest_baseline_time=self._newest_baseline_time,
            credentials=self.credentials,
            dropped_until=self._dropped_until,
            **self._counters.saved(),
        )

    # --- summaries ---------------------------------------------------------------------------

    def view_summary(self, now: float) -> ViewSummary:
        """The gauges as of ``now`` (O(size of the view) once after each change of the view)."""
        counts = self._index.counts(lambda: self._counters.view_counts(self._view.values()))
        return counts.summary(now, tracked_runs=len(self))

    def counter_totals(self) -> CounterTotals:
        """The counters (see :meth:`RunCounters.totals`)."""
        return self._counters.totals()
