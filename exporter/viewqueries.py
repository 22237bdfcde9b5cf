"""Questions a read plan asks of a target's view (:attr:`RunTracker.view`): what to follow up,
what the API drops next, in which order the walks took results in. Pure functions, no I/O.

The order the walks took results in is ``(first_seen, -arrival)`` (larger: newer): the first
walk and each fast path read newest-first, so it is the API's order when that is newest-first.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Mapping

from exporter.runledger import ResultKey
from exporter.viewentry import ViewEntry, follows_slowly, needs_follow_up

View = Mapping[ResultKey, ViewEntry]


def follow_up(
    view: View,
    in_flight: Collection[ResultKey],
    now: float,
    *,
    periodic: bool,
    at_risk: frozenset[ResultKey] | set[ResultKey] = frozenset(),
) -> tuple[list[ResultKey], int]:
    """The results to follow up now among ``in_flight`` (the keys of the view the service may
    still change, :meth:`RunTracker.follow_up_keys`), and how many these are.

    Left out: results read at ``now`` already, and unless ``periodic`` the records of periodic
    tasks between or during runs (see :func:`follows_slowly`) but those in ``at_risk`` (about
    to leave the API's retention).
    """
    # One refresh reads everything at one ``now``; "not at now" rather than "before now": a
    # wall clock set back must not hide what was read before it.
    keys: list[ResultKey] = []
    for key in in_flight:
        entry = view[key]
        if entry.seen_at != now and (periodic or key in at_risk or not follows_slowly(entry)):
            keys.append(key)
    return keys, len(in_flight)


def oldest_in_flight(view: View, count: int) -> set[ResultKey]:
    """Results the service may still change among the ``count`` oldest of the view (the next
    the API drops when it holds all it can)."""
    if count <= 0:
        return set()
    aged = ((e.first_seen, -e.arrival, key) for key, e in view.items())
    return {key for _, _, key in heapq.nsmallest(count, aged) if needs_follow_up(view[key].result)}


def oldest_settled(view: View, size: int) -> list[ResultKey]:
    """Beyond ``size`` (what the API holds at most, as a sweep saw it): the oldest results that
    may no longer change (those that may stay: a complete sweep or look-up tells)."""
    excess = len(view) - size
    if excess <= 0:
        return []
    aged = (
        (entry.first_seen, -entry.arrival, key)
        for key, entry in view.items()
        if not needs_follow_up(entry.result)
    )
    return [key for _, _, key in heapq.nsmallest(excess, aged)]


def read_order(view: View, key: ResultKey | None) -> tuple[float, int] | None:
    """Where ``key`` stands in the order the walks took results in; None for results the
    baseline read (a first walk resumed over several refreshes took them in out of that order),
    those not in the view, and no key.

    Only orders read at the same time compare: a target renumbers its results now and then
    (see :mod:`exporter.arrivals`), keeping their order but not their numbers."""
    entry = None if key is None else view.get(key)
    if entry is None or entry.baseline_state:
        return None
    return (entry.first_seen, -entry.arrival)


def taken_in_since(view: View, when: float, seen: set[ResultKey]) -> int:
    """Results first seen at or after ``when`` that are not in ``seen`` (what came in while a
    walk went on)."""
    return sum(1 for key, entry in view.items() if entry.first_seen >= when and key not in seen)


def in_flight_near_top(
    view: View, in_flight: Collection[ResultKey], last_arrival: int, now: float, reach: int
) -> set[ResultKey]:
    """Results of ``in_flight`` (as for :func:`follow_up`) not read at ``now``, among the
    ``reach`` the view took in last (``last_arrival``: the largest ``arrival`` it holds; periodic
    tasks' records between or during runs left out). Records the baseline read are never among
    them: the first walk took the oldest in last (as do saved states without ``arrival``, all 0).
    """
    newest = last_arrival - reach
    return {
        key
        for key in in_flight
        if (entry := view[key]).arrival > newest
        and entry.arrival > 0
        and not entry.baseline_state
        and entry.seen_at != now
        and not follows_slowly(entry)
    }


def missing(view: View, seen: Iterable[ResultKey], *, seen_before: float) -> list[ResultKey]:
    """Keys of ``view`` first seen before ``seen_before`` that a walk (which returned ``seen``)
    did not return."""
    seen_keys = seen if isinstance(seen, set | frozenset) else set(seen)
    return [
        key
        for key, entry in view.items()
        if key not in seen_keys and entry.first_seen < seen_before
    ]
