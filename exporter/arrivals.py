"""The numbers a tracker gives the results its view takes in, in the order it takes them in.

A target numbers its results 1, 2, 3... as its view takes them in: with ``first_seen``, that
is the order the walks read them in (see :mod:`exporter.viewqueries`). Each number is an int
object, 32 bytes (CPython keeps ready-made only those up to 256), held by one result's
:class:`~exporter.viewentry.ViewEntry`: 24 bytes a result in a process of 300 targets of 1,000.
Yet every target counts from 1, so:

* the process keeps one object per number below :data:`MAX_SHARED` (:func:`number`), which
  the entries of every target share;
* a target renumbers its results 1, 2, 3... in the same order (:meth:`ArrivalNumbers.compact`)
  when its numbers have run well ahead of how many results it holds (results leave as new ones
  come in), so that over a deployment's life they stay among those shared.

Pure logic, no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from operator import attrgetter
from typing import Final

from exporter.viewentry import ViewEntry

__all__ = ["MAX_SHARED", "ArrivalNumbers", "number"]

MAX_SHARED: Final = 1 << 16
"""Numbers below this are one object in the process (2.6 MB at most, made as numbers are used)."""
SPARSE_SLACK: Final = 1024
"""A target renumbers its results when its last number is beyond twice their count plus this:
rarely (after at least as many new results as it holds), never while its view only grows."""

# Grown by copying (to twice its size, up to MAX_SHARED) and rebinding, never in place: a
# thread reading it meanwhile sees the old table or the new one, never one half made, and
# table[n] is n in both. Every reader takes the table once into a local, and a grower uses the
# one it made: two threads growing it at once may even leave the smaller one bound, and the
# numbers given from either are still right (only less shared).
_table: list[int] = list(range(257))
_BY_ARRIVAL = attrgetter("arrival")


def number(n: int) -> int:
    """``n``, as the object every target shares when it is from 0 to below :data:`MAX_SHARED`
    (any other, as from a tampered saved state, as it is). Safe from any thread without a lock
    (see ``_table``)."""
    table = _table
    if 0 <= n < len(table):
        return table[n]
    if n < 0 or n >= MAX_SHARED:
        return n
    return _covering(n)[n]


def _covering(n: int) -> list[int]:
    """A table that holds ``n`` (< MAX_SHARED): the bound one, or a larger one made (and bound
    unless another thread bound a larger one meanwhile)."""
    global _table  # rebound, never changed in place: see above
    table = _table
    if n >= len(table):
        size = min(MAX_SHARED, max(n + 1, 2 * len(table)))
        table = [*table, *range(len(table), size)]
        if len(table) > len(_table):
            _table = table
    return table


class ArrivalNumbers:
    """The numbers of one tracker's results: :attr:`taken` (how many it took in, for the
    refresh plan: never goes down) and :attr:`last` (the number given last, the largest held:
    results with a number above ``last - k`` are among the ``k`` taken in last)."""

    def __init__(self) -> None:
        self.taken = 0
        self.last = 0

    def next(self) -> int:
        """The number of a result taken in now."""
        self.taken += 1
        self.last += 1
        return number(self.last)

    def number(self, entries: Sequence[ViewEntry]) -> None:
        """Give ``entries``, taken in in this order, their numbers (a first walk's page at once:
        cheaper than :meth:`next` for each)."""
        first, last = self.last + 1, self.last + len(entries)
        self.taken += len(entries)
        self.last = last
        numbers: Iterable[int]
        if last < MAX_SHARED:
            table = _table  # once: see _table
            numbers = (table if last < len(table) else _covering(last))[first : last + 1]
        else:
            numbers = map(number, range(first, last + 1))
        for entry, n in zip(entries, numbers, strict=True):
            entry.arrival = n

    def restored(self, entries: Iterable[ViewEntry]) -> None:
        """``entries`` (every result the tracker holds) were read back from a saved state: their
        numbers become the shared objects, as live ones are."""
        last = 0
        for entry in entries:
            entry.arrival = n = number(entry.arrival)
            if n > last:
                last = n
        self.taken = self.last = last

    def compact(self, *held: Collection[ViewEntry]) -> bool:
        """Renumber the entries of ``held`` (every result the tracker holds) 1, 2, 3... in the
        order of their numbers when :attr:`last` runs far ahead of how many they are; True when
        it did (every entry then has to be saved again). Entries without a number (0: restored
        from a state saved before numbers were kept) keep none."""
        if self.last <= 2 * sum(map(len, held)) + SPARSE_SLACK:
            return False
        everyone = (entry for entries in held for entry in entries)
        numbered = sorted((entry for entry in everyone if entry.arrival > 0), key=_BY_ARRIVAL)
        for n, entry in enumerate(numbered, 1):
            entry.arrival = number(n)
        self.last = len(numbered)
        return True
