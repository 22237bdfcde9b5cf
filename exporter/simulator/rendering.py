"""Rendering: what a record shows at a given time, as the API renders it, and what finished.

A record's state is a pure function of its run plans and the time asked about (see
:mod:`exporter.simulator.model`); periodic runs are drawn as time goes on by the workload.
:class:`RecordRenderer` computes the per-instance and per-invocation statuses, renders records as
API dicts or cached compact JSON (times through a :class:`~exporter.simulator.times.TimeView`),
applies the invocation-level filters, and lists the finished runs of the ground truth.

Not thread-safe: the world calls it under its lock.
"""

from __future__ import annotations

import base64
import bisect
import json
from collections.abc import Iterator, Sequence
from typing import Any

from exporter.ecs.models import TERMINAL_STATUSES
from exporter.simulator.model import (
    FinishedRun,
    Invocation,
    Phase,
    RecordFilter,
    RecordRef,
    RunPlan,
)
from exporter.simulator.times import NO_SHIFT, TimeView
from exporter.simulator.workload import Workload

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


class RecordRenderer:
    """Record states and renderings for one world."""

    def __init__(self, workload: Workload, retention_seconds: float) -> None:
        self._workload = workload
        self._retention_seconds = retention_seconds

    def current_index(self, inv: Invocation, ti: int, now: float) -> int:
        """Index of the latest run of a periodic target that has started (-1: none yet)."""
        self._workload.ensure_runs(inv, ti, now)
        runs = inv.targets[ti].runs
        k = len(runs) - 1
        while k >= 0 and runs[k].queued > now:
            k -= 1
        return k

    def current_run(self, ref: RecordRef, now: float) -> RunPlan | None:
        """The run ``ref`` shows at ``now`` (None: a periodic target before its first run)."""
        inv = ref.invocation
        target = inv.targets[ref.target_index]
        if ref.run is not None:
            return target.runs[ref.run]
        if not inv.periodic:
            return target.runs[0]
        k = self.current_index(inv, ref.target_index, now)
        return target.runs[k] if k >= 0 else None

    def _schedule_over(self, inv: Invocation, ti: int, k: int, now: float) -> bool:
        if inv.max_runs is not None and k + 1 >= inv.max_runs:
            return True
        stopped = inv.stopped_at is not None and now >= inv.stopped_at
        return stopped and k == len(inv.targets[ti].runs) - 1

    def _state_key(self, inv: Invocation, ti: int, now: float) -> object:
        """Equal while the record of target ``ti`` shows the same thing."""
        if not inv.periodic:
            return bisect.bisect_right(inv.transitions, now)
        k = self.current_index(inv, ti, now)
        phase = inv.targets[ti].runs[k].phase(now) if k >= 0 else None
        return (k, phase, self.invoke_record_status(inv, now))

    def invoke_record_status(self, inv: Invocation, now: float) -> str:
        """The invocation's ``InvokeRecordStatus`` at ``now``."""
        if inv.stopped_at is not None and now >= inv.stopped_at:
            runs = (self.current_run(RecordRef(inv, ti), now) for ti in range(len(inv.targets)))
            stopping = any(run is not None and run.phase(now) is Phase.STOPPING for run in runs)
            return "Stopping" if stopping else "Stopped"
        if inv.periodic:
            for ti in range(len(inv.targets)):
                k = self.current_index(inv, ti, now)
                if k < 0 or not self._schedule_over(inv, ti, k, now):
                    return "Running"
                if not inv.targets[ti].runs[k].phase(now).terminal:
                    return "Running"
            last = [t.runs[-1].outcome.status for t in inv.targets]
            return "Success" if all(s == "Success" for s in last) else "Finished"
        step = bisect.bisect_right(inv.transitions, now)  # transitions passed
        cached_step, cached = inv.record_status_cache
        if cached_step == step:
            return cached
        statuses = [t.runs[0].status(now) for t in inv.targets]
        value = aggregate_status(statuses)
        inv.record_status_cache = (step, value)
        return value

    def matches(self, inv: Invocation, f: RecordFilter, now: float) -> bool:
        """Whether ``inv`` passes the invocation-level filters of ``f`` at ``now``."""
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
            status = self.invoke_record_status(inv, now)
            if f.invoke_record_status == "Finished":
                return status in _FINISHED_RECORD_STATUSES
            return status == f.invoke_record_status
        return True

    def render(
        self, ref: RecordRef, now: float, encoding: str, times: TimeView = NO_SHIFT
    ) -> dict[str, Any]:
        """The API dict of ``ref`` at ``now``, its times shown through ``times``."""
        inv = ref.invocation
        target = inv.targets[ref.target_index]
        run: RunPlan | None
        scheduled = False
        if ref.run is not None:
            run = target.runs[ref.run]
        elif not inv.periodic:
            run = target.runs[0]
        else:
            k = self.current_index(inv, ref.target_index, now)
            run = target.runs[k] if k >= 0 else None
            scheduled = run is None or (
                run.phase(now).terminal and not self._schedule_over(inv, ref.target_index, k, now)
            )
        record_status = self.invoke_record_status(inv, now)
        status = "Scheduled" if scheduled else (run.status(now) if run else "Scheduled")
        phase = run.phase(now) if run is not None else Phase.PENDING
        terminal = not scheduled and phase.terminal
        error_code = run.outcome.error_code if run is not None and terminal else ""
        started = run is not None and run.outcome.runs and phase.started
        oss_status = oss_code = oss_uri = oss_info = ""
        if run is not None and terminal and run.oss_status:
            if phase is Phase.DELIVERING:
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
        stopped = phase is Phase.STOPPING or phase.terminal
        if run is not None and run.stop_at is not None and stopped and not scheduled:
            stop_time = run.stop_at
        return {
            "Dropped": run.dropped if run is not None and (terminal or scheduled) else 0,
            "OssOutputDelivery": inv.oss_delivery,
            "InvocationStatus": status,
            "InstanceId": target.instance_id,
            "ExitCode": run.exit_code if run is not None and (terminal or scheduled) else 0,
            "ErrorInfo": ERROR_INFO.get(error_code, ""),
            "StartTime": times.format(run.start) if started and run is not None else "",
            "Repeats": (run.repeats if run is not None and phase.started else 0)
            if inv.periodic
            else (1 if started else 0),
            "InvokeRecordStatus": record_status,
            "FinishedTime": times.format(run.end) if run is not None and phase.terminal else "",
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

    def finished_runs(self, ref: RecordRef, now: float) -> Iterator[FinishedRun]:
        """The runs of ``ref`` terminal at ``now`` and still retained: the ground truth."""
        inv = ref.invocation
        target = inv.targets[ref.target_index]
        if inv.periodic:
            self._workload.ensure_runs(inv, ref.target_index, now)
            runs = [r for r in target.runs if r.queued <= now]
        else:
            runs = target.runs
        cutoff = now - self._retention_seconds
        for run in runs:
            phase = run.phase(now)
            if not phase.terminal or run.queued < cutoff:
                continue
            oss_status = "InProgress" if phase is Phase.DELIVERING else run.oss_status
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
                oss_error_code=run.oss_error_code if phase is Phase.DONE else "",
                dropped=run.dropped,
                start_time=start,
                finished_time=run.end,
                duration=None if start is None else run.end - start,
            )

    def render_json(
        self, ref: RecordRef, now: float, content_encoding: str, times: TimeView = NO_SHIFT
    ) -> str:
        """The record as compact JSON, cached while its state does not change."""
        inv = ref.invocation
        target = inv.targets[ref.target_index]
        if ref.run is not None:
            record = self.render(ref, now, content_encoding, times)
            return json.dumps(record, separators=(",", ":"))
        key = self._state_key(inv, ref.target_index, now)
        cached = target.cache.get((content_encoding, times))
        if cached is not None and cached[0] == key:
            return cached[1]
        record = self.render(ref, now, content_encoding, times)
        text = json.dumps(record, separators=(",", ":"))
        target.cache[(content_encoding, times)] = (key, text)
        return text


_FINISHED_RECORD_STATUSES = frozenset({"Finished", "Success", "Failed", "PartialFailed", "Stopped"})
_FAILED_STATUSES = frozenset({"Failed", "Error", "Timeout", "Aborted", "Invalid", "Terminated"})


def aggregate_status(statuses: Sequence[str]) -> str:
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
