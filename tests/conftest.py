"""Shared fixtures: running the real exporter as a child process."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The Debian tools the promtool checks and the end-to-end tests need. On a developer machine
# without them those tests skip; in CI a skip would hide a broken install, so it is an error.
E2E_TOOLS = ("prometheus", "promtool", "prometheus-alertmanager", "amtool")


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = [tool for tool in E2E_TOOLS if shutil.which(tool) is None]
    if os.environ.get("CI") and missing:
        raise pytest.UsageError(
            f"CI needs {', '.join(missing)} (make system-deps installs them); "
            "without them the promtool and end-to-end tests would only skip"
        )


_LISTENING = re.compile(r"msg=listening address=(http\S+)")


@dataclass
class ExporterProcess:
    """A running ``python -m exporter``; ``url`` is where it listens, ``log`` what it logged."""

    process: subprocess.Popen[str]
    url: str = ""
    log: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def log_text(self) -> str:
        return "\n".join(self.log)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait for the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        if self.reader is not None:
            self.reader.join(timeout)  # the whole log, and the pipe closed
        return code


class StartExporter(Protocol):
    def __call__(
        self, args: Sequence[str], env: Mapping[str, str] | None = None
    ) -> ExporterProcess: ...


def _clean_environment(extra: Mapping[str, str] | None) -> dict[str, str]:
    # The child must not see credentials or settings of the machine running the tests.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ALIBABA_CLOUD_", "ALIYUN_CLOUDASSISTANT_"))
    }
    env["ALIBABA_CLOUD_ECS_METADATA_DISABLED"] = "true"
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONFAULTHANDLER"] = "1"
    env.update(extra or {})
    return env


@pytest.fixture
def start_exporter() -> Iterator[StartExporter]:
    """Start exporter processes listening on a free loopback port; all are stopped at the end.

    The port is the one the process reports in its ``listening`` log line (it binds port 0).
    """
    started: list[ExporterProcess] = []

    def start(args: Sequence[str], env: Mapping[str, str] | None = None) -> ExporterProcess:
        process = subprocess.Popen(
            [sys.executable, "-m", "exporter", "--web.listen-address", "127.0.0.1:0", *args],
            cwd=PROJECT_ROOT,
            env=_clean_environment(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        exporter = ExporterProcess(process)
        started.append(exporter)
        listening = threading.Event()

        def read_log() -> None:
            assert process.stderr is not None
            with process.stderr:
                for line in process.stderr:
                    exporter.log.append(line.rstrip("\n"))
                    match = _LISTENING.search(line)
                    if match and not exporter.url:
                        exporter.url = match.group(1)
                        listening.set()
            listening.set()

        exporter.reader = threading.Thread(target=read_log, daemon=True)
        exporter.reader.start()
        listening.wait(30)
        if not exporter.url:
            raise AssertionError(f"the exporter did not start:\n{exporter.log_text()}")
        return exporter

    yield start
    hung: list[ExporterProcess] = []
    for exporter in started:
        if exporter.process.poll() is None:
            exporter.process.send_signal(signal.SIGTERM)
            try:
                exporter.process.wait(15)
            except subprocess.TimeoutExpired:
                # PYTHONFAULTHANDLER makes SIGABRT print every thread's stack to the log.
                exporter.process.send_signal(signal.SIGABRT)
                exporter.process.wait()
                if exporter.reader is not None:
                    exporter.reader.join(15)
                hung.append(exporter)
        if exporter.reader is not None:
            exporter.reader.join(15)
    if hung:
        logs = "\n\n".join(exporter.log_text() for exporter in hung)
        raise AssertionError(f"the exporter did not stop on SIGTERM:\n{logs}")
