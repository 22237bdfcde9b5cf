"""The API statistics of one target: what every HTTP try cost, and how the API's clock reads.

:class:`ApiStatistics` is created before the target's client, whose ``on_request`` hook is its
:meth:`~ApiStatistics.record_request`: the client threads write, the refresher reads a
consistent :class:`ApiTotals` for each snapshot.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from exporter.ecs.client import RequestEvent
from exporter.metrics import API_DURATION_BUCKETS as API_DURATION_BUCKETS
from exporter.tracking import Histogram, HistogramValue, ValueFolder


@dataclass(frozen=True, slots=True)
class ApiTotals:
    """The request statistics as of one moment."""

    requests: tuple[tuple[str, int], ...]
    """Tries per outcome code ("" for success)."""
    duration: HistogramValue
    rate_limit_wait_seconds: float
    codes_folded: int = 0
    """Distinct outcome codes counted under "other" (see :class:`ValueFolder`)."""


class ApiStatistics:
    """Counts every HTTP try of one target's client (thread-safe)."""

    def __init__(self) -> None:
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

    def totals(self) -> ApiTotals:
        """A consistent copy of the statistics."""
        with self._lock:
            return ApiTotals(
                tuple(self._requests.items()),
                self._durations.value(),
                self._rate_limit_wait,
                self._code_folder.folded,
            )
