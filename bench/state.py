"""The state directory's costs (``--storage.path``), in a process of its own.

A target's tracker with ``--results`` results and as many remembered history runs (the tracking
state of a ``refresh.tracking_cap`` of twice that) is saved once (the first save after a
baseline: everything), then a steady refresh with nothing new is exported and saved (it must
write nothing), then the state is restored into a fresh tracker, as at a restart.
Prints one JSON line: ``save_all_seconds``, ``steady_rows``, ``steady_seconds``,
``restore_seconds``, ``tracked``, ``database_mb``, ``restore_peak_rss_mb``.

Usage: ``python -m bench.state [--results 25000]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measure import memory_mb  # noqa: E402
from exporter.ecs.models import InvocationResult  # noqa: E402
from exporter.state import StateStore  # noqa: E402
from exporter.tracking import RunTracker  # noqa: E402


def _record(n: int, at: float) -> InvocationResult:
    return InvocationResult.of(
        f"t-{n:08d}", f"i-{n % 500:05d}", "", "c-1", "Success", "Finished", "", 0,
        at - 5, at, None, 1, 0, "", "", (),
    )  # fmt: skip


def _history_run(n: int, at: float) -> InvocationResult:
    return InvocationResult.of(
        f"t-p{n % 100:04d}", f"i-{n % 500:05d}", "", "c-2", "Success", "Finished", "", 0,
        at - 5, at, None, n // 100 + 1, 0, "", "", (),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=int, default=25_000)
    args = parser.parse_args(argv)
    now = time.time() - 86400
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory)
        store = StateStore(path)
        target = store.target("bench", "bench/cn-hangzhou")
        cap = 10 * args.results  # nothing dropped by the cap: a steady refresh
        tracker = RunTracker(include_history=True, tracking_cap=cap)
        tracker.complete_baseline(at=now)
        for n in range(args.results):
            tracker.observe(_record(n, now + n * 0.01), now=now + n * 0.01)
            tracker.observe_history_run(_history_run(n, now + n * 0.01), now=now + n * 0.01)
        started = time.perf_counter()
        changes = tracker.export_changes()
        target.save(changes)
        tracker.changes_saved(changes)
        save_all = time.perf_counter() - started
        # A steady refresh: the newest page again, nothing new.
        for n in range(max(0, args.results - 50), args.results):
            tracker.observe(_record(n, now + n * 0.01), now=now + args.results)
        tracker.expire(now + args.results)
        started = time.perf_counter()
        changes = tracker.export_changes()
        target.save(changes)
        tracker.changes_saved(changes)
        steady = time.perf_counter() - started
        store.close()
        size = sum(f.stat().st_size for f in path.iterdir()) / 1e6

        store = StateStore(path)
        fresh = RunTracker(include_history=True, tracking_cap=cap)
        started = time.perf_counter()
        store.target("bench", "bench/cn-hangzhou").restore_into(fresh)
        restore = time.perf_counter() - started
        store.close()
    print(
        json.dumps(
            {
                "tracked": len(fresh),
                "save_all_seconds": save_all,
                "steady_rows": len(changes.rows) + (changes.summary is not None),
                "steady_seconds": steady,
                "restore_seconds": restore,
                "database_mb": size,
                "restore_peak_rss_mb": memory_mb()["VmHWM"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
