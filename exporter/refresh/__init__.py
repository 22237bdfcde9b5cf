"""Reading the API for one target, on scrape but never more often than needed.

The parts, each in its own module:

* :mod:`~exporter.refresh.scheduling`: when a refresh runs (single flight, minimum interval,
  throttle back-off, stop);
* :mod:`~exporter.refresh.plan`: what a refresh reads (baseline, fast path, in-flight
  follow-up, look-ups, history, sweep);
* :mod:`~exporter.refresh.apistats`: what the API calls cost (the client's ``on_request``);
* :mod:`~exporter.refresh.refresher`: :class:`TargetRefresher`, which ties them to one
  target's :class:`~exporter.tracking.RunTracker` and hands out :class:`TargetSnapshot`.
"""

from exporter.ecs.errors import FAILURE_REASONS
from exporter.refresh.apistats import API_DURATION_BUCKETS, ApiStatistics, ApiTotals
from exporter.refresh.options import PageSource, RefreshOptions
from exporter.refresh.refresher import TargetRefresher, TargetSnapshot

__all__ = [
    "API_DURATION_BUCKETS",
    "FAILURE_REASONS",
    "ApiStatistics",
    "ApiTotals",
    "PageSource",
    "RefreshOptions",
    "TargetRefresher",
    "TargetSnapshot",
]
