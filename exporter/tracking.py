"""The local mirror of one target's results and exactly-once counting of finished runs.

:class:`RunTracker` is pure logic: no Prometheus, no HTTP, no threads. The refresher feeds it
every record it reads and asks it for immutable summaries (:class:`ViewSummary`,
:class:`CounterTotals`) that the collector renders.

State
  * the *view*: one entry per result the target's query returns, keyed
    ``(invoke_id, instance_id, container_id)``; the gauges are computed from it;
  * for targets with ``include_history``: one entry per run of a periodic task, keyed
    ``(invoke_id, instance_id, container_id, repeats)``, that remembers what was counted.

Counting rules
  * Until :meth:`RunTracker.complete_baseline` is called (after the first successful refresh),
    records are remembered as seen *without* being counted: counters start at exporter start,
    the backlog shows in the gauges only.
  * After that, each run is counted once in the finished counters when it is first seen with a
    terminal ``InvocationStatus``, whatever order the records come in. A run is identified by
    its key and its run number ``max(Repeats, 1)``: a one-time task has one run; a periodic task
    (RepeatMode Period/EveryReboot) has one record whose ``Repeats`` grows, and each new
    ``Repeats`` seen in a terminal status is a new run — unless it is a run that ended before
    the baseline (the record showed it ``Scheduled`` then), or the run already counted read
    again with another ``Repeats`` (same ``FinishedTime``: a garbled or missing ``Repeats``).
  * A record the baseline did not see (a page cap with an order that is not newest-first, a
    record that could not be parsed then) whose run finished more than
    :data:`BASELINE_TOLERANCE_SECONDS` before the baseline is backlog: recorded, not counted.
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
  * Entries older than the retention (30 days, by start/finish time) expire.
  * A size cap drops the oldest entries. Everything not newer than the newest dropped entry is
    from then on ignored when it shows up again, so a forgotten run is never counted twice.
"""

from __future__ import annotations

import bisect
import gc
import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

import msgspec

from exporter.ecs.models import (
    ERROR_CODES,
    INVOCATION_STATUSES,
    NON_TERMINAL_STATUSES,
    OSS_OUTPUT_ERROR_CODES,
    OSS_OUTPUT_STATUSES,
    TERMINAL_STATUSES,
    InvocationResult,
)
from exporter.metrics import DURATION_BUCKETS, MAX_LABEL_VALUE_CHARS, MAX_UNKNOWN_VALUES
from exporter.metrics import OTHER as OTHER

ResultKey = tuple[str, str, str]
"""``(invoke_id, instance_id, container_id)``: one result in the API's view."""
RunKey = tuple[str, str, str, int]
"""``(invoke_id, instance_id, container_id, run)``: one run of a periodic task."""

RETENTION_SECONDS = 30 * 86400.0
"""The API keeps results for 30 days."""
BASELINE_TOLERANCE_SECONDS = 60.0
"""How much earlier than the baseline a run must have finished to be taken as backlog when the
baseline did not see it (the API's times have whole seconds; clocks drift a little)."""
HISTORY_MISSES_ALLOWED = 3
"""Complete history reads that may miss an ended run before it is taken as gone."""
DEFAULT_MAX_UNKNOWN_VALUES = MAX_UNKNOWN_VALUES
_MAX_FOLDED_COUNTED = 10_000

_TERMINAL = frozenset(TERMINAL_STATUSES)
_NON_TERMINAL = frozenset(NON_TERMINAL_STATUSES)
_OSS_TERMINAL = frozenset({"Finished", "Failed"})
# Invocation-level statuses under which the service still changes the per-instance records:
# a periodic task stays "Running" until it is stopped.
_INVOCATION_ACTIVE = frozenset({"Running", "Stopping"})


class Change(Enum):
    """What an observed record meant to the view."""

    NEW = "new"
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    IGNORED = "ignored"
    """Older than what the tracker still remembers (expired or dropped by the cap)."""


def run_number(result: InvocationResult) -> int:
    """The run a record shows: ``Repeats``, at least 1 (a one-time task has one run)."""
    return result.repeats if result.repeats > 1 else 1


def result_time(result: InvocationResult, default: float) -> float:
    """The latest of start, finish and stop time, else ``default`` (when first seen)."""
    latest = default
    found = False
    for value in (result.start_time, result.finished_time, result.stop_time):
        if value is not None and (not found or value > latest):
            latest = value
            found = True
    return latest


