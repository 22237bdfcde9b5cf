"""How one target is read: its options and what the refresher needs of the API client."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from exporter.ecs.models import InvocationQuery, Page
from exporter.refresh.sweeps import DEFAULT_SWEEP_BACKOFF
from exporter.tracking import CommandBreakdown


class PageSource(Protocol):
    """What the refresher needs of :class:`exporter.ecs.client.EcsClient`."""

    def iter_pages(
        self,
        query: InvocationQuery,
        *,
        max_results: int = 50,
        max_pages: int | None = None,
        next_token: str = "",
    ) -> Iterator[Page]:
        """Yield the pages of ``query`` from the first one, or from ``next_token``'s (see
        ``EcsClient.iter_pages``)."""
        ...


@dataclass(frozen=True)
class RefreshOptions:
    """How one target is refreshed.

    ``page_cap`` bounds each walk (baseline, fast path, follow-up, each look-up, sweep);
    ``sweep_interval`` 0 turns the periodic sweep off; while sweeps find nothing the interval
    grows up to ``sweep_backoff`` times it (1: a fixed interval; see
    :mod:`exporter.refresh.sweeps`). While spaced out, a sweep reads ``sweep_pages_per_refresh``
    pages per refresh and goes on from its NextToken at the next one (0: all of them at once).
    ``max_lookups`` bounds the ``InvokeId`` look-ups and history reads of one refresh (the rest
    wait for the next one); ``None`` means ``page_cap``.
    """

    min_refresh_interval: float = 30.0
    sweep_interval: float = 600.0
    page_cap: int = 200
    max_results: int = 50
    tracking_cap: int = 50_000
    include_history: bool = False
    command_breakdown: CommandBreakdown = field(default_factory=CommandBreakdown)
    max_lookups: int | None = None
    sweep_backoff: int = DEFAULT_SWEEP_BACKOFF
    sweep_pages_per_refresh: int = 20
