"""The saved form of a :class:`~exporter.tracking.RunTracker`, for the state directory.

Pure logic like the tracker (no files: :mod:`exporter.state` stores what this module encodes).
A tracker saves two things:

* its *summary*: the counters and scalars, one msgpack value (:class:`SavedState`);
* one *row* per result it remembers: the key, and the result's view entry, its entry after it
  left the view (a "ghost") and the runs of it that were counted.

:class:`ChangeLog` keeps what changed since the last save, so a refresh with nothing new writes
nothing; :func:`decode_state` and :func:`decode_rows` read a saved state back.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated

import msgspec

from exporter.ecs.models import MAX_INTEGER, ResultExtras
from exporter.runledger import ResultKey, RunLedger, SavedRun
from exporter.viewentry import ViewEntry, as_live

__all__ = [
    "ChangeLog",
    "EncodedRows",
    "RestoredRows",
    "SavedState",
    "TrackerChanges",
    "decode_rows",
    "decode_state",
]


class EncodedRows:
    """The rows of the results ``keys``: encoded ``(key, value)`` pairs, a None value deleting
    the row, encoded as they are iterated over.

    Not encoded ahead: after a first walk every result has a row (about 700 bytes each), and
    holding them all at once was the largest allocation a target of 10,000 results made (7 MB
    of a 67 MB peak). The store writes them as they come, in one transaction. They show the
    tracker as it is when iterated: the refresher saves right after exporting.
    """

    __slots__ = ("_ghosts", "_keys", "_runs", "_view")

    def __init__(
        self,
        keys: frozenset[ResultKey],
        view: Mapping[ResultKey, ViewEntry],
        ghosts: Mapping[ResultKey, ViewEntry],
        runs: Mapping[ResultKey, list[SavedRun]],
    ) -> None:
        self._keys, self._view, self._ghosts, self._runs = keys, view, ghosts, runs

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[tuple[bytes, bytes | None]]:
        view, ghosts, runs, encode = self._view, self._ghosts, self._runs, _ENCODER.encode
        for key in self._keys:
            saved = (view.get(key), ghosts.get(key), runs.get(key, []))
            yield encode(key), None if saved == (None, None, []) else encode(saved)


@dataclass(frozen=True, slots=True)
class TrackerChanges:
    """What a tracker has to save (see :meth:`RunTracker.export_changes`): ``summary`` is the
    encoded counters and scalars, None when unchanged; ``rows`` the rows of the results
    ``keys`` (see :class:`EncodedRows`)."""

    summary: bytes | None
    rows: EncodedRows
    keys: frozenset[ResultKey]

    @property
    def empty(self) -> bool:
        """True when there is nothing to write."""
        return self.summary is None and not self.rows


# What a tracker can have saved, checked as the summary is decoded (anything else is unreadable
# counters): a count is never negative and fits in 64 bits (the tracker's sums saturate there);
# a time is a number, or -inf for none yet, never NaN or +inf; a duration sum and the tolerance
# are finite and never negative.
_Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_INTEGER)]
_Time = Annotated[float, msgspec.Meta(le=sys.float_info.max)]  # NaN fails any bound
_Seconds = Annotated[float, msgspec.Meta(ge=0.0, le=sys.float_info.max)]


class SavedState(msgspec.Struct, frozen=True):
    """The counters and scalars of a tracker as saved (msgpack; a new field needs a default).
    ``tolerance`` is None in states saved before it was (the tracker's default then)."""

    baseline_done: bool
    baseline_time: _Time
    dropped_until: _Time
    folders: list[list[str]]
    finished: list[tuple[str, str, _Count]]
    durations: list[tuple[str, list[_Count], _Seconds]]
    oss: list[tuple[str, str, _Count]]
    dropped_bytes: _Count
    found_by_sweep: _Count
    command_ids: list[str]
    commands: list[tuple[str, str, str, _Count]]
    baseline_consistent: bool = False
    tolerance: _Seconds | None = None
    newest_baseline_time: _Time = float("-inf")
    credentials: str = ""
    """Who the target read its results as (see :attr:`RunTracker.credentials`); "" unknown."""


@dataclass(frozen=True, slots=True)
class RestoredRows:
    """The rows of a saved tracker, decoded: its view, its ghosts, the runs it counted."""

    view: dict[ResultKey, ViewEntry]
    ghosts: dict[ResultKey, ViewEntry]
    runs: list[tuple[ResultKey, list[SavedRun]]]


_ENCODER = msgspec.msgpack.Encoder()
_STATE_DECODER = msgspec.msgpack.Decoder(SavedState)
_KEY_DECODER = msgspec.msgpack.Decoder(tuple[str, str, str])
_ROW_DECODER = msgspec.msgpack.Decoder(
    tuple[ViewEntry | None, ViewEntry | None, list[tuple[int, float, bool, bool]]]
)


def decode_state(summary: object) -> SavedState:
    """The counters and scalars of a saved tracker; ``ValueError`` when unreadable (not msgpack,
    not of this shape, or a value out of range: see :class:`SavedState`)."""
    # The store may hand back anything: SQLite keeps a value of any type in any column.
    if not isinstance(summary, bytes):
        raise ValueError(f"unreadable counters: {type(summary).__name__}, not bytes")
    try:
        return _STATE_DECODER.decode(summary)
    except msgspec.MsgspecError as exc:
        raise ValueError(f"unreadable counters: {exc}") from None


def decode_rows(rows: Iterable[tuple[bytes, bytes]]) -> RestoredRows | None:
    """The rows of a saved tracker; None when any of them is unreadable (a key or a value not
    msgpack bytes, or not of the shape saved)."""
    restored = RestoredRows({}, {}, [])
    shared: dict[ResultExtras, ResultExtras] = {}  # the records' extras, shared as when read
    # Tens of thousands of new objects, none of them garbage: collections only slow it down.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for raw_key, raw_value in rows:
            key = _KEY_DECODER.decode(raw_key)
            entry, ghost, key_runs = _ROW_DECODER.decode(raw_value)
            # Keyed by the record's own key tuple, as a live view is (when it is the row's:
            # a tampered row keeps the row's), not by a second copy of it.
            if entry is not None:
                own = entry.result.key
                restored.view[own if own == key else key] = as_live(entry, shared)
            if ghost is not None:
                own = ghost.result.key
                restored.ghosts[own if own == key else key] = as_live(ghost, shared)
            if key_runs:
                restored.runs.append((key, key_runs))
    except (msgspec.MsgspecError, TypeError):  # TypeError: a value that is not bytes
        return None
    finally:
        if collecting:
            gc.enable()
    return restored


class ChangeLog:
    """Which results of a tracker changed since its last save, and the summary saved.

    The tracker marks a result whenever one of its entries changes, is added or is dropped:
    the next export writes its row again, or deletes it when nothing of the result is left. So
    the log keeps no set of the results saved (about 33 bytes for every result it remembers).
    """

    def __init__(self) -> None:
        # Results whose entries changed since the last save, the summary saved.
        self._dirty: set[ResultKey] = set()
        self._saved_summary = b""

    def mark(self, key: ResultKey) -> None:
        """The entries of ``key`` changed (or were dropped)."""
        self._dirty.add(key)

    def mark_all(self, keys: Iterable[ResultKey]) -> None:
        """The entries of every key in ``keys`` changed (or were dropped)."""
        self._dirty.update(keys)

    def export(
        self,
        state: SavedState,
        view: Mapping[ResultKey, ViewEntry],
        ghosts: Mapping[ResultKey, ViewEntry],
        ledger: RunLedger,
    ) -> TrackerChanges:
        """The changes since the last :meth:`saved`: ``state`` when it changed, and one row per
        result whose entries changed (``None``: delete it)."""
        summary = _ENCODER.encode(state)
        keys = frozenset(self._dirty)
        return TrackerChanges(
            summary=None if summary == self._saved_summary else summary,
            rows=EncodedRows(keys, view, ghosts, ledger.saved_runs(keys)),
            keys=keys,
        )

    def saved(self, changes: TrackerChanges) -> None:
        """``changes`` (from :meth:`export`) are stored: forget them."""
        # A new set, not ``-=``: a set does not always shrink its table when emptied, and the
        # first walk's would keep room for every result (64 kB a target of 1,000).
        self._dirty = self._dirty - changes.keys
        if changes.summary is not None:
            self._saved_summary = changes.summary

    def restored(self, summary: bytes) -> None:
        """A saved state was taken back: ``summary`` is stored."""
        self._saved_summary = summary
