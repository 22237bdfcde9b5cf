"""API calls per hour of one target in a moving world, measured against the simulator.

A seeded simulator world in the ``steady`` profile with ``--results`` results retained runs on a
:class:`~exporter.simulator.world.ManualClock`; one :class:`~exporter.refresh.TargetRefresher`
with the default refresh options reads it over loopback HTTP, one refresh per ``--scrape``
seconds of simulated time (what a Prometheus scrape every minute asks for), for ``--hours`` of
simulated time. The simulator counts the requests it served; each is put down to the step of
the read plan that made it (fast path, in-flight follow-up, look-ups, history, sweep), and the
sweep interval is sampled after every refresh.

Prints one JSON line: calls per hour over the ``--hours`` after the first walk (the baseline,
whose 200 calls are left out), the share of each step, the pages of the costliest refresh, and
what the sweeps found.

Usage: ``python -m bench.calls [--results 10000] [--hours 24] [--scrape 60]``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.ecs.client import EcsClient, RetryPolicy  # noqa: E402
from exporter.ecs.credentials import StaticProvider  # noqa: E402
from exporter.ecs.models import InvocationQuery, Page  # noqa: E402
from exporter.refresh import ApiStatistics, RefreshOptions, TargetRefresher  # noqa: E402
from exporter.refresh.plan import ReadPlan  # noqa: E402
from exporter.simulator.server import SimulatorServer  # noqa: E402
from exporter.simulator.world import PROFILES, ManualClock, World  # noqa: E402

KEY_ID, SECRET = "callsid", "callssecret"


class StepCounter:
    """A page source that puts each page down to the read plan's step that asked for it."""

    def __init__(self, client: EcsClient) -> None:
        self._client = client
        self.plan: ReadPlan | None = None
        self.pages: Counter[str] = Counter()

    def iter_pages(
        self,
        query: InvocationQuery,
        *,
        max_results: int = 50,
        max_pages: int | None = None,
        next_token: str = "",
    ) -> Iterator[Page]:
        step = self.plan.step if self.plan is not None else "?"
        for page in self._client.iter_pages(
            query, max_results=max_results, max_pages=max_pages, next_token=next_token
        ):
            self.pages[step] += 1
            yield page


def measure(results: int, hours: float, scrape: float, seed: int = 13) -> dict[str, Any]:
    clock = ManualClock()
    spec = replace(PROFILES["steady"], backlog=results)
    world = World(seed=seed, clock=clock, spec=spec)
    options = RefreshOptions()
    with (
        SimulatorServer(world, accounts={KEY_ID: SECRET}) as server,
        httpx.Client() as http,
        ThreadPoolExecutor(max_workers=1) as executor,
    ):
        stats = ApiStatistics(clock.now)
        client = EcsClient(
            region_id="cn-hangzhou",
            credentials=StaticProvider(KEY_ID, SECRET),
            http=http,
            endpoint=server.url,
            retry=RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0),
            sleep=lambda _seconds: None,
            rng=random.Random(seed),
            on_request=stats.record_request,
        )
        source = StepCounter(client)
        refresher = TargetRefresher(
            "calls",
            "cn-hangzhou",
            source,
            InvocationQuery(),
            options,
            executor,
            clock=clock.now,
            api_stats=stats,
        )
        source.plan = refresher._plan  # the bench's view into which step reads
        refresher.refresh_now()
        baseline = server.request_count
        source.pages.clear()
        start = clock.now()
        refreshes = 0
        worst = 0
        intervals: list[float] = []
        down = 0
        while clock.now() - start < hours * 3600.0:
            clock.advance(scrape)
            before = server.request_count
            snap = refresher.refresh_now()
            down += not snap.up
            worst = max(worst, server.request_count - before)
            intervals.append(refresher._plan.sweep_interval)
            refreshes += 1
        calls = server.request_count - baseline
        counters = snap.counters
    total_pages = sum(source.pages.values()) or 1
    return {
        "results": results,
        "hours": hours,
        "scrape_seconds": scrape,
        "refreshes": refreshes,
        "failed_refreshes": down,
        "baseline_calls": baseline,
        "calls": calls,
        "calls_per_hour": calls / hours,
        "share_by_step": {k: v / total_pages for k, v in sorted(source.pages.items())},
        "pages_by_step": dict(sorted(source.pages.items())),
        "most_calls_in_one_refresh": worst,
        "sweep_interval_seconds": {"min": min(intervals), "max": max(intervals)},
        "found_by_sweep": counters.found_by_sweep,
        "runs_counted": sum(n for _, n in counters.finished),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=int, default=10_000)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--scrape", type=float, default=60.0, help="seconds between refreshes")
    args = parser.parse_args(argv)
    if args.results < 1 or args.hours <= 0 or args.scrape <= 0:
        parser.error("--results, --hours and --scrape must be positive")
    print(json.dumps(measure(args.results, args.hours, args.scrape)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
