"""A seeded, reproducible Cloud Assistant workload that moves with a clock.

The world holds *invocations* (one RunCommand/InvokeCommand call each). An invocation targets one
or more instances (optionally a container on the instance); each target has one *run* for a
one-time task, or a growing series of runs for a periodic (``RepeatMode`` ``Period``) or
``EveryReboot`` task. Every run follows a plan fixed when it is created (queued, start, end,
outcome, OSS delivery), so the state of any record at any time is a pure function of the plan and
the time asked about:

* one-time run: ``Pending`` until it starts, ``Running`` until it ends (``Stopping`` first when
  the outcome is ``Stopped``), then its terminal status. Outcomes that never run a process
  (``Aborted``, ``Invalid``, ``Cancelled``) stay ``Pending`` until they are decided and carry no
  ``StartTime``.
* periodic run: the record without history shows the latest run: ``Scheduled`` before the first
  run and between runs, ``Running`` during one, and the last run's terminal status once a finite
  schedule is over. With history there is one record per run that has started.
* OSS delivery (invocations with ``OssOutputDelivery``): empty while the run is not terminal,
  ``InProgress`` for a short while after, then ``Finished`` (with ``OssOutputUri``) or ``Failed``
  (with ``OssOutputErrorCode`` and ``OssOutputErrorInfo``). A run that never ran fails delivery at
  once with ``CloudAssistant.UnsupportedInvocationStatus``.

Random arrivals are drawn from one RNG stream in creation order, and periodic runs from one RNG per
target, so the same seed and spec give the same records whatever times the world is asked about.

Retention follows the API: records of invocations created more than ``retention_seconds`` ago
disappear, and only the newest ``max_entries`` per-instance records stay in view (history runs of
a retained invocation stay too).

Thread-safety: every public method takes the world's lock.
"""

from __future__ import annotations

import base64
import bisect
import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from exporter.ecs.models import (
    ERROR_CODES,
    INVOCATION_STATUSES,
    OSS_OUTPUT_ERROR_CODES,
    OSS_OUTPUT_STATUSES,
    TERMINAL_STATUSES,
)

# 2026-01-01T00:00:00Z: a fixed, recognisable start for manual clocks.
DEFAULT_START = 1_767_225_600.0
DAY = 86_400.0

# ---------------------------------------------------------------------------------------------
# Clocks


class Clock(Protocol):
    """What the world reads the time from (epoch seconds, UTC)."""

    def now(self) -> float: ...


class WallClock:
    """The real time."""

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that only moves when told to (tests)."""

    def __init__(self, start: float = DEFAULT_START) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (never backwards) and return the new time."""
        if seconds < 0:
            raise ValueError("a ManualClock does not go backwards")
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, when: float) -> None:
        """Jump to ``when`` (not earlier than the current time)."""
        with self._lock:
            if when < self._now:
                raise ValueError("a ManualClock does not go backwards")
            self._now = float(when)


