"""What a :class:`~exporter.tracking.RunTracker` keeps up to date as its view changes, so that a
refresh that finds nothing new scans none of its view. Pure logic, no I/O.

* :attr:`ViewIndex.version` changes with every change to the view (a record taken in or
  changed, a result evicted, expired or dropped, a restore): the view's counts
  (:meth:`ViewIndex.counts`) computed at one version hold until the next;
* :meth:`ViewIndex.in_flight` is the results the service may still change
  (:func:`~exporter.viewentry.needs_follow_up`), from the keys that were in flight when last
  taken in (a superset, pruned as it is read);
* :meth:`ViewIndex.drop_expired` scans the view, and the results that left it, only when one
  of them can be older than the retention's horizon: :attr:`ViewIndex.time_floor` is never
  later than the time of any entry in view (:func:`entry_time`), :attr:`ViewIndex.ghost_floor`
  than the record time of any that left it (:func:`record_time`);
* :meth:`ViewIndex.record_horizon` is the retention's horizon on the records' own clock: the
  latest time any record taken in showed (:attr:`ViewIndex.newest_time`), run on by the host's
  clock since it was read, when that is behind the host's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping

from exporter.ecs.models import MAX_CLOCK_SKEW_SECONDS
from exporter.runledger import ResultKey
from exporter.summaries import ViewCounts
from exporter.viewentry import ViewEntry, needs_follow_up, result_time

_NONE = float("-inf")  # (a record without times)


def record_time(entry: ViewEntry) -> float:
    """The latest time an entry's record shows (when first seen if none): by the records'
    clock, what the retention judges a result that left the view by."""
    return result_time(entry.result, entry.first_seen)


def entry_time(entry: ViewEntry) -> float:
    """The time the retention judges an entry in view by, on the host's clock: when it was last
    read, or its record's latest time if later. A record the API still returns is not old,
    whatever its times say (a periodic task's first start, an API clock days behind)."""
    seen = entry.seen_at
    time = result_time(entry.result, seen)
    return time if time > seen else seen


class ViewIndex:
    """See the module docstring. The tracker calls :meth:`taken_in` for every record it takes in
    or changes, :meth:`left_view` when one leaves the view, :meth:`removed` when entries are
    dropped, :meth:`rebuild` after a restore."""

    def __init__(self) -> None:
        self.version = 0
        # Insertion-ordered set: keys in flight when last taken in (some may have settled since).
        self._in_flight: dict[ResultKey, None] = {}
        self.time_floor = float("inf")
        self.ghost_floor = float("inf")
        self.newest_time = float("-inf")
        """The latest time any record taken in showed (by the records' clock), never lowered;
        a time further ahead of the host's than the API's clock can be is a bad record's."""
        self.newest_read_at = float("-inf")
        """When (by the host's clock) the record that showed :attr:`newest_time` was read."""
        self._counts: tuple[int, ViewCounts] | None = None

    def counts(self, compute: Callable[[], ViewCounts]) -> ViewCounts:
        """The view's counts: ``compute()`` when the view changed since it last ran."""
        if self._counts is None or self._counts[0] != self.version:
            self._counts = (self.version, compute())
        return self._counts[1]

    def taken_in(self, key: ResultKey, entry: ViewEntry) -> None:
        """``entry`` (of ``key``) was taken into the view or its record changed."""
        self.version += 1
        if needs_follow_up(entry.result):
            self._in_flight[key] = None
        # One look at the record's times for both (every record of a first walk comes here).
        shown, seen = result_time(entry.result, _NONE), entry.seen_at
        self._shown(shown, seen)
        time = shown if shown > seen else seen  # entry_time(entry)
        if time < self.time_floor:
            self.time_floor = time

    def removed(self) -> None:
        """Results left the view (evicted, expired or dropped)."""
        self.version += 1

    def left_view(self, entry: ViewEntry) -> None:
        """``entry`` left the view: it is kept with the results that did."""
        self.version += 1
        time = record_time(entry)
        if time < self.ghost_floor:
            self.ghost_floor = time

    def rebuild(
        self, view: Mapping[ResultKey, ViewEntry], ghosts: Mapping[ResultKey, ViewEntry]
    ) -> None:
        """Index ``view`` and ``ghosts`` (the results that left it) afresh."""
        self.version += 1
        self._in_flight = {key: None for key, e in view.items() if needs_follow_up(e.result)}
        self.time_floor = min((entry_time(e) for e in view.values()), default=float("inf"))
        self.ghost_floor = min((record_time(e) for e in ghosts.values()), default=float("inf"))
        self.newest_time = self.newest_read_at = _NONE
        for entry in (*view.values(), *ghosts.values()):
            self._shown(result_time(entry.result, _NONE), entry.seen_at)

    def _shown(self, shown: float, seen: float) -> None:
        """A record read at ``seen`` showed ``shown`` as its latest time: the records' clock
        reads at least that (unless it is further ahead than the API's clock can be)."""
        if shown > self.newest_time and shown <= seen + MAX_CLOCK_SKEW_SECONDS:
            self.newest_time, self.newest_read_at = shown, seen

    def in_flight(self, view: Mapping[ResultKey, ViewEntry]) -> list[ResultKey]:
        """The keys of ``view`` whose records the service may still change."""
        index = self._in_flight
        settled = [
            key
            for key in index
            if (entry := view.get(key)) is None or not needs_follow_up(entry.result)
        ]
        for key in settled:
            del index[key]
        return list(index)

    def record_horizon(self, now: float, retention: float) -> float:
        """``retention`` seconds before ``now`` by the records' own clock: :attr:`newest_time`
        run on by the host's clock since it was read, when that is earlier than ``now`` (an API
        clock days behind the host's: what it returns now is not old to it; a target gone
        quiet still forgets, as time passes)."""
        if self.newest_time == _NONE:
            return now - retention
        records_now = self.newest_time + max(0.0, now - self.newest_read_at)
        return min(now, records_now) - retention

    def drop_expired(
        self,
        horizon: float,
        ghost_horizon: float,
        view: MutableMapping[ResultKey, ViewEntry],
        ghosts: MutableMapping[ResultKey, ViewEntry],
    ) -> list[ResultKey]:
        """Drop the entries of ``view`` whose :func:`entry_time` is before ``horizon`` and those
        of ``ghosts`` whose :func:`record_time` is before ``ghost_horizon``; returns their keys
        (no scan of either when none of it can be)."""
        dropped: list[ResultKey] = []
        if horizon > self.time_floor:
            old, self.time_floor = _older(view, entry_time, horizon)
            dropped += old
        if ghost_horizon > self.ghost_floor:
            old, self.ghost_floor = _older(ghosts, record_time, ghost_horizon)
            dropped += old
        if dropped:
            self.removed()
        return dropped


def _older(
    entries: MutableMapping[ResultKey, ViewEntry],
    time_of: Callable[[ViewEntry], float],
    horizon: float,
) -> tuple[list[ResultKey], float]:
    """Drop the entries whose time is before ``horizon``: their keys, and the earliest time of
    those left."""
    old = []
    floor = float("inf")
    for key, entry in entries.items():
        time = time_of(entry)
        if time < horizon:
            old.append(key)
        elif time < floor:
            floor = time
    for key in old:
        del entries[key]
    return old, floor
