"""What a :class:`~exporter.tracking.RunTracker` keeps up to date as its view changes, so that a
refresh that finds nothing new scans none of its view. Pure logic, no I/O.

* :attr:`ViewIndex.version` changes with every change to the view (a record taken in or
  changed, a result evicted, expired or dropped, a restore): the view's counts
  (:meth:`ViewIndex.counts`) computed at one version hold until the next;
* :meth:`ViewIndex.in_flight` is the results the service may still change
  (:func:`~exporter.viewentry.needs_follow_up`), from the keys that were in flight when last
  taken in (a superset, pruned as it is read);
* :meth:`ViewIndex.drop_expired` scans the view and the results that left it only when one of
  them can be older than the retention's horizon: :attr:`ViewIndex.time_floor` is never later
  than the time of any of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping

from exporter.runledger import ResultKey
from exporter.summaries import ViewCounts
from exporter.viewentry import ViewEntry, needs_follow_up, result_time


def entry_time(entry: ViewEntry) -> float:
    """The time the retention judges an entry by (its record's latest time, else when first
    seen)."""
    return result_time(entry.result, entry.first_seen)


class ViewIndex:
    """See the module docstring. The tracker calls :meth:`taken_in` for every record it takes in
    or changes, :meth:`removed` when results leave the view, :meth:`rebuild` after a restore."""

    def __init__(self) -> None:
        self.version = 0
        # Insertion-ordered set: keys in flight when last taken in (some may have settled since).
        self._in_flight: dict[ResultKey, None] = {}
        self.time_floor = float("inf")
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
        time = entry_time(entry)
        if time < self.time_floor:
            self.time_floor = time

    def removed(self) -> None:
        """Results left the view (evicted, expired or dropped)."""
        self.version += 1

    def rebuild(
        self, view: Mapping[ResultKey, ViewEntry], ghosts: Mapping[ResultKey, ViewEntry]
    ) -> None:
        """Index ``view`` and ``ghosts`` (the results that left it) afresh."""
        self.version += 1
        self._in_flight = {key: None for key, e in view.items() if needs_follow_up(e.result)}
        self.time_floor = min(
            (entry_time(e) for e in (*view.values(), *ghosts.values())), default=float("inf")
        )

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

    def drop_expired(
        self,
        horizon: float,
        view: MutableMapping[ResultKey, ViewEntry],
        ghosts: MutableMapping[ResultKey, ViewEntry],
    ) -> list[ResultKey]:
        """Drop the entries of ``view`` and ``ghosts`` older than ``horizon``; returns their
        keys (no scan at all when none can be)."""
        if horizon <= self.time_floor:
            return []
        dropped: list[ResultKey] = []
        floor = float("inf")
        for entries in (view, ghosts):
            old = []
            for key, entry in entries.items():
                time = entry_time(entry)
                if time < horizon:
                    old.append(key)
                elif time < floor:
                    floor = time
            for key in old:
                del entries[key]
            dropped += old
        self.time_floor = floor
        if dropped:
            self.removed()
        return dropped