# ---------------------------------------------------------------------------------------------
# Outcomes


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ends: its terminal ``InvocationStatus`` and ``ErrorCode``.

    ``runs`` tells whether a process was started (``StartTime`` set); ``Aborted``, ``Invalid`` and
    ``Cancelled`` runs never start.
    """

    name: str
    status: str
    error_code: str = ""
    runs: bool = True


def _build_outcomes() -> dict[str, Outcome]:
    table = [
        Outcome("Success", "Success"),
        Outcome("Failed", "Failed", "ExitCodeNonzero"),
        Outcome("Timeout", "Timeout", "ExecutionTimeout"),
        Outcome("Error", "Error", "ExecutionException"),
        Outcome("Terminated", "Terminated"),
        Outcome("Terminated.ExecutionInterrupted", "Terminated", "ExecutionInterrupted"),
        Outcome("Stopped", "Stopped"),
        Outcome("Cancelled", "Cancelled", runs=False),
    ]
    for code in (
        "ClientNotRunning",
        "ClientNotResponse",
        "ClientIsUpgrading",
        "ClientNeedUpgrade",
        "DeliveryTimeout",
        "SecurityGroupRuleDenied",
        "InstanceNotRunning",
        "InstanceReleased",
        "TaskConcurrencyLimit",
    ):
        table.append(Outcome(f"Aborted.{code}", "Aborted", code, runs=False))
    for code in (
        "CommandNotApplicable",
        "AccountNotExists",
        "DirectoryNotExists",
        "BadCronExpression",
        "InstanceNotExists",
    ):
        table.append(Outcome(f"Invalid.{code}", "Invalid", code, runs=False))
    return {o.name: o for o in table}


OUTCOMES: dict[str, Outcome] = _build_outcomes()
_OUTCOME_BY_CODE = {o.error_code: o for o in OUTCOMES.values() if o.error_code}
assert set(_OUTCOME_BY_CODE) == set(ERROR_CODES), "every documented ErrorCode has an outcome"


def outcome_named(name: str | Outcome) -> Outcome:
    """Find an outcome by name (``"Aborted.ClientNotRunning"``), by status or by error code.

    Raises ``ValueError`` for an unknown name.
    """
    if isinstance(name, Outcome):
        return name
    found = OUTCOMES.get(name) or _OUTCOME_BY_CODE.get(name)
    if found is None:
        raise ValueError(f"unknown outcome {name!r}; known: {', '.join(sorted(OUTCOMES))}")
    return found


ERROR_INFO: dict[str, str] = {
    "InstanceNotExists": "the specified instance does not exists",
    "InstanceReleased": "the specified instance was released during task execution",
    "InstanceNotRunning": "the specified instance was not running during task execution",
    "CommandNotApplicable": (
        "the OS type of the instance does not support the specified command type"
    ),
    "AccountNotExists": "the specified account does not exist",
    "DirectoryNotExists": "the specified directory does not exist",
    "BadCronExpression": "the cron expression is invalid",
    "ClientNotRunning": "the aliyun service is not running on the instance",
    "ClientNotResponse": "the aliyun service in the instance does not response",
    "ClientIsUpgrading": "the aliyun service in the instance is upgrading during task execution",
    "ClientNeedUpgrade": (
        "the aliyun service in the instance need to be upgraded to at least version "
        "2.2.4.1007 to support the OssOutputDelivery feature"
    ),
    "DeliveryTimeout": "the command delivery has been timeout",
    "ExecutionTimeout": "the command execution has been timeout",
    "ExecutionException": "the command execution got an exception",
    "ExecutionInterrupted": "the command execution has been interrupted",
    "ExitCodeNonzero": "the command execution exit code is not zero",
    "SecurityGroupRuleDenied": "the security group rules denied access to the aliyun service",
    "TaskConcurrencyLimit": "the number of concurrent tasks exceeded the quota",
}

OSS_ERROR_INFO: dict[str, str] = {
    "CloudAssistant.UnsupportedInvocationStatus": (
        "The invocation status does not support output delivery."
    ),
    "CloudAssistant.ClientNeedUpgrade": (
        "The Cloud Assistant Agent version does not support output delivery."
    ),
    "OSS.AccessDenied": "You have no right to access this bucket.",
    "OSS.NoSuchBucket": "The specified bucket does not exist.",
    "OSS.FileImmutable": "The object is protected by a retention policy.",
    "OSS.InvalidObjectName": "The object name is invalid.",
}

# Output is cut at 24 KB; Dropped counts the bytes cut.
OUTPUT_LIMIT_BYTES = 24 * 1024

REPEAT_MODES = ("Once", "Period", "EveryReboot")


# ---------------------------------------------------------------------------------------------
# The workload spec


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


# ---------------------------------------------------------------------------------------------
# Plans


@dataclass(slots=True)
class RunPlan:
    """One execution on one target, fixed when it is created."""

    repeats: int  # Repeats of this run (1 for a one-time task)
    queued: float  # when the record appears (Pending) / when the periodic run is due
    start: float  # process start; for outcomes that never run, the time they are decided
    end: float  # terminal from this time on (== start for outcomes that never run)
    outcome: Outcome
    exit_code: int
    stop_at: float | None  # Stopped outcome: StopTime, Stopping until ``end``
    dropped: int
    oss_status: str  # final delivery status: "" (no delivery), "Finished" or "Failed"
    oss_error_code: str
    oss_ready: float  # when the delivery reaches its final status
    output: str

    def phase(self, now: float) -> int:
        """0 pending, 1 running, 2 stopping, 3 terminal (OSS in progress), 4 terminal."""
        if now < self.start or (now < self.end and not self.outcome.runs):
            return 0
        if now < self.end:
            return 2 if self.stop_at is not None and now >= self.stop_at else 1
        if self.oss_status and now < self.oss_ready:
            return 3
        return 4

    def status(self, now: float) -> str:
        phase = self.phase(now)
        if phase == 0:
            return "Pending"
        if phase == 1:
            return "Running"
        if phase == 2:
            return "Stopping"
        return self.outcome.status

    def transitions(self) -> list[float]:
        times = [self.start, self.end]
        if self.stop_at is not None:
            times.append(self.stop_at)
        if self.oss_status:
            times.append(self.oss_ready)
        return times


@dataclass(slots=True, eq=False)
class Target:
    """One instance (and optionally container) an invocation runs on."""

    instance_id: str
    container_id: str
    container_name: str
    username: str
    runs: list[RunPlan]
    rng: random.Random | None = None  # draws the next periodic runs
    oss_final: str = ""  # periodic: the delivery outcome of every run ("" none)
    scripted: tuple[Outcome, ...] = ()  # periodic runs given by a test, cycled
    # Periodic runs given by a test: duration, exit code, dropped bytes, OSS delay.
    script: tuple[float, int | None, int, float] = (10.0, None, 0, 5.0)
    # JSON per (encoding, time view): (state key, text)
    cache: dict[tuple[str, TimeView], tuple[object, str]] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class Invocation:
    seq: int
    invoke_id: str
    command_id: str
    command_index: int
    created: float
    repeat_mode: str
    period: float  # Period: fixed interval; EveryReboot: mean interval
    max_runs: int | None  # periodic: number of runs of the schedule (None: endless)
    tags: tuple[tuple[str, str], ...]
    resource_group_id: str
    oss_delivery: str
    termination_mode: str
    launcher: str
    targets: list[Target]
    # Once: every transition time of every target, for the cached InvokeRecordStatus.
    transitions: list[float] = field(default_factory=list)
    record_status_cache: tuple[int, str] = (-1, "")
    # Drawing parameters of periodic runs.
    duration: tuple[float, float] = (1.0, 10.0)
    outcome_mix: tuple[tuple[Outcome, ...], tuple[float, ...]] = ((), ())
    pruned: bool = False
    stopped_at: float | None = None  # StopInvocation time

    @property
    def periodic(self) -> bool:
        return self.repeat_mode != "Once"


@dataclass(frozen=True, slots=True)
class RecordRef:
    """Points at one record: a target's latest view (``run`` None) or one history run."""

    invocation: Invocation
    target_index: int
    run: int | None = None


@dataclass(frozen=True)
class RecordFilter:
    """The filters of DescribeInvocationResults, already validated."""

    resource_group_id: str | None = None
    invoke_id: str | None = None
    instance_id: str | None = None
    command_id: str | None = None
    invoke_record_status: str | None = None
    include_history: bool = False
    tags: tuple[tuple[str, str | None], ...] = ()  # value None: any value

    @property
    def empty(self) -> bool:
        return self == RecordFilter()


@dataclass(frozen=True, slots=True)
class FinishedRun:
    """A run that reached a terminal status: what a correct exporter counts once."""

    invoke_id: str
    instance_id: str
    container_id: str
    repeats: int
    repeat_mode: str
    status: str
    error_code: str
    oss_status: str  # at the time of the ground truth: "", InProgress, Finished, Failed
    oss_error_code: str
    dropped: int
    start_time: float | None
    finished_time: float
    duration: float | None  # FinishedTime - StartTime (None when the run never started)

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.invoke_id, self.instance_id, self.container_id, self.repeats)


@dataclass(frozen=True)
class GroundTruth:
    """What the API shows at one time, and every run finished by then (retained ones)."""

    now: float
    records: int
    by_status: dict[str, int]  # all 13 statuses (and any other), records in view
    by_error_code: dict[str, int]  # records in view with a non-empty ErrorCode
    by_oss_status: dict[str, int]  # InProgress / Finished / Failed
    running: int
    oldest_running_start: float | None
    with_dropped_output: int
    finished_runs: list[FinishedRun]

    def finished_between(self, after: float, until: float) -> list[FinishedRun]:
        """Runs with ``after < FinishedTime <= until``."""
        return [r for r in self.finished_runs if after < r.finished_time <= until]


# ---------------------------------------------------------------------------------------------
# Rendering helpers


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


_COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("uptime", " 10:15:01 up 12 days,  3:04,  0 users,  load average: 0.08, 0.03, 0.01\n", ""),
    (
        "df -h /",
        "Filesystem      Size  Used Avail Use% Mounted on\n"
        "/dev/vda1        40G  12G   26G  32% /\n",
        "",
    ),
    ("systemctl is-active nginx", "active\n", "inactive\n"),
    ("yum -y update", "Complete!\n", "Error: Failed to download metadata for repo 'base'\n"),
    (
        "python3 backup.py",
        "backup done: 1532 files, 2.1 GiB\n",
        "Traceback: OSError: [Errno 28] No space left on device\n",
    ),
    ("cat /etc/os-release", 'NAME="Alibaba Cloud Linux"\nVERSION="3"\n', ""),
    ("docker ps -q | wc -l", "7\n", "Cannot connect to the Docker daemon\n"),
    (
        "Get-Service W32Time",
        "Running  W32Time  Windows Time\n",
        "Get-Service : Cannot find any service\n",
    ),
    ("rotate-logs.sh", "rotated 12 files\n", "rotate-logs.sh: permission denied\n"),
    ("curl -fsS localhost:8080/health", '{"status":"ok"}\n', "curl: (7) Failed to connect\n"),
)
_USERNAMES = ("root", "root", "root", "ecs-user", "admin", "")
_TAG_SETS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("env", "prod"),),
    (("env", "staging"),),
    (("env", "prod"), ("team", "ops")),
    (("team", "data"), ("owner", "zhangsan")),
    (("app", "web"), ("env", "prod")),
    (("app", "batch"), ("env", "test"), ("owner", "")),
)
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


# ---------------------------------------------------------------------------------------------
# The world


