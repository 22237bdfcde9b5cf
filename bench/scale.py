"""`make bench-scale`: one exporter process with 300 targets of 1,000 results (issue 13).

The simulator runs in this process, one world of ``--results`` results per region (the bench
profile); the targets are ``--targets / 10`` accounts (each its own AccessKey, so its own token
bucket) times 10 regions, all at the default rate limits (5 calls/s per account and region) and
the default refresh workers. The exporter is the real ``python -m exporter``; its CPU time and
memory are read from ``/proc``. Measured, each against its goal:

* **ready**: from the start of the process until ``/-/ready`` answers 200 (every target's first
  refresh done; the first scrape then checks that every target is up);
* **steady cycle CPU**: the exporter's CPU over a scrape that refreshes every target with nothing
  new (waiting for the refreshes, then rendering), the median of ``--cycles``;
* **/metrics CPU**: the exporter's CPU for one scrape (OpenMetrics and gzip, as Prometheus asks;
  the figure without gzip is printed too) after
  every target was refreshed and pre-rendered by a refresh the previous scrape started (the
  exporter idle again);
* **peak RSS**: ``VmHWM`` of the exporter at the end.

Usage: ``python bench/scale.py [--targets 300] [--results 1000] [--latency 0.03] [--json FILE]
[--before FILE]``; ``--before`` takes the ``--json`` figures of an earlier run and shows them
beside today's. The exit status is 0 whether the goals are met or not (1 when a measurement
failed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.figures import Target, read_figures, write_figures  # noqa: E402
from bench.measure import memory_mb  # noqa: E402
from bench.process import BenchError, running_exporter, wait_ready  # noqa: E402
from exporter.simulator.faults import FaultPlan  # noqa: E402
from exporter.simulator.server import SimulatorServer  # noqa: E402
from exporter.simulator.world import PROFILES, World  # noqa: E402

REGIONS = (
    "cn-hangzhou",
    "cn-shanghai",
    "cn-beijing",
    "cn-shenzhen",
    "cn-qingdao",
    "cn-zhangjiakou",
    "cn-huhehaote",
    "cn-chengdu",
    "cn-hongkong",
    "ap-southeast-1",
)
READY_TIMEOUT_SECONDS = 600.0
MIN_INTERVAL_SECONDS = 3.0  # a cycle every few seconds instead of the default 30
PREFIX = "aliyun_cloudassistant_"
PROMETHEUS_ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"

READY = Target("all targets ready (default rate limits and workers)", 60.0, "s", strict=False)
CYCLE_CPU = Target("steady cycle CPU (every target, nothing new)", 0.3, "s", strict=False)
METRICS_CPU = Target("/metrics CPU after pre-rendered refreshes (gzip)", 50.0, "ms", strict=False)
PEAK_RSS = Target("peak RSS (VmHWM)", 200.0, "MB", strict=False)
PER_RESULT = Target("RSS per tracked result (beyond an empty fleet)", 400.0, "B", strict=False)
SERIES = Target("series per target", 200.0, "", strict=False)
GOALS = (READY, CYCLE_CPU, METRICS_CPU, PEAK_RSS, PER_RESULT, SERIES)


def process_cpu_seconds(pid: int) -> float:
    """CPU time of process ``pid``: the sum of its live threads' ``schedstat`` (nanoseconds;
    ``/proc/PID/stat`` counts in 10 ms ticks, too coarse for one scrape)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text(encoding="ascii").split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
    return total / 1e9


def process_cpu_seconds_total(pid: int) -> float:
    """CPU time of process ``pid`` since it started, ended threads included (10 ms ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _get(url: str, headers: dict[str, str] | None = None) -> bytes:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=120) as answer:
        body: bytes = answer.read()
        return body


def _scrape(base: str, *, wait: bool = True, gzip: bool = False) -> str:
    """A scrape in OpenMetrics (``gzip``: compressed, as Prometheus asks; the text is then
    not returned); ``wait=False``: it starts due refreshes but does not wait for them."""
    headers = {"Accept": PROMETHEUS_ACCEPT}
    if not wait:
        headers["X-Prometheus-Scrape-Timeout-Seconds"] = "0.01"
    if gzip:
        headers["Accept-Encoding"] = "gzip"
    body = _get(base + "/metrics", headers)
    return "" if gzip else body.decode("utf-8")


def _per_target(body: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of a per-target family without further labels."""
    found = {}
    for line in body.splitlines():
        if line.startswith(PREFIX + name + "{"):
            labels, _, value = line.rpartition(" ")
            found[labels] = float(value)
    return found


