"""`make bench`: this exporter against a naive official-SDK poller, side by side in one run.

The simulator runs in this process (a bench profile: a static backlog of 10,000 results across
500 instances, with a fixed latency per page); everything measured runs in its own child process,
so its CPU time, imports and memory are its own:

1. ``bench.sdk_poller``: Alibaba's official SDK paging everything, as a naive exporter would on
   every scrape;
2. ``bench.exporter_refresh``: this exporter, wired as in production, for cold refreshes,
   steady-state refreshes with nothing new and ``/metrics`` rendering;
3. ``bench.import_floor``: the memory of the mandated libraries alone, of one TLS-ready
   ``httpx.Client`` and of every module the exporter imports;
4. the real exporter process (``python -m exporter``): peak RSS and ``/metrics`` latency over HTTP;
5. ``bench.calls``: API calls per hour of a 10,000-result target in the simulator's steady
   profile with the default refresh options, 24 hours of simulated time on a manual clock.

Two phases: CPU is measured without simulated latency (on a VM, every wait for an answer leaves
the caches cold and inflates the CPU time of whatever runs next, for both contenders); wall time
with ``--latency`` seconds per API answer. The report ends with the performance targets, each
``met`` or ``NOT met``; the exit status is 0 either way (1 only when a measurement failed).

The cold walk is also judged against the official SDK in the same run (issue 13: at most 0.75 of
its CPU). Both sides are measured the same way: ``COLD_ROUNDS`` rounds, each a child process per
side one after the other (which side goes first alternates), each child one walk not measured
(warm-up) then ``COLD_WALKS`` measured walks (ours each on a freshly built application), the
garbage of earlier walks collected before each, the median taken. A round's ratio compares two
medians measured seconds apart, so the load of a busy 2-core machine weighs on both; the report
gives the median of the rounds' ratios and their range.

``--before FILE`` takes the ``--json`` figures of an earlier run (the landed version before a
change) and prints each target's figure from it beside today's, so a gain is visible.

Usage: ``python bench/run.py [--results 10000] [--latency 0.03] [--json FILE] [--before FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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

KEY_ID, SECRET, REGION = "benchid", "benchsecret", "cn-hangzhou"
CHILD_TIMEOUT_SECONDS = 300.0
READY_TIMEOUT_SECONDS = 120.0
COLD_ROUNDS = 5  # rounds of the cold-walk comparison; the median ratio is judged
COLD_WALKS = 3  # measured walks of each side in a round (after one warm-up); their median counts
SCRAPES = 200  # /metrics requests to the running exporter; the median is judged


COLD_CPU = Target("cold walk CPU (no latency, median)", 0.25, "s")
PROCESS_RSS = Target("exporter process peak RSS (VmHWM)", 40.0, "MB")
METRICS_LATENCY = Target("/metrics over HTTP from the last refresh, median", 10.0, "ms")
STEADY_CALLS = Target("API calls of a refresh with nothing new", 2, "", strict=False)
COLD_VS_SDK = Target("cold walk CPU / the official SDK's (same run)", 0.75, "x", strict=False)
CALLS_PER_HOUR = Target("API calls per hour, steady 10k target (24 h)", 250, "", strict=False)
CALLS_PER_HOUR_BEFORE = 1679.0
"""The landed version before issue 13, measured the same way (``bench.calls``): its --before
JSON files predate the measurement."""


def _child(args: list[str], *, required: bool = True) -> dict[str, Any] | None:
    """Run a bench script in its own process; its last stdout line is a JSON object."""
    try:
        done = subprocess.run(
            [sys.executable, *args],
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
            timeout=CHILD_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        problem = f"{args[1]} took longer than {CHILD_TIMEOUT_SECONDS:g} s"
    else:
        lines = done.stdout.strip().splitlines()
        if done.returncode == 0 and lines:
            try:
                result: dict[str, Any] = json.loads(lines[-1])
                return result
            except ValueError:
                pass
        problem = f"{args[1]} failed (exit {done.returncode}):\n{done.stderr[-2000:]}"
    if required:
        raise BenchError(problem)
    print(f"bench: skipped: {problem}", file=sys.stderr, flush=True)
    return None


def _config(path: Path, url: str) -> None:
    path.write_text(
        "targets:\n"
        "  - name: bench\n"
        f"    region_id: {REGION}\n"
        f"    endpoint: {url}\n"
        "    credentials:\n"
        "      source: static\n"
        f"      access_key_id: {KEY_ID}\n"
        f"      access_key_secret: {SECRET}\n"
        "refresh:\n"
        "  min_interval_seconds: 1\n"
        "  sweep_interval_seconds: 0\n"
        "  page_cap: 400\n"
        "api:\n"
        "  rate_limit_per_second: 1000\n"
        "  rate_limit_burst: 1000\n",
        encoding="utf-8",
    )


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as answer:
        body: bytes = answer.read()
        return body


def _exporter_process(config: Path, scrapes: int, log: Path) -> dict[str, Any]:
    # Persistence on, as by default, in a directory of its own (a cold start).
    with running_exporter(config, log, f"--storage.path={log.parent / 'state'}") as (proc, base):
        ready_seconds = wait_ready(proc, base, log, timeout=READY_TIMEOUT_SECONDS, poll=0.05)
        after_ready = memory_mb(proc.pid)
        latencies = []
        for _ in range(scrapes):
            start = time.perf_counter()
            _get(base + "/metrics")
            latencies.append((time.perf_counter() - start) * 1000)
        after_scrapes = memory_mb(proc.pid)
    latencies.sort()
    return {
        "ready_seconds": ready_seconds,
        "scrape_ms_median": statistics.median(latencies),
        "scrape_ms_p99": latencies[max(0, int(len(latencies) * 0.99) - 1)],
        "peak_rss_mb": after_scrapes["VmHWM"],
        "rss_after_ready_mb": after_ready["VmRSS"],
        "rss_mb": after_scrapes["VmRSS"],
        "rss_anon_mb": after_scrapes["RssAnon"],
        "rss_file_mb": after_scrapes["RssFile"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.03, help="seconds per API answer")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--before", type=Path, help="--json figures of an earlier run to show")
    args = parser.parse_args(argv)
    if args.results < 1 or args.latency < 0:
        parser.error("--results must be at least 1 and --latency at least 0")
    started = time.monotonic()
    try:
        before = read_figures(args.before)
        figures = _measure(args.results, args.latency)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    figures["bench_seconds"] = time.monotonic() - started
    _report(figures, before)
    write_figures(args.json, figures)
    return 0


def _measure(results: int, latency: float) -> dict[str, Any]:
    spec = PROFILES["bench"]
    world = World(seed=7, spec=type(spec)(**{**spec.__dict__, "backlog": results}))
    faults = FaultPlan(latency=0.0)
    with (
        SimulatorServer(world, accounts={KEY_ID: SECRET}, faults=faults) as sim,
        tempfile.TemporaryDirectory() as tmp,
    ):
        config = Path(tmp) / "config.yml"
        _config(config, sim.url)
        sdk_args = [
            "-m",
            "bench.sdk_poller",
            "--endpoint",
            sim.endpoint,
            "--access-key-id",
            KEY_ID,
            "--access-key-secret",
            SECRET,
            "--region",
            REGION,
        ]
        ours_args = ["-m", "bench.exporter_refresh", "--config", str(config)]
        print(f"simulator: {sim.url}, {results} results; CPU phase (no latency)...", flush=True)
        rounds = _cold_rounds(
            [*sdk_args, "--walks", str(COLD_WALKS + 1)],  # the first walk warms up
            [*ours_args, "--warmup", "1", "--cold", str(COLD_WALKS)],
        )
        cpu = {
            "sdk_poller": rounds[0]["sdk_poller"],
            "exporter": rounds[0]["exporter"],
            "cold_rounds": [_round_figures(r) for r in rounds],
            "import_floor": _child(["-m", "bench.import_floor"]),
            "state": _child(["-m", "bench.state", "--results", str(results)], required=False),
        }
        faults.latency = latency
        print(f"wall-time phase ({latency * 1000:.0f} ms per API answer)...", flush=True)
        wall = {
            "sdk_poller": _child([*sdk_args, "--walks", "2"], required=False),
            "exporter": _child(ours_args),
            "exporter_process": _exporter_process(config, SCRAPES, Path(tmp) / "exporter.log"),
        }
    print("API calls per hour: 24 h of a moving world on a manual clock...", flush=True)
    calls = _child(["-m", "bench.calls", "--results", str(results)])
    return {
        "calls": calls,
        "cpu_phase": cpu,
        "wall_phase": wall,
        "results": results,
        "latency_seconds": latency,
        "load_average": os.getloadavg()[0],
        "cpus": os.cpu_count() or 1,
    }


def _cold_rounds(sdk_args: list[str], ours_args: list[str]) -> list[dict[str, Any]]:
    """The cold-walk comparison: ``COLD_ROUNDS`` rounds of both sides (see the docstring).

    The first round's exporter child also measures steady refreshes and rendering.
    """
    rounds: list[dict[str, Any]] = []
    for index in range(COLD_ROUNDS):
        extra = [] if index == 0 else ["--steady", "0", "--renders", "0"]
        print(f"  cold walks, round {index + 1} of {COLD_ROUNDS}...", flush=True)
        if index % 2 == 0:
            sdk = _child(sdk_args, required=False)
            ours = _child([*ours_args, *extra])
        else:
            ours = _child([*ours_args, *extra])
            sdk = _child(sdk_args, required=False)
        rounds.append({"sdk_poller": sdk, "exporter": ours})
    return rounds


def _round_figures(run: dict[str, Any]) -> dict[str, float | None]:
    """One round of the comparison: each side's median cold-walk CPU and their ratio."""
    sdk = _median_walk(run["sdk_poller"])
    ours = float(run["exporter"]["cold"]["cpu_seconds"])
    theirs = None if sdk is None else float(sdk["cpu_seconds"])
    return {"sdk": theirs, "exporter": ours, "ratio": None if theirs is None else ours / theirs}


