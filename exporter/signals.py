"""What each signal does to a serving exporter: no signal ends it silently.

* SIGTERM, SIGINT, SIGQUIT, SIGPWR, SIGXCPU: a graceful stop, logged with the signal's name;
* SIGHUP: a configuration reload (as Prometheus does);
* SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGXFSZ, SIGSTKFLT: logged and ignored
  (their default action would end the process without a word);
* SIGKILL and SIGSTOP cannot be caught; the fault signals (SIGSEGV, SIGABRT, ...) keep their
  action, which the fault handler reports when it is on.

Handlers only queue the signal (``SimpleQueue.put`` is safe in a signal handler); the serving
loop takes them from :class:`SignalInbox` and acts outside the handler, so a reload or a log
line never runs inside an interrupted lock.
"""

from __future__ import annotations

import queue
import signal
import threading
from typing import Any, Final

STOP_SIGNALS: Final = tuple(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGINT", "SIGQUIT", "SIGPWR", "SIGXCPU")
    if hasattr(signal, name)
)
RELOAD_SIGNAL: Final = signal.SIGHUP
IGNORED_SIGNALS: Final = tuple(
    getattr(signal, name)
    for name in (
        "SIGUSR1",
        "SIGUSR2",
        "SIGALRM",
        "SIGVTALRM",
        "SIGPROF",
        "SIGIO",
        "SIGXFSZ",
        "SIGSTKFLT",
    )
    if hasattr(signal, name)
)


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15; ``signal 99`` for a number without a name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class SignalInbox:
    """The signals received while installed (main thread only; a no-op elsewhere)."""

    def __init__(self) -> None:
        self._received: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Take over every signal this module names."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (*STOP_SIGNALS, RELOAD_SIGNAL, *IGNORED_SIGNALS):
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        """Put back the handlers :meth:`install` replaced."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def next(self, timeout: float) -> int | None:
        """The next signal received, waiting at most ``timeout`` seconds; None if none."""
        try:
            return self._received.get(timeout=timeout)
        except queue.Empty:
            return None

    def _handle(self, signum: int, frame: object) -> None:
        self._received.put(signum)
