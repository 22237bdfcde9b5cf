"""What a simulated world is made of: outcomes, run plans, invocations and their targets, and
the records and ground truth it shows.

A :class:`RunPlan` is fixed when it is created (queued, start, end, outcome, OSS delivery), so the
:class:`Phase` of a run at any time is a pure function of the plan and the time asked about; only
StopInvocation changes a plan (:func:`stop_run`).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from exporter.ecs.models import ERROR_CODES
from exporter.simulator.times import TimeView

REPEAT_MODES = ("Once", "Period", "EveryReboot")
# Output is cut at 24 KB; Dropped counts the bytes cut.
OUTPUT_LIMIT_BYTES = 24 * 1024


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


class Phase(enum.Enum):
    """Where a run is at a given time."""

    PENDING = "pending"  # not started (or, for an outcome that never runs, not decided)
    RUNNING = "running"
    STOPPING = "stopping"  # StopInvocation came while it ran; Stopped at its end
    DELIVERING = "delivering"  # terminal, its OSS delivery still in progress
    DONE = "done"  # terminal, delivery (if any) at its final status

    @property
    def started(self) -> bool:
        """A process was started (or the run was decided): no longer ``Pending``."""
        return self is not Phase.PENDING

    @property
    def terminal(self) -> bool:
        """The run has its terminal status."""
        return self in (Phase.DELIVERING, Phase.DONE)


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

    def phase(self, now: float) -> Phase:
        """Where the run is at ``now``."""
        if now < self.start or (now < self.end and not self.outcome.runs):
            return Phase.PENDING
        if now < self.end:
            stopping = self.stop_at is not None and now >= self.stop_at
            return Phase.STOPPING if stopping else Phase.RUNNING
        if self.oss_status and now < self.oss_ready:
            return Phase.DELIVERING
        return Phase.DONE

    def status(self, now: float) -> str:
        """The per-instance ``InvocationStatus`` at ``now``."""
        phase = self.phase(now)
        return _PHASE_STATUS.get(phase) or self.outcome.status

    def transitions(self) -> list[float]:
        times = [self.start, self.end]
        if self.stop_at is not None:
            times.append(self.stop_at)
        if self.oss_status:
            times.append(self.oss_ready)
        return times


_PHASE_STATUS = {Phase.PENDING: "Pending", Phase.RUNNING: "Running", Phase.STOPPING: "Stopping"}


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

    def index_transitions(self) -> None:
        """Recompute ``transitions`` (one-time invocations) after its runs were made or changed."""
        if not self.periodic:
            self.transitions = sorted(
                t for target in self.targets for t in target.runs[0].transitions()
            )


@dataclass(frozen=True, slots=True)
class RecordRef:
    """Points at one record: a target's latest view (``run`` None) or one history run."""

    invocation: Invocation
    target_index: int
    run: int | None = None


@dataclass(frozen=True)
class RecordFilter:
    """The filters of DescribeInvocationResults, already validated."""

    # Like exporter.ecs.models.InvocationQuery on purpose: the simulator models the API on its own.

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


def stop_run(run: RunPlan, when: float, stopping: float) -> None:
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