def _steady(ours: dict[str, Any], key: str) -> float:
    return float(statistics.median(s[key] for s in ours["steady"]))


def _median_walk(run: dict[str, Any] | None) -> dict[str, Any] | None:
    """The SDK's walks after the first (warm-up), each figure their median."""
    if run is None:
        return None
    walks = run["walks"][1:] or run["walks"]
    return {key: statistics.median(w[key] for w in walks) for key in walks[0]}


def _target_figures(f: dict[str, Any]) -> list[tuple[Target, float | None, str]]:
    """Each target with its figure in the run ``f`` (None when it was not measured)."""
    cpu, proc = f["cpu_phase"], f["wall_phase"]["exporter_process"]
    calls = f.get("calls")
    ours = cpu["exporter"]
    rounds = cpu.get("cold_rounds")
    if rounds:
        colds = [r["exporter"] for r in rounds]
        cold = statistics.median(colds)
        theirs = [r["sdk"] for r in rounds if r["sdk"] is not None]
        ratios = [r["ratio"] for r in rounds if r["ratio"] is not None]
    else:  # the figures of a version before the rounds: one child per side
        colds = ours["cold"]["cpu_seconds_each"]
        cold = ours["cold"]["cpu_seconds"]
        sdk = _median_walk(cpu["sdk_poller"])
        theirs = [sdk["cpu_seconds"]] if sdk else []
        ratios = [cold / sdk["cpu_seconds"]] if sdk else []
    ratio = statistics.median(ratios) if ratios else None
    sdk_note = (
        f"{min(ratios):.2f}-{max(ratios):.2f} over {len(ratios)} rounds; official SDK "
        f"{statistics.median(theirs):.3f} s"
        if ratios
        else "the SDK did not run"
    )
    return [
        (COLD_CPU, cold, f"min {min(colds):.3f}, max {max(colds):.3f}"),
        (COLD_VS_SDK, ratio, sdk_note),
        (PROCESS_RSS, proc["peak_rss_mb"], f"anonymous {proc['rss_anon_mb']:.1f}"),
        (METRICS_LATENCY, proc["scrape_ms_median"], f"p99 {proc['scrape_ms_p99']:.2f}"),
        (STEADY_CALLS, float(max(s["api_calls"] for s in ours["steady"])), ""),
        (CALLS_PER_HOUR, calls["calls_per_hour"] if calls else None, _calls_note(calls)),
    ]


