"""Client-side rate limiting, so the exporter stays under the API's flow control.

The ECS quota is per API, per region and per account (RAM users share their account's), so one
bucket is shared by every target that uses the same account and region.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from exporter.ecs.errors import RateLimitWaitError


class RateLimiter(Protocol):
    """Something that paces requests."""

    def acquire(self, max_wait: float | None = None) -> float:
        """Block until one request may be sent; return the seconds waited.

        When the wait would be longer than ``max_wait`` seconds, take nothing and raise
        :class:`RateLimitWaitError` at once instead of blocking past the caller's deadline.
        """
        ...


class TokenBucket:
    """A token bucket: ``burst`` requests at once, then ``rate_per_second`` on average.

    Thread-safe. A caller that finds the bucket empty reserves the next token under the lock and
    sleeps outside it, so concurrent callers are served in arrival order without busy waiting.
    ``clock`` (monotonic seconds) and ``sleep`` are injectable for tests.
    """

    def __init__(
        self,
        rate_per_second: float,
        burst: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not rate_per_second > 0:
            raise ValueError(f"rate_per_second must be > 0, got {rate_per_second!r}")
        if not burst >= 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        self.rate_per_second = float(rate_per_second)
        self.burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._updated = clock()

    def __repr__(self) -> str:
        return f"TokenBucket(rate_per_second={self.rate_per_second}, burst={self.burst})"

    def acquire(self, max_wait: float | None = None) -> float:
        """Take one token, waiting for it if needed; return the seconds waited (0.0 if none).

        If the token would come later than ``max_wait`` seconds from now, none is taken (later
        callers do not wait behind a request that will not be sent) and
        :class:`RateLimitWaitError` is raised without waiting.
        """
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - self._updated)
            self._updated = now
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate_per_second)
            # The token may go negative: a debt that later callers wait behind.
            tokens = self._tokens - 1.0
            wait = 0.0 if tokens >= 0 else -tokens / self.rate_per_second
            if max_wait is not None and wait > max_wait:
                raise RateLimitWaitError(
                    f"the client-side rate limit ({self.rate_per_second:g} requests/s shared by "
                    f"every target of this account and region) would delay this request by "
                    f"{wait:.1f}s, more than the {max(max_wait, 0.0):.1f}s its call has left"
                )
            self._tokens = tokens
        if wait > 0:
            self._sleep(wait)
        return wait
