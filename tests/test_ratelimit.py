"""The token bucket paces requests: a burst at once, then the configured rate."""

from __future__ import annotations

import threading

import pytest

from exporter.ecs.ratelimit import RateLimiter, TokenBucket
from tests.support.fakes import FakeClock


def test_burst_passes_then_callers_wait_for_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(4.0, 2, clock=clock, sleep=clock.sleep)
    assert [bucket.acquire() for _ in range(5)] == [0.0, 0.0, 0.25, 0.25, 0.25]
    assert clock.sleeps == [0.25, 0.25, 0.25]


def test_tokens_refill_while_idle_up_to_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1.0, 3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        bucket.acquire()
    clock.advance(60.0)  # a long pause refills 3 tokens, not 60
    assert [bucket.acquire() for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]


def test_concurrent_callers_are_spaced_by_the_rate() -> None:
    clock = FakeClock()
    bucket: RateLimiter = TokenBucket(10.0, 1, clock=clock, sleep=lambda _: None)
    waits: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(25):
            waited = bucket.acquire()
            with lock:
                waits.append(waited)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # The clock never moved: every token after the first was reserved 0.1 s after the last one.
    assert sorted(round(w, 6) for w in waits) == [round(0.1 * i, 6) for i in range(100)]


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0), (1.0, 0.5)])
def test_nonsense_settings_are_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        TokenBucket(rate, burst)
