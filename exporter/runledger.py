"""Which runs were counted: the two counting strategies of :class:`~exporter.tracking.RunTracker`.

* :class:`RecordLedger` (targets without ``include_history``): a record only ever shows its
  task's latest run, so the view entry's counted run is all the memory counting needs; the
  ledger itself remembers nothing.
* :class:`HistoryLedger` (``include_history``): every run of a periodic task has its own
  record in the task's history; each one is remembered as claimed (its finish, its OSS
  delivery), so that it is counted once, whichever read shows it first. Runs the record itself
  counted before the task was known to be periodic are :class:`ResultClaim` objects, matched by
  time (their ``Repeats`` may have been garbled).

Pure logic, like the tracker: no I/O, no threads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Set
from dataclasses import dataclass
from functools import partial
from typing import Protocol

ResultKey = tuple[str, str, str]
"""``(invoke_id, instance_id, container_id)``: one result in the API's view."""
RunKey = tuple[str, str, str, int]
"""``(invoke_id, instance_id, container_id, run)``: one run of a periodic task."""
SavedRun = tuple[int, float, bool, bool]
"""A remembered run as saved: ``(run, time, finish_done, oss_done)``."""


@dataclass(slots=True)
class ResultClaim:
    """A run a periodic task's record counted itself, with a ``Repeats`` that may be garbled."""

    run: int | None
    """The number it was counted under; None once the history showed it was another run."""
    time: float
    """The record's time then (its latest of start, finish, stop): the run's identity."""
    oss: bool
    """The claim is for the OSS delivery, not the finish."""


@dataclass(slots=True)
class _RunEntry:
    time: float
    finish_done: bool = False
    oss_done: bool = False


class RunLedger(Protocol):
    """What the tracker asks of its counting strategy."""

    @property
    def counts_history(self) -> bool:
        """True when the runs of periodic tasks are counted from their history."""
        ...

    def __len__(self) -> int:
        """Runs remembered (part of the tracking state)."""
        ...

    def claim(self, key: ResultKey, run: int, time: float, *, oss: bool) -> bool:
        """Mark run ``run`` of ``key`` as counted (or seen before the baseline); False when
        it already was."""
        ...

    def note_result_claim(
        self, claims: list[ResultClaim], run: int, time: float, *, oss: bool
    ) -> None:
        """The record of ``key`` counted run ``run`` itself, with a missing ``Repeats``."""
        ...

    def claim_history(
        self, claims: list[ResultClaim] | None, key: ResultKey, run: int, time: float, *, oss: bool
    ) -> bool:
        """Claim a run a history read showed; False when it was counted already."""
        ...

    def remembers(self, key: ResultKey, run: int) -> bool:
        """True when run ``run`` of ``key`` is remembered."""
        ...

    def expire(self, horizon: float) -> list[ResultKey]:
        """Forget runs older than ``horizon``; returns the result of each run forgotten."""
        ...

    def aged(self) -> Iterator[tuple[float, ResultKey, Callable[[], object]]]:
        """Each remembered run's time, its result and how to forget it (for the size cap)."""
        ...

    def saved_runs(self, keys: Set[ResultKey]) -> dict[ResultKey, list[SavedRun]]:
        """The remembered runs of the results ``keys``, to be saved."""
        ...

    def restore_runs(self, key: ResultKey, runs: Iterable[SavedRun]) -> None:
        """Remember saved runs of ``key`` again."""
        ...


