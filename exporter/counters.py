"""What a :class:`~exporter.tracking.RunTracker` counted, with every label value bounded.

:class:`RunCounters` holds the finished-run, duration, OSS-delivery, dropped-output, sweep and
per-command counters; the tracker decides *whether* a run is counted, this module only adds it
up. :class:`ValueFolder` keeps each label's values bounded. Pure logic, no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from operator import attrgetter
from typing import TypedDict

from exporter.ecs.models import (
    ERROR_CODES,
    INVOCATION_STATUSES,
    MAX_INTEGER,
    OSS_OUTPUT_ERROR_CODES,
    OSS_OUTPUT_STATUSES,
    TERMINAL_STATUSES,
    InvocationResult,
)
from exporter.metrics import MAX_LABEL_VALUE_CHARS, MAX_UNKNOWN_VALUES
from exporter.summaries import (
    DURATION_BUCKETS,
    EMPTY_HISTOGRAM,
    OTHER,
    CommandBreakdown,
    CommandCounts,
    CounterTotals,
    Histogram,
    ViewCounts,
)
from exporter.trackerstate import SavedState
from exporter.viewentry import ViewEntry

DEFAULT_MAX_UNKNOWN_VALUES = MAX_UNKNOWN_VALUES
_MAX_FOLDED_COUNTED = 10_000

_RESULT, _STATE, _EXTRAS = attrgetter("result"), attrgetter("state"), attrgetter("extras")


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


class SavedCounters(TypedDict):
    """The fields of a :class:`~exporter.trackerstate.SavedState` that hold the counters."""

    # Mirrors part of SavedState on purpose: mypy checks SavedState(**saved()) against it.
    folders: list[list[str]]
    finished: list[tuple[str, str, int]]
    durations: list[tuple[str, list[int], float]]
    oss: list[tuple[str, str, int]]
    dropped_bytes: int
    found_by_sweep: int
    command_ids: list[str]
    commands: list[tuple[str, str, str, int]]


class RunCounters:
    """The counters of one target, and the label values its gauges and counters use (not
    thread-safe, like its tracker)."""

    def __init__(
        self,
        command_breakdown: CommandBreakdown,
        tracking_cap: int,
        max_unknown_values: int = DEFAULT_MAX_UNKNOWN_VALUES,
    ) -> None:
        self.status_folder = ValueFolder(INVOCATION_STATUSES, max_unknown_values)
        self.error_folder = ValueFolder(("", *ERROR_CODES), max_unknown_values)
        self.oss_status_folder = ValueFolder(("", *OSS_OUTPUT_STATUSES), max_unknown_values)
        self.oss_error_folder = ValueFolder(("", *OSS_OUTPUT_ERROR_CODES), max_unknown_values)
        self._finished: dict[tuple[str, str], int] = {}
        self._durations: dict[str, Histogram] = {}
        self._oss: dict[tuple[str, str], int] = {}
        self._dropped_bytes = 0
        self._found_by_sweep = 0
        self.commands = CommandCounts(command_breakdown, tracking_cap)
        # The last totals, with what they were made of: a refresh that counted nothing (and
        # admitted no command) reuses them, and the collector sees the same object.
        self._totals: tuple[tuple[int, int], CounterTotals] | None = None
        self._version = 0

    def _folders(self) -> tuple[ValueFolder, ...]:
        return (
            self.status_folder,
            self.error_folder,
            self.oss_status_folder,
            self.oss_error_folder,
        )

    @property
    def values_folded(self) -> int:
        """Distinct API values its labels counted under ``"other"`` (see :class:`ValueFolder`)."""
        return sum(folder.folded for folder in self._folders())

    @property
    def found_by_sweep(self) -> int:
        """Runs counted from a sweep's records (the other steps had missed them)."""
        return self._found_by_sweep

    def count_finish(self, result: InvocationResult, from_sweep: bool) -> None:
        """Count one finished run (its status is terminal)."""
        status = result.invocation_status  # terminal, hence known
        self._version += 1
        label = (status, self.error_folder.fold(result.error_code))
        self._finished[label] = self._finished.get(label, 0) + 1
        if result.start_time is not None and result.finished_time is not None:
            histogram = self._durations.get(status)
            if histogram is None:
                histogram = self._durations[status] = Histogram(DURATION_BUCKETS)
            histogram.observe(max(0.0, result.finished_time - result.start_time))
        # Saturating: the saved state holds 64-bit integers (each value is within them).
        self._dropped_bytes = min(self._dropped_bytes + result.dropped, MAX_INTEGER)
        if from_sweep:
            self._found_by_sweep += 1
        if self.commands.enabled:
            self.commands.count(result.command_id, status)

    def count_oss(self, result: InvocationResult) -> None:
        """Count one OSS delivery (its status is terminal)."""
        self._version += 1
        code = self.oss_error_folder.fold(result.oss_output_error_code)
        label = (result.oss_output_status, code)
        self._oss[label] = self._oss.get(label, 0) + 1

    def totals(self) -> CounterTotals:
        """The counters: the combinations counted so far (the collector shows the metric
        contract's pre-initialised ones at 0 until they are), a histogram for every terminal
        status."""
        made_of = (self._version, len(self.commands.admitted))
        if self._totals is None or self._totals[0] != made_of:
            self._totals = (made_of, self._new_totals())
        return self._totals[1]

    def _new_totals(self) -> CounterTotals:
        durations = [
            (s, self._durations[s].value() if s in self._durations else EMPTY_HISTOGRAM)
            for s in TERMINAL_STATUSES
        ]
        return CounterTotals(
            finished=tuple(self._finished.items()),
            durations=tuple(durations),
            oss_deliveries=tuple(self._oss.items()),
            dropped_bytes=self._dropped_bytes,
            found_by_sweep=self._found_by_sweep,
            commands=self.commands.totals() if self.commands.enabled else (),
            command_ids_folded=self.commands.folded,
        )

    def view_counts(self, entries: Iterable[ViewEntry]) -> ViewCounts:
        """What the gauges count in the records of ``entries`` (the view's), their labels folded
        like the counters' (O(number of records)).

        Records share their run states (see :class:`~exporter.ecs.models.InvocationResult`):
        each distinct one is folded once, with the number of records that show it, counted at
        C speed; records with extras are looked at one by one, and every record again when
        some runs are running (for the oldest start). Values are folded in the order they first
        appear, as record by record."""
        records = list(map(_RESULT, entries))
        by_status = dict.fromkeys(INVOCATION_STATUSES, 0)
        by_error = dict.fromkeys(ERROR_CODES, 0)
        oss = dict.fromkeys(OSS_OUTPUT_STATUSES, 0)
        running = 0
        with_dropped = 0
        fold_status, fold_error = self.status_folder.fold, self.error_folder.fold
        for state, count in Counter(map(_STATE, records)).items():
            status = fold_status(state.invocation_status)
            by_status[status] = by_status.get(status, 0) + count
            if state.error_code:
                code = fold_error(state.error_code)
                by_error[code] = by_error.get(code, 0) + count
            if state.invocation_status == "Running":
                running += count
        for extras in filter(None, map(_EXTRAS, records)):  # most records have none
            if extras.oss_output_status:
                oss_status = self.oss_status_folder.fold(extras.oss_output_status)
                oss[oss_status] = oss.get(oss_status, 0) + 1
            if extras.dropped > 0:
                with_dropped += 1
        oldest_start = None
        if running:
            oldest_start = min(
                (
                    r.start_time
                    for r in records
                    if r.state.invocation_status == "Running" and r.start_time is not None
                ),
                default=None,
            )
        return ViewCounts(
            by_status=tuple(by_status.items()),
            by_error_code=tuple(by_error.items()),
            running=running,
            oldest_running_start=oldest_start,
            oss_by_status=tuple(oss.items()),
            with_dropped_output=with_dropped,
        )

    def saved(self) -> SavedCounters:
        """The counters as saved."""
        return {
            # Admission is permanent, across restarts too (a series never moves to "other").
            "folders": [sorted(folder._admitted) for folder in self._folders()],
            "finished": sorted((s, c, n) for (s, c), n in self._finished.items()),
            "durations": sorted((s, *h.state()) for s, h in self._durations.items()),
            "oss": sorted((s, c, n) for (s, c), n in self._oss.items()),
            "dropped_bytes": self._dropped_bytes,
            "found_by_sweep": self._found_by_sweep,
            "command_ids": list(self.commands.admitted),
            "commands": sorted((i, n, s, c) for (i, n, s), c in self.commands.counts.items()),
        }

    def restore(self, state: SavedState) -> None:
        """Take back the counters of a saved state (fresh counters only)."""
        self._version += 1
        for folder, admitted in zip(self._folders(), state.folders, strict=False):
            for value in admitted:
                folder.fold(value)
        self._finished = {(s, c): n for s, c, n in state.finished}
        for status, counts, total in state.durations:
            histogram = Histogram(DURATION_BUCKETS)
            if histogram.restore(counts, total):
                self._durations[status] = histogram
        self._oss = {(s, c): n for s, c, n in state.oss}
        self._dropped_bytes = state.dropped_bytes
        self._found_by_sweep = state.found_by_sweep
        self.commands.restore(state.command_ids, state.commands)
