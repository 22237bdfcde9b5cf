"""``make demo-stack`` as a user runs it: the project's alerts fire in its real Prometheus,
Ctrl-C stops everything.

The stack is started in its own session, as a terminal would run it, with the simulator's
``demo`` profile and ``--rules``: the mixin's rules rendered with every ``for:`` cut to
:data:`FAST_FOR` (the shipped ``for:`` durations of 5 minutes and more would make this test take
six; the expressions and thresholds are the shipped ones). The test waits (polling, with a
deadline) until Prometheus reports an alert firing and Alertmanager has it, then sends SIGINT to
the whole process group (what Ctrl-C does) and checks that the stack exits 0, every process of
the group is gone and its temporary directory is removed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from demo.configs import alertmanager_config, prometheus_config, rule_files, shortest_for
from mixin.render import evaluate, render_rules
from tests.exporter_process import clean_environment

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
if not (shutil.which("prometheus") and shutil.which("prometheus-alertmanager")):
    pytest.skip(
        "needs Debian's prometheus and prometheus-alertmanager (make system-deps)",
        allow_module_level=True,
    )

START_TIMEOUT = 90.0
# Beyond the shortest `for:`: the first failures reach a scrape, the alert goes pending, then
# evaluation intervals, all on 2 busy cores.
FIRING_MARGIN = 240.0
STOP_TIMEOUT = 30.0


class Output:
    """The stack's stdout and stderr, read line by line in threads."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._read, args=(stream,), daemon=True)
            for stream in (process.stdout, process.stderr)
        ]
        for thread in self._threads:
            thread.start()

    def _read(self, stream: Any) -> None:
        with stream:
            for line in stream:
                with self._lock:
                    self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            thread.join(timeout)


def _wait_for(
    what: str, check: Any, timeout: float, process: subprocess.Popen[str], out: Output
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (httpx.HTTPError, KeyError, ValueError):
            result = None
        if result:
            return result
        assert process.poll() is None, f"the stack exited while waiting for {what}:\n{out.text()}"
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f}s:\n{out.text()}"
        time.sleep(1.0)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


FAST_FOR = "10s"


def fast_rules(directory: Path) -> Path:
    """The mixin's rules with every ``for:`` (and the absence wait) cut to :data:`FAST_FOR`."""
    defaults = evaluate()["config"]
    fast = {key: FAST_FOR for key in defaults if key.endswith("For") and key != "keepFiringFor"}
    path = directory / "fast.rules.yml"
    path.write_text(render_rules(fast), encoding="utf-8")
    return path


@pytest.mark.slow
def test_demo_stack_fires_an_alert_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    rules = fast_rules(tmp_path)
    wait = shortest_for([rules]) + FIRING_MARGIN
    process = subprocess.Popen(
        [sys.executable, "-m", "demo.stack", "--profile", "demo", "--rules", str(rules)],
        cwd=ROOT,
        env=clean_environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    out = Output(process)
    pgid = process.pid
    try:
        banner = _wait_for(
            "banner",
            lambda: re.search(r"Prometheus alerts:\s+(http://127\.0\.0\.1:\d+)/alerts", out.text()),
            START_TIMEOUT,
            process,
            out,
        )
        prometheus = banner.group(1)
        alertmanager = re.search(r"Alertmanager:\s+(http://127\.0\.0\.1:\d+)/", out.text())
        workdir = re.search(r"in (/\S+) \(removed at exit\)", out.text())
        assert alertmanager is not None, out.text()
        assert workdir is not None, out.text()
        assert Path(workdir.group(1)).is_dir()

        def firing() -> list[dict[str, Any]]:
            alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
            return [alert for alert in alerts if alert["state"] == "firing"]

        fired = _wait_for("alert firing in Prometheus", firing, wait, process, out)
        names = {alert["labels"]["alertname"] for alert in fired}
        assert all(alert["labels"].get("account") == "demo" for alert in fired), fired

        def routed() -> list[dict[str, Any]]:
            alerts = httpx.get(f"{alertmanager.group(1)}/api/v2/alerts", timeout=5).json()
            return [alert for alert in alerts if alert["labels"]["alertname"] in names]

        _wait_for("the alert in Alertmanager", routed, 60.0, process, out)
        _wait_for(
            "a notification printed",
            lambda: "Alertmanager -> demo-" in out.text(),
            60.0,
            process,
            out,
        )

        os.killpg(pgid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert process.wait(STOP_TIMEOUT) == 0, out.text()
        out.join(STOP_TIMEOUT)
        deadline = time.monotonic() + 10
        while _group_alive(pgid):
            assert time.monotonic() < deadline, "processes of the stack are still running"
            time.sleep(0.1)
        assert not Path(workdir.group(1)).exists(), "the stack's temporary directory is left"
        assert "Stopped: every process ended" in out.text()
        assert "Traceback" not in out.text()
    finally:
        if _group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
        process.wait()
        out.join(STOP_TIMEOUT)


def test_the_stack_configs_pass_promtool_and_amtool(tmp_path: Path) -> None:
    """The files the stack writes are valid for the Debian binaries it runs (fast to check)."""
    promtool, amtool = shutil.which("promtool"), shutil.which("amtool")
    if promtool is None or amtool is None:
        pytest.skip("needs promtool and amtool")
    prometheus_yml = tmp_path / "prometheus.yml"
    prometheus_yml.write_text(
        prometheus_config("127.0.0.1:9907", "127.0.0.1:9093", rule_files(ROOT))
    )
    alertmanager_yml = tmp_path / "alertmanager.yml"
    alertmanager_yml.write_text(alertmanager_config("http://127.0.0.1:9999"))
    for argv in (
        [promtool, "check", "config", str(prometheus_yml)],
        [amtool, "check-config", str(alertmanager_yml)],
    ):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
