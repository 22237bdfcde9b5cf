"""One record of the API's view as the tracker sees it: its run, its time, and the entry that
remembers what it counted (see :mod:`exporter.tracking`). Pure data, no I/O."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar, overload

import msgspec

from exporter.ecs.models import (
    NO_EXTRAS,
    NON_TERMINAL_STATUSES,
    TERMINAL_STATUSES,
    InvocationResult,
    ResultExtras,
    run_state,
)
from exporter.runledger import ResultClaim, ResultKey

TERMINAL = frozenset(TERMINAL_STATUSES)
"""Statuses a run ends in."""
_NON_TERMINAL = frozenset(NON_TERMINAL_STATUSES)
OSS_TERMINAL = frozenset({"Finished", "Failed"})
"""OSS delivery statuses that are final."""
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
    repeats = result.state.repeats
    return repeats if repeats > 1 else 1


def result_time(result: InvocationResult, default: float) -> float:
    """The latest of start, finish and stop time, else ``default`` (when first seen)."""
    # Unrolled: called for every record of a first walk (a loop over a tuple costs twice as much),
    # and the stop time read from the record's extras, which most records do not have.
    latest = result.start_time
    finished, extras = result.finished_time, result.extras
    if finished is not None and (latest is None or finished > latest):
        latest = finished
    if extras is not None:
        stop = extras.stop_time
        if stop is not None and (latest is None or stop > latest):
            latest = stop
    return default if latest is None else latest


# The statuses of a periodic task's record between runs and during one: what counts is only the
# terminal status it shows when the schedule is over (or the history), so it is followed at a
# slower cadence (see ``exporter.viewqueries.follow_up``).
_PERIODIC_QUIET = frozenset({"Scheduled", "Running", "Pending"})


def follows_slowly(entry: ViewEntry) -> bool:
    """True for a periodic task's record between or during runs, with no OSS delivery in
    progress: nothing it shows now can be counted before it changes again."""
    result = entry.result
    return (
        entry.periodic
        and result.state.invocation_status in _PERIODIC_QUIET
        and result.oss_output_status != "InProgress"
    )


def needs_follow_up(result: InvocationResult) -> bool:
    """Tell whether the service may still change this record without a new invocation."""
    # The state and extras read directly, without the properties: called per record.
    state, extras = result.state, result.extras
    return (
        state.invocation_status in _NON_TERMINAL
        or state.invoke_record_status in _INVOCATION_ACTIVE
        or (extras is not None and extras.oss_output_status == "InProgress")
    )


_T = TypeVar("_T")


class EntryExtras(msgspec.Struct, gc=False):
    """What a :class:`ViewEntry` remembers of periodic tasks, of runs watched from their start
    and of OSS delivery: most entries (one-time runs that had ended when first read) never need
    it, so it is one object, made on first need (``None`` until then)."""

    periodic: bool = False
    """Seen ``Scheduled`` or with ``Repeats`` >= 2: a Period/EveryReboot task."""
    watched_run: float = float("inf")
    """Runs from this one on are known to end after the baseline: the exporter saw them (or
    the record) unfinished after it, or the run started after everything the baseline saw."""
    oss_counted_run: int = 0
    """The run whose OSS delivery was counted (or seen before the baseline); 0 for none."""
    oss_counted_finish: float | None = None
    """``FinishedTime`` of the run in ``oss_counted_run``."""
    history_misses: int = 0
    """Complete history reads in a row that did not return the next run."""
    history_refused: bool = False
    """The API refused its history: its runs are counted from the record itself."""
    result_claims: list[ResultClaim] | None = None
    """With include_history: what the record itself counted with a missing ``Repeats``."""


_NO_EXTRAS = EntryExtras()
_WATCHED_FROM_FIRST = EntryExtras(watched_run=1)
"""The extras of most results first read after the baseline (a one-time run known to end after
it): one object all their entries share, never changed (an entry copies it first: see
``ViewEntry._extras``)."""


class _Extra(Generic[_T]):
    """An attribute of :class:`ViewEntry` kept in its :class:`EntryExtras` under the same name:
    the default while the entry has none; set, it makes the entry's own extras first."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, entry: None, owner: type) -> _Extra[_T]: ...
    @overload
    def __get__(self, entry: ViewEntry, owner: type) -> _T: ...
    def __get__(self, entry: ViewEntry | None, owner: type) -> _T | _Extra[_T]:
        if entry is None:
            return self
        value: _T = getattr(entry.extras or _NO_EXTRAS, self._name)
        return value

    def __set__(self, entry: ViewEntry, value: _T) -> None:
        setattr(entry._extras(), self._name, value)


