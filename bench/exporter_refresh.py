"""The exporter's side of `make bench`, measured in its own process.

Builds the exporter exactly as ``python -m exporter`` does (``load_config_file`` then
``build_application``) against the simulator given by ``--config``, then measures:

* the cold refresh (the first full walk that records the backlog),
* steady-state refreshes with nothing new (each one what a scrape after ``min_interval`` costs),
* rendering ``/metrics`` from the last refresh (what every scrape pays),

and prints one JSON line of figures. API calls are read from the exporter's own
``api_requests_total`` so they count every HTTP try, retries included.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--steady", type=int, default=5, help="steady-state refreshes to time")
    parser.add_argument("--renders", type=int, default=200, help="/metrics renders to time")
    args = parser.parse_args(argv)

    cpu0, wall0 = _cpu(), time.perf_counter()
    from prometheus_client import generate_latest

    from exporter.app import build_application
    from exporter.settings import load_config_file

    import_cpu, import_wall = _cpu() - cpu0, time.perf_counter() - wall0
    app = build_application(load_config_file(args.config))
    refresher = app.refreshers[0]

    def api_calls() -> int:
        return sum(count for _, count in refresher.latest().api_requests)

    def timed_refresh() -> dict[str, Any]:
        calls0, cpu0, wall0 = api_calls(), _cpu(), time.perf_counter()
        snapshot = refresher.refresh_now()
        return {
            "api_calls": api_calls() - calls0,
            "cpu_seconds": _cpu() - cpu0,
            "wall_seconds": time.perf_counter() - wall0,
            "up": snapshot.up,
            "results_in_view": sum(count for _, count in snapshot.view.by_status),
        }

    cold = timed_refresh()
    steady = [timed_refresh() for _ in range(args.steady)]

    render_ms = []
    for _ in range(args.renders):
        start = time.perf_counter()
        generate_latest(app.registry)
        render_ms.append((time.perf_counter() - start) * 1000)
    render_ms.sort()
    app.close()
    print(
        json.dumps(
            {
                "import_cpu_seconds": import_cpu,
                "import_wall_seconds": import_wall,
                "cold": cold,
                "steady": steady,
                "render_ms_median": statistics.median(render_ms),
                "render_ms_p99": render_ms[int(len(render_ms) * 0.99) - 1],
                "peak_rss_mb": _rss_mb(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