class World:
    """A seeded workload moving with ``clock``; see the module docstring.

    ``World(seed, clock, spec)``: ``spec`` is a :class:`WorldSpec` or a profile name from
    :data:`PROFILES` (default: an empty world with 20 instances and no arrivals).
    """

    def __init__(
        self,
        seed: int = 0,
        clock: Clock | None = None,
        spec: WorldSpec | str | None = None,
    ) -> None:
        if isinstance(spec, str):
            if spec not in PROFILES:
                raise ValueError(f"unknown profile {spec!r}; known: {', '.join(PROFILES)}")
            spec = PROFILES[spec]
        self.spec: WorldSpec = spec if spec is not None else WorldSpec(instances=20)
        self.spec.validate()
        self.seed = seed
        self.clock: Clock = clock if clock is not None else WallClock()
        self._lock = threading.RLock()
        self._rng = random.Random(f"world/{seed}")
        self._ids = random.Random(f"ids/{seed}")
        self._arrivals = random.Random(f"arrivals/{seed}")
        self._invocations: list[Invocation] = []
        self._created: list[float] = []  # parallel to _invocations, for bisect
        self._cum: list[int] = []  # absolute records up to and including each invocation
        self._by_id: dict[str, Invocation] = {}
        self._seq = 0
        self._records_ever = 0
        self.start_time = self.clock.now()
        self._synced = self.start_time
        self._instances = [self._new_id("i-", 20) for _ in range(self.spec.instances)]
        self._command_ids = [self._new_id("c-", 20) for _ in _COMMANDS]
        self._resource_groups = [self._new_id("rg-", 15) for _ in range(3)]
        mix = self.spec.outcome_mix
        self._mix = (
            tuple(outcome_named(n) for n in mix),
            tuple(float(w) for w in mix.values()),
        )
        self._next_arrival = (
            self.start_time + self._arrivals.expovariate(self.spec.arrival_rate)
            if self.spec.arrival_rate > 0
            else math.inf
        )
        self._generate_backlog()

    # -- public API ---------------------------------------------------------------------------

    @property
    def instance_ids(self) -> list[str]:
        return list(self._instances)

    @property
    def lock(self) -> threading.RLock:
        """The lock the server holds while it reads several things consistently."""
        return self._lock

    def now(self) -> float:
        return self.clock.now()

    def add_invocation(
        self,
        instances: int | Sequence[str] = 1,
        outcome: str | Outcome | Sequence[str | Outcome] = "Success",
        *,
        at: float | None = None,
        pending: float = 1.0,
        duration: float = 10.0,
        exit_code: int | None = None,
        command_id: str | None = None,
        tags: Sequence[tuple[str, str]] = (),
        resource_group_id: str = "",
        username: str = "root",
        containers: Sequence[tuple[str, str]] | None = None,
        repeat_mode: str = "Once",
        period: float = 60.0,
        runs: int | None = None,
        oss: str | Sequence[str] | None = None,
        oss_delay: float = 5.0,
        dropped: int = 0,
        stop_after: float | None = None,
        output: str | None = None,
        invoke_id: str | None = None,
    ) -> str:
        """Add a scripted invocation and return its InvokeId.

        * ``instances``: a count (the first N instances of the world) or explicit instance ids;
        * ``outcome``: one outcome for every target, or one per target (once), or one per run
          (periodic, cycled); names as in :data:`OUTCOMES`, or a bare ErrorCode;
        * ``at``: creation time (default now); a one-time run is ``Pending`` for ``pending``
          seconds, then runs ``duration`` seconds (outcomes that never run are decided after
          ``pending``); ``Stopped`` runs are stopped after ``stop_after`` (default half) of it;
        * ``repeat_mode`` ``Period``/``EveryReboot``: runs every ``period`` seconds from ``at``
          (``runs`` of them, endless when None), each lasting ``duration``;
        * ``oss``: ``"Finished"`` or ``"Failed.<OssOutputErrorCode>"`` (or one per target)
          turns on OSS delivery; the final state comes ``oss_delay`` seconds after the run ends;
        * ``containers``: ``(ContainerId, ContainerName)`` per target;
        * ``dropped``: bytes cut from Output (a run with Output over 24 KB).
        """
        if repeat_mode not in REPEAT_MODES:
            raise ValueError(f"repeat_mode must be one of {REPEAT_MODES}")
        with self._lock:
            created = self.clock.now() if at is None else float(at)
            if isinstance(instances, int):
                if not 1 <= instances <= len(self._instances):
                    raise ValueError(f"instances must be 1..{len(self._instances)}")
                instance_ids = self._instances[:instances]
            else:
                instance_ids = list(instances)
            n = len(instance_ids)
            if n == 0:
                raise ValueError("an invocation needs at least one instance")
            outcomes = self._per_target_outcomes(outcome, n, periodic=repeat_mode != "Once")
            oss_list: list[str] = (
                [oss] * n if isinstance(oss, str) else list(oss) if oss is not None else []
            )
            if oss_list and len(oss_list) != n:
                raise ValueError("oss needs one value per target")
            if containers is not None and len(containers) != n:
                raise ValueError("containers needs one (id, name) per target")
            command_index = 0
            invoke = invoke_id or self._new_id("t-", 20)
            if invoke in self._by_id:
                raise ValueError(f"InvokeId {invoke} exists already")
            inv = Invocation(
                seq=self._next_seq(),
                invoke_id=invoke,
                command_id=command_id or self._command_ids[command_index],
                command_index=command_index,
                created=created,
                repeat_mode=repeat_mode,
                period=period,
                max_runs=runs if repeat_mode != "Once" else 1,
                tags=tuple(tags),
                resource_group_id=resource_group_id,
                oss_delivery="oss://sim-bucket/output" if oss_list else "",
                termination_mode="ProcessTree",
                launcher="",
                targets=[],
                duration=(duration, duration),
            )
            for index, instance_id in enumerate(instance_ids):
                container_id, container_name = containers[index] if containers else ("", "")
                target = Target(instance_id, container_id, container_name, username, [])
                oss_final = oss_list[index] if oss_list else ""
                if repeat_mode == "Once":
                    (one,) = outcomes[index]
                    target.runs.append(
                        self._scripted_run(
                            one,
                            created,
                            pending,
                            duration,
                            exit_code,
                            stop_after,
                            oss_final,
                            oss_delay,
                            dropped,
                            output,
                            inv.command_index,
                        )
                    )
                else:
                    target.scripted = outcomes[index]
                    target.rng = random.Random(f"{self.seed}/{inv.invoke_id}/{index}")
                    target.oss_final = oss_final
                    target.script = (duration, exit_code, dropped, oss_delay)
                inv.targets.append(target)
            self._insert(inv)
            return inv.invoke_id

    def stop_invocation(
        self, invoke_id: str, at: float | None = None, stopping: float = 2.0
    ) -> None:
        """StopInvocation at ``at`` (default now): runs running then go ``Stopping`` and are
        ``Stopped`` ``stopping`` seconds later (``StopTime`` = ``at``); runs not started yet are
        ``Cancelled``; a periodic schedule queues no more runs. States before ``at`` stay as
        they were. Raises ``ValueError`` for an unknown or already stopped invocation."""
        with self._lock:
            inv = self._by_id.get(invoke_id)
            if inv is None or inv.stopped_at is not None:
                raise ValueError(f"no running invocation {invoke_id!r}")
            when = self.clock.now() if at is None else float(at)
            for ti, target in enumerate(inv.targets):
                if inv.periodic:
                    self._ensure_runs(inv, ti, when)
                    target.runs = [run for run in target.runs if run.queued <= when]
                    if not target.runs:
                        target.runs.append(self._cancelled_run(inv, target, when))
                for run in target.runs:
                    if run.end > when:
                        _stop_run(run, when, stopping)
                target.cache.clear()
            inv.stopped_at = when
            inv.record_status_cache = (-1, "")
            if not inv.periodic:
                inv.transitions = sorted(
                    t for target in inv.targets for t in target.runs[0].transitions()
                )

    def _cancelled_run(self, inv: Invocation, target: Target, when: float) -> RunPlan:
        run = self._scripted_run(
            OUTCOMES["Cancelled"], when, 0.0, 0.0, 0, None, target.oss_final, 0.0, 0, "", 0
        )
        run.repeats = 0
        return run

    def invocation_ids(self, now: float | None = None) -> list[str]:
        """InvokeIds in view at ``now``, newest first."""
        with self._lock:
            when = self._sync(now)
            return [inv.invoke_id for inv in self._visible_invocations(when)]

    def is_periodic(self, invoke_id: str) -> bool | None:
        """True for a Period/EveryReboot invocation, False for a one-time one, None if unknown."""
        with self._lock:
            inv = self._by_id.get(invoke_id)
            return None if inv is None or inv.pruned else inv.periodic

    def records(
        self,
        now: float | None = None,
        *,
        record_filter: RecordFilter | None = None,
        content_encoding: str = "Base64",
        times: TimeView = TimeView(),
    ) -> list[dict[str, Any]]:
        """Every record in view at ``now`` as API dicts, newest invocation first."""
        with self._lock:
            when = self._sync(now)
            refs = self.select(when, record_filter or RecordFilter())
            return [self.render(ref, when, content_encoding, times) for ref in refs]

    def ground_truth(self, now: float | None = None) -> GroundTruth:
        """Counts over the records in view at ``now`` and every retained run finished by then."""
        with self._lock:
            when = self._sync(now)
            by_status: Counter[str] = Counter(dict.fromkeys(INVOCATION_STATUSES, 0))
            by_code: Counter[str] = Counter(dict.fromkeys(ERROR_CODES, 0))
            by_oss: Counter[str] = Counter(dict.fromkeys(OSS_OUTPUT_STATUSES, 0))
            running = 0
            oldest: float | None = None
            dropped = 0
            count = 0
            finished: list[FinishedRun] = []
            for ref in self._visible_refs(when):
                count += 1
                rec = self.render(ref, when, "PlainText")
                by_status[rec["InvocationStatus"]] += 1
                if rec["ErrorCode"]:
                    by_code[rec["ErrorCode"]] += 1
                if rec["OssOutputStatus"]:
                    by_oss[rec["OssOutputStatus"]] += 1
                if rec["InvocationStatus"] == "Running":
                    running += 1
                    start = self._current_run(ref, when)
                    if start is not None and (oldest is None or start.start < oldest):
                        oldest = start.start
                if rec["Dropped"] > 0:
                    dropped += 1
                finished.extend(self._finished_runs(ref, when))
            finished.sort(key=lambda r: (r.finished_time, r.key))
            return GroundTruth(
                now=when,
                records=count,
                by_status=dict(by_status),
                by_error_code=dict(by_code),
                by_oss_status=dict(by_oss),
                running=running,
                oldest_running_start=oldest,
                with_dropped_output=dropped,
                finished_runs=finished,
            )

    # -- used by the server (callers hold ``lock``) -------------------------------------------

    def sync(self, now: float | None = None) -> float:
        """Generate arrivals up to ``now``, apply retention, and return the time used."""
        with self._lock:
            return self._sync(now)

    def select(self, now: float, record_filter: RecordFilter) -> list[RecordRef]:
        """Records in view at ``now`` that match ``record_filter``, newest invocation first.

        With ``include_history`` (``invoke_id`` required) there is one record per started run,
        newest run first, for each target.
        """
        with self._lock:
            f = record_filter
            if f.invoke_id is not None:
                inv = self._by_id.get(f.invoke_id)
                if inv is None or inv.pruned or inv.created > now:
                    return []
                candidates: Iterator[Invocation] = iter([inv])
            else:
                candidates = self._visible_invocations(now)
            out: list[RecordRef] = []
            lo = self._lowest_visible_position(now)
            for inv in candidates:
                if not self._invocation_matches(inv, f, now):
                    continue
                index = self._index_of(inv)
                base = self._cum[index] - len(inv.targets)
                for ti, target in enumerate(inv.targets):
                    if base + (len(inv.targets) - 1 - ti) < lo:
                        continue  # beyond the newest max_entries records
                    if f.instance_id is not None and target.instance_id != f.instance_id:
                        continue
                    if f.include_history and inv.periodic:
                        self._ensure_runs(inv, ti, now)
                        started = [k for k, run in enumerate(target.runs) if run.queued <= now]
                        started = [k for k in started if target.runs[k].phase(now) > 0]
                        cutoff = now - self.spec.retention_seconds
                        out.extend(
                            RecordRef(inv, ti, k)
                            for k in reversed(started)
                            if target.runs[k].queued >= cutoff
                        )
                    else:
                        out.append(RecordRef(inv, ti))
            return out

    def visible_span(self, now: float, snapshot: float) -> tuple[int, int]:
        """Absolute positions ``[lo, hi)`` of the unfiltered records of a snapshot taken at
        ``snapshot`` that are still in view at ``now`` (``snapshot <= now``)."""
        with self._lock:
            hi = self._total_until(snapshot)
            return min(self._lowest_visible_position(now), hi), hi

    def ref_at(self, position: int) -> RecordRef | None:
        """The record at an absolute position (see :meth:`visible_span`), None if pruned."""
        with self._lock:
            index = bisect.bisect_right(self._cum, position)
            if index >= len(self._invocations):
                return None
            inv = self._invocations[index]
            base = self._cum[index] - len(inv.targets)
            if position < base:
                return None
            # Positions grow with age reversed inside an invocation, so that the newest-first
            # walk (positions descending) lists targets in their own order.
            return RecordRef(inv, len(inv.targets) - 1 - (position - base))

    def render(
        self, ref: RecordRef, now: float, content_encoding: str, times: TimeView = TimeView()
    ) -> dict[str, Any]:
        """The API dict of ``ref`` at ``now``, its times shown through ``times``."""
        with self._lock:
            return self._render(ref, now, content_encoding, times)

    def render_json(
        self, ref: RecordRef, now: float, content_encoding: str, times: TimeView = TimeView()
    ) -> str:
        """The record as compact JSON, cached while its state does not change."""
        with self._lock:
            inv = ref.invocation
            target = inv.targets[ref.target_index]
            if ref.run is not None:
                record = self._render(ref, now, content_encoding, times)
                return json.dumps(record, separators=(",", ":"))
            key = self._state_key(inv, ref.target_index, now)
            cached = target.cache.get((content_encoding, times))
            if cached is not None and cached[0] == key:
                return cached[1]
            record = self._render(ref, now, content_encoding, times)
            text = json.dumps(record, separators=(",", ":"))
            target.cache[(content_encoding, times)] = (key, text)
            return text

    def invoke_record_status(self, inv: Invocation, now: float) -> str:
        with self._lock:
            return self._invoke_record_status(inv, now)

    # -- generation ---------------------------------------------------------------------------

    def _new_id(self, prefix: str, length: int) -> str:
        return prefix + "".join(self._ids.choice(_ALNUM) for _ in range(length))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _per_target_outcomes(
        self,
        outcome: str | Outcome | Sequence[str | Outcome],
        n: int,
        *,
        periodic: bool,
    ) -> list[tuple[Outcome, ...]]:
        if isinstance(outcome, (str, Outcome)):
            return [(outcome_named(outcome),)] * n
        resolved = tuple(outcome_named(o) for o in outcome)
        if periodic:
            if not resolved:
                raise ValueError("outcome must not be empty")
            return [resolved] * n
        if len(resolved) != n:
            raise ValueError("outcome needs one value per instance")
        return [(o,) for o in resolved]

    def _scripted_run(
        self,
        outcome: Outcome,
        created: float,
        pending: float,
        duration: float,
        exit_code: int | None,
        stop_after: float | None,
        oss_final: str,
        oss_delay: float,
        dropped: int,
        output: str | None,
        command_index: int,
        repeats: int = 1,
    ) -> RunPlan:
        start = created + pending
        end = start + duration if outcome.runs else start
        stop_at = None
        if outcome.status == "Stopped":
            stop_at = start + (stop_after if stop_after is not None else duration / 2)
            stop_at = min(stop_at, end)
        oss_status, oss_code = self._oss_final(oss_final, outcome)
        return RunPlan(
            repeats=repeats,
            queued=created,
            start=start,
            end=end,
            outcome=outcome,
            exit_code=exit_code if exit_code is not None else self._default_exit(outcome, 1),
            stop_at=stop_at,
            dropped=dropped,
            oss_status=oss_status,
            oss_error_code=oss_code,
            oss_ready=end + (oss_delay if oss_status else 0.0),
            output=output if output is not None else self._output_for(outcome, command_index),
        )

    @staticmethod
    def _oss_final(oss_final: str, outcome: Outcome) -> tuple[str, str]:
        if not oss_final:
            return "", ""
        if not outcome.runs:
            return "Failed", "CloudAssistant.UnsupportedInvocationStatus"
        if oss_final == "Finished":
            return "Finished", ""
        status, _, code = oss_final.partition(".")
        if status != "Failed" or code not in OSS_OUTPUT_ERROR_CODES:
            raise ValueError(f"oss must be 'Finished' or 'Failed.<code>', not {oss_final!r}")
        return "Failed", code

    @staticmethod
    def _default_exit(outcome: Outcome, nonzero: int) -> int:
        if outcome.status == "Failed":
            return nonzero
        if outcome.status in ("Timeout", "Terminated", "Stopped", "Error"):
            return -1
        return 0

    @staticmethod
    def _output_for(outcome: Outcome, command_index: int) -> str:
        _, ok, bad = _COMMANDS[command_index % len(_COMMANDS)]
        if not outcome.runs:
            return ""
        if outcome.status == "Success":
            return ok
        return bad or ok

    def _draw_range(self, rng: random.Random, bounds: tuple[float, float], log: bool) -> float:
        low, high = bounds
        if high <= low:
            return low
        if log and low > 0:
            return math.exp(rng.uniform(math.log(low), math.log(high)))
        return rng.uniform(low, high)

    def _draw_oss(self, rng: random.Random) -> str:
        spec = self.spec
        if rng.random() >= spec.oss_failure_share:
            return "Finished"
        codes = list(spec.oss_failure_mix)
        weights = list(spec.oss_failure_mix.values())
        return "Failed." + rng.choices(codes, weights)[0]

    def _draw_run(
        self,
        rng: random.Random,
        outcome: Outcome,
        queued: float,
        command_index: int,
        oss_final: str,
        repeats: int,
        pending: float,
        max_duration: float | None = None,
    ) -> RunPlan:
        spec = self.spec
        duration = self._draw_range(rng, spec.duration_seconds, log=True)
        if outcome.status == "Timeout":
            duration = spec.timeout_seconds
        if max_duration is not None:
            duration = min(duration, max_duration)
        if not outcome.runs:
            pending = 60.0 if outcome.error_code == "DeliveryTimeout" else pending
        dropped = 0
        if outcome.runs and rng.random() < spec.dropped_share:
            dropped = rng.randint(1, 400_000)
        exit_code = self._default_exit(outcome, rng.choice((1, 1, 2, 127, 255)))
        return self._scripted_run(
            outcome,
            queued,
            pending,
            duration,
            exit_code,
            None,
            oss_final,
            self._draw_range(rng, spec.oss_delay_seconds, log=False),
            dropped,
            None,
            command_index,
            repeats=repeats,
        )

    def _random_invocation(
        self,
        created: float,
        rng: random.Random,
        *,
        force_outcome: Outcome | None = None,
        force_oss: str | None = None,
        force_mode: str | None = None,
        n_targets: int | None = None,
    ) -> Invocation:
        spec = self.spec
        low, high = spec.instances_per_invocation
        n = n_targets if n_targets is not None else rng.randint(low, min(high, spec.instances))
        n = min(n, len(self._instances))
        instance_ids = rng.sample(self._instances, n)
        roll = rng.random()
        mode = force_mode or (
            "Period"
            if roll < spec.periodic_share
            else "EveryReboot"
            if roll < spec.periodic_share + spec.every_reboot_share
            else "Once"
        )
        command_index = rng.randrange(len(_COMMANDS))
        with_oss = force_oss is not None or rng.random() < spec.oss_share
        tags = rng.choice(_TAG_SETS) if rng.random() < spec.tag_share else ()
        group = (
            rng.choice(self._resource_groups) if rng.random() < spec.resource_group_share else ""
        )
        in_containers = rng.random() < spec.container_share
        username = rng.choice(_USERNAMES)
        inv = Invocation(
            seq=self._next_seq(),
            invoke_id=self._new_id("t-", 20),
            command_id=self._command_ids[command_index],
            command_index=command_index,
            created=created,
            repeat_mode=mode,
            period=self._draw_range(rng, spec.period_seconds, log=False),
            max_runs=1 if mode == "Once" else None,
            tags=tags,
            resource_group_id=group,
            oss_delivery="oss://sim-bucket/cloud-assistant" if with_oss else "",
            termination_mode=rng.choice(("Process", "ProcessTree")),
            launcher='python3 -u {{ACS::ScriptFileName|Ext(".py")}}'
            if _COMMANDS[command_index][0].startswith("python3")
            else "",
            targets=[],
            duration=spec.duration_seconds,
            outcome_mix=self._mix,
        )
        for index, instance_id in enumerate(instance_ids):
            container_id = container_name = ""
            if in_containers:
                container_id = "".join(rng.choice("0123456789abcdef") for _ in range(64))
                container_name = f"app-{rng.randrange(1000):03d}"
            target = Target(instance_id, container_id, container_name, username, [])
            if with_oss:
                oss_final = force_oss if force_oss is not None else self._draw_oss(rng)
            else:
                oss_final = ""
            if mode == "Once":
                outcome = force_outcome or rng.choices(self._mix[0], self._mix[1])[0]
                pending = self._draw_range(rng, spec.pending_seconds, log=False)
                target.runs.append(
                    self._draw_run(rng, outcome, created, command_index, oss_final, 1, pending)
                )
            else:
                target.rng = random.Random(f"{self.seed}/{inv.invoke_id}/{index}")
                target.oss_final = oss_final
            inv.targets.append(target)
        return inv

    def _generate_backlog(self) -> None:
        spec = self.spec
        if spec.backlog <= 0:
            return
        rng = random.Random(f"backlog/{self.seed}")
        start = self.start_time
        invocations: list[Invocation] = []
        records = 0
        if spec.every_code:
            specials: list[tuple[Outcome | None, str | None, str | None]] = [
                (outcome, None, None) for outcome in OUTCOMES.values()
            ]
            specials += [(OUTCOMES["Success"], "Finished", None)]
            specials += [(OUTCOMES["Success"], f"Failed.{c}", None) for c in OSS_OUTPUT_ERROR_CODES]
            specials += [(None, None, "Period"), (None, None, "EveryReboot")]
            for outcome, oss, mode in specials:
                # Recent enough to be kept, old enough to be finished.
                created = start - rng.uniform(600.0, min(spec.backlog_span, 3600.0))
                if mode is not None:
                    created = start - rng.uniform(300.0, 900.0)
                inv = self._random_invocation(
                    created, rng, force_outcome=outcome, force_oss=oss, force_mode=mode, n_targets=1
                )
                invocations.append(inv)
                records += len(inv.targets)
        while records < spec.backlog:
            created = start - spec.backlog_span * rng.random() - spec.timeout_seconds - 60.0
            inv = self._random_invocation(created, rng, force_mode="Once")
            extra = records + len(inv.targets) - spec.backlog
            if extra > 0:
                del inv.targets[len(inv.targets) - extra :]
            invocations.append(inv)
            records += len(inv.targets)
        invocations.sort(key=lambda i: (i.created, i.seq))
        for inv in invocations:
            self._append(inv)

    # -- index --------------------------------------------------------------------------------

    def _prepare(self, inv: Invocation) -> None:
        if not inv.periodic:
            inv.transitions = sorted(
                t for target in inv.targets for t in target.runs[0].transitions()
            )
        self._by_id[inv.invoke_id] = inv
        self._records_ever += len(inv.targets)

    def _append(self, inv: Invocation) -> None:
        self._prepare(inv)
        last = self._cum[-1] if self._cum else 0
        self._invocations.append(inv)
        self._created.append(inv.created)
        self._cum.append(last + len(inv.targets))

    def _insert(self, inv: Invocation) -> None:
        index = bisect.bisect_right(self._created, inv.created)
        if index == len(self._invocations):
            self._append(inv)
            return
        self._prepare(inv)
        before = (
            self._cum[index - 1] if index > 0 else self._cum[0] - len(self._invocations[0].targets)
        )
        self._invocations.insert(index, inv)
        self._created.insert(index, inv.created)
        self._cum.insert(index, before + len(inv.targets))
        for i in range(index + 1, len(self._cum)):
            self._cum[i] += len(inv.targets)

    def _index_of(self, inv: Invocation) -> int:
        index = bisect.bisect_left(self._created, inv.created)
        while self._invocations[index] is not inv:
            index += 1
        return index

    def _total_until(self, when: float) -> int:
        end = bisect.bisect_right(self._created, when)
        if end == 0:
            return self._cum[0] - len(self._invocations[0].targets) if self._cum else 0
        return self._cum[end - 1]

    def _lowest_visible_position(self, now: float) -> int:
        if not self._invocations:
            return 0
        by_count = self._total_until(now) - self.spec.max_entries
        start = bisect.bisect_left(self._created, now - self.spec.retention_seconds)
        if start >= len(self._invocations):
            by_age = self._cum[-1]
        else:
            by_age = self._cum[start] - len(self._invocations[start].targets)
        return max(by_count, by_age)

    def _visible_invocations(self, now: float) -> Iterator[Invocation]:
        end = bisect.bisect_right(self._created, now)
        lo = self._lowest_visible_position(now)
        for index in range(end - 1, -1, -1):
            if self._cum[index] <= lo:
                break
            yield self._invocations[index]

    def _visible_refs(self, now: float) -> Iterator[RecordRef]:
        lo = self._lowest_visible_position(now)
        for inv in self._visible_invocations(now):
            base = self._cum[self._index_of(inv)] - len(inv.targets)
            for ti in range(len(inv.targets)):
                if base + (len(inv.targets) - 1 - ti) >= lo:
                    yield RecordRef(inv, ti)

    def _sync(self, now: float | None) -> float:
        when = self.clock.now() if now is None else now
        if when <= self._synced:
            return when
        while self._next_arrival <= when:
            created = self._next_arrival
            # Insert, not append: a test may have scripted an invocation in the future.
            self._insert(self._random_invocation(created, self._rng))
            self._next_arrival = created + self._arrivals.expovariate(self.spec.arrival_rate)
        self._synced = when
        self._prune(when)
        return when

    def _prune(self, now: float) -> None:
        lo = self._lowest_visible_position(now)
        drop = 0
        while drop < len(self._invocations) and self._cum[drop] <= lo:
            drop += 1
        # Prune in batches: deleting the head of the lists is a memmove.
        if drop >= 64 or (drop and drop * 4 >= len(self._invocations)):
            for inv in self._invocations[:drop]:
                inv.pruned = True
                del self._by_id[inv.invoke_id]
            del self._invocations[:drop]
            del self._created[:drop]
            del self._cum[:drop]

    # -- state --------------------------------------------------------------------------------

    def _ensure_runs(self, inv: Invocation, ti: int, now: float) -> None:
        """Draw the periodic runs of a target up to the first one due after ``now``."""
        target = inv.targets[ti]
        runs = target.runs
        rng = target.rng
        assert rng is not None
        oss_final = target.oss_final
        if inv.stopped_at is not None:
            # stop_invocation drew every run due before the stop: drawing again after it would
            # consume the random stream differently (EveryReboot) and could add a run the stop
            # had already ruled out.
            return
        while not runs or runs[-1].queued <= now:
            if inv.max_runs is not None and len(runs) >= inv.max_runs:
                return
            k = len(runs)
            if not runs:
                due = inv.created + (inv.period if inv.repeat_mode == "Period" else 0.0)
            elif inv.repeat_mode == "Period":
                due = runs[0].queued + k * inv.period
            else:
                due = runs[-1].queued + inv.period * rng.uniform(0.5, 2.0)
            if inv.stopped_at is not None and due > inv.stopped_at:
                return
            max_duration = inv.period * 0.8
            if target.scripted:
                outcome = target.scripted[k % len(target.scripted)]
                duration, exit_code, dropped, oss_delay = target.script
                runs.append(
                    self._scripted_run(
                        outcome,
                        due,
                        0.0,
                        duration,
                        exit_code,
                        None,
                        oss_final,
                        oss_delay,
                        dropped,
                        None,
                        inv.command_index,
                        repeats=k + 1,
                    )
                )
            else:
                outcome = rng.choices(inv.outcome_mix[0], inv.outcome_mix[1])[0]
                runs.append(
                    self._draw_run(
                        rng,
                        outcome,
                        due,
                        inv.command_index,
                        oss_final,
                        k + 1,
                        0.0,
                        max_duration,
                    )
                )

    def _current_index(self, inv: Invocation, ti: int, now: float) -> int:
        """Index of the latest run of a periodic target that has started (-1: none yet)."""
        self._ensure_runs(inv, ti, now)
        runs = inv.targets[ti].runs
        k = len(runs) - 1
        while k >= 0 and runs[k].queued > now:
            k -= 1
        return k

    def _current_run(self, ref: RecordRef, now: float) -> RunPlan | None:
        inv = ref.invocation
        target = inv.targets[ref.target_index]
        if ref.run is not None:
            return target.runs[ref.run]
        if not inv.periodic:
            return target.runs[0]
        k = self._current_index(inv, ref.target_index, now)
        return target.runs[k] if k >= 0 else None

    def _schedule_over(self, inv: Invocation, ti: int, k: int, now: float) -> bool:
        if inv.max_runs is not None and k + 1 >= inv.max_runs:
            return True
        stopped = inv.stopped_at is not None and now >= inv.stopped_at
        return stopped and k == len(inv.targets[ti].runs) - 1

    def _state_key(self, inv: Invocation, ti: int, now: float) -> object:
        if not inv.periodic:
            return bisect.bisect_right(inv.transitions, now)
        k = self._current_index(inv, ti, now)
        phase = inv.targets[ti].runs[k].phase(now) if k >= 0 else -1
        return (k, phase, self._invoke_record_status(inv, now))

    def _invoke_record_status(self, inv: Invocation, now: float) -> str:
        if inv.stopped_at is not None and now >= inv.stopped_at:
            runs = (self._current_run(RecordRef(inv, ti), now) for ti in range(len(inv.targets)))
            stopping = any(run is not None and run.phase(now) == 2 for run in runs)
            return "Stopping" if stopping else "Stopped"
        if inv.periodic:
            for ti in range(len(inv.targets)):
                k = self._current_index(inv, ti, now)
                if k < 0 or not self._schedule_over(inv, ti, k, now):
                    return "Running"
                if inv.targets[ti].runs[k].phase(now) < 3:
                    return "Running"
            last = [t.runs[-1].outcome.status for t in inv.targets]
            return "Success" if all(s == "Success" for s in last) else "Finished"
        phase = bisect.bisect_right(inv.transitions, now)
        cached_phase, cached = inv.record_status_cache
        if cached_phase == phase:
            return cached
        statuses = [t.runs[0].status(now) for t in inv.targets]
        value = _aggregate_status(statuses)
        inv.record_status_cache = (phase, value)
        return value

    def _invocation_matches(self, inv: Invocation, f: RecordFilter, now: float) -> bool:
        if f.resource_group_id is not None and inv.resource_group_id != f.resource_group_id:
            return False
        if f.command_id is not None and inv.command_id != f.command_id:
            return False
        if f.instance_id is not None and all(t.instance_id != f.instance_id for t in inv.targets):
            return False
        if f.tags:
            have = dict(inv.tags)
            for key, value in f.tags:
                if key not in have or (value is not None and have[key] != value):
                    return False
        if f.invoke_record_status is not None:
            status = self._invoke_record_status(inv, now)
            if f.invoke_record_status == "Finished":
                return status in _FINISHED_RECORD_STATUSES
            return status == f.invoke_record_status
        return True

    def _render(
        self, ref: RecordRef, now: float, encoding: str, times: TimeView = TimeView()
    ) -> dict[str, Any]:
        inv = ref.invocation
        target = inv.targets[ref.target_index]
        run: RunPlan | None
        scheduled = False
        if ref.run is not None:
            run = target.runs[ref.run]
        elif not inv.periodic:
            run = target.runs[0]
        else:
            k = self._current_index(inv, ref.target_index, now)
            run = target.runs[k] if k >= 0 else None
            scheduled = run is None or (
                run.phase(now) >= 3 and not self._schedule_over(inv, ref.target_index, k, now)
            )
        record_status = self._invoke_record_status(inv, now)
        status = "Scheduled" if scheduled else (run.status(now) if run else "Scheduled")
        phase = run.phase(now) if run is not None else 0
        terminal = not scheduled and phase >= 3
        error_code = run.outcome.error_code if run is not None and terminal else ""
        started = run is not None and run.outcome.runs and phase >= 1
        oss_status = oss_code = oss_uri = oss_info = ""
        if run is not None and terminal and run.oss_status:
            if phase == 3:
                oss_status = "InProgress"
            else:
                oss_status = run.oss_status
                oss_code = run.oss_error_code
                oss_info = OSS_ERROR_INFO.get(oss_code, "")
                if oss_status == "Finished":
                    oss_uri = (
                        f"{inv.oss_delivery}/{inv.invoke_id}/{target.instance_id}/{run.repeats}.txt"
                    )
        output = run.output if run is not None and (terminal or scheduled) else ""
        if encoding != "PlainText":
            output = base64.b64encode(output.encode()).decode()
        stop_time = None
        if run is not None and run.stop_at is not None and phase >= 2 and not scheduled:
            stop_time = run.stop_at
        return {
            "Dropped": run.dropped if run is not None and (terminal or scheduled) else 0,
            "OssOutputDelivery": inv.oss_delivery,
            "InvocationStatus": status,
            "InstanceId": target.instance_id,
            "ExitCode": run.exit_code if run is not None and (terminal or scheduled) else 0,
            "ErrorInfo": ERROR_INFO.get(error_code, ""),
            "StartTime": times.format(run.start) if started and run is not None else "",
            "Repeats": (run.repeats if run is not None and phase >= 1 else 0)
            if inv.periodic
            else (1 if started else 0),
            "InvokeRecordStatus": record_status,
            "FinishedTime": times.format(run.end) if run is not None and phase >= 3 else "",
            "OssOutputUri": oss_uri,
            "OssOutputStatus": oss_status,
            "OssOutputErrorCode": oss_code,
            "OssOutputErrorInfo": oss_info,
            "Username": target.username,
            "ContainerId": target.container_id,
            "ContainerName": target.container_name,
            "Output": output,
            "Launcher": inv.launcher,
            "CommandId": inv.command_id,
            "ErrorCode": error_code,
            "InvokeId": inv.invoke_id,
            "TerminationMode": inv.termination_mode,
            "Tags": {"Tag": [{"TagKey": k, "TagValue": v} for k, v in inv.tags]},
            "StopTime": times.format(stop_time),
        }

    def _finished_runs(self, ref: RecordRef, now: float) -> Iterator[FinishedRun]:
        inv = ref.invocation
        target = inv.targets[ref.target_index]
        if inv.periodic:
            self._ensure_runs(inv, ref.target_index, now)
            runs = [r for r in target.runs if r.queued <= now]
        else:
            runs = target.runs
        cutoff = now - self.spec.retention_seconds
        for run in runs:
            phase = run.phase(now)
            if phase < 3 or run.queued < cutoff:
                continue
            oss_status = "InProgress" if phase == 3 else run.oss_status
            start = run.start if run.outcome.runs else None
            yield FinishedRun(
                invoke_id=inv.invoke_id,
                instance_id=target.instance_id,
                container_id=target.container_id,
                # As the API shows it: a one-time run that never started has Repeats 0.
                repeats=run.repeats if inv.periodic or run.outcome.runs else 0,
                repeat_mode=inv.repeat_mode,
                status=run.outcome.status,
                error_code=run.outcome.error_code,
                oss_status=oss_status,
                oss_error_code=run.oss_error_code if phase == 4 else "",
                dropped=run.dropped,
                start_time=start,
                finished_time=run.end,
                duration=None if start is None else run.end - start,
            )


