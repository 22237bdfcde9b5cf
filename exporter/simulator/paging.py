"""Paging walks of the simulated API: snapshot cursors behind opaque ``NextToken`` values.

A walk's first page fixes which records it covers (those in view at that moment, in the walk's
order) and every token of the walk points into that list, so records created later never shift
pages; records that leave retention meanwhile are skipped. A token can be replayed, is bound to
the walk's fingerprint (region, filters, order), and expires ``token_ttl`` seconds (world clock)
after it was issued. In the ``unstable`` order each call reshuffles the groups of equal keys its
page touches.
"""

from __future__ import annotations

import math
import random
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass

from exporter.simulator.errors import ApiError
from exporter.simulator.world import RecordFilter, RecordRef, World


@dataclass(eq=False)
class Walk:
    """The snapshot of one paging walk (see :class:`Pager`)."""

    world: World
    fingerprint: tuple[object, ...]
    snapshot: float
    refs: list[RecordRef] | None  # materialised list, or None: the creation-time index
    keys: list[float] | None = None  # order "unstable": the coarse key of each ref, descending


@dataclass(frozen=True)
class _Cursor:
    walk: Walk
    offset: int
    issued: float
    page: int  # the page of the walk this token asks for (2 for the first page's token)


class Pager:
    """The walks and cursors of one server; thread-safe."""

    def __init__(self, *, seed: int, token_ttl: float, max_cursors: int) -> None:
        self.token_ttl = token_ttl
        self._max_cursors = max_cursors
        self._cursors: OrderedDict[str, _Cursor] = OrderedDict()
        self._shuffle_seed = random.Random(f"shuffle/{seed}")
        self._lock = threading.Lock()

    def page_of(self, token: str) -> int:
        """The page of its walk ``token`` asks for (0: unknown token)."""
        with self._lock:
            cursor = self._cursors.get(token)
        return cursor.page if cursor is not None else 0

    def forget(self, token: str) -> None:
        """Refuse ``token`` from now on."""
        with self._lock:
            self._cursors.pop(token, None)

    def start(
        self,
        world: World,
        fingerprint: tuple[object, ...],
        record_filter: RecordFilter,
        now: float,
        order: str,
        resolution: float,
    ) -> Walk:
        """A new walk over the records matching ``record_filter`` at ``now``, in ``order``
        (``resolution``: the coarse key of the ``unstable`` order)."""
        if record_filter.empty and order == "newest":
            return Walk(world, fingerprint, now, None)
        refs = world.select(now, record_filter)
        if order == "shuffled":
            random.Random(self._random_seed()).shuffle(refs)
        if order == "unstable":
            keyed = sorted(
                ((_coarse(_sort_time(ref), resolution), ref) for ref in refs),
                key=lambda pair: -pair[0],
            )
            return Walk(world, fingerprint, now, [r for _, r in keyed], [k for k, _ in keyed])
        return Walk(world, fingerprint, now, refs)

    def _random_seed(self) -> int:
        with self._lock:
            return self._shuffle_seed.getrandbits(64)

    def resume(
        self, token: str, fingerprint: tuple[object, ...], now: float
    ) -> tuple[Walk, int, int]:
        """The walk, offset and page number ``token`` points at, or ``InvalidParameter.NextToken``
        for an unknown, expired or foreign token."""
        with self._lock:
            cursor = self._cursors.get(token)
        if cursor is None or cursor.walk.fingerprint != fingerprint:
            raise ApiError(
                400,
                "InvalidParameter.NextToken",
                "The specified parameter NextToken is not valid.",
            )
        if now - cursor.issued > self.token_ttl:
            raise ApiError(
                400,
                "InvalidParameter.NextToken",
                "The specified parameter NextToken is not valid: it has expired.",
            )
        return cursor.walk, cursor.offset, cursor.page

    def issue(self, walk: Walk, offset: int, now: float, page: int) -> str:
        """A new token for page ``page`` of ``walk``, starting at ``offset``."""
        token = "AAAAA" + secrets.token_urlsafe(18)
        with self._lock:
            self._cursors[token] = _Cursor(walk, offset, now, page)
            while len(self._cursors) > self._max_cursors:
                self._cursors.popitem(last=False)
        return token

    def page(
        self, world: World, walk: Walk, offset: int, limit: int, now: float
    ) -> tuple[list[RecordRef], int]:
        """The records at ``offset`` of a walk and the walk's current size."""
        if walk.refs is not None:
            alive = walk.refs
            total = len(alive)
            if walk.keys is not None:
                window = self._reshuffled_window(walk.refs, walk.keys, offset, limit)
            else:
                window = alive[offset : offset + limit]
            page = [r for r in window if not r.invocation.pruned]
            return page, total
        lo, hi = world.visible_span(now, walk.snapshot)
        total = max(0, hi - lo)
        out: list[RecordRef] = []
        position = hi - 1 - offset
        while position >= lo and len(out) < limit:
            ref = world.ref_at(position)
            if ref is not None:
                out.append(ref)
            position -= 1
        return out, total

    def _reshuffled_window(
        self, refs: list[RecordRef], keys: list[float], offset: int, limit: int
    ) -> list[RecordRef]:
        """``refs[offset:offset + limit]`` after a fresh shuffle of every group of equal keys
        the window touches (order ``unstable``: each call sorts the ties anew)."""
        end = min(offset + limit, len(refs))
        if offset >= end:
            return []
        lo = offset
        while lo > 0 and keys[lo - 1] == keys[offset]:
            lo -= 1
        hi = end
        while hi < len(refs) and keys[hi] == keys[end - 1]:
            hi += 1
        span = refs[lo:hi]
        rng = random.Random(self._random_seed())
        start = 0
        for i in range(1, len(span) + 1):  # shuffle each run of equal keys in place
            if i == len(span) or keys[lo + i] != keys[lo + start]:
                group = span[start:i]
                rng.shuffle(group)
                span[start:i] = group
                start = i
        return span[offset - lo : end - lo]


def _sort_time(ref: RecordRef) -> float:
    """The ``unstable`` order's key before coarsening: a history run's start, else the
    invocation's creation time."""
    if ref.run is not None:
        return ref.invocation.targets[ref.target_index].runs[ref.run].start
    return ref.invocation.created


def _coarse(epoch: float, resolution: float) -> float:
    return float(math.floor(epoch / resolution) * resolution)