class RecordLedger:
    """Counting from the records alone: nothing to remember per run."""

    counts_history = False

    def __len__(self) -> int:
        return 0

    def claim(self, key: ResultKey, run: int, time: float, *, oss: bool) -> bool:
        return True

    def note_result_claim(
        self, claims: list[ResultClaim], run: int, time: float, *, oss: bool
    ) -> None:
        return None

    def claim_history(
        self, claims: list[ResultClaim] | None, key: ResultKey, run: int, time: float, *, oss: bool
    ) -> bool:
        raise RuntimeError("history runs need a tracker created with include_history=True")

    def remembers(self, key: ResultKey, run: int) -> bool:
        return False

    def saved_runs(self, keys: Set[ResultKey]) -> dict[ResultKey, list[SavedRun]]:
        return {}

    def restore_runs(self, key: ResultKey, runs: Iterable[SavedRun]) -> None:
        return None

    def expire(self, horizon: float) -> list[ResultKey]:
        return []

    def aged(self) -> Iterator[tuple[float, ResultKey, Callable[[], object]]]:
        return iter(())


class HistoryLedger:
    """Counting every run of periodic tasks from their history, each run once."""

    counts_history = True

    def __init__(self) -> None:
        self._runs: dict[RunKey, _RunEntry] = {}
        # No run remembered is older: expire() scans only when one can be older than its horizon.
        self._floor = float("inf")

    def __len__(self) -> int:
        return len(self._runs)

    def claim(self, key: ResultKey, run: int, time: float, *, oss: bool) -> bool:
        run_key = (*key, run)
        entry = self._runs.get(run_key)
        if entry is None:
            entry = self._runs[run_key] = _RunEntry(time)
            self._floor = min(self._floor, time)
        if oss:
            if entry.oss_done:
                return False
            entry.oss_done = True
        else:
            if entry.finish_done:
                return False
            entry.finish_done = True
        return True

    def note_result_claim(
        self, claims: list[ResultClaim], run: int, time: float, *, oss: bool
    ) -> None:
        claims.append(ResultClaim(run, time, oss))

    def claim_history(
        self, claims: list[ResultClaim] | None, key: ResultKey, run: int, time: float, *, oss: bool
    ) -> bool:
        if not claims:
            return self.claim(key, run, time, oss=oss)
        for index, claim in enumerate(claims):
            if claim.oss is not oss:
                continue
            if claim.time == time and claim.run != run:
                # The record counted this run under another number: move the claim, so the run
                # that number belongs to is counted when the history shows it.
                del claims[index]
                if claim.run is not None:
                    slot = self._runs.get((*key, claim.run))
                    if slot is not None:
                        if oss:
                            slot.oss_done = False
                        else:
                            slot.finish_done = False
                self.claim(key, run, time, oss=oss)
                return False
            if claim.run == run and claim.time != time:
                # The record counted another run under this number: this one is new; the other
                # is recognised by its time when the history shows it.
                claim.run = None
                slot = self._runs.get((*key, run))
                if slot is not None:
                    slot.time = time
                    self._floor = min(self._floor, time)
                return True
        return self.claim(key, run, time, oss=oss)

    def remembers(self, key: ResultKey, run: int) -> bool:
        return (*key, run) in self._runs

    def saved_runs(self, keys: Set[ResultKey]) -> dict[ResultKey, list[SavedRun]]:
        found: dict[ResultKey, list[SavedRun]] = {}
        if keys:
            for run_key, entry in self._runs.items():
                key = run_key[:3]
                if key in keys:
                    saved = (run_key[3], entry.time, entry.finish_done, entry.oss_done)
                    found.setdefault(key, []).append(saved)
        return found

    def restore_runs(self, key: ResultKey, runs: Iterable[SavedRun]) -> None:
        for run, time, finish_done, oss_done in runs:
            self._runs[(*key, run)] = _RunEntry(time, finish_done, oss_done)
            self._floor = min(self._floor, time)

    def expire(self, horizon: float) -> list[ResultKey]:
        if horizon <= self._floor:
            return []
        old = [key for key, entry in self._runs.items() if entry.time < horizon]
        for key in old:
            del self._runs[key]
        self._floor = min((entry.time for entry in self._runs.values()), default=float("inf"))
        return [key[:3] for key in old]

    def aged(self) -> Iterator[tuple[float, ResultKey, Callable[[], object]]]:
        for key, entry in self._runs.items():
            yield entry.time, key[:3], partial(self._runs.pop, key, None)
