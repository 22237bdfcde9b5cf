"""``make demo-stack``: the simulated fleet, the exporter, Prometheus with the project's alert
rules and Alertmanager, on loopback with free ports, until Ctrl-C.

Started in this order, each a child process with its log in a temporary directory:

1. the ECS API simulator (``python -m exporter.simulator``, a workload profile that fails often);
2. the exporter (``python -m exporter --config.file ...``), configured as in production;
3. Alertmanager (Debian's ``prometheus-alertmanager``), routing by severity to webhooks served
   by this process, which prints every notification;
4. Prometheus (Debian's ``prometheus``) scraping the exporter with ``alerts/*.rules.yml``.

While it runs, it prints each alert going pending, firing and resolved, and each notification
Alertmanager routes. Ctrl-C (or SIGTERM) stops every child and removes the temporary directory;
nothing is installed, enabled or left running.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, Final, TextIO

import httpx

from demo import configs
from demo.processes import STOP_GRACE_SECONDS, Children, StackError, free_port
from exporter.simulator.spec import PROFILES

START_TIMEOUT_SECONDS: Final = 60.0
# The simulator's only account: a throwaway key made for each run.
ACCESS_KEY_ID: Final = "demo-stack"
POLL_SECONDS: Final = 5.0
_SIMULATOR_URL = re.compile(r"simulator listening on (http://\S+)")
_EXPORTER_URL = re.compile(r'msg="?listening"?\s.*?\baddress="?(http://[^\s"]+)')


def _now() -> str:
    return time.strftime("%H:%M:%S")


def _labels(labels: dict[str, str]) -> str:
    shown = {k: v for k, v in sorted(labels.items()) if k not in ("alertname", "job", "instance")}
    return ", ".join(f"{key}={value}" for key, value in shown.items())


class Notifications:
    """Alertmanager's webhook receiver: prints each notification with its receiver."""

    def __init__(self, out: TextIO) -> None:
        self.count = 0
        lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    payload = json.loads(self.rfile.read(length))
                    receiver = str(payload.get("receiver", "?"))
                    alerts = payload.get("alerts", [])
                except (ValueError, AttributeError):
                    receiver, alerts = "?", []
                with lock:
                    owner.count += 1
                    for alert in alerts:
                        labels = alert.get("labels", {})
                        print(
                            f"[{_now()}] Alertmanager -> {receiver}: {alert.get('status')} "
                            f"{labels.get('alertname')} ({_labels(labels)})",
                            file=out,
                            flush=True,
                        )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class AlertWatcher:
    """Polls Prometheus' alerts and prints every change of state."""

    def __init__(self, prometheus_url: str, out: TextIO) -> None:
        self._url = f"{prometheus_url}/api/v1/alerts"
        self._out = out
        self._states: dict[tuple[str, str], str] = {}

    def poll(self) -> None:
        try:
            alerts = httpx.get(self._url, timeout=5).json()["data"]["alerts"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return  # Prometheus is checked by the process watch; try again next time
        states: dict[tuple[str, str], str] = {}
        for alert in alerts:
            labels = alert.get("labels", {})
            states[(str(labels.get("alertname")), _labels(labels))] = str(alert.get("state"))
        for key, state in sorted(states.items()):
            if self._states.get(key) != state:
                print(f"[{_now()}] Prometheus: {key[0]} {state} ({key[1]})", file=self._out)
        for key in sorted(self._states.keys() - states.keys()):
            print(f"[{_now()}] Prometheus: {key[0]} resolved ({key[1]})", file=self._out)
        self._out.flush()
        self._states = states


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not between 0 and 65535")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="make demo-stack ARGS=...",
        description="The simulator, the exporter, Prometheus with the project's rules and "
        "Alertmanager on 127.0.0.1, until Ctrl-C.",
    )
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="demo",
        help="the simulator's workload (default demo: fails often enough to fire alerts)",
    )
    parser.add_argument("--seed", type=int, default=0, help="workload seed (default 0)")
    parser.add_argument(
        "--rules",
        action="append",
        type=Path,
        metavar="FILE",
        help="a rule file for Prometheus instead of the shipped alerts/*.rules.yml (repeatable; "
        "e.g. rendered from the mixin with your own _config)",
    )
    for name in ("prometheus", "alertmanager"):
        parser.add_argument(
            f"--{name}-port",
            type=_port,
            default=0,
            metavar="PORT",
            help=f"{name.capitalize()}'s port on 127.0.0.1 (default: a free one)",
        )
    return parser


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StackError(
            f"{name} not found: `make demo-stack` installs Debian's prometheus and "
            "prometheus-alertmanager (with root or sudo), or install them yourself"
        )
    return path


