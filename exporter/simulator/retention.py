"""The retention index: which records the API has in view at a given time.

Invocations are kept in creation order. Each record (one target of an invocation) has an
*absolute position*: records are numbered from the oldest invocation on, and positions never
change once given, so a paging walk can hold on to them while new invocations arrive. The API
keeps records of invocations created in the last ``retention_seconds`` and at most the newest
``max_entries`` records: everything below :meth:`RetentionIndex.lowest_visible_position` is gone.
Inside an invocation positions grow with the target index reversed, so that a newest-first walk
(positions descending) lists an invocation's targets in their own order.

Not thread-safe: the world calls it under its lock.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from exporter.simulator.model import Invocation, RecordRef


class RetentionIndex:
    """Invocations in creation order, with cumulative record counts for positions."""

    def __init__(self, retention_seconds: float, max_entries: int) -> None:
        self.retention_seconds = retention_seconds
        self.max_entries = max_entries
        self._invocations: list[Invocation] = []
        self._created: list[float] = []  # parallel to _invocations, for bisect
        self._cum: list[int] = []  # absolute records up to and including each invocation
        self._by_id: dict[str, Invocation] = {}

    def get(self, invoke_id: str) -> Invocation | None:
        """The invocation with ``invoke_id`` unless unknown or pruned."""
        return self._by_id.get(invoke_id)

    def append(self, inv: Invocation) -> None:
        """Add ``inv``, created no earlier than every invocation in the index."""
        self._by_id[inv.invoke_id] = inv
        last = self._cum[-1] if self._cum else 0
        self._invocations.append(inv)
        self._created.append(inv.created)
        self._cum.append(last + len(inv.targets))

    def insert(self, inv: Invocation) -> None:
        """Add ``inv`` in its place by creation time (a test may script the future first)."""
        index = bisect.bisect_right(self._created, inv.created)
        if index == len(self._invocations):
            self.append(inv)
            return
        self._by_id[inv.invoke_id] = inv
        before = (
            self._cum[index - 1] if index > 0 else self._cum[0] - len(self._invocations[0].targets)
        )
        self._invocations.insert(index, inv)
        self._created.insert(index, inv.created)
        self._cum.insert(index, before + len(inv.targets))
        for i in range(index + 1, len(self._cum)):
            self._cum[i] += len(inv.targets)

    def first_position(self, inv: Invocation) -> int:
        """The absolute position of the record of ``inv``'s last target (its lowest)."""
        return self._cum[self._index_of(inv)] - len(inv.targets)

    def lowest_visible_position(self, now: float) -> int:
        """Records at lower positions are out of view at ``now`` (too old or too many)."""
        if not self._invocations:
            return 0
        by_count = self._total_until(now) - self.max_entries
        start = bisect.bisect_left(self._created, now - self.retention_seconds)
        if start >= len(self._invocations):
            by_age = self._cum[-1]
        else:
            by_age = self._cum[start] - len(self._invocations[start].targets)
        return max(by_count, by_age)

    def visible_invocations(self, now: float) -> Iterator[Invocation]:
        """Invocations with a record in view at ``now``, newest first."""
        end = bisect.bisect_right(self._created, now)
        lo = self.lowest_visible_position(now)
        for index in range(end - 1, -1, -1):
            if self._cum[index] <= lo:
                break
            yield self._invocations[index]

    def visible_refs(self, now: float) -> Iterator[RecordRef]:
        """Records in view at ``now``, newest invocation first."""
        lo = self.lowest_visible_position(now)
        for inv in self.visible_invocations(now):
            base = self.first_position(inv)
            for ti in range(len(inv.targets)):
                if base + (len(inv.targets) - 1 - ti) >= lo:
                    yield RecordRef(inv, ti)

    def visible_span(self, now: float, snapshot: float) -> tuple[int, int]:
        """Absolute positions ``[lo, hi)`` of the records of a snapshot taken at ``snapshot``
        that are still in view at ``now`` (``snapshot <= now``)."""
        hi = self._total_until(snapshot)
        return min(self.lowest_visible_position(now), hi), hi

    def ref_at(self, position: int) -> RecordRef | None:
        """The record at an absolute position, None if pruned."""
        index = bisect.bisect_right(self._cum, position)
        if index >= len(self._invocations):
            return None
        inv = self._invocations[index]
        base = self._cum[index] - len(inv.targets)
        if position < base:
            return None
        return RecordRef(inv, len(inv.targets) - 1 - (position - base))

    def prune(self, now: float) -> None:
        """Forget invocations without a record in view at ``now`` (marked ``pruned``)."""
        lo = self.lowest_visible_position(now)
        drop = 0
        while drop < len(self._invocations) and self._cum[drop] <= lo:
            drop += 1
        # Prune in batches: deleting the head of the lists is a memmove.
        if drop >= 64 or (drop and drop * 4 >= len(self._invocations)):
            for inv in self._invocations[:drop]:
                inv.pruned = True
                del self._by_id[inv.invoke_id]
            del self._invocations[:drop]
            del self._created[:drop]
            del self._cum[:drop]

    def _index_of(self, inv: Invocation) -> int:
        index = bisect.bisect_left(self._created, inv.created)
        while self._invocations[index] is not inv:
            index += 1
        return index

    def _total_until(self, when: float) -> int:
        end = bisect.bisect_right(self._created, when)
        if end == 0:
            return self._cum[0] - len(self._invocations[0].targets) if self._cum else 0
        return self._cum[end - 1]
