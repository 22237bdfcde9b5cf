"""The parameters of a generated workload (:class:`WorldSpec`) and the named profiles."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from exporter.ecs.models import OSS_OUTPUT_ERROR_CODES
from exporter.simulator.model import OUTCOMES, outcome_named

DAY = 86_400.0


@dataclass(frozen=True)
class WorldSpec:
    """Parameters of a generated workload (all times in seconds).

    ``outcome_mix`` maps outcome names (see :data:`OUTCOMES`) to weights; ``oss_failure_mix``
    maps OSS error codes to weights. Ranges are ``(low, high)``; durations are drawn log-uniformly.
    ``backlog`` is the number of finished per-instance records generated before the start time
    (spread over ``backlog_span``); ``arrival_rate`` is new invocations per second from the start
    time on (0: none). ``every_code`` seeds the backlog with one record of each documented
    ErrorCode and OssOutputErrorCode, and one periodic task, so every value is on show.
    """

    instances: int = 50
    arrival_rate: float = 0.0
    instances_per_invocation: tuple[int, int] = (1, 4)
    outcome_mix: Mapping[str, float] = field(default_factory=lambda: {"Success": 1.0})
    periodic_share: float = 0.0
    every_reboot_share: float = 0.0
    period_seconds: tuple[float, float] = (30.0, 120.0)
    pending_seconds: tuple[float, float] = (0.5, 3.0)
    duration_seconds: tuple[float, float] = (1.0, 60.0)
    timeout_seconds: float = 60.0
    oss_share: float = 0.0
    oss_failure_share: float = 0.0
    oss_failure_mix: Mapping[str, float] = field(
        default_factory=lambda: dict.fromkeys(OSS_OUTPUT_ERROR_CODES[1:], 1.0)
    )
    oss_delay_seconds: tuple[float, float] = (1.0, 10.0)
    dropped_share: float = 0.0
    container_share: float = 0.0
    tag_share: float = 0.5
    resource_group_share: float = 0.5
    backlog: int = 0
    backlog_span: float = 2 * DAY
    every_code: bool = False
    retention_seconds: float = 30 * DAY
    max_entries: int = 10_000

    def validate(self) -> None:
        """Raise ``ValueError`` when a value is out of range or an outcome is unknown."""
        if self.instances < 1:
            raise ValueError("instances must be at least 1")
        if self.arrival_rate < 0:
            raise ValueError("arrival_rate must not be negative")
        low, high = self.instances_per_invocation
        if not 1 <= low <= high:
            raise ValueError("instances_per_invocation must be 1 <= low <= high")
        if not self.outcome_mix or any(w < 0 for w in self.outcome_mix.values()):
            raise ValueError("outcome_mix needs non-negative weights")
        for name in self.outcome_mix:
            outcome_named(name)
        for code in self.oss_failure_mix:
            if code not in OSS_OUTPUT_ERROR_CODES:
                raise ValueError(f"unknown OSS error code {code!r}")
        for share in (
            self.periodic_share,
            self.every_reboot_share,
            self.oss_share,
            self.oss_failure_share,
            self.dropped_share,
            self.container_share,
            self.tag_share,
            self.resource_group_share,
        ):
            if not 0.0 <= share <= 1.0:
                raise ValueError("shares must be between 0 and 1")
        if self.backlog < 0 or self.max_entries < 1 or self.retention_seconds <= 0:
            raise ValueError("backlog, max_entries and retention_seconds must be positive")


_DEMO_MIX: dict[str, float] = {
    "Success": 60.0,
    "Failed": 10.0,
    "Timeout": 4.0,
    "Error": 3.0,
    "Terminated": 1.0,
    "Terminated.ExecutionInterrupted": 1.0,
    "Stopped": 1.5,
    "Cancelled": 1.0,
    **{name: 1.0 for name in OUTCOMES if name.startswith(("Aborted.", "Invalid."))},
}

PROFILES: dict[str, WorldSpec] = {
    # Lively: a new invocation every ~4 s with a visible mix of everything.
    "demo": WorldSpec(
        instances=40,
        arrival_rate=0.25,
        instances_per_invocation=(1, 6),
        outcome_mix=_DEMO_MIX,
        periodic_share=0.06,
        every_reboot_share=0.03,
        period_seconds=(30.0, 90.0),
        duration_seconds=(1.0, 90.0),
        timeout_seconds=60.0,
        oss_share=0.3,
        oss_failure_share=0.4,
        dropped_share=0.05,
        container_share=0.1,
        backlog=300,
        backlog_span=6 * 3600.0,
        every_code=True,
    ),
    # A realistic production rhythm: mostly successes, a few failures.
    "steady": WorldSpec(
        instances=200,
        arrival_rate=0.1,
        instances_per_invocation=(1, 10),
        outcome_mix={
            "Success": 95.0,
            "Failed": 3.0,
            "Timeout": 1.0,
            "Aborted.ClientNotRunning": 1.0,
        },
        periodic_share=0.02,
        duration_seconds=(1.0, 120.0),
        oss_share=0.1,
        oss_failure_share=0.05,
        dropped_share=0.01,
        backlog=2_000,
        backlog_span=3 * DAY,
    ),
    # A static backlog for benchmarks.
    "bench": WorldSpec(
        instances=500,
        arrival_rate=0.0,
        instances_per_invocation=(1, 8),
        outcome_mix={
            "Success": 90.0,
            "Failed": 6.0,
            "Timeout": 2.0,
            "Aborted.ClientNotRunning": 2.0,
        },
        oss_share=0.1,
        oss_failure_share=0.2,
        dropped_share=0.02,
        backlog=10_000,
        backlog_span=7 * DAY,
    ),
    # Almost nothing happens.
    "quiet": WorldSpec(
        instances=5,
        arrival_rate=1 / 300.0,
        instances_per_invocation=(1, 2),
        outcome_mix={"Success": 1.0},
        backlog=10,
        backlog_span=DAY,
    ),
}


def spec_with(base: WorldSpec | str, **changes: Any) -> WorldSpec:
    """A profile (or spec) with some fields changed, validated."""
    spec = PROFILES[base] if isinstance(base, str) else base
    changed = replace(spec, **changes)
    changed.validate()
    return changed
