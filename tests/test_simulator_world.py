"""The simulated workload: progression, reproducibility, retention, ground truth."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from exporter.ecs.models import ERROR_CODES, INVOCATION_STATUSES, OSS_OUTPUT_ERROR_CODES
from exporter.simulator.world import (
    DEFAULT_START,
    OUTCOMES,
    ManualClock,
    Phase,
    RecordFilter,
    RunPlan,
    World,
    WorldSpec,
    format_time,
    spec_with,
)

T0 = DEFAULT_START


def by_instance(world: World, invoke_id: str, now: float | None = None) -> dict[str, Any]:
    records = world.records(
        now, record_filter=RecordFilter(invoke_id=invoke_id), content_encoding="PlainText"
    )
    return {r["InstanceId"]: r for r in records}


def one(world: World, invoke_id: str, now: float | None = None) -> dict[str, Any]:
    records: list[dict[str, Any]] = list(by_instance(world, invoke_id, now).values())
    assert len(records) == 1
    return records[0]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def world(clock: ManualClock) -> World:
    return World(7, clock, WorldSpec(instances=10))


def test_scripted_failure_on_three_instances_progresses_through_real_states(
    world: World, clock: ManualClock
) -> None:
    invoke = world.add_invocation(3, "Failed", at=T0 + 10, pending=2, duration=30, exit_code=3)

    assert by_instance(world, invoke, T0 + 5) == {}
    pending = by_instance(world, invoke, T0 + 11)
    assert {r["InvocationStatus"] for r in pending.values()} == {"Pending"}
    assert {r["InvokeRecordStatus"] for r in pending.values()} == {"Running"}
    assert all(r["StartTime"] == "" for r in pending.values())

    running = by_instance(world, invoke, T0 + 20)
    assert {r["InvocationStatus"] for r in running.values()} == {"Running"}
    assert {r["StartTime"] for r in running.values()} == {format_time(T0 + 12)}

    done = by_instance(world, invoke, T0 + 42)
    assert len(done) == 3
    for record in done.values():
        assert record["InvocationStatus"] == "Failed"
        assert record["ErrorCode"] == "ExitCodeNonzero"
        assert record["ExitCode"] == 3
        assert record["ErrorInfo"]
        assert record["InvokeRecordStatus"] == "Failed"
        assert record["FinishedTime"] == format_time(T0 + 42)
        assert record["Repeats"] == 1

    truth = world.ground_truth(T0 + 42)
    runs = [r for r in truth.finished_runs if r.invoke_id == invoke]
    assert len(runs) == 3
    assert {(r.status, r.error_code, r.duration) for r in runs} == {
        ("Failed", "ExitCodeNonzero", 30.0)
    }


def test_stopped_run_goes_through_stopping_and_keeps_its_stop_time(world: World) -> None:
    invoke = world.add_invocation(1, "Stopped", at=T0, pending=0, duration=20, stop_after=5)

    assert one(world, invoke, T0 + 1)["InvocationStatus"] == "Running"
    stopping = one(world, invoke, T0 + 10)
    assert stopping["InvocationStatus"] == "Stopping"
    assert stopping["InvokeRecordStatus"] == "Stopping"
    assert stopping["StopTime"] == format_time(T0 + 5)
    stopped = one(world, invoke, T0 + 21)
    assert stopped["InvocationStatus"] == "Stopped"
    assert stopped["InvokeRecordStatus"] == "Stopped"


def test_a_run_plan_names_its_phase_at_each_moment() -> None:
    run = RunPlan(
        repeats=1,
        queued=T0,
        start=T0 + 2,
        end=T0 + 22,
        outcome=OUTCOMES["Stopped"],
        exit_code=-1,
        stop_at=T0 + 7,
        dropped=0,
        oss_status="Finished",
        oss_error_code="",
        oss_ready=T0 + 26,
        output="",
    )
    moments = [T0 + 1, T0 + 3, T0 + 8, T0 + 23, T0 + 30]
    assert [run.phase(t) for t in moments] == [
        Phase.PENDING,
        Phase.RUNNING,
        Phase.STOPPING,
        Phase.DELIVERING,
        Phase.DONE,
    ]
    assert [run.status(t) for t in moments] == [
        "Pending",
        "Running",
        "Stopping",
        "Stopped",
        "Stopped",
    ]
    assert [p.started for p in Phase] == [False, True, True, True, True]
    assert [p.terminal for p in Phase] == [False, False, False, True, True]


@pytest.mark.parametrize(
    ("outcome", "status", "error_code"),
    [
        ("Aborted.ClientNotRunning", "Aborted", "ClientNotRunning"),
        ("DeliveryTimeout", "Aborted", "DeliveryTimeout"),
        ("Invalid.BadCronExpression", "Invalid", "BadCronExpression"),
        ("Cancelled", "Cancelled", ""),
    ],
)
def test_outcomes_that_never_run_have_no_start_time(
    world: World, outcome: str, status: str, error_code: str
) -> None:
    invoke = world.add_invocation(1, outcome, at=T0, pending=3)

    assert one(world, invoke, T0 + 1)["InvocationStatus"] == "Pending"
    record = one(world, invoke, T0 + 4)
    assert record["InvocationStatus"] == status
    assert record["ErrorCode"] == error_code
    assert record["StartTime"] == ""
    assert record["FinishedTime"] == format_time(T0 + 3)
    assert record["Repeats"] == 0
    (run,) = [r for r in world.ground_truth(T0 + 4).finished_runs if r.invoke_id == invoke]
    assert run.duration is None


def test_oss_delivery_is_in_progress_then_finished_or_failed(world: World) -> None:
    invoke = world.add_invocation(
        ["i-a", "i-b"],
        "Success",
        at=T0,
        pending=0,
        duration=10,
        oss=["Finished", "Failed.OSS.NoSuchBucket"],
        oss_delay=5,
    )

    running = by_instance(world, invoke, T0 + 5)
    assert {r["OssOutputStatus"] for r in running.values()} == {""}
    in_progress = by_instance(world, invoke, T0 + 12)
    assert {r["OssOutputStatus"] for r in in_progress.values()} == {"InProgress"}
    done = by_instance(world, invoke, T0 + 16)
    assert done["i-a"]["OssOutputStatus"] == "Finished"
    assert done["i-a"]["OssOutputUri"].startswith("oss://")
    assert done["i-a"]["OssOutputErrorCode"] == ""
    assert done["i-b"]["OssOutputStatus"] == "Failed"
    assert done["i-b"]["OssOutputErrorCode"] == "OSS.NoSuchBucket"
    assert done["i-b"]["OssOutputErrorInfo"]
    assert done["i-b"]["OssOutputUri"] == ""
    truth = world.ground_truth(T0 + 16)
    assert truth.by_oss_status == {"InProgress": 0, "Finished": 1, "Failed": 1}


def test_oss_delivery_of_a_run_that_never_ran_fails_as_unsupported(world: World) -> None:
    invoke = world.add_invocation(1, "Aborted.ClientNotRunning", at=T0, oss="Finished")

    record = one(world, invoke, T0 + 10)
    assert record["OssOutputStatus"] == "Failed"
    assert record["OssOutputErrorCode"] == "CloudAssistant.UnsupportedInvocationStatus"


def test_invoke_record_status_aggregates_the_instances(world: World) -> None:
    partial = world.add_invocation(["i-1", "i-2"], ["Success", "Timeout"], at=T0, duration=5)
    success = world.add_invocation(["i-1", "i-2"], "Success", at=T0, duration=5)
    running = world.add_invocation(["i-1", "i-2"], "Success", at=T0, duration=500)

    assert one_status(world, partial) == "PartialFailed"
    assert one_status(world, success) == "Success"
    assert one_status(world, running) == "Running"


def one_status(world: World, invoke_id: str) -> str:
    statuses = {
        str(r["InvokeRecordStatus"]) for r in by_instance(world, invoke_id, T0 + 100).values()
    }
    assert len(statuses) == 1
    return statuses.pop()


def test_periodic_task_shows_latest_run_without_history_and_every_run_with_it(
    world: World,
) -> None:
    invoke = world.add_invocation(
        1, ["Success", "Failed"], at=T0, repeat_mode="Period", period=60, duration=10
    )
    # Runs at T0+60, T0+120, T0+180 ... alternating Success / Failed.
    assert one(world, invoke, T0 + 30)["InvocationStatus"] == "Scheduled"
    assert one(world, invoke, T0 + 30)["Repeats"] == 0
    during = one(world, invoke, T0 + 65)
    assert (during["InvocationStatus"], during["Repeats"]) == ("Running", 1)
    between = one(world, invoke, T0 + 100)
    assert (between["InvocationStatus"], between["Repeats"]) == ("Scheduled", 1)
    assert between["InvokeRecordStatus"] == "Running"

    history = world.records(
        T0 + 200,
        record_filter=RecordFilter(invoke_id=invoke, include_history=True),
        content_encoding="PlainText",
    )
    assert [(r["Repeats"], r["InvocationStatus"]) for r in history] == [
        (3, "Success"),
        (2, "Failed"),
        (1, "Success"),
    ]
    assert len({r["StartTime"] for r in history}) == 3
    runs = [r for r in world.ground_truth(T0 + 200).finished_runs if r.invoke_id == invoke]
    assert [(r.repeats, r.status) for r in runs] == [(1, "Success"), (2, "Failed"), (3, "Success")]


def test_finite_periodic_task_ends_with_its_last_run(world: World) -> None:
    invoke = world.add_invocation(
        1, "Success", at=T0, repeat_mode="EveryReboot", period=30, duration=5, runs=2
    )
    record = one(world, invoke, T0 + 500)
    assert (record["InvocationStatus"], record["Repeats"]) == ("Success", 2)
    assert record["InvokeRecordStatus"] == "Success"


def test_same_seed_same_records_whatever_times_are_asked() -> None:
    first = World(11, ManualClock(T0), "demo")
    second = World(11, ManualClock(T0), "demo")
    for step in (5.0, 17.0, 40.0):
        first.sync(T0 + step)
    assert first.records(T0 + 60) == second.records(T0 + 60)
    assert first.ground_truth(T0 + 60) == second.ground_truth(T0 + 60)
    other = World(12, ManualClock(T0), "demo")
    assert other.records(T0 + 60) != first.records(T0 + 60)


def test_demo_world_moves_and_shows_every_documented_value() -> None:
    clock = ManualClock(T0)
    world = World(1, clock, "demo")
    before = world.ground_truth()
    clock.advance(600)
    after = world.ground_truth()

    assert after.records > before.records  # new invocations arrived
    assert len(after.finished_runs) > len(before.finished_runs)
    assert all(before.by_error_code[code] > 0 for code in ERROR_CODES)
    statuses = {s for s, n in before.by_status.items() if n}
    assert statuses >= {"Success", "Failed", "Error", "Timeout", "Cancelled", "Terminated"}
    assert statuses >= {"Aborted", "Invalid", "Stopped", "Scheduled"}
    oss_codes = {r.oss_error_code for r in before.finished_runs}
    assert oss_codes >= set(OSS_OUTPUT_ERROR_CODES)
    assert any(r.dropped > 0 for r in after.finished_runs)
    assert any(r.repeat_mode == "Period" for r in after.finished_runs)
    assert any(r.repeat_mode == "EveryReboot" for r in after.finished_runs)


def test_ground_truth_counts_the_records_in_view() -> None:
    world = World(3, ManualClock(T0), "demo")
    records = world.records()
    truth = world.ground_truth()

    assert truth.records == len(records)
    assert set(truth.by_status) >= set(INVOCATION_STATUSES)
    for status in INVOCATION_STATUSES:
        assert truth.by_status[status] == sum(r["InvocationStatus"] == status for r in records)
    for code in ERROR_CODES:
        assert truth.by_error_code[code] == sum(r["ErrorCode"] == code for r in records)
    assert truth.running == sum(r["InvocationStatus"] == "Running" for r in records)
    assert truth.with_dropped_output == sum(r["Dropped"] > 0 for r in records)


def test_bench_profile_is_a_static_backlog_of_ten_thousand_finished_results() -> None:
    clock = ManualClock(T0)
    world = World(0, clock, "bench")
    truth = world.ground_truth()
    assert truth.records == 10_000
    assert len(truth.finished_runs) == 10_000
    clock.advance(3600)
    assert world.ground_truth().records == 10_000


def test_retention_keeps_the_newest_entries_and_thirty_days() -> None:
    clock = ManualClock(T0)
    world = World(0, clock, WorldSpec(instances=10, max_entries=25))
    oldest = world.add_invocation(5, "Success", at=T0)
    for i in range(5):
        world.add_invocation(5, "Success", at=T0 + 1 + i)
    assert world.ground_truth(T0 + 100).records == 25
    assert oldest not in world.invocation_ids(T0 + 100)

    aging = World(0, ManualClock(T0), WorldSpec(instances=3))
    old = aging.add_invocation(1, "Success", at=T0)
    aging.add_invocation(1, "Success", at=T0 + 20 * 86_400)
    assert old in aging.invocation_ids(T0 + 29 * 86_400)
    assert old not in aging.invocation_ids(T0 + 31 * 86_400)
    assert len(aging.records(T0 + 31 * 86_400)) == 1


def test_output_is_base64_unless_plain_text_and_dropped_counts_bytes_cut(world: World) -> None:
    invoke = world.add_invocation(1, "Success", at=T0, output="hello\n", dropped=4096)
    record_filter = RecordFilter(invoke_id=invoke)
    (encoded,) = world.records(T0 + 60, record_filter=record_filter)
    (plain,) = world.records(T0 + 60, record_filter=record_filter, content_encoding="PlainText")
    assert plain["Output"] == "hello\n"
    assert base64.b64decode(encoded["Output"]) == b"hello\n"
    assert plain["Dropped"] == 4096


def test_tags_containers_groups_and_usernames_are_shown(world: World) -> None:
    invoke = world.add_invocation(
        ["i-x"],
        at=T0,
        tags=[("env", "prod")],
        resource_group_id="rg-one",
        username="ecs-user",
        containers=[("c" * 64, "web")],
    )
    record = one(world, invoke, T0 + 1)
    assert record["Tags"] == {"Tag": [{"TagKey": "env", "TagValue": "prod"}]}
    assert (record["ContainerId"], record["ContainerName"]) == ("c" * 64, "web")
    assert record["Username"] == "ecs-user"
    assert world.records(T0 + 1, record_filter=RecordFilter(resource_group_id="rg-one"))


@pytest.mark.parametrize(
    "bad",
    [
        {"instances": 0},
        {"outcome_mix": {"NoSuchOutcome": 1.0}},
        {"oss_share": 1.5},
        {"instances_per_invocation": (3, 1)},
    ],
)
def test_bad_specs_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each message differs
        spec_with("quiet", **bad)


def test_unknown_outcome_or_profile_is_refused(world: World) -> None:
    with pytest.raises(ValueError, match="unknown outcome"):
        world.add_invocation(1, "Exploded")
    with pytest.raises(ValueError, match="unknown profile"):
        World(0, ManualClock(T0), "nope")


def test_stop_invocation_stops_running_runs_and_cancels_pending_ones(world: World) -> None:
    running = world.add_invocation(["i-1", "i-2"], "Success", at=T0, pending=1, duration=100)
    pending = world.add_invocation(["i-3"], "Success", at=T0, pending=50, duration=10)
    world.stop_invocation(running, at=T0 + 20, stopping=3)
    world.stop_invocation(pending, at=T0 + 20)

    assert one_status_at(world, running, T0 + 10) == {"Running"}  # the past is unchanged
    stopping = by_instance(world, running, T0 + 21)
    assert stopping["i-1"]["InvocationStatus"] == "Stopping"
    assert stopping["i-1"]["InvokeRecordStatus"] == "Stopping"
    assert stopping["i-1"]["StopTime"] == format_time(T0 + 20)
    assert one_status_at(world, running, T0 + 30) == {"Stopped"}
    assert {r["InvokeRecordStatus"] for r in by_instance(world, running, T0 + 30).values()} == {
        "Stopped"
    }
    cancelled = one(world, pending, T0 + 30)
    assert (cancelled["InvocationStatus"], cancelled["Repeats"]) == ("Cancelled", 0)
    runs = {r.key: r for r in world.ground_truth(T0 + 30).finished_runs}
    assert runs[(pending, "i-3", "", 0)].status == "Cancelled"
    assert runs[(running, "i-1", "", 1)].duration == 22.0  # started T0+1, stopped T0+23
    with pytest.raises(ValueError, match="no running invocation"):
        world.stop_invocation(running)


def one_status_at(world: World, invoke_id: str, now: float) -> set[str]:
    return {str(r["InvocationStatus"]) for r in by_instance(world, invoke_id, now).values()}


def test_stopping_a_periodic_task_ends_its_schedule(world: World) -> None:
    invoke = world.add_invocation(1, "Success", at=T0, repeat_mode="Period", period=60, duration=10)
    world.stop_invocation(invoke, at=T0 + 130)  # after two runs, between runs

    record = one(world, invoke, T0 + 1000)
    assert (record["InvocationStatus"], record["Repeats"]) == ("Success", 2)
    assert record["InvokeRecordStatus"] == "Stopped"
    history = world.records(
        T0 + 1000, record_filter=RecordFilter(invoke_id=invoke, include_history=True)
    )
    assert [r["Repeats"] for r in history] == [2, 1]


def test_arrivals_around_a_scripted_future_invocation_stay_in_creation_order() -> None:
    clock = ManualClock(T0)
    spec = spec_with("demo", backlog=0, every_code=False, arrival_rate=1.0, periodic_share=0.0)
    world = World(2, clock, spec_with(spec, every_reboot_share=0.0))
    future = world.add_invocation(["i-future"], "Success", at=T0 + 30, pending=1)
    clock.advance(60)

    records = world.records(content_encoding="PlainText")
    order = [r["InvokeId"] for r in records]
    position = order.index(future)
    assert 0 < position < len(order) - 1
    # Pending lasts at most 3 s, so StartTime tells creation time to within 3 s.
    newer = [r["StartTime"] for r in records[:position] if r["StartTime"]]
    older = [r["StartTime"] for r in records[position + 1 :] if r["StartTime"]]
    assert newer
    assert older
    assert min(newer) >= format_time(T0 + 30)
    assert max(older) <= format_time(T0 + 33)