_FINISHED_RECORD_STATUSES = frozenset({"Finished", "Success", "Failed", "PartialFailed", "Stopped"})
_FAILED_STATUSES = frozenset({"Failed", "Error", "Timeout", "Aborted", "Invalid", "Terminated"})


def _aggregate_status(statuses: Sequence[str]) -> str:
    """InvokeRecordStatus of a one-time invocation from its per-instance statuses."""
    if any(s == "Stopping" for s in statuses):
        return "Stopping"
    if any(s not in TERMINAL_STATUSES for s in statuses):
        return "Running"
    if all(s == "Success" for s in statuses):
        return "Success"
    failed = sum(1 for s in statuses if s in _FAILED_STATUSES)
    if failed == len(statuses):
        return "Failed"
    if failed:
        return "PartialFailed"
    if all(s == "Stopped" for s in statuses):
        return "Stopped"
    return "Finished"


def _stop_run(run: RunPlan, when: float, stopping: float) -> None:
    """Change a run that is not terminal at ``when`` as StopInvocation does."""
    delivery_delay = run.oss_ready - run.end
    if run.outcome.runs and run.start <= when:
        run.outcome = OUTCOMES["Stopped"]
        run.stop_at = when
        run.end = when + stopping
        run.exit_code = -1
        run.oss_ready = run.end + delivery_delay
        return
    run.outcome = OUTCOMES["Cancelled"]
    run.start = run.end = when
    run.stop_at = None
    run.exit_code = 0
    run.output = ""
    run.dropped = 0
    if run.oss_status:
        run.oss_status, run.oss_error_code = "Failed", "CloudAssistant.UnsupportedInvocationStatus"
        run.oss_ready = when


def spec_with(base: WorldSpec | str, **changes: Any) -> WorldSpec:
    """A profile (or spec) with some fields changed, validated."""
    spec = PROFILES[base] if isinstance(base, str) else base
    changed = replace(spec, **changes)
    changed.validate()
    return changed
