"""The values the collector renders for one target, and the counters behind them.

:class:`ViewSummary` (the gauges) and :class:`CounterTotals` (the counters) are immutable
snapshots that :class:`~exporter.tracking.RunTracker` builds; :class:`Histogram` and
:class:`CommandCounts` are the plain, unsynchronised counters it keeps (the owner serialises
access).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from exporter.ecs.models import TERMINAL_STATUSES
from exporter.metrics import DURATION_BUCKETS, MAX_LABEL_VALUE_CHARS, OTHER

__all__ = [
    "DURATION_BUCKETS",
    "EMPTY_HISTOGRAM",
    "OTHER",
    "CommandBreakdown",
    "CommandCounts",
    "CounterTotals",
    "Histogram",
    "HistogramValue",
    "ViewCounts",
    "ViewSummary",
]


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

    def state(self) -> tuple[list[int], float]:
        """The counts per bucket (``+Inf`` last) and the sum, to be saved."""
        return list(self._counts), self._sum

    def restore(self, counts: Sequence[int], total: float) -> bool:
        """Take back a saved :meth:`state`; False (unchanged) when the buckets differ."""
        if len(counts) != len(self._counts):
            return False
        self._counts = list(counts)
        self._sum = total
        return True


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
class ViewCounts:
    """What the gauges count in the view, as of no particular moment (:meth:`summary` adds the
    ages, which depend on it)."""

    by_status: tuple[tuple[str, int], ...]
    by_error_code: tuple[tuple[str, int], ...]
    running: int
    oldest_running_start: float | None
    oss_by_status: tuple[tuple[str, int], ...]
    with_dropped_output: int

    def summary(self, now: float, *, tracked_runs: int) -> ViewSummary:
        """The gauges as of ``now``."""
        start = self.oldest_running_start
        return ViewSummary(
            by_status=self.by_status,
            by_error_code=self.by_error_code,
            running=self.running,
            running_oldest_age_seconds=0.0 if start is None else max(0.0, now - start),
            oss_by_status=self.oss_by_status,
            with_dropped_output=self.with_dropped_output,
            tracked_runs=tracked_runs,
        )


@dataclass(frozen=True, slots=True)
class CounterTotals:
    """The counters of one target since the exporter started: the combinations counted so far
    (a fleet of targets keeps no zeros; the collector adds the pre-initialised ones)."""

    finished: tuple[tuple[tuple[str, str], int], ...]
    durations: tuple[tuple[str, HistogramValue], ...]
    oss_deliveries: tuple[tuple[tuple[str, str], int], ...]
    dropped_bytes: int
    found_by_sweep: int
    commands: tuple[tuple[tuple[str, str, str], int], ...]
    command_ids_folded: int


EMPTY_HISTOGRAM = Histogram(DURATION_BUCKETS).value()


class CommandCounts:
    """Finished runs per command (opt-in, see :class:`CommandBreakdown`), bounded."""

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

    def see(self, command_id: str) -> None:
        """Admit a command seen in any state, so that its series exist at 0 before its first
        run ends: a counter that first appears at its value hides that value from increase()."""
        if self.enabled and len(command_id) <= MAX_LABEL_VALUE_CHARS:
            self._admit(command_id)

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
        """The command ids with their own series, in order of admission (to be saved)."""
        return tuple(self._admitted)

    def restore(self, admitted: Sequence[str], counts: Sequence[tuple[str, str, str, int]]) -> None:
        """Take back saved :attr:`admitted` ids and :attr:`counts`."""
        for command_id in admitted:
            self._admit(command_id)
        self.counts = {(i, n, s): c for i, n, s, c in counts}
