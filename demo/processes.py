"""The demo stack's child processes: started with their output in log files, stopped by PID.

Children stay in the stack's process group, so a Ctrl-C in the terminal reaches each of them
too; :meth:`Children.stop_all` then waits for every one (SIGTERM, SIGKILL after a grace period),
so nothing is left running when the stack exits.
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

STOP_GRACE_SECONDS = 10.0


class StackError(Exception):
    """A child could not start or died; the message says which and shows its last log lines."""


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 15) -> str:
        return "\n".join(f"    {line}" for line in self.log().splitlines()[-lines:])


@dataclass
class Children:
    """Every process the stack started, in start order."""

    workdir: Path
    interrupted: threading.Event
    started: list[Child] = field(default_factory=list)
    stopping: bool = False

    def spawn(self, name: str, argv: Sequence[str], cwd: Path | None = None) -> Child:
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=cwd
            )
        child = Child(name, process, log_path)
        self.started.append(child)
        return child

    def check_alive(self) -> None:
        """Raise :class:`StackError` naming a child that exited (unless the stack is stopping),
        or saying the stack was interrupted."""
        if self.stopping:
            return
        if self.interrupted.is_set():
            raise StackError("interrupted")
        for child in self.started:
            code = child.process.poll()
            if code is not None:
                raise StackError(
                    f"{child.name} exited with code {code}; its last lines:\n{child.tail()}"
                )

    def wait_for_log(self, child: Child, pattern: re.Pattern[str], timeout: float) -> str:
        """Group 1 of the first match of ``pattern`` in ``child``'s log, polled until
        ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            match = pattern.search(child.log())
            if match:
                return match.group(1)
            self.check_alive()
            if time.monotonic() > deadline:
                raise StackError(f"{child.name} did not start in {timeout:.0f}s:\n{child.tail()}")
            time.sleep(0.1)

    def wait_ready(self, child: Child, url: str, timeout: float) -> None:
        """Poll ``url`` until it answers 200."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            self.check_alive()
            if time.monotonic() > deadline:
                raise StackError(
                    f"{child.name} not ready at {url} in {timeout:.0f}s:\n{child.tail()}"
                )
            time.sleep(0.2)

    def stop_all(self) -> list[str]:
        """Stop every child, newest first; the names of those that needed SIGKILL."""
        self.stopping = True
        for child in self.started:
            if child.process.poll() is None:
                child.process.terminate()
        killed: list[str] = []
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in reversed(self.started):
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
                killed.append(child.name)
        return killed


def free_port() -> int:
    """A loopback port nothing listens on now (for servers that cannot report a port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