class ViewEntry(msgspec.Struct, gc=False):
    """What the tracker remembers of one result: the record and what it counted.

    A tracker holds one per result (300,000 in a process of 300 targets of 1,000), so its size
    matters: a ``msgspec.Struct`` not tracked by the garbage collector (``gc=False``) is 16
    bytes smaller than a slots dataclass, and full collections never walk it. Safe because it
    can never be part of a reference cycle: it holds a record (itself ``gc=False``), numbers
    and its :class:`EntryExtras` (numbers and :class:`ResultClaim`), none of which refers back
    to an entry. What only periodic tasks, runs watched from their start and OSS delivery need
    is in ``extras``, read and written through properties of the same names: 112 bytes an entry
    instead of 160.
    Saved (by :mod:`exporter.trackerstate`) as a map of its fields.
    """

    result: InvocationResult
    first_seen: float
    counted_run: int = 0
    """The run whose finish was counted (or seen before the baseline); 0 for none."""
    floor_run: int = 0
    """Runs up to this one finished before the baseline (history runs are not counted)."""
    history_through: int = 0
    """Every run up to this one is settled in the history (counted, or before the baseline)."""
    max_repeats: int = 0
    """The largest ``Repeats`` the record showed (it reads 0 while a new run is pending)."""
    counted_finish: float | None = None
    """``FinishedTime`` of the run in ``counted_run``: the same run read with another Repeats."""
    floor_time: float = float("-inf")
    """The latest finish (or stop) time the record showed before the baseline: runs that
    finished by then are backlog, whatever their (possibly garbled) ``Repeats``."""
    seen_at: float = float("-inf")
    """When the record was last read (by the exporter's clock)."""
    arrival: int = 0
    """Its place among the results the view took in (larger: taken in later); with
    ``first_seen``, the API's newest-first order as the walks read it. Numbered by
    :class:`~exporter.arrivals.ArrivalNumbers` (one object per number, shared by every target)."""
    baseline_state: bool = False
    """The baseline read this record: its state then says what is backlog, no clock does."""
    extras: EntryExtras | None = None

    def _extras(self) -> EntryExtras:
        """The entry's own extras, to change: made, or copied from the shared one, first."""
        extras = self.extras
        if extras is None:
            extras = self.extras = EntryExtras()
        elif extras is _WATCHED_FROM_FIRST:
            extras = self.extras = EntryExtras(watched_run=_WATCHED_FROM_FIRST.watched_run)
        return extras

    @property
    def periodic(self) -> bool:
        """Seen ``Scheduled`` or with ``Repeats`` >= 2: a Period/EveryReboot task."""
        return (self.extras or _NO_EXTRAS).periodic

    @periodic.setter
    def periodic(self, periodic: bool) -> None:
        if periodic or self.extras is not None:
            self._extras().periodic = periodic

    @property
    def watched_run(self) -> float:
        """Runs from this one on are known to end after the baseline (``inf``: none known)."""
        return (self.extras or _NO_EXTRAS).watched_run

    @watched_run.setter
    def watched_run(self, run: float) -> None:
        extras = self.extras
        if run == 1 and (extras is None or extras is _WATCHED_FROM_FIRST):
            self.extras = _WATCHED_FROM_FIRST  # most new results: nothing of their own
        else:
            self._extras().watched_run = run

    # In ``extras`` as they are (see EntryExtras); ``periodic``, ``watched_run`` and
    # ``result_claims`` below keep an entry without extras, or with shared ones, when they can.
    oss_counted_run = _Extra[int]()
    oss_counted_finish = _Extra[float | None]()
    history_misses = _Extra[int]()
    history_refused = _Extra[bool]()

    @property
    def result_claims(self) -> list[ResultClaim] | None:
        """With include_history: what the record itself counted with a missing ``Repeats``."""
        return (self.extras or _NO_EXTRAS).result_claims

    @result_claims.setter
    def result_claims(self, claims: list[ResultClaim] | None) -> None:
        if claims is not None or self.extras is not None:
            self._extras().result_claims = claims

    def last_ended_run(self) -> int:
        """The newest run of a periodic task known to have ended (0 when none)."""
        state = self.result.state
        status, repeats = state.invocation_status, state.repeats
        last = repeats if status in TERMINAL or status == "Scheduled" else repeats - 1
        # ``repeats < max_repeats`` first: for nearly every entry it is false, and ``periodic``
        # is a property (called for every record of a first walk).
        if repeats < self.max_repeats and self.periodic:
            # The record went back to a pending run: every run shown before has ended (and
            # ``last`` <= ``repeats``, smaller).
            last = self.max_repeats
        return last if last > 0 else 0


def as_live(entry: ViewEntry, shared: dict[ResultExtras, ResultExtras]) -> ViewEntry:
    """``entry``, as read back from a saved state, sharing what a live entry shares: the
    extras most new results have, its record's run state with every record showing the same
    (:func:`~exporter.ecs.models.run_state`), and its record's extras with the other records
    restored with the same (``shared``: those seen so far). Extras with nothing in them (a
    tampered file) become none, as a live entry's would be."""
    extras = entry.extras
    if extras is not None:
        if extras == _NO_EXTRAS:
            entry.extras = None
        elif extras == _WATCHED_FROM_FIRST:
            entry.extras = _WATCHED_FROM_FIRST
    result = entry.result
    kept, state = result.extras, result.state
    same_state = run_state(*msgspec.structs.astuple(state))
    same = kept
    if kept is not None:
        same = None if kept == NO_EXTRAS else shared.setdefault(kept, kept)
    if same is not kept or same_state is not state:
        entry.result = msgspec.structs.replace(result, extras=same, state=same_state)
    return entry


def with_key_of(result: InvocationResult, previous: InvocationResult) -> InvocationResult:
    """``result`` (a new read of ``previous``'s result) holding ``previous``'s key tuple, the one
    the view is keyed by: the copy a record parsed later brings would cost 64 bytes more."""
    key = previous.key
    return result if result.key is key else msgspec.structs.replace(result, key=key)


@dataclass(order=True, frozen=True, slots=True)
class Aged:
    """An entry of the tracking state by age, the result it is of, and how to drop it (for the
    size cap)."""

    time: float
    key: ResultKey = field(compare=False)
    drop: Callable[[], object] = field(compare=False)
