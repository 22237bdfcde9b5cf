"""The exporter under measurement as a process of its own: started on a free loopback port,
waited for until ready, stopped with SIGTERM (killed if it will not stop)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    """A measurement could not be made (a child failed, timed out or printed no figures)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def running_exporter(
    config: Path, log: Path, *extra_args: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The exporter reading ``config``, logging at warn level to ``log``, with ``extra_args``;
    yields the process and its base URL, and stops it on the way out."""
    port = free_port()
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter",
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
                *extra_args,
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,  # a file, not a pipe nobody reads: a chatty exporter must not block
        )
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def wait_ready(
    proc: subprocess.Popen[bytes], base: str, log: Path, *, timeout: float, poll: float
) -> float:
    """Seconds until ``/-/ready`` answers, asked every ``poll`` seconds; a BenchError if the
    exporter exits first (with the end of its ``log``) or is not ready within ``timeout``."""
    started = time.monotonic()
    while True:
        if proc.poll() is not None:
            errors = log.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise BenchError(f"the exporter exited early ({proc.returncode}):\n{errors}")
        try:
            with urllib.request.urlopen(base + "/-/ready", timeout=30) as answer:
                answer.read()
            return time.monotonic() - started
        except OSError:
            if time.monotonic() - started > timeout:
                raise BenchError(f"the exporter was not ready within {timeout:g} s") from None
            time.sleep(poll)
