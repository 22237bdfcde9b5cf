"""The real exporter, SIGKILLed at random moments over restart cycles, against the simulator.

Whatever the moment of the kill (in a refresh, in a commit, idle), with the world moving while
the exporter is down: every counter Prometheus scrapes stays at or below the ground truth, never
goes down across restarts, and in the end equals it (runs that finished while the exporter was
down are counted, once).
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from exporter.simulator.world import ManualClock, World, WorldSpec
from tests.conftest import StartExporter
from tests.exporter_process import ExporterProcess
from tests.exposition import Samples, parse_samples
from tests.test_exporter_integration import (
    expected_finished,
    exported_finished,
    next_refresh,
    refreshes,
    scrape,
    simulator_for,
    static_target,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slow

HANGUP_MESSAGE = "configuration reloaded"  # SIGHUP reloads (tests/test_reload_process.py)
OUTCOMES = ("Success", "Failed", "Timeout", "Error", "Cancelled", "Stopped")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=float(int(time.time())))


def scrape_in_background(exporter: ExporterProcess, into: list[Samples]) -> threading.Thread:
    """A scrape (which starts a refresh) that the kill may interrupt."""

    def run() -> None:
        try:
            response = httpx.get(exporter.url + "/metrics", timeout=10)
            into.append(parse_samples(response.text))
        except httpx.HTTPError:
            pass  # killed under it

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("history", [False, True], ids=["records", "history"])
def test_sigkill_at_random_moments_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, clock: ManualClock, start_exporter: StartExporter, history: bool
) -> None:
    rng = random.Random(20261206 + history)
    world = World(seed=17, clock=clock, spec=WorldSpec(instances=8))
    world.add_invocation(3, "Success", at=clock.now() - 3600, duration=5)  # backlog
    if history:  # periodic tasks whose runs go on while the exporter is down
        world.add_invocation(
            2, ["Success", "Failed"], repeat_mode="Period", period=10, duration=1, runs=60
        )
    highest: Counter[tuple[str, str]] = Counter()

    def check(samples: Samples) -> None:
        exported = exported_finished(samples)
        expected = expected_finished(world, world.ground_truth(), baseline, history=history)
        assert exported - expected == Counter(), "counted above the ground truth"
        went_down = {key: (n, exported[key]) for key, n in highest.items() if exported[key] < n}
        assert not went_down, f"a counter went down: {went_down}"
        for key, n in exported.items():
            highest[key] = max(highest[key], n)

    def move(step: int) -> None:
        world.add_invocation(
            rng.randint(1, 4), OUTCOMES[step % len(OUTCOMES)], pending=1, duration=rng.randint(1, 6)
        )
        clock.advance(rng.uniform(2, 8))

    with simulator_for(world) as simulator:
        target = static_target(include_history=history)
        config = write_config(
            tmp_path, simulator, targets=[target], refresh={"sweep_interval_seconds": 0}
        )
        args = ["--config.file", str(config), f"--storage.path={tmp_path / 'state'}"]
        exporter = start_exporter(args)
        samples = wait_for(exporter, lambda s: refreshes(s) >= 1)
        baseline = clock.now()
        step = 0
        for _cycle in range(5):
            for _ in range(2):
                move(step := step + 1)
                samples = next_refresh(exporter, samples)
                check(samples)
            # The kill: at a random moment, often in a refresh a scrape started.
            move(step := step + 1)
            simulator.faults.latency = 0.01
            in_flight: list[Samples] = []
            scraper = scrape_in_background(exporter, in_flight)
            threading.Event().wait(rng.uniform(0.0, 0.25))  # the moment of the kill
            exporter.process.kill()
            exporter.process.wait()
            scraper.join(10)
            for seen in in_flight:
                check(seen)  # Prometheus saw it: a restart must not go below it
            simulator.faults.latency = 0.0
            # While it is down, runs finish.
            for _ in range(2):
                move(step := step + 1)
            clock.advance(10)
            exporter = start_exporter(args)
            samples = scrape(exporter)
            check(samples)
        clock.advance(60)  # everything finishes
        truth = world.ground_truth()
        expected = expected_finished(world, truth, baseline, history=history)

        def settled(samples: Samples) -> bool:
            check(samples)
            return exported_finished(samples) == expected

        wait_for(exporter, settled)
        assert exporter.lines("state restored: counters resume")


def test_sighup_is_logged_and_does_not_end_the_process(
    tmp_path: Path, clock: ManualClock, start_exporter: StartExporter
) -> None:
    world = World(seed=3, clock=clock, spec=WorldSpec(instances=2))
    with simulator_for(world) as simulator:
        config = write_config(tmp_path, simulator)
        exporter = start_exporter(["--config.file", str(config), "--storage.path="])
        exporter.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not exporter.lines(HANGUP_MESSAGE) and time.monotonic() < deadline:
            threading.Event().wait(0.05)
        assert exporter.lines(HANGUP_MESSAGE)
        assert exporter.process.poll() is None
        wait_for(exporter, lambda s: refreshes(s) >= 1)  # still serving