def needs_follow_up(result: InvocationResult) -> bool:
    """Tell whether the service may still change this record without a new invocation."""
    return (
        result.invocation_status in _NON_TERMINAL
        or result.invoke_record_status in _INVOCATION_ACTIVE
        or result.oss_output_status == "InProgress"
    )


class ValueFolder:
    """Keeps a label's values bounded: known values pass, the first ``max_unknown`` unknown
    values pass as they are, later ones become ``"other"``. Admission is permanent, so a series
    never moves from its own label value to ``"other"``. A value longer than
    :data:`~exporter.metrics.MAX_LABEL_VALUE_CHARS` is never admitted: it becomes ``"other"``
    too. :attr:`folded` is how many distinct values became ``"other"`` (bounded)."""

    def __init__(self, known: Iterable[str], max_unknown: int = DEFAULT_MAX_UNKNOWN_VALUES) -> None:
        self._known = frozenset(known)
        self._admitted: set[str] = set()
        self._max_unknown = max_unknown
        # Hashes only: a folded value may be long, and their number is bounded by the cap.
        self._folded: set[int] = set()

    def fold(self, value: str) -> str:
        """Return the label value to use for ``value``."""
        if value in self._known or value in self._admitted:
            return value
        if len(self._admitted) < self._max_unknown and len(value) <= MAX_LABEL_VALUE_CHARS:
            self._admitted.add(value)
            return value
        if len(self._folded) < _MAX_FOLDED_COUNTED:
            self._folded.add(hash(value))
        return OTHER

    @property
    def folded(self) -> int:
        """Distinct values folded into ``"other"`` so far (at most 10,000 are told apart)."""
        return len(self._folded)


@dataclass(frozen=True, slots=True)
class HistogramValue:
    """A histogram as of one moment: cumulative counts per upper bound (``+Inf`` excluded)."""

    buckets: tuple[tuple[float, int], ...]
    count: int
    sum: float


