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

The world is the facade over its parts, each in its own module: the model (:mod:`.model`:
outcomes, run plans, invocations, records, ground truth), workload generation (:mod:`.workload`:
the same seed and spec give the same records whatever times the world is asked about), the
retention index (:mod:`.retention`: records of invocations created more than
``retention_seconds`` ago disappear, and only the newest ``max_entries`` per-instance records stay
in view; history runs of a retained invocation stay too) and rendering (:mod:`.rendering`).
This module re-exports the names users of the simulator need (clocks, specs and profiles, the
model's records and ground truth, :class:`TimeView`).

Thread-safety: every public method takes the world's lock.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from exporter.ecs.models import ERROR_CODES, INVOCATION_STATUSES, OSS_OUTPUT_STATUSES
from exporter.simulator.clock import DEFAULT_START, Clock, ManualClock, WallClock
from exporter.simulator.model import (
    OUTCOMES,
    REPEAT_MODES,
    FinishedRun,
    GroundTruth,
    Invocation,
    Outcome,
    Phase,
    RecordFilter,
    RecordRef,
    RunPlan,
    Target,
    outcome_named,
    stop_run,
)
from exporter.simulator.rendering import RecordRenderer
from exporter.simulator.retention import RetentionIndex
from exporter.simulator.spec import DAY, PROFILES, WorldSpec, spec_with
from exporter.simulator.times import NO_SHIFT, TimeView, format_time
from exporter.simulator.workload import Workload

__all__ = [
    "DAY",
    "DEFAULT_START",
    "OUTCOMES",
    "PROFILES",
    "Clock",
    "FinishedRun",
    "GroundTruth",
    "ManualClock",
    "Outcome",
    "Phase",
    "RecordFilter",
    "RecordRef",
    "RunPlan",
    "TimeView",
    "WallClock",
    "World",
    "WorldSpec",
    "format_time",
    "outcome_named",
    "spec_with",
]


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
        self.start_time = self.clock.now()
        self._synced = self.start_time
        self._workload = Workload(seed, self.spec, self.start_time)
        self._index = RetentionIndex(self.spec.retention_seconds, self.spec.max_entries)
        self._renderer = RecordRenderer(self._workload, self.spec.retention_seconds)
        for inv in self._workload.backlog(self.start_time):
            inv.index_transitions()
            self._index.append(inv)

    # -- public API ---------------------------------------------------------------------------

    @property
    def instance_ids(self) -> list[str]:
        return list(self._workload.instances)

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
                known = self._workload.instances
                if not 1 <= instances <= len(known):
                    raise ValueError(f"instances must be 1..{len(known)}")
                instance_ids = known[:instances]
            else:
                instance_ids = list(instances)
            n = len(instance_ids)
            if n == 0:
                raise ValueError("an invocation needs at least one instance")
            workload = self._workload
            outcomes = workload.per_target_outcomes(outcome, n, periodic=repeat_mode != "Once")
            oss_list: list[str] = (
                [oss] * n if isinstance(oss, str) else list(oss) if oss is not None else []
            )
            if oss_list and len(oss_list) != n:
                raise ValueError("oss needs one value per target")
            if containers is not None and len(containers) != n:
                raise ValueError("containers needs one (id, name) per target")
            command_index = 0
            invoke = invoke_id or workload.new_id("t-", 20)
            if self._index.get(invoke) is not None:
                raise ValueError(f"InvokeId {invoke} exists already")
            inv = Invocation(
                seq=workload.next_seq(),
                invoke_id=invoke,
                command_id=command_id or workload.command_ids[command_index],
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
                        workload.scripted_run(
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
                    target.rng = workload.target_rng(inv.invoke_id, index)
                    target.oss_final = oss_final
                    target.script = (duration, exit_code, dropped, oss_delay)
                inv.targets.append(target)
            self._add(inv)
            return inv.invoke_id

    def stop_invocation(
        self, invoke_id: str, at: float | None = None, stopping: float = 2.0
    ) -> None:
        """StopInvocation at ``at`` (default now): runs running then go ``Stopping`` and are
        ``Stopped`` ``stopping`` seconds later (``StopTime`` = ``at``); runs not started yet are
        ``Cancelled``; a periodic schedule queues no more runs. States before ``at`` stay as
        they were. Raises ``ValueError`` for an unknown or already stopped invocation."""
        with self._lock:
            inv = self._index.get(invoke_id)
            if inv is None or inv.stopped_at is not None:
                raise ValueError(f"no running invocation {invoke_id!r}")
            when = self.clock.now() if at is None else float(at)
            for ti, target in enumerate(inv.targets):
                if inv.periodic:
                    self._workload.ensure_runs(inv, ti, when)
                    target.runs = [run for run in target.runs if run.queued <= when]
                    if not target.runs:
                        target.runs.append(self._workload.cancelled_run(target, when))
                for run in target.runs:
                    if run.end > when:
                        stop_run(run, when, stopping)
                target.cache.clear()
            inv.stopped_at = when
            inv.record_status_cache = (-1, "")
            inv.index_transitions()

    def invocation_ids(self, now: float | None = None) -> list[str]:
        """InvokeIds in view at ``now``, newest first."""
        with self._lock:
            when = self._sync(now)
            return [inv.invoke_id for inv in self._index.visible_invocations(when)]

    def is_periodic(self, invoke_id: str) -> bool | None:
        """True for a Period/EveryReboot invocation, False for a one-time one, None if unknown."""
        with self._lock:
            inv = self._index.get(invoke_id)
            return None if inv is None or inv.pruned else inv.periodic

    def records(
        self,
        now: float | None = None,
        *,
        record_filter: RecordFilter | None = None,
        content_encoding: str = "Base64",
        times: TimeView = NO_SHIFT,
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
            for ref in self._index.visible_refs(when):
                count += 1
                rec = self.render(ref, when, "PlainText")
                by_status[rec["InvocationStatus"]] += 1
                if rec["ErrorCode"]:
                    by_code[rec["ErrorCode"]] += 1
                if rec["OssOutputStatus"]:
                    by_oss[rec["OssOutputStatus"]] += 1
                if rec["InvocationStatus"] == "Running":
                    running += 1
                    start = self._renderer.current_run(ref, when)
                    if start is not None and (oldest is None or start.start < oldest):
                        oldest = start.start
                if rec["Dropped"] > 0:
                    dropped += 1
                finished.extend(self._renderer.finished_runs(ref, when))
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
                inv = self._index.get(f.invoke_id)
                if inv is None or inv.pruned or inv.created > now:
                    return []
                candidates: Iterator[Invocation] = iter([inv])
            else:
                candidates = self._index.visible_invocations(now)
            out: list[RecordRef] = []
            lo = self._index.lowest_visible_position(now)
            for inv in candidates:
                if not self._renderer.matches(inv, f, now):
                    continue
                base = self._index.first_position(inv)
                for ti, target in enumerate(inv.targets):
                    if base + (len(inv.targets) - 1 - ti) < lo:
                        continue  # beyond the newest max_entries records
                    if f.instance_id is not None and target.instance_id != f.instance_id:
                        continue
                    if f.include_history and inv.periodic:
                        self._workload.ensure_runs(inv, ti, now)
                        started = [k for k, run in enumerate(target.runs) if run.queued <= now]
                        started = [k for k in started if target.runs[k].phase(now).started]
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
            return self._index.visible_span(now, snapshot)

    def ref_at(self, position: int) -> RecordRef | None:
        """The record at an absolute position (see :meth:`visible_span`), None if pruned."""
        with self._lock:
            return self._index.ref_at(position)

    def render(
        self, ref: RecordRef, now: float, content_encoding: str, times: TimeView = NO_SHIFT
    ) -> dict[str, Any]:
        """The API dict of ``ref`` at ``now``, its times shown through ``times``."""
        with self._lock:
            return self._renderer.render(ref, now, content_encoding, times)

    def render_json(
        self, ref: RecordRef, now: float, content_encoding: str, times: TimeView = NO_SHIFT
    ) -> str:
        """The record as compact JSON, cached while its state does not change."""
        with self._lock:
            return self._renderer.render_json(ref, now, content_encoding, times)

    def invoke_record_status(self, inv: Invocation, now: float) -> str:
        with self._lock:
            return self._renderer.invoke_record_status(inv, now)

    # -- the index ----------------------------------------------------------------------------

    def _add(self, inv: Invocation) -> None:
        inv.index_transitions()
        self._index.insert(inv)

    def _sync(self, now: float | None) -> float:
        when = self.clock.now() if now is None else now
        if when <= self._synced:
            return when
        for inv in self._workload.arrivals_until(when):
            self._add(inv)  # inserted: a test may have scripted an invocation in the future
        self._synced = when
        self._index.prune(when)
        return when
