"""Shared fixtures: running the real exporter as a child process."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

import pytest

from tests import exporter_process
from tests.exporter_process import ExporterProcess

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


class StartExporter(Protocol):
    def __call__(
        self, args: Sequence[str], env: Mapping[str, str] | None = None
    ) -> ExporterProcess: ...


@pytest.fixture
def start_exporter() -> Iterator[StartExporter]:
    """Start exporter processes listening on a free loopback port; all are stopped at the end.

    See ``tests.exporter_process.start``; a test fails if one of its exporters does not stop
    on SIGTERM (its log then holds every thread's stack).
    """
    started: list[ExporterProcess] = []

    def start(args: Sequence[str], env: Mapping[str, str] | None = None) -> ExporterProcess:
        exporter = exporter_process.start(args, env)
        started.append(exporter)
        return exporter

    yield start
    exporter_process.stop_all(started)