class Histogram:
    """A plain, unsynchronised histogram (the owner serialises access)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = tuple(bounds)
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        """Add one observation."""
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value

    def value(self) -> HistogramValue:
        """Return the cumulative view."""
        cumulative: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip(self._bounds, self._counts, strict=False):
            running += count
            cumulative.append((bound, running))
        return HistogramValue(tuple(cumulative), running + self._counts[-1], self._sum)


@dataclass(frozen=True)
class CommandBreakdown:
    """Opt-in per-command counters; beyond ``max_command_ids`` ids fold into ``"other"``.

    Ids named in ``command_names`` get their own series first (they count toward the cap).
    """

    enabled: bool = False
    max_command_ids: int = 50
    command_names: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ViewSummary:
    """The gauges of one target, computed from the view. Every known enum value is present."""

    by_status: tuple[tuple[str, int], ...]
    by_error_code: tuple[tuple[str, int], ...]
    running: int
    running_oldest_age_seconds: float
    oss_by_status: tuple[tuple[str, int], ...]
    with_dropped_output: int
    tracked_runs: int


@dataclass(frozen=True, slots=True)
class CounterTotals:
    """The counters of one target since the exporter started. Known combinations are present."""

    finished: tuple[tuple[tuple[str, str], int], ...]
    durations: tuple[tuple[str, HistogramValue], ...]
    oss_deliveries: tuple[tuple[tuple[str, str], int], ...]
    dropped_bytes: int
    found_by_sweep: int
    commands: tuple[tuple[tuple[str, str, str], int], ...]
    command_ids_folded: int


EMPTY_HISTOGRAM = Histogram(DURATION_BUCKETS).value()


@dataclass(frozen=True, slots=True)
class TrackerChanges:
    """What a tracker has to save (see :meth:`RunTracker.export_changes`): ``summary`` is the
    encoded counters and scalars, None when unchanged; ``rows`` are encoded ``(key, value)``
    pairs, a None value deleting the row; ``keys`` the results they are for."""

    summary: bytes | None
    rows: tuple[tuple[bytes, bytes | None], ...]
    keys: frozenset[ResultKey]

    @property
    def empty(self) -> bool:
        """True when there is nothing to write."""
        return self.summary is None and not self.rows


class _SavedState(msgspec.Struct, frozen=True):
    """The counters and the scalars of a tracker, as saved (msgpack; new fields need defaults)."""

    baseline_done: bool
    baseline_time: float
    dropped_until: float
    folders: list[list[str]]
    finished: list[tuple[str, str, int]]
    durations: list[tuple[str, list[int], float]]
    oss: list[tuple[str, str, int]]
    dropped_bytes: int
    found_by_sweep: int
    command_ids: list[str]
    commands: list[tuple[str, str, str, int]]


@dataclass(slots=True)
class _ViewEntry:
    result: InvocationResult
    first_seen: float
    counted_run: int = 0
    """The run whose finish was counted (or seen before the baseline); 0 for none."""
    oss_counted_run: int = 0
    floor_run: int = 0
    """Runs up to this one finished before the baseline (history runs are not counted)."""
    periodic: bool = False
    """Seen ``Scheduled`` or with ``Repeats`` >= 2: a Period/EveryReboot task."""
    history_through: int = 0
    """Every run up to this one is settled in the history (counted, or before the baseline)."""
    history_misses: int = 0
    """Complete history reads in a row that did not return the next run."""
    max_repeats: int = 0
    """The largest ``Repeats`` the record showed (it reads 0 while a new run is pending)."""
    history_refused: bool = False
    """The API refused its history: its runs are counted from the record itself."""
    counted_finish: float | None = None
    """``FinishedTime`` of the run in ``counted_run``: the same run read with another Repeats."""
    oss_counted_finish: float | None = None
    """``FinishedTime`` of the run in ``oss_counted_run``."""
    floor_time: float = float("-inf")
    """The latest time the record showed before the baseline: runs that finished by then are
    backlog, whatever their (possibly garbled) ``Repeats``."""
    result_claims: list[tuple[int, float, bool]] | None = None
    """With include_history: ``(run, time, oss)`` of what the record itself counted before the
    task was known to be periodic; its ``Repeats`` may have been garbled, the time is not."""

    def last_ended_run(self) -> int:
        """The newest run of a periodic task known to have ended (0 when none)."""
        result = self.result
        status = result.invocation_status
        if status in _TERMINAL or status == "Scheduled":
            last = result.repeats
        else:
            last = result.repeats - 1
        if result.repeats < self.max_repeats:
            # The record went back to a pending run: every run shown before has ended.
            last = max(last, self.max_repeats)
        return max(0, last)


@dataclass(slots=True)
class _RunEntry:
    time: float
    finish_done: bool = False
    oss_done: bool = False


_SUMMARY_ENCODER = msgspec.msgpack.Encoder()
_SUMMARY_DECODER = msgspec.msgpack.Decoder(_SavedState)
_ENTRY_ENCODER = msgspec.msgpack.Encoder()
_ENTRY_DECODER = msgspec.msgpack.Decoder(tuple[_ViewEntry | None, list[tuple[int, _RunEntry]]])
_KEY_DECODER = msgspec.msgpack.Decoder(tuple[str, str, str])


class _CommandCounts:
    def __init__(self, config: CommandBreakdown, cap: int) -> None:
        self.enabled = config.enabled
        self._names = dict(config.command_names)
        self._max = config.max_command_ids
        self._admitted: list[str] = []
        self._admitted_set: set[str] = set()
        for command_id in self._names:
            self._admit(command_id)
        self._folded: set[str] = set()
        self._folded_cap = cap
        self.counts: dict[tuple[str, str, str], int] = {}

    def _admit(self, command_id: str) -> bool:
        if command_id in self._admitted_set:
            return True
        if len(self._admitted) >= self._max:
            return False
        self._admitted.append(command_id)
        self._admitted_set.add(command_id)
        return True

    def count(self, command_id: str, status: str) -> None:
        if len(command_id) <= MAX_LABEL_VALUE_CHARS and self._admit(command_id):
            label = (command_id, self._names.get(command_id, ""), status)
        else:
            # Bounded like the rest of the state; past it the gauge stops growing.
            if len(self._folded) < self._folded_cap:
                self._folded.add(command_id)
            label = (OTHER, "", status)
        self.counts[label] = self.counts.get(label, 0) + 1

    def totals(self) -> tuple[tuple[tuple[str, str, str], int], ...]:
        rows: list[tuple[tuple[str, str, str], int]] = []
        seen: set[tuple[str, str, str]] = set()
        for command_id in self._admitted:
            name = self._names.get(command_id, "")
            for status in TERMINAL_STATUSES:
                label = (command_id, name, status)
                seen.add(label)
                rows.append((label, self.counts.get(label, 0)))
        if self._folded:
            for status in TERMINAL_STATUSES:
                label = (OTHER, "", status)
                seen.add(label)
                rows.append((label, self.counts.get(label, 0)))
        rows.extend((label, n) for label, n in self.counts.items() if label not in seen)
        return tuple(rows)

    @property
    def folded(self) -> int:
        return len(self._folded)

    @property
    def admitted(self) -> tuple[str, ...]:
        return tuple(self._admitted)

    def restore(self, admitted: Iterable[str], counts: Iterable[tuple[str, str, str, int]]) -> None:
        for command_id in admitted:
            self._admit(command_id)
        self.counts = {(i, n, s): c for i, n, s, c in counts}


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
        self._include_history = include_history
        self._cap = tracking_cap
        self._retention = retention_seconds
        self._view: dict[ResultKey, _ViewEntry] = {}
        self._runs: dict[RunKey, _RunEntry] = {}
        self._baseline_done = False
        self._baseline_time = float("-inf")
        # Everything at or before this time may have been dropped by the cap: ignore it.
        self._dropped_until = float("-inf")
        self._history_due: set[ResultKey] = set()

        self._status_folder = ValueFolder(INVOCATION_STATUSES, max_unknown_values)
        self._error_folder = ValueFolder(("", *ERROR_CODES), max_unknown_values)
        self._oss_status_folder = ValueFolder(("", *OSS_OUTPUT_STATUSES), max_unknown_values)
        self._oss_error_folder = ValueFolder(("", *OSS_OUTPUT_ERROR_CODES), max_unknown_values)

        self._finished: dict[tuple[str, str], int] = {}
        self._durations: dict[str, Histogram] = {}
        self._oss: dict[tuple[str, str], int] = {}
        self._dropped_bytes = 0
        self._found_by_sweep = 0
        self._commands = _CommandCounts(command_breakdown or CommandBreakdown(), tracking_cap)
        # Results whose entries (view entry and remembered runs) changed since the last save.
        self._dirty: set[ResultKey] = set()
        self._saved_summary = b""

    # --- state ---------------------------------------------------------------------------

    @property
    def baseline_done(self) -> bool:
        """True once the first successful refresh has recorded the backlog."""
        return self._baseline_done

    def complete_baseline(self, at: float | None = None) -> None:
        """Mark the backlog as recorded: from now on terminal runs are counted.

        ``at`` is when the baseline's walk started: a record it missed that turns up later,
        finished well before that, is backlog too (see the module docstring).
        """
        self._baseline_done = True
        if at is not None:
            self._baseline_time = at

    @property
    def values_folded(self) -> int:
        """Distinct API values its labels counted under ``"other"`` (see :class:`ValueFolder`)."""
        folders = (
            self._status_folder,
            self._error_folder,
            self._oss_status_folder,
            self._oss_error_folder,
        )
        return sum(folder.folded for folder in folders)

    def __len__(self) -> int:
        """Number of entries in the tracking state (view plus remembered history runs)."""
        return len(self._view) + len(self._runs)

    def __contains__(self, key: object) -> bool:
        return key in self._view

    def get(self, key: ResultKey) -> InvocationResult | None:
        """The record the view holds for ``key``."""
        entry = self._view.get(key)
        return None if entry is None else entry.result

    def first_seen(self, key: ResultKey) -> float | None:
        """When the view first held ``key`` (None when it does not)."""
        entry = self._view.get(key)
        return None if entry is None else entry.first_seen

    def follow_up_keys(self) -> list[ResultKey]:
        """Keys of the results the service may still change (see :func:`needs_follow_up`)."""
        return [key for key, entry in self._view.items() if needs_follow_up(entry.result)]

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
        self._dirty.add(key)
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
            self._dirty.add(key)

    # --- observing ---------------------------------------------------------------------------

    def _forgotten(self, time: float, now: float) -> bool:
        return time <= self._dropped_until or time < now - self._retention

    def observe(self, result: InvocationResult, *, now: float, from_sweep: bool = False) -> Change:
        """Take one record of the target's view into account and count what it finished.

        Idempotent: observing the same record again changes nothing.
        """
        key = result.key
        entry = self._view.get(key)
        missed_by_baseline = False
        if entry is None:
            if self._baseline_done and self._forgotten(result_time(result, now), now):
                return Change.IGNORED
            entry = _ViewEntry(result, now)
            self._view[key] = entry
            change = Change.NEW
            missed_by_baseline = self._baseline_done and self._before_baseline(result)
        elif entry.result == result:
            return Change.UNCHANGED
        else:
            entry.result = result
            change = Change.CHANGED
        self._dirty.add(key)
        run = run_number(result)
        if result.invocation_status == "Scheduled" or result.repeats >= 2:
            entry.periodic = True
        entry.max_repeats = max(entry.max_repeats, result.repeats)
        if not self._baseline_done or missed_by_baseline:
            self._record_without_counting(entry, result, run, now)
            return change
        if (
            self._include_history
            and entry.periodic
            and not entry.history_refused
            and entry.last_ended_run() > entry.history_through
        ):
            # A run ended that the history has not settled: the record itself shows Scheduled
            # between runs, the history has every run with its own status.
            self._history_due.add(key)
        # With include_history the runs of a periodic task are counted from its history, where
        # each run has its own record and number; the result itself only says a run ended (and
        # its Repeats may be garbled). A task without any numbered run (stopped before its first
        # one) has no history to read: its result is counted.
        by_history = (
            self._include_history
            and entry.periodic
            and not entry.history_refused
            and entry.max_repeats >= 1
        )
        terminal = result.invocation_status in _TERMINAL
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
            backlog = self._before_baseline(result, entry) or (
                run <= entry.floor_run and result.repeats >= entry.max_repeats
            )
            if not (by_history or same_run or backlog) and self._claim_run(
                result, run, now, oss=False
            ):
                self._note_result_claim(entry, result, run, now, oss=False)
                self._count_finish(result, from_sweep)
        if result.oss_output_status in _OSS_TERMINAL and run > entry.oss_counted_run:
            same_run = (
                entry.oss_counted_run > 0
                and result.finished_time is not None
                and result.finished_time == entry.oss_counted_finish
            )
            entry.oss_counted_run = run
            entry.oss_counted_finish = result.finished_time
            if not (by_history or same_run) and self._claim_run(result, run, now, oss=True):
                self._note_result_claim(entry, result, run, now, oss=True)
                self._count_oss(result)
        return change

    def _note_result_claim(
        self, entry: _ViewEntry, result: InvocationResult, run: int, now: float, *, oss: bool
    ) -> None:
        # Only a missing (garbled) Repeats can put a claim under the wrong number.
        if self._include_history and result.repeats == 0:
            claims = entry.result_claims if entry.result_claims is not None else []
            claims.append((run, result_time(result, now), oss))
            entry.result_claims = claims

    def _before_baseline(self, result: InvocationResult, entry: _ViewEntry | None = None) -> bool:
        """True when the record's run finished before the baseline (backlog): by the time its
        result showed then, or well before the baseline by the exporter's clock."""
        finished = result.finished_time
        if finished is None:
            return False
        if entry is not None and finished <= entry.floor_time:
            return True
        return finished < self._baseline_time - BASELINE_TOLERANCE_SECONDS

    def _record_without_counting(
        self, entry: _ViewEntry, result: InvocationResult, run: int, now: float
    ) -> None:
        # The run the record shows is over when its status is terminal or Scheduled (between
        # runs of a periodic task); a run in progress is counted when it ends.
        entry.floor_run = max(entry.floor_run, entry.last_ended_run())
        entry.history_through = entry.floor_run
        entry.floor_time = max(entry.floor_time, result_time(result, entry.floor_time))
        if result.invocation_status in _TERMINAL:
            run = max(run, entry.max_repeats)
            if run > entry.counted_run:
                entry.counted_run = run
                entry.counted_finish = result.finished_time
            self._claim_run(result, run, now, oss=False)
        if result.oss_output_status in _OSS_TERMINAL:
            if run > entry.oss_counted_run:
                entry.oss_counted_run = run
                entry.oss_counted_finish = result.finished_time
            self._claim_run(result, run, now, oss=True)

    def _claim_run(self, result: InvocationResult, run: int, now: float, *, oss: bool) -> bool:
        """Mark the run's finish (or OSS delivery) as done; False if it already was.

        Only targets with ``include_history`` remember runs one by one: elsewhere the view
        entry's counted run is enough, because a record only ever shows its latest run.
        """
        if not self._include_history:
            return True
        run_key = (*result.key, run)
        run_entry = self._runs.get(run_key)
        if run_entry is None:
            run_entry = _RunEntry(result_time(result, now))
            self._runs[run_key] = run_entry
        if oss:
            if run_entry.oss_done:
                return False
            run_entry.oss_done = True
        else:
            if run_entry.finish_done:
                return False
            run_entry.finish_done = True
        return True

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
        self._dirty.add(result.key)
        run = run_number(result)
        run_key = (*result.key, run)
        if run_key not in self._runs and self._forgotten(result_time(result, now), now):
            return False
        entry = self._view.get(result.key)
        before_baseline = (
            not self._baseline_done
            or (entry is not None and run <= entry.floor_run)
            or self._before_baseline(result, entry)
        )
        counted = False
        # The claim comes first: a run before the baseline is remembered, just not counted.
        if (
            result.invocation_status in _TERMINAL
            and self._claim_history(entry, result, run, now, oss=False)
            and not before_baseline
        ):
            self._count_finish(result, from_sweep)
            counted = True
        if (
            result.oss_output_status in _OSS_TERMINAL
            and self._claim_history(entry, result, run, now, oss=True)
            and not before_baseline
        ):
            self._count_oss(result)
        return counted

    def _claim_history(
        self,
        entry: _ViewEntry | None,
        result: InvocationResult,
        run: int,
        now: float,
        *,
        oss: bool,
    ) -> bool:
        """Claim a history run; the runs the record itself counted are matched by their time
        (their ``Repeats`` may have been garbled), so each run is still counted once."""
        if not self._include_history:
            raise RuntimeError("history runs need a tracker created with include_history=True")
        claims = entry.result_claims if entry is not None else None
        if claims:
            time = result_time(result, now)
            for index, (claimed_run, claimed_time, claimed_oss) in enumerate(claims):
                if claimed_oss is not oss:
                    continue
                if claimed_time == time and claimed_run != run:
                    # The record counted this run under another number: move the claim, so
                    # the run that number belongs to is counted when the history shows it.
                    del claims[index]
                    slot = self._runs.get((*result.key, claimed_run))
                    if slot is not None:
                        if oss:
                            slot.oss_done = False
                        else:
                            slot.finish_done = False
                    self._claim_run(result, run, now, oss=oss)
                    return False
                if claimed_run == run and claimed_time != time:
                    # The record counted another run under this number: this one is new; the
                    # other is recognised by its time when the history shows it.
                    claims[index] = (0, claimed_time, oss)
                    slot = self._runs.get((*result.key, run))
                    if slot is not None:
                        slot.time = time
                    return True
        return self._claim_run(result, run, now, oss=oss)

    # --- counting ----------------------------------------------------------------------------

    def _count_finish(self, result: InvocationResult, from_sweep: bool) -> None:
        status = result.invocation_status  # terminal, hence known
        label = (status, self._error_folder.fold(result.error_code))
        self._finished[label] = self._finished.get(label, 0) + 1
        if result.start_time is not None and result.finished_time is not None:
            histogram = self._durations.get(status)
            if histogram is None:
                histogram = self._durations[status] = Histogram(DURATION_BUCKETS)
            histogram.observe(max(0.0, result.finished_time - result.start_time))
        self._dropped_bytes += result.dropped
        if from_sweep:
            self._found_by_sweep += 1
        if self._commands.enabled:
            self._commands.count(result.command_id, status)

    def _count_oss(self, result: InvocationResult) -> None:
        code = self._oss_error_folder.fold(result.oss_output_error_code)
        label = (result.oss_output_status, code)
        self._oss[label] = self._oss.get(label, 0) + 1

    # --- forgetting --------------------------------------------------------------------------

    def evict_missing(self, seen: Iterable[ResultKey], *, seen_before: float) -> int:
        """Drop view entries first seen before ``seen_before`` that a complete walk did not
        return: they left the API's retention. Returns how many were dropped."""
        seen_keys = seen if isinstance(seen, set | frozenset) else set(seen)
        gone = [
            key
            for key, entry in self._view.items()
            if key not in seen_keys and entry.first_seen < seen_before
        ]
        for key in gone:
            del self._view[key]
        self._dirty.update(gone)
        return len(gone)

    def evict_keys(self, keys: Iterable[ResultKey]) -> None:
        """Drop the given view entries (a lookup by InvokeId no longer returned them)."""
        for key in keys:
            if self._view.pop(key, None) is not None:
                self._dirty.add(key)

    def expire(self, now: float) -> int:
        """Drop entries older than the retention, then the oldest beyond the size cap.

        Returns how many entries were dropped.
        """
        horizon = now - self._retention
        old_view = [
            key for key, e in self._view.items() if result_time(e.result, e.first_seen) < horizon
        ]
        for key in old_view:
            del self._view[key]
        self._dirty.update(old_view)
        old_runs = [key for key, e in self._runs.items() if e.time < horizon]
        for run_key in old_runs:
            del self._runs[run_key]
            self._dirty.add(run_key[:3])
        dropped = len(old_view) + len(old_runs)
        excess = len(self) - self._cap
        if excess > 0:
            dropped += self._drop_oldest(excess)
        return dropped

    def _drop_oldest(self, excess: int) -> int:
        aged: list[tuple[float, int, ResultKey | RunKey]] = [
            (result_time(e.result, e.first_seen), 0, key) for key, e in self._view.items()
        ]
        aged.extend((e.time, 1, key) for key, e in self._runs.items())
        oldest = heapq.nsmallest(excess, aged)
        for time, kind, key in oldest:
            self._dirty.add(key[:3])  # the result (a run belongs to one)
            if kind == 0:
                self._view.pop(key, None)  # type: ignore[arg-type]  # a ResultKey
            else:
                self._runs.pop(key, None)  # type: ignore[arg-type]  # a RunKey
            self._dropped_until = max(self._dropped_until, time)
        return len(oldest)

    # --- persistence -------------------------------------------------------------------------

    def export_changes(self) -> TrackerChanges:
        """What changed since the last :meth:`changes_saved`: the counters and scalars (when
        they changed) and one row per result whose entries changed (``None``: delete it)."""
        summary = _SUMMARY_ENCODER.encode(self._summary_state())
        runs: dict[ResultKey, list[tuple[int, _RunEntry]]] = {}
        if self._dirty and self._runs:
            for run_key, run_entry in self._runs.items():
                result_key = run_key[:3]
                if result_key in self._dirty:
                    runs.setdefault(result_key, []).append((run_key[3], run_entry))
        rows: list[tuple[bytes, bytes | None]] = []
        for key in self._dirty:
            entry = self._view.get(key)
            key_runs = runs.get(key, [])
            value = (
                None if entry is None and not key_runs else _ENTRY_ENCODER.encode((entry, key_runs))
            )
            rows.append((_ENTRY_ENCODER.encode(key), value))
        return TrackerChanges(
            summary=None if summary == self._saved_summary else summary,
            rows=tuple(rows),
            keys=frozenset(self._dirty),
        )

    def changes_saved(self, changes: TrackerChanges) -> None:
        """``changes`` (from :meth:`export_changes`) are stored: forget them."""
        self._dirty.difference_update(changes.keys)
        if changes.summary is not None:
            self._saved_summary = changes.summary

    def restore(self, summary: bytes, rows: Iterable[tuple[bytes, bytes]]) -> int:
        """Take back a state :meth:`export_changes` exported (a fresh tracker only).

        Returns how many results were restored. Raises ``ValueError`` when the state cannot be
        read: the tracker is then left as it was (fresh). When only the rows cannot be read,
        the counters are kept and the baseline is taken again (nothing counted twice).
        """
        if self._baseline_done or self._view or self._runs:
            raise RuntimeError("restore() needs a fresh tracker")
        try:
            state = _SUMMARY_DECODER.decode(summary)
        except msgspec.MsgspecError as exc:
            raise ValueError(f"unreadable counters: {exc}") from None
        view: dict[ResultKey, _ViewEntry] = {}
        runs: dict[RunKey, _RunEntry] = {}
        # Tens of thousands of new objects, none garbage: collections would only slow it down.
        collecting = gc.isenabled()
        gc.disable()
        try:
            for raw_key, raw_value in rows:
                key = _KEY_DECODER.decode(raw_key)
                entry, key_runs = _ENTRY_DECODER.decode(raw_value)
                if entry is not None:
                    view[key] = entry
                for run, run_entry in key_runs:
                    runs[(*key, run)] = run_entry
            complete = True
        except msgspec.MsgspecError:
            complete = False
        finally:
            if collecting:
                gc.enable()
        self._restore_summary(state, complete)
        if not complete:
            return 0
        self._view = view
        self._runs = runs
        self._saved_summary = summary
        if self._include_history:
            self._history_due = {
                key
                for key, entry in view.items()
                if entry.periodic
                and not entry.history_refused
                and entry.last_ended_run() > entry.history_through
            }
        return len(view)

    def _summary_state(self) -> _SavedState:
        folders = (
            self._status_folder,
            self._error_folder,
            self._oss_status_folder,
            self._oss_error_folder,
        )
        return _SavedState(
            baseline_done=self._baseline_done,
            baseline_time=self._baseline_time,
            dropped_until=self._dropped_until,
            # ValueFolder's admitted values: admission is permanent, across restarts too.
            folders=[sorted(folder._admitted) for folder in folders],
            finished=sorted((s, c, n) for (s, c), n in self._finished.items()),
            durations=sorted((s, list(h._counts), h._sum) for s, h in self._durations.items()),
            oss=sorted((s, c, n) for (s, c), n in self._oss.items()),
            dropped_bytes=self._dropped_bytes,
            found_by_sweep=self._found_by_sweep,
            command_ids=list(self._commands.admitted),
            commands=sorted((i, n, s, c) for (i, n, s), c in self._commands.counts.items()),
        )

    def _restore_summary(self, state: _SavedState, with_baseline: bool) -> None:
        if with_baseline:
            self._baseline_done = state.baseline_done
            self._baseline_time = state.baseline_time
            self._dropped_until = state.dropped_until
        folders = (
            self._status_folder,
            self._error_folder,
            self._oss_status_folder,
            self._oss_error_folder,
        )
        for folder, admitted in zip(folders, state.folders, strict=False):
            for value in admitted:
                folder.fold(value)
        self._finished = {(s, c): n for s, c, n in state.finished}
        self._durations = {}
        for status, counts, total in state.durations:
            histogram = Histogram(DURATION_BUCKETS)
            if len(counts) == len(histogram._counts):
                histogram._counts = list(counts)
                histogram._sum = total
                self._durations[status] = histogram
        self._oss = {(s, c): n for s, c, n in state.oss}
        self._dropped_bytes = state.dropped_bytes
        self._found_by_sweep = state.found_by_sweep
        self._commands.restore(state.command_ids, state.commands)

    # --- summaries ---------------------------------------------------------------------------

    def view_summary(self, now: float) -> ViewSummary:
        """The gauges as of ``now`` (O(size of the view))."""
        by_status = dict.fromkeys(INVOCATION_STATUSES, 0)
        by_error = dict.fromkeys(ERROR_CODES, 0)
        oss = dict.fromkeys(OSS_OUTPUT_STATUSES, 0)
        running = 0
        oldest_start: float | None = None
        with_dropped = 0
        fold_status = self._status_folder.fold
        for entry in self._view.values():
            result = entry.result
            status = fold_status(result.invocation_status)
            by_status[status] = by_status.get(status, 0) + 1
            if result.error_code:
                code = self._error_folder.fold(result.error_code)
                by_error[code] = by_error.get(code, 0) + 1
            if result.oss_output_status:
                oss_status = self._oss_status_folder.fold(result.oss_output_status)
                oss[oss_status] = oss.get(oss_status, 0) + 1
            if result.dropped > 0:
                with_dropped += 1
            if result.invocation_status == "Running":
                running += 1
                start = result.start_time
                if start is not None and (oldest_start is None or start < oldest_start):
                    oldest_start = start
        oldest_age = 0.0 if oldest_start is None else max(0.0, now - oldest_start)
        return ViewSummary(
            by_status=tuple(by_status.items()),
            by_error_code=tuple(by_error.items()),
            running=running,
            running_oldest_age_seconds=oldest_age,
            oss_by_status=tuple(oss.items()),
            with_dropped_output=with_dropped,
            tracked_runs=len(self),
        )

    def counter_totals(self) -> CounterTotals:
        """The counters; every documented combination is present (0 when none)."""
        finished = {(s, c): 0 for s in TERMINAL_STATUSES for c in ("", *ERROR_CODES)}
        finished.update(self._finished)
        durations = [
            (s, self._durations[s].value() if s in self._durations else EMPTY_HISTOGRAM)
            for s in TERMINAL_STATUSES
        ]
        oss = {("Finished", ""): 0, **{("Failed", c): 0 for c in ("", *OSS_OUTPUT_ERROR_CODES)}}
        oss.update(self._oss)
        return CounterTotals(
            finished=tuple(finished.items()),
            durations=tuple(durations),
            oss_deliveries=tuple(oss.items()),
            dropped_bytes=self._dropped_bytes,
            found_by_sweep=self._found_by_sweep,
            commands=self._commands.totals() if self._commands.enabled else (),
            command_ids_folded=self._commands.folded,
        )
