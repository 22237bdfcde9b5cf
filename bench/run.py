"""`make bench`: this exporter against a naive official-SDK poller, side by side in one run.

The simulator runs in this process (a bench profile: a static backlog of 10,000 results across
500 instances, with a fixed latency per page); everything measured runs in its own child process,
so its CPU time, imports and memory are its own:

1. ``bench/sdk_poller.py``: Alibaba's official SDK paging everything, as a naive exporter would on
   every scrape;
2. ``bench/exporter_refresh.py``: this exporter, wired as in production, for a cold refresh,
   steady-state refreshes with nothing new and ``/metrics`` rendering;
3. the real exporter process (``python -m exporter``): peak RSS and ``/metrics`` latency over HTTP.

Usage: ``python bench/run.py [--results 10000] [--latency 0.03] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
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

from exporter.simulator.faults import FaultPlan  # noqa: E402
from exporter.simulator.server import SimulatorServer  # noqa: E402
from exporter.simulator.world import PROFILES, World  # noqa: E402

KEY_ID, SECRET, REGION = "benchid", "benchsecret", "cn-hangzhou"


def _child(args: list[str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, check=False, cwd=ROOT
    )
    if done.returncode != 0:
        sys.exit(f"bench: {args[0]} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


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


def _exporter_process(config: Path, scrapes: int) -> dict[str, Any]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline, started = time.monotonic() + 120, time.monotonic()
        while True:
            if proc.poll() is not None:
                errors = proc.stderr.read() if proc.stderr is not None else b""
                sys.exit(f"bench: the exporter exited early: {errors[-2000:]!r}")
            try:
                _get(base + "/-/ready")
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit("bench: the exporter was not ready within 120 s")
                time.sleep(0.05)
        ready_seconds = time.monotonic() - started
        latencies = []
        for _ in range(scrapes):
            start = time.perf_counter()
            _get(base + "/metrics")
            latencies.append((time.perf_counter() - start) * 1000)
        status = Path(f"/proc/{proc.pid}/status").read_text(encoding="ascii")
        hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    latencies.sort()
    return {
        "ready_seconds": ready_seconds,
        "scrape_ms_median": statistics.median(latencies),
        "scrape_ms_p99": latencies[int(len(latencies) * 0.99) - 1],
        "peak_rss_mb": hwm / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.03, help="seconds per API answer")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    spec = PROFILES["bench"]
    world = World(seed=7, spec=type(spec)(**{**spec.__dict__, "backlog": args.results}))
    faults = FaultPlan(latency=0.0)
    with (
        SimulatorServer(world, accounts={KEY_ID: SECRET}, faults=faults) as sim,
        tempfile.TemporaryDirectory() as tmp,
    ):
        config = Path(tmp) / "config.yml"
        _config(config, sim.url)
        sdk_args = [
            "bench/sdk_poller.py",
            "--endpoint",
            sim.endpoint,
            "--access-key-id",
            KEY_ID,
            "--access-key-secret",
            SECRET,
            "--region",
            REGION,
            "--walks",
            "2",
        ]
        ours_args = ["bench/exporter_refresh.py", "--config", str(config)]
        # CPU is measured without simulated latency: on a VM, every wait for an answer leaves
        # the caches cold and inflates the CPU time of whatever runs next, for both contenders.
        print(
            f"simulator: {sim.url}, {args.results} results; CPU phase (no latency)...", flush=True
        )
        cpu = {"sdk_poller": _child(sdk_args), "exporter": _child(ours_args)}
        faults.latency = args.latency
        print(f"wall-time phase ({args.latency * 1000:.0f} ms per API answer)...", flush=True)
        wall = {
            "sdk_poller": _child(sdk_args),
            "exporter": _child(ours_args),
            "exporter_process": _exporter_process(config, scrapes=50),
        }
    figures = {
        "cpu_phase": cpu,
        "wall_phase": wall,
        "results": args.results,
        "latency_seconds": args.latency,
    }
    _report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


def _steady(ours: dict[str, Any], key: str) -> float:
    return float(statistics.median(s[key] for s in ours["steady"]))


def _report(f: dict[str, Any]) -> None:
    cpu, wall = f["cpu_phase"], f["wall_phase"]
    sdk_cpu, ours_cpu = cpu["sdk_poller"]["walks"][-1], cpu["exporter"]
    sdk_wall, ours_wall = wall["sdk_poller"]["walks"][-1], wall["exporter"]
    proc = wall["exporter_process"]
    latency_ms = f["latency_seconds"] * 1000
    rows = [
        ("imports: CPU s", cpu["sdk_poller"]["import_cpu_seconds"], ours_cpu["import_cpu_seconds"]),
        ("cold walk: API calls", sdk_cpu["api_calls"], ours_cpu["cold"]["api_calls"]),
        ("cold walk: CPU s (no latency)", sdk_cpu["cpu_seconds"], ours_cpu["cold"]["cpu_seconds"]),
        (
            f"cold walk: wall s ({latency_ms:.0f} ms/answer)",
            sdk_wall["wall_seconds"],
            ours_wall["cold"]["wall_seconds"],
        ),
        (
            "refresh with nothing new: API calls",
            sdk_cpu["api_calls"],
            max(s["api_calls"] for s in ours_cpu["steady"]),
        ),
        (
            "refresh with nothing new: CPU s (no latency)",
            sdk_cpu["cpu_seconds"],
            _steady(ours_cpu, "cpu_seconds"),
        ),
        (
            f"refresh with nothing new: wall s ({latency_ms:.0f} ms/answer)",
            sdk_wall["wall_seconds"],
            _steady(ours_wall, "wall_seconds"),
        ),
        ("peak RSS MB, whole process", wall["sdk_poller"]["peak_rss_mb"], proc["peak_rss_mb"]),
    ]
    print()
    print(
        f"{f['results']} results, 50 per page. The official SDK poller re-walks everything on "
        "every scrape."
    )
    print(f"{'':50} {'official SDK':>13} {'this exporter':>14} {'ratio':>8}")
    for label, theirs, mine in rows:
        ratio = f"{theirs / mine:7.1f}x" if mine else "      -"
        print(f"{label:50} {theirs:13.3f} {mine:14.3f} {ratio}")
    print()
    print(
        f"results in view after the cold walk: {ours_cpu['cold']['results_in_view']} "
        f"(the SDK walk saw {sdk_cpu['results']})"
    )
    print(
        f"/metrics rendered from the last refresh: median {ours_cpu['render_ms_median']:.2f} ms,"
        f" p99 {ours_cpu['render_ms_p99']:.2f} ms in-process; over HTTP from the running "
        f"exporter: median {proc['scrape_ms_median']:.2f} ms, p99 {proc['scrape_ms_p99']:.2f} ms"
    )
    print(
        f"exporter process: ready after {proc['ready_seconds']:.2f} s (first refresh done); "
        f"measuring child's peak RSS {ours_cpu['peak_rss_mb']:.1f} MB; SDK imports alone "
        f"{cpu['sdk_poller']['import_rss_mb']:.1f} MB"
    )


if __name__ == "__main__":
    sys.exit(main())
