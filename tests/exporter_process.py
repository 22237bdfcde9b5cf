"""The real ``python -m exporter`` as a child process: started, read, stopped, or run to the end.

Every child gets a clean environment (none of this machine's credentials or exporter settings)
and runs from the project root with the interpreter running the tests.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

PROJECT_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
# An environment that configures one target whose API endpoint (the discard port) never answers.
UNREACHABLE_API = {
    "ALIYUN_CLOUDASSISTANT_REGIONS": "cn-hangzhou",
    "ALIYUN_CLOUDASSISTANT_ENDPOINT": "http://127.0.0.1:9",
    "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI5tExample",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "Sup3rS3cretValue-DoNotLeak",
}

# The URL in a logfmt ``listening`` line: ``msg=listening address=http://127.0.0.1:41539 ...``.
_LOGFMT_ADDRESS = re.compile(r'\baddress="?(https?://[^\s"]+)')


def clean_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This machine's environment without any Alibaba Cloud or exporter setting, plus ``extra``.

    The ECS RAM role is disabled (a test never reaches for a real metadata service), output is
    unbuffered (lines arrive as they are logged) and the fault handler is on (SIGABRT dumps
    every thread's stack).
    """
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


def is_message(line: str, message: str) -> bool:
    """Whether ``line`` is a log line, logfmt or JSON, whose message is ``message``."""
    padded = f"{line} "
    return (
        f'msg="{message}" ' in padded
        or f"msg={message} " in padded
        or f'"msg": "{message}"' in line
    )


def listening_url(line: str) -> str | None:
    """The URL a ``listening`` log line (logfmt or JSON) announces; ``None`` for other lines."""
    if not is_message(line, "listening"):
        return None
    if line.startswith("{"):
        try:
            address = json.loads(line).get("address")
        except (ValueError, AttributeError):
            return None
        return address if isinstance(address, str) else None
    match = _LOGFMT_ADDRESS.search(line)
    return match.group(1) if match else None


@dataclass
class ExporterProcess:
    """A running ``python -m exporter``: ``url`` is where it listens; ``stdout`` and ``log``
    (its stderr) hold every line it wrote, read by ``readers`` until the pipes close."""

    process: subprocess.Popen[str]
    url: str = ""
    stdout: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)

    def log_text(self) -> str:
        """Everything logged (stderr) so far."""
        return "\n".join(self.log)

    def output(self) -> str:
        """stdout and stderr so far."""
        return "\n".join([*self.stdout, *self.log])

    def lines(self, message: str) -> list[str]:
        """The log lines (logfmt or JSON) whose message is ``message``."""
        return [line for line in self.log if is_message(line, message)]

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        """SIGTERM, then wait for the exit code and the rest of the output."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._join_readers(timeout)
        return code

    def terminate(self, timeout: float = STOP_TIMEOUT_SECONDS) -> bool:
        """Stop the process whatever state it is in; ``False`` if SIGTERM did not stop it.

        One that hangs gets SIGABRT, so that the fault handler prints every thread's stack to
        the log, which then says where it hung.
        """
        stopped_on_sigterm = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                stopped_on_sigterm = False
                self.process.send_signal(signal.SIGABRT)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        self._join_readers(timeout)
        return stopped_on_sigterm

    def _join_readers(self, timeout: float) -> None:
        for reader in self.readers:
            reader.join(timeout)  # the whole output, and the pipe closed


def without_state(args: Sequence[str]) -> list[str]:
    """``args`` with persistence off unless they name a ``--storage.path``: a child must not
    share (and lock) the default ``data/`` of the project root with another."""
    if any(arg.startswith("--storage.path") for arg in args):
        return list(args)
    return [*args, "--storage.path="]


def start(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    listen_address: str | None = "127.0.0.1:0",
    wrapper: Sequence[str] = (),
    preexec_fn: Callable[[], None] | None = None,
    pass_fds: Sequence[int] = (),
) -> ExporterProcess:
    """Start ``python -m exporter ARGS`` on a free loopback port and wait until it listens.

    The URL is the one its (first) ``listening`` log line announces (it binds port 0), in
    either log format. A process that exits or stays silent instead is stopped, and an
    ``AssertionError`` carries what it wrote. ``listen_address`` None leaves the flag to
    ``args``; ``wrapper`` is a command the exporter's command line is appended to;
    ``preexec_fn`` and ``pass_fds`` are ``subprocess.Popen``'s.
    """
    listen = ["--web.listen-address", listen_address] if listen_address is not None else []
    process = subprocess.Popen(
        [*wrapper, sys.executable, "-m", "exporter", *listen, *without_state(args)],
        cwd=PROJECT_ROOT,
        env=clean_environment(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,
        pass_fds=pass_fds,
    )
    exporter = ExporterProcess(process)
    # Set when the URL is known, or when a pipe closes (the process is gone).
    listening = threading.Event()

    def read(stream: IO[str], into: list[str]) -> None:
        with stream:
            for raw in stream:
                line = raw.rstrip("\n")
                into.append(line)
                url = listening_url(line)
                if url and not exporter.url:
                    exporter.url = url
                    listening.set()
        listening.set()

    assert process.stdout is not None
    assert process.stderr is not None
    for stream, into in ((process.stdout, exporter.stdout), (process.stderr, exporter.log)):
        reader = threading.Thread(target=read, args=(stream, into), daemon=True)
        reader.start()
        exporter.readers.append(reader)
    listening.wait(START_TIMEOUT_SECONDS)
    if not exporter.url:
        exporter.terminate()
        raise AssertionError(f"the exporter did not start:\n{exporter.output()}")
    return exporter


def stop_all(exporters: Iterable[ExporterProcess]) -> None:
    """Stop every exporter; raise, with their output, if any did not stop on SIGTERM."""
    hung = [exporter for exporter in exporters if not exporter.terminate()]
    if hung:
        outputs = "\n\n".join(exporter.output() for exporter in hung)
        raise AssertionError(f"the exporter did not stop on SIGTERM:\n{outputs}")


@dataclass(frozen=True)
class CliResult:
    """How a ``python -m exporter`` run to completion ended."""

    code: int
    stdout: str
    stderr: str


def run_cli(
    args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 30
) -> CliResult:
    """``python -m exporter ARGS`` to completion, in a clean environment plus ``env``."""
    completed = subprocess.run(
        [sys.executable, "-m", "exporter", *without_state(args)],
        cwd=PROJECT_ROOT,
        env=clean_environment(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliResult(completed.returncode, completed.stdout, completed.stderr)


@contextmanager
def taken_loopback_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something else listens on while the block runs."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port: int = taken.getsockname()[1]
        yield port
