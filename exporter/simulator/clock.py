"""The clocks a simulated world moves with: the real time, or a manual clock for tests."""

from __future__ import annotations

import threading
import time
from typing import Protocol

# 2026-01-01T00:00:00Z: a fixed, recognisable start for manual clocks.
DEFAULT_START = 1_767_225_600.0


class Clock(Protocol):
    """What the world reads the time from (epoch seconds, UTC)."""

    def now(self) -> float: ...


class WallClock:
    """The real time."""

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that only moves when told to (tests)."""

    def __init__(self, start: float = DEFAULT_START) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (never backwards) and return the new time."""
        if seconds < 0:
            raise ValueError("a ManualClock does not go backwards")
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, when: float) -> None:
        """Jump to ``when`` (not earlier than the current time)."""
        with self._lock:
            if when < self._now:
                raise ValueError("a ManualClock does not go backwards")
            self._now = float(when)