class Stack:
    """The running demo stack; :meth:`start` brings it up, :meth:`close` takes it down."""

    def __init__(self, args: argparse.Namespace, out: TextIO, stop: threading.Event) -> None:
        self.args = args
        self.out = out
        self.workdir = Path(tempfile.mkdtemp(prefix="cloudassistant-demo-stack-"))
        self.children = Children(self.workdir, stop)
        self.notifications = Notifications(out)
        self.prometheus_url = ""

    def _rules_origin(self) -> str:
        if self.args.rules:
            return "from " + ", ".join(str(path) for path in self.args.rules)
        return "the shipped rules, unchanged"

    def start(self) -> str:
        """Start everything and return what to tell the user."""
        prometheus_bin = _binary("prometheus")
        alertmanager_bin = _binary("prometheus-alertmanager")  # Debian's name for it
        rules = self.args.rules or configs.rule_files()
        if not rules:
            raise StackError(f"no rule files match {configs.ROOT / configs.RULES_GLOB}")
        python = sys.executable
        secret = secrets.token_urlsafe(16)
        simulator = self.children.spawn(
            "simulator",
            [
                python,
                "-m",
                "exporter.simulator",
                "--listen=127.0.0.1:0",
                f"--profile={self.args.profile}",
                f"--seed={self.args.seed}",
                f"--access-key-id={ACCESS_KEY_ID}",
                f"--access-key-secret={secret}",
                *(f"--region={region}" for region in configs.REGIONS),
            ],
        )
        simulator_url = self.children.wait_for_log(simulator, _SIMULATOR_URL, START_TIMEOUT_SECONDS)
        config = self.workdir / "exporter.yml"
        config.write_text(
            configs.exporter_config(simulator_url, ACCESS_KEY_ID, secret),
            encoding="utf-8",
        )
        exporter = self.children.spawn(
            "exporter",
            [
                python,
                "-m",
                "exporter",
                f"--config.file={config}",
                "--web.listen-address=127.0.0.1:0",
            ],
        )
        exporter_url = self.children.wait_for_log(exporter, _EXPORTER_URL, START_TIMEOUT_SECONDS)

        alertmanager_address = f"127.0.0.1:{self.args.alertmanager_port or free_port()}"
        (self.workdir / "alertmanager.yml").write_text(
            configs.alertmanager_config(self.notifications.url), encoding="utf-8"
        )
        alertmanager = self.children.spawn(
            "alertmanager",
            [
                alertmanager_bin,
                f"--config.file={self.workdir / 'alertmanager.yml'}",
                f"--storage.path={self.workdir / 'alertmanager-data'}",
                f"--web.listen-address={alertmanager_address}",
                "--cluster.listen-address=",  # no gossip port on every interface
            ],
            cwd=self.workdir,
        )
        prometheus_address = f"127.0.0.1:{self.args.prometheus_port or free_port()}"
        prometheus_yml = self.workdir / "prometheus.yml"
        prometheus_yml.write_text(
            configs.prometheus_config(
                exporter_url.removeprefix("http://"), alertmanager_address, rules
            ),
            encoding="utf-8",
        )
        prometheus = self.children.spawn(
            "prometheus",
            [
                prometheus_bin,
                f"--config.file={prometheus_yml}",
                f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
                f"--web.listen-address={prometheus_address}",
            ],
            cwd=self.workdir,
        )
        alertmanager_url = f"http://{alertmanager_address}"
        self.prometheus_url = f"http://{prometheus_address}"
        self.children.wait_ready(alertmanager, f"{alertmanager_url}/-/ready", START_TIMEOUT_SECONDS)
        self.children.wait_ready(
            prometheus, f"{self.prometheus_url}/-/ready", START_TIMEOUT_SECONDS
        )
        grafana = self._grafana_hint()
        wait = configs.shortest_for(rules)
        return f"""
Demo stack running (simulator profile {self.args.profile!r}, seed {self.args.seed}); logs and data
in {self.workdir} (removed at exit).

  Prometheus alerts:  {self.prometheus_url}/alerts
                      pending within a minute or two, firing after each rule's `for:`
                      ({wait / 60:g} min at the shortest): {self._rules_origin()}
  Prometheus rules:   {self.prometheus_url}/rules
  Alertmanager:       {alertmanager_url}/#/alerts  (routed by severity; notifications below)
  Exporter:           {exporter_url}/  and  {exporter_url}/metrics
  ECS API simulator:  {simulator_url}

{grafana}
Changes of alert state and Alertmanager's notifications are printed below.
Press Ctrl-C to stop everything.
"""

    def _grafana_hint(self) -> str:
        grafana = self.workdir / "grafana"
        provisioning = grafana / "provisioning"
        mount = configs.dashboards_mount_point()
        if not configs.grafana_provisioning(grafana, self.prometheus_url) or mount is None:
            return "Grafana: see docs/alerts-and-dashboards.md (no provisioning files found)."
        command = shlex.join(
            [
                "docker",
                "run",
                "--rm",
                "--network=host",
                "-v",
                f"{provisioning}:/etc/grafana/provisioning:ro",
                "-v",
                f"{grafana / 'dashboards'}:{mount}:ro",
                "grafana/grafana",
            ]
        )
        return (
            "Grafana (not included): the shipped provisioning files, pointed at this Prometheus,\n"
            f"and the dashboards are in {grafana}; for example\n  {command}\n"
            "then http://127.0.0.1:3000/ (admin/admin), folder 'Alibaba Cloud Assistant'.\n"
        )

    def watch(self, stop: threading.Event) -> None:
        """Print alert changes until ``stop`` is set; raise StackError if a child dies."""
        watcher = AlertWatcher(self.prometheus_url, self.out)
        while not stop.is_set():
            self.children.check_alive()
            watcher.poll()
            stop.wait(POLL_SECONDS)

    def close(self) -> None:
        killed = self.children.stop_all()
        self.notifications.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        if killed:
            print(f"killed after {STOP_GRACE_SECONDS:g} s: {', '.join(killed)}", file=self.out)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    stream = out if out is not None else sys.stdout
    args = build_parser().parse_args(argv)
    stop = threading.Event()
    signalled: list[str] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signalled.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stack: Stack | None = None
    code = 0
    try:
        stack = Stack(args, stream, stop)
        print(stack.start(), file=stream, flush=True)
        stack.watch(stop)
    except StackError as exc:
        if not stop.is_set():  # a child that exits because of the user's Ctrl-C is no error
            print(f"demo-stack: error: {exc}", file=sys.stderr, flush=True)
            code = 1
    finally:
        if stack is not None:
            print(f"\nStopping ({', '.join(signalled) or 'error'}) ...", file=stream, flush=True)
            stack.close()
            print(
                f"Stopped: every process ended, {stack.workdir} removed.", file=stream, flush=True
            )
    return code


if __name__ == "__main__":
    sys.exit(main())
