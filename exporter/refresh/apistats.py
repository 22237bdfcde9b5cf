"""The API statistics of one target: what every HTTP try cost, and how the API's clock reads.

:class:`ApiStatistics` is created before the target's client, whose ``on_request`` hook is its
:meth:`~ApiStatistics.record_request`: the client threads write, the refresher reads a
consistent :class:`ApiTotals` for each snapshot.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from exporter.ecs.client import RequestEvent
from exporter.ecs.models import MAX_CLOCK_SKEW_SECONDS
from exporter.metrics import API_DURATION_BUCKETS as API_DURATION_BUCKETS
from exporter.tracking import Histogram, HistogramValue, ValueFolder

_CLOCK_SAMPLES = 32


@dataclass(frozen=True, slots=True)
class ApiTotals:
    """The request statistics as of one moment."""

    requests: tuple[tuple[str, int], ...]
    """Tries per outcome code ("" for success)."""
    duration: HistogramValue
    rate_limit_wait_seconds: float
    codes_folded: int = 0
    """Distinct outcome codes counted under "other" (see :class:`ValueFolder`)."""


class ApiClock:
    """Estimates how far the API's clock is ahead of the exporter host's (negative: behind).

    Two kinds of evidence, from the answers: the ``Date`` header (whole seconds; the median of
    the last answers' samples), and the newest ``StartTime`` an answer holds, which the API
    stamped before answering, so its clock reads at least that much (a lower bound, the best
    of the last answers). Without a ``Date`` the lower bound is the estimate only when it
    shows the API ahead: a quiet account's newest ``StartTime`` is old, which says nothing.
    A ``StartTime`` more than :data:`~exporter.ecs.models.MAX_CLOCK_SKEW_SECONDS` ahead (of
    the ``Date``, else of the host) says nothing either: one record dated in 2099 must not move
    the clock there.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._dates: deque[float] = deque(maxlen=_CLOCK_SAMPLES)
        self._floors: deque[float] = deque(maxlen=_CLOCK_SAMPLES)

    def observe_date(self, server_time: float) -> None:
        """An answer's ``Date`` header, in epoch seconds (received just now)."""
        sample = server_time + 0.5 - self._clock()  # the header drops the fraction
        with self._lock:
            self._dates.append(sample)

    def observe_start(self, newest_start: float) -> None:
        """The newest ``StartTime`` of an answer received just now."""
        sample = newest_start - self._clock()
        with self._lock:
            self._floors.append(sample)

    @property
    def measured(self) -> bool:
        """True when answers carried a ``Date`` (the estimate is good to a second or two)."""
        with self._lock:
            return bool(self._dates)

    def offset(self) -> float | None:
        """The estimated offset in seconds, or None while nothing tells."""
        with self._lock:
            dates = list(self._dates)
            floors = list(self._floors)
        estimate = statistics.median(dates) if dates else None
        bound = (estimate or 0.0) + MAX_CLOCK_SKEW_SECONDS
        floor = max((sample for sample in floors if sample <= bound), default=None)
        if estimate is not None:
            return estimate if floor is None else max(estimate, floor)
        if floor is not None and floor > 0:
            return floor
        return None


class ApiStatistics:
    """Counts every HTTP try of one target's client (thread-safe); ``clock`` (epoch seconds)
    dates the answers for the API clock estimate (:attr:`api_clock`)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.api_clock = ApiClock(clock)
        self._lock = threading.Lock()
        self._code_folder = ValueFolder(("",))
        self._requests: dict[str, int] = {"": 0}
        self._durations = Histogram(API_DURATION_BUCKETS)
        self._rate_limit_wait = 0.0

    def record_request(self, event: RequestEvent) -> None:
        """The client's ``on_request`` hook: one call per HTTP try."""
        with self._lock:
            code = self._code_folder.fold(event.code)
            self._requests[code] = self._requests.get(code, 0) + 1
            self._durations.observe(event.duration_seconds)
            self._rate_limit_wait += event.rate_limit_wait_seconds
        if event.server_time is not None:
            self.api_clock.observe_date(event.server_time)

    def totals(self) -> ApiTotals:
        """A consistent copy of the statistics."""
        with self._lock:
            return ApiTotals(
                tuple(self._requests.items()),
                self._durations.value(),
                self._rate_limit_wait,
                self._code_folder.folded,
            )
