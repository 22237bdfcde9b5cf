"""The API's time format, and how an answer shows the world's times (:class:`TimeView`)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


def format_time(epoch: float | None) -> str:
    """Return the API's time format (``2019-12-20T06:15:55Z``), "" for None."""
    if epoch is None:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@dataclass(frozen=True, slots=True)
class TimeView:
    """How the API shows the world's times (``StartTime``, ``FinishedTime``, ``StopTime``).

    ``offset``: seconds the API's clock is ahead of the world's clock (negative: behind);
    ``resolution``: shown times are cut down to a multiple of it (1: whole seconds, as the API
    shows them; 60: whole minutes, so many results share a ``StartTime``).
    """

    offset: float = 0.0
    resolution: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.offset):
            raise ValueError("the clock offset must be a finite number of seconds")
        if not (math.isfinite(self.resolution) and self.resolution >= 1):
            raise ValueError("the time resolution must be at least 1 second")

    def shift(self, epoch: float) -> float:
        """``epoch`` (world clock) as the API's clock shows it, at the view's resolution."""
        shifted = math.floor(epoch + self.offset)
        return float(shifted - shifted % self.resolution)

    def format(self, epoch: float | None) -> str:
        return "" if epoch is None else format_time(self.shift(epoch))


NO_SHIFT = TimeView()  # times as the world has them, in whole seconds