def _calls_note(calls: dict[str, Any] | None) -> str:
    if not calls:
        return ""
    shares = ", ".join(f"{step} {share:.0%}" for step, share in calls["share_by_step"].items())
    interval = calls["sweep_interval_seconds"]
    return (
        f"{shares}; sweep interval {interval['min']:g}-{interval['max']:g} s; "
        f"found by sweeps {calls['found_by_sweep']}"
    )


def _report(f: dict[str, Any], before: dict[str, Any] | None = None) -> None:
    cpu, wall = f["cpu_phase"], f["wall_phase"]
    ours_cpu, ours_wall, proc = cpu["exporter"], wall["exporter"], wall["exporter_process"]
    sdk_cpu_run, sdk_wall_run = cpu["sdk_poller"], wall["sdk_poller"]
    sdk_cpu = _median_walk(sdk_cpu_run)
    sdk_wall = _median_walk(sdk_wall_run)

    def sdk(run: dict[str, Any] | None, key: str) -> float | None:
        return None if run is None else float(run[key])

    latency_ms = f["latency_seconds"] * 1000
    steady_calls = max(s["api_calls"] for s in ours_cpu["steady"])
    # The cold walks: the median over the rounds of the comparison (see the module docstring).
    rounds = cpu["cold_rounds"]
    sdk_colds = [r["sdk"] for r in rounds if r["sdk"] is not None]
    cold_sdk = statistics.median(sdk_colds) if sdk_colds else None
    cold_ours = statistics.median(r["exporter"] for r in rounds)
    rows: list[tuple[str, float | None, float]] = [
        ("imports: CPU s", sdk(sdk_cpu_run, "import_cpu_seconds"), ours_cpu["import_cpu_seconds"]),
        ("cold walk: API calls", sdk(sdk_cpu, "api_calls"), ours_cpu["cold"]["api_calls"]),
        (
            f"cold walk: CPU s (no latency, {len(rounds)} rounds)",
            cold_sdk,
            cold_ours,
        ),
        (
            f"cold walk: wall s ({latency_ms:.0f} ms/answer)",
            sdk(sdk_wall, "wall_seconds"),
            ours_wall["cold"]["wall_seconds"],
        ),
        ("refresh with nothing new: API calls", sdk(sdk_cpu, "api_calls"), steady_calls),
        (
            "refresh with nothing new: CPU s (no latency)",
            sdk(sdk_cpu, "cpu_seconds"),
            _steady(ours_cpu, "cpu_seconds"),
        ),
        (
            f"refresh with nothing new: wall s ({latency_ms:.0f} ms/answer)",
            sdk(sdk_wall, "wall_seconds"),
            _steady(ours_wall, "wall_seconds"),
        ),
        ("peak RSS MB, whole process", sdk(sdk_wall_run, "peak_rss_mb"), proc["peak_rss_mb"]),
    ]
    print()
    print(
        f"{f['results']} results, 50 per page. The official SDK poller re-walks everything on "
        "every scrape."
    )
    print(f"{'':50} {'official SDK':>13} {'this exporter':>14} {'ratio':>8}")
    for label, theirs, mine in rows:
        theirs_text = "-" if theirs is None else f"{theirs:.3f}"
        ratio = f"{theirs / mine:7.1f}x" if theirs is not None and mine else "      -"
        print(f"{label:50} {theirs_text:>13} {mine:14.3f} {ratio}")
    print()
    seen = "-" if sdk_cpu is None else sdk_cpu["results"]
    print(
        f"results in view after the cold walk: {ours_cpu['cold']['results_in_view']} "
        f"(the SDK walk saw {seen})"
    )
    print(
        f"/metrics rendered from the last refresh: median {ours_cpu['render_ms_median']:.2f} ms,"
        f" p99 {ours_cpu['render_ms_p99']:.2f} ms in-process; over HTTP from the running "
        f"exporter: median {proc['scrape_ms_median']:.2f} ms, p99 {proc['scrape_ms_p99']:.2f} ms"
    )
    floor = cpu["import_floor"]
    state = cpu.get("state")
    if state:
        print(
            f"state directory ({state['tracked']} tracked entries): first save "
            f"{state['save_all_seconds']:.2f} s, a steady refresh writes "
            f"{state['steady_rows']} rows ({state['steady_seconds'] * 1000:.1f} ms), restore at "
            f"start {state['restore_seconds']:.2f} s, database {state['database_mb']:.1f} MB"
        )
    print(
        f"exporter process memory, MB: peak {proc['peak_rss_mb']:.1f}, now "
        f"{proc['rss_mb']:.1f} (anonymous {proc['rss_anon_mb']:.1f} + shared libraries and "
        f"files {proc['rss_file_mb']:.1f}); ready after {proc['ready_seconds']:.2f} s"
    )
    print(
        f"where it goes, MB: interpreter {floor['interpreter']:.1f}; + mandated libraries "
        f"(httpx, pydantic-settings, prometheus-client) {floor['stack']:.1f}; + one TLS-ready "
        f"httpx.Client {floor['tls_client']:.1f}; + the exporter's modules "
        f"{floor['exporter']:.1f}; + {f['results']} results and the refresh's work "
        f"{proc['peak_rss_mb']:.1f}"
    )
    print()
    print(f"targets ({f['results']} results, 50 per page):")
    earlier = (
        {target.label: value for target, value, _ in _target_figures(before)} if before else {}
    )
    for target, value, note in _target_figures(f):
        sign = "<" if target.strict else "<="
        goal = f"{sign} {target.limit:g} {target.unit}".rstrip()
        figure = "       -" if value is None else f"{value:8.3f}"
        verdict = "not measured" if value is None else "met" if target.met(value) else "NOT met"
        was = earlier.get(target.label)
        if was is None and target is CALLS_PER_HOUR:
            was = CALLS_PER_HOUR_BEFORE
        if before is not None:
            note = f"before: {'-' if was is None else f'{was:.3f}'}; {note}".rstrip("; ")
        note = f"  ({note})" if note else ""
        print(f"  {target.label:50} {goal:>10}: {figure}  {verdict}{note}")
    if not PROCESS_RSS.met(proc["peak_rss_mb"]):
        print(
            f"  (the mandated libraries and one TLS-ready client alone take "
            f"{floor['tls_client']:.1f} MB)"
        )
    busy = " (busy: CPU figures vary from run to run)" if f["load_average"] > f["cpus"] else ""
    print(
        f"bench took {f['bench_seconds']:.0f} s; load average {f['load_average']:.1f} on "
        f"{f['cpus']} CPUs{busy}"
    )


if __name__ == "__main__":
    sys.exit(main())
