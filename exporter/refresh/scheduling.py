"""When a target refreshes: one refresh in flight at most, a minimum interval, back-off while
the API throttles, and no new refresh once stopped.

:class:`RefreshScheduler` knows nothing of what a refresh reads: it runs a job on the shared
worker pool. Concurrent scrapes (an HA Prometheus pair, a human with curl) share the refresh in
flight.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from concurrent.futures import wait as wait_futures

MAX_THROTTLE_BACKOFF = 8
"""While the API throttles a target, its minimum interval doubles per throttled refresh, up to
this many times: retrying at the usual pace would only add to the load that got it throttled."""


class RefreshScheduler:
    """Runs ``job`` on ``executor`` when due (see the module docstring); ``clock`` gives the
    wall-clock time in epoch seconds."""

    def __init__(
        self,
        job: Callable[[], None],
        executor: Executor,
        *,
        min_interval: float,
        clock: Callable[[], float],
    ) -> None:
        self._job = job
        self._executor = executor
        self._min_interval = min_interval
        self._clock = clock
        # Guards the in-flight refresh and when the last one started. Reentrant: a refresh that
        # ends before ``add_done_callback`` runs calls ``_finished`` in the submitting thread.
        self._lock = threading.RLock()
        self._inflight: Future[None] | None = None
        self._stopped = False
        self._last_started: float | None = None
        self._backoff = 1

    @property
    def backoff(self) -> int:
        """The factor the minimum interval is multiplied by (1 unless throttled)."""
        return self._backoff

    def throttled(self) -> None:
        """The last refresh was throttled: space the next ones out more."""
        self._backoff = min(self._backoff * 2, MAX_THROTTLE_BACKOFF)

    def recovered(self) -> None:
        """The last refresh succeeded: back to the usual pace."""
        self._backoff = 1

    def stop(self) -> None:
        """Start no new refresh from now on (shutdown); the one in flight, if any, goes on."""
        with self._lock:
            self._stopped = True

    def in_flight(self) -> Future[None] | None:
        """The refresh in flight, if any (nothing is started)."""
        with self._lock:
            return self._inflight

    def start_if_due(self) -> Future[None] | None:
        """Start a refresh if none is in flight and the last one is old enough.

        Returns the refresh in flight (new or shared), or None when the last refresh is recent
        enough (or the worker pool is shut down, or :meth:`stop` was called).
        """
        with self._lock:
            if self._inflight is not None and not self._inflight.done():
                return self._inflight
            if self._stopped:
                return None
            now = self._clock()
            if self._last_started is not None and not due(
                self._last_started, now, self._min_interval * self._backoff
            ):
                return None
            return self._submit(now)

    def run_now(self, timeout: float | None = None) -> None:
        """Refresh now whatever the interval (after the one in flight, if any) and wait for it."""
        with self._lock:
            previous = self._inflight
        if previous is not None:
            wait_futures([previous], timeout=timeout)
        with self._lock:
            future = self._inflight
            if future is None or future.done():
                future = self._submit(self._clock())
        if future is not None:
            wait_futures([future], timeout=timeout)

    def _submit(self, now: float) -> Future[None] | None:
        # Called with self._lock held.
        try:
            future = self._executor.submit(self._job)
        except RuntimeError:  # the pool is shutting down: keep serving the last snapshot
            return None
        self._last_started = now
        self._inflight = future
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: Future[None]) -> None:
        with self._lock:
            if self._inflight is future:
                self._inflight = None


def due(last: float, now: float, interval: float) -> bool:
    """True when ``interval`` seconds passed since ``last``, or the wall clock went back (it
    was set back: waiting for it to catch up would stop the refreshes for that long)."""
    elapsed = now - last
    return elapsed < 0 or elapsed >= interval
