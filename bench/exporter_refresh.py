"""The exporter's side of `make bench`, measured in its own process.

Builds the exporter exactly as ``python -m exporter`` does (``load_config_file`` then
``build_application``) against the simulator given by ``--config``, then measures:

* the cold refresh (the first full walk that records the backlog), ``--cold`` times, each on a
  freshly built application (the machine is shared: the median of a few is steadier than one),
  after ``--warmup`` cold refreshes that are not measured (``bench.sdk_poller`` discards its
  first walk the same way); the garbage of earlier walks is collected before each one, so none
  pays for another's,
* steady-state refreshes with nothing new (each one what a scrape after ``min_interval`` costs),
* rendering ``/metrics`` from the last refresh (what every scrape pays),

and prints one JSON line of figures. API calls are read from the exporter's own
``api_requests_total`` so they count every HTTP try, retries included.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.measure import cpu_seconds, memory_mb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--cold", type=int, default=1, help="cold refreshes, each on a new app")
    parser.add_argument("--warmup", type=int, default=0, help="cold refreshes not measured first")
    parser.add_argument("--steady", type=int, default=5, help="steady-state refreshes to time")
    parser.add_argument("--renders", type=int, default=200, help="/metrics renders to time")
    args = parser.parse_args(argv)

    cpu0, wall0 = cpu_seconds(), time.perf_counter()

    from exporter.app import Application, build_application
    from exporter.settings import load_config_file

    import_cpu, import_wall = cpu_seconds() - cpu0, time.perf_counter() - wall0
    import_memory = memory_mb()
    settings = load_config_file(args.config)

    def timed_refresh(app: Application) -> dict[str, Any]:
        refresher = app.refreshers[0]
        calls0 = sum(count for _, count in refresher.latest().api_requests)
        gc.collect()
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        snapshot = refresher.refresh_now()
        cpu, wall = cpu_seconds() - cpu0, time.perf_counter() - wall0
        return {
            "api_calls": sum(count for _, count in snapshot.api_requests) - calls0,
            "cpu_seconds": cpu,
            "wall_seconds": wall,
            "up": snapshot.up,
            "results_in_view": sum(count for _, count in snapshot.view.by_status),
        }

    for _ in range(args.warmup):
        app = build_application(settings)
        timed_refresh(app)
        app.close()
    colds = []
    for _ in range(max(1, args.cold) - 1):
        app = build_application(settings)
        colds.append(timed_refresh(app))
        app.close()
    app = build_application(settings)
    colds.append(timed_refresh(app))
    memory_after_cold = memory_mb()
    steady = [timed_refresh(app) for _ in range(args.steady)]

    render_ms = []
    exposition = app.exposition
    assert exposition is not None
    for _ in range(args.renders):
        start = time.perf_counter()
        exposition.render("")  # what the server sends for /metrics
        render_ms.append((time.perf_counter() - start) * 1000)
    render_ms.sort()
    app.close()
    cold = dict(colds[-1])
    cold["cpu_seconds"] = statistics.median(c["cpu_seconds"] for c in colds)
    cold["wall_seconds"] = statistics.median(c["wall_seconds"] for c in colds)
    cold["cpu_seconds_each"] = [c["cpu_seconds"] for c in colds]
    print(
        json.dumps(
            {
                "import_cpu_seconds": import_cpu,
                "import_wall_seconds": import_wall,
                "import_rss_mb": import_memory["VmRSS"],
                "cold": cold,
                "steady": steady,
                "render_ms_median": statistics.median(render_ms) if render_ms else None,
                "render_ms_p99": render_ms[max(0, int(len(render_ms) * 0.99) - 1)]
                if render_ms
                else None,
                "rss_after_cold_mb": memory_after_cold["VmRSS"],
                "peak_rss_mb": memory_mb()["VmHWM"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
