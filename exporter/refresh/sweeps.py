"""When a target's full sweep runs, and what one sweep under way has read.

A sweep reads every page of the target to find what the fast path and the in-flight follow-up
missed (an order that is not newest-first, a change to an old record) and what left the API.
When sweeps keep finding nothing and the order stays newest-first, they are proof of nothing
but their cost: :class:`SweepSchedule` multiplies the interval by :data:`SWEEP_GROWTH` after
each such sweep, up to ``max_factor`` times the configured one, and goes back to the
configured interval at once when a sweep finds something or the order breaks (a fast path that
sees a new result after a known one, a sweep whose order moved between pages or that returned
results in another order than the walks took them in).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.refresh.scheduling import due
from exporter.runledger import ResultKey
from exporter.viewqueries import View, read_order

DEFAULT_SWEEP_BACKOFF = 32
"""How many times the configured sweep interval the interval grows to while sweeps find
nothing (1, 4, 16, 32 times; 10 minutes configured: 5 h 20 min at most)."""
SWEEP_GROWTH = 4
"""What a sweep that found nothing multiplies the interval by."""


class SweepSchedule:
    """The adaptive sweep interval (see the module docstring); ``configured`` 0: no sweep."""

    def __init__(self, configured: float, max_factor: int = DEFAULT_SWEEP_BACKOFF) -> None:
        self.configured = configured
        self.max_interval = configured * max(1, max_factor)
        self.interval = configured
        """The interval now (seconds): what the next sweep waits for after the last one."""
        self.last = 0.0

    def due(self, now: float) -> bool:
        """True when a sweep should start now."""
        return self.configured > 0 and due(self.last, now, self.interval)

    def started(self, now: float) -> None:
        """A sweep starts (or a walk of everything was just read, as the first one)."""
        self.last = now

    def found_nothing(self) -> None:
        """A complete sweep found nothing the other steps missed, in newest-first order."""
        self.interval = min(self.interval * SWEEP_GROWTH, self.max_interval)

    def alarm(self) -> None:
        """Something was missed or the order broke: back to the configured interval now."""
        self.interval = self.configured


class OrderWatch:
    """Tells, page by page, a walk whose order moved between pages (a result it returned came
    back out of place, so another may have been missed) from one that new results only pushed
    on (the last results of a page come again, in order, at the top of the next one)."""

    def __init__(self) -> None:
        self.moved = False
        self._seen: set[ResultKey] = set()
        self._previous: list[ResultKey] = []

    def page(self, keys: list[ResultKey]) -> None:
        """Take the keys of the next page, in order (an empty page says nothing of it)."""
        if not keys:
            return
        if self._seen.isdisjoint(keys):  # the usual case (a page of results not seen yet)
            self._seen.update(keys)
            self._previous = keys
            return
        lead = 0
        while lead < len(keys) and keys[lead] in self._seen:
            lead += 1
        if any(key in self._seen for key in keys[lead:]) or (
            lead and keys[:lead] != self._previous[-lead:]
        ):
            self.moved = True
        self._seen.update(keys)
        self._previous = keys


@dataclass
class SweepProgress:
    """A sweep under way (it may take several refreshes when calls fail)."""

    started: float
    seen: set[ResultKey] = field(default_factory=set)
    oldest_start: float | None = None
    order: OrderWatch = field(default_factory=OrderWatch)
    pages: int = 0
    next_token: str = ""
    walks: int = 0
    resumed: bool = False
    """A walk went on after a failure or a paced slice: its parts were read at different
    times."""
    had_invalid: bool = False
    """A part of it skipped a record that could not be parsed."""
    returned: int = 0
    """The tracker's count of results back from outside the view when the sweep started."""
    counted: int = 0
    """The tracker's count of runs found by sweeps when the sweep started."""
    found: bool = False
    """It read a result the other steps had not."""
    inverted: bool = False
    """It returned a result taken in earlier before one taken in later: not newest-first."""
    last_read: ResultKey | None = None
    """The result it read last that has a place in the order the walks took results in."""
    last_order: tuple[float, int] | None = None
    """That place when it was read."""

    def read_in_order(self, key: ResultKey, order: tuple[float, int], view: View) -> None:
        """The sweep read ``key``, at ``order`` in ``view``: notes whether it came before the
        last one read (:attr:`inverted`). The last one's place is looked up again: between
        two slices of a paced sweep the target may renumber its results (the same order, other
        numbers: see :mod:`exporter.arrivals`); as it was read only if it has left the view."""
        last = read_order(view, self.last_read) or self.last_order
        self.inverted = self.inverted or (last is not None and order > last)
        self.last_read, self.last_order = key, order
