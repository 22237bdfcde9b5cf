"""A small pool of daemon threads that grows on demand and shrinks when idle."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Final, Generic, TypeVar

_R = TypeVar("_R")


class WorkerPool(Generic[_R]):
    """At most ``size`` daemon threads running submitted calls; each ends after idling a while.

    Daemon threads, so a call stuck at exit (a scrape waiting on a refresh) never holds the
    process up.
    """

    IDLE_SECONDS: Final = 30.0

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Callable[[], _R], Future[_R]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0  # started and not ended
        self._waiting = 0  # threads waiting for a call
        self._queued = 0  # calls not taken yet

    def submit(self, call: Callable[[], _R]) -> Future[_R]:
        """Run ``call`` on a worker thread; its future holds the answer."""
        future: Future[_R] = Future()
        with self._lock:
            self._queued += 1
            self._queue.put((call, future))
            if self._queued > self._waiting and self._threads < self._size:
                self._threads += 1
                name = f"{self._name}-{self._threads}"
                threading.Thread(target=self._work, name=name, daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            with self._lock:
                self._waiting += 1
            try:
                call, future = self._queue.get(timeout=self.IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    self._waiting -= 1
                    # A call queued meanwhile may count on this thread: stay for it.
                    if self._queued <= self._waiting:
                        self._threads -= 1
                        return
                continue
            with self._lock:
                self._waiting -= 1
                self._queued -= 1
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:
                future.set_exception(exc)