def _series_per_target(body: str) -> int:
    """The most series any one target has (sample lines with its target labels; OpenMetrics
    ``_created`` lines are not asked for, so none are counted)."""
    counts: dict[str, int] = {}
    for line in body.splitlines():
        if line.startswith("#") or 'account="' not in line:
            continue
        start = line.index('account="')
        end = line.index('"', line.index('region_id="', start) + len('region_id="'))
        key = line[start:end]
        counts[key] = counts.get(key, 0) + 1
    return max(counts.values(), default=0)


def _wait_quiet(pid: int, timeout: float = 120.0) -> None:
    """Wait until process ``pid`` has been (nearly) idle for half a second: the refreshes a
    scrape started are done, and pre-rendered."""
    deadline = time.monotonic() + timeout
    last = process_cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = process_cpu_seconds(pid)
        if now - last < 0.01:
            return
        last = now
    raise BenchError(f"the exporter was still busy {timeout:g} s after a scrape")


def _check_refreshed(earlier: str, later: str, what: str) -> None:
    before = _per_target(earlier, "refreshes_total")
    behind = sum(
        1 for key, value in _per_target(later, "refreshes_total").items() if value <= before[key]
    )
    if behind:
        raise BenchError(f"{behind} targets not refreshed by {what}")


def _config(path: Path, url: str, accounts: int, regions: tuple[str, ...]) -> None:
    lines = ["targets:"]
    for n in range(accounts):
        lines += [
            f"  - name: acct{n}",
            f"    region_ids: [{', '.join(regions)}]",
            f"    endpoint: {url}",
            "    credentials:",
            "      source: static",
            f"      access_key_id: benchkey{n}",
            f"      access_key_secret: benchsecret{n}",
        ]
    lines += ["refresh:", f"  min_interval_seconds: {MIN_INTERVAL_SECONDS:g}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _measure_process(config: Path, targets: int, cycles: int, log: Path) -> dict[str, Any]:
    # A fresh state directory of its own (the default, ``data/`` in the checkout, would restore
    # what an earlier run saved): the state's cost is part of every figure, as for a user.
    state = log.parent / "state"
    with running_exporter(config, log, f"--storage.path={state}") as (proc, base):
        ready = wait_ready(proc, base, log, timeout=READY_TIMEOUT_SECONDS, poll=0.2)
        cpu_to_ready = process_cpu_seconds_total(proc.pid)
        rss_at_ready = memory_mb(proc.pid)["VmRSS"]
        body = _scrape(base)
        up = _per_target(body, "up")
        if len(up) != targets or not all(up.values()):
            down = sum(1 for value in up.values() if not value)
            raise BenchError(f"{len(up)} targets exported, {down} of them down")
        cycle_cpu, metrics_cpu, gzip_cpu = [], [], []
        for _ in range(cycles):
            time.sleep(MIN_INTERVAL_SECONDS + 0.2)  # every target due again
            before = process_cpu_seconds(proc.pid)
            latest = _scrape(base)  # starts every refresh, waits for them, renders
            cycle_cpu.append(process_cpu_seconds(proc.pid) - before)
            _check_refreshed(body, latest, "a cycle's scrape")
            # /metrics alone: refreshes started by a scrape that does not wait, finished and
            # pre-rendered by the time of the next scrape.
            time.sleep(MIN_INTERVAL_SECONDS + 0.2)
            _scrape(base, wait=False)
            _wait_quiet(proc.pid)
            before = process_cpu_seconds(proc.pid)
            _scrape(base, gzip=True)  # as Prometheus asks: rendered and compressed
            gzip_cpu.append(process_cpu_seconds(proc.pid) - before)
            # The same without gzip, after another round of refreshes (the exposition of data
            # that did not change is reused, so it must be new data again).
            time.sleep(MIN_INTERVAL_SECONDS + 0.2)
            _scrape(base, wait=False)
            _wait_quiet(proc.pid)
            before = process_cpu_seconds(proc.pid)
            body = _scrape(base)
            metrics_cpu.append(process_cpu_seconds(proc.pid) - before)
            _check_refreshed(latest, body, "the refreshes before a scrape")
        memory = memory_mb(proc.pid)
        tracked = sum(_per_target(body, "tracked_runs").values())
    return {
        "tracked_results": tracked,
        "ready_seconds": ready,
        "cpu_seconds_to_ready": cpu_to_ready,
        "rss_at_ready_mb": rss_at_ready,
        "cycle_cpu_seconds": cycle_cpu,
        "metrics_cpu_ms": [cpu * 1000 for cpu in metrics_cpu],
        "metrics_gzip_cpu_ms": [cpu * 1000 for cpu in gzip_cpu],
        "peak_rss_mb": memory["VmHWM"],
        "rss_mb": memory["VmRSS"],
        "rss_anon_mb": memory["RssAnon"],
        "series": len(body.splitlines()),
        "series_per_target": _series_per_target(body),
        "body_mb": len(body) / 1e6,
    }


def _empty_fleet_rss(targets: int, latency: float) -> float:
    """VmRSS (MB) of the exporter with the same targets and no results, once every target was
    refreshed and scraped: what the fleet costs before it tracks anything."""
    accounts, regions, worlds, keys = _fleet(targets, 0)
    with (
        SimulatorServer(worlds, accounts=keys, faults=FaultPlan(latency=latency)) as sim,
        tempfile.TemporaryDirectory() as tmp,
    ):
        config = Path(tmp) / "config.yml"
        _config(config, sim.url, accounts, regions)
        log = Path(tmp) / "exporter.log"
        with running_exporter(config, log, f"--storage.path={Path(tmp) / 'state'}") as (
            proc,
            base,
        ):
            wait_ready(proc, base, log, timeout=READY_TIMEOUT_SECONDS, poll=0.2)
            _scrape(base)
            _wait_quiet(proc.pid)
            return memory_mb(proc.pid)["VmRSS"]


def _fleet(
    targets: int, results: int
) -> tuple[int, tuple[str, ...], dict[str, World], dict[str, str]]:
    """Accounts, regions, a world of ``results`` results per region and the accounts' keys."""
    regions = REGIONS[: min(len(REGIONS), targets)]
    if targets % len(regions):
        raise BenchError(f"--targets must be a multiple of {len(regions)}")
    accounts = targets // len(regions)
    spec = PROFILES["bench"]
    worlds = {
        region: World(seed=n, spec=type(spec)(**{**spec.__dict__, "backlog": results}))
        for n, region in enumerate(regions)
    }
    keys = {f"benchkey{n}": f"benchsecret{n}" for n in range(accounts)}
    return accounts, regions, worlds, keys


def measure(targets: int, results: int, latency: float, cycles: int) -> dict[str, Any]:
    accounts, regions, worlds, keys = _fleet(targets, results)
    with (
        SimulatorServer(worlds, accounts=keys, faults=FaultPlan(latency=latency)) as sim,
        tempfile.TemporaryDirectory() as tmp,
    ):
        config = Path(tmp) / "config.yml"
        _config(config, sim.url, accounts, regions)
        print(
            f"simulator: {sim.url}; {targets} targets ({accounts} accounts x {len(regions)} "
            f"regions) of {results} results, {latency * 1000:.0f} ms per API answer...",
            flush=True,
        )
        started = time.monotonic()
        figures = _measure_process(config, targets, cycles, Path(tmp) / "exporter.log")
        figures["api_calls"] = sim.request_count
    figures["empty_fleet_rss_mb"] = _empty_fleet_rss(targets, latency)
    figures["bench_seconds"] = time.monotonic() - started
    figures.update(
        targets=targets,
        results_per_target=results,
        latency_seconds=latency,
        load_average=os.getloadavg()[0],
        cpus=os.cpu_count() or 1,
    )
    return figures


def goal_figures(f: dict[str, Any]) -> dict[str, float]:
    """The figure judged for each goal, by label."""
    return {
        READY.label: f["ready_seconds"],
        CYCLE_CPU.label: statistics.median(f["cycle_cpu_seconds"]),
        METRICS_CPU.label: statistics.median(
            f.get("metrics_gzip_cpu_ms") or f["metrics_cpu_ms"]  # older figures: no gzip
        ),
        PEAK_RSS.label: f["peak_rss_mb"],
        **(
            {PER_RESULT.label: _bytes_per_result(f)}
            if f.get("tracked_results") and "empty_fleet_rss_mb" in f
            else {}
        ),
        SERIES.label: f["series_per_target"]
        if "series_per_target" in f
        else f["series"] / f["targets"],
    }


def _bytes_per_result(f: dict[str, Any]) -> float:
    """RSS beyond the empty fleet's, per tracked result, at the end of the run."""
    return float((f["rss_mb"] - f["empty_fleet_rss_mb"]) * 2**20 / f["tracked_results"])


def report(f: dict[str, Any], before: dict[str, Any] | None) -> None:
    print()
    print(
        f"{f['targets']} targets x {f['results_per_target']} results in one process: "
        f"{f['series']} lines of /metrics ({f['body_mb']:.1f} MB); {f['api_calls']} API calls; "
        f"CPU until ready {f['cpu_seconds_to_ready']:.1f} s; RSS at ready "
        f"{f['rss_at_ready_mb']:.0f} MB, at the end {f['rss_mb']:.0f} MB (anonymous "
        f"{f['rss_anon_mb']:.0f})"
    )
    if "empty_fleet_rss_mb" in f:
        print(
            f"{f['tracked_results']:.0f} tracked results; the same targets with no results: "
            f"{f['empty_fleet_rss_mb']:.0f} MB RSS"
        )
    cycles = ", ".join(f"{c:.3f}" for c in f["cycle_cpu_seconds"])
    scrapes = ", ".join(f"{c:.1f}" for c in f["metrics_cpu_ms"])
    gzipped = ", ".join(f"{c:.1f}" for c in f["metrics_gzip_cpu_ms"])
    print(
        f"steady cycles, CPU s: {cycles}; /metrics, CPU ms: {scrapes} "
        f"(plain text), {gzipped} (gzip)"
    )
    print()
    earlier = goal_figures(before) if before else {}
    for goal, value in goal_figures(f).items():
        target = next(t for t in GOALS if t.label == goal)
        sign = "<" if target.strict else "<="
        limit = f"{sign} {target.limit:g} {target.unit}"
        verdict = "met" if target.met(value) else "NOT met"
        was = earlier.get(goal)
        note = f"  (before: {was:.3f})" if was is not None else ""
        print(f"  {goal:55} {limit:>10}: {value:9.3f}  {verdict}{note}")
    busy = " (busy: CPU figures vary from run to run)" if f["load_average"] > f["cpus"] else ""
    print(
        f"bench took {f['bench_seconds']:.0f} s; load average {f['load_average']:.1f} on "
        f"{f['cpus']} CPUs{busy}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=300)
    parser.add_argument("--results", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.03, help="seconds per API answer")
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--before", type=Path, help="--json figures of an earlier run to show")
    args = parser.parse_args(argv)
    if args.targets < 1 or args.results < 1 or args.latency < 0 or args.cycles < 1:
        parser.error("--targets, --results and --cycles must be at least 1, --latency >= 0")
    try:
        before = read_figures(args.before)
        figures = measure(args.targets, args.results, args.latency, args.cycles)
    except BenchError as exc:
        print(f"bench-scale: {exc}", file=sys.stderr)
        return 1
    report(figures, before)
    write_figures(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
