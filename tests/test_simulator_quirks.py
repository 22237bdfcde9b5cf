"""The API quirks the simulator can show (issue 9), over real loopback HTTP.

Each quirk is undocumented behaviour the real service may show; the exporter must count right
whichever way it behaves, so the simulator can show each one from its control interface (the
``SimulatorServer`` attributes and its ``FaultPlan``) and from its command line:

* a refused ``NextToken`` at a chosen page, once or every time;
* an unstable order among results with equal (coarse) keys, optionally with coarse times;
* an API clock offset from the host's (result times and the ``Date`` header);
* sustained throttling, with and without ``x-acs-retry-after``;
* pages without a record that still carry a ``NextToken`` to the records.
"""

from __future__ import annotations

import argparse
import calendar
import email.utils
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from exporter.simulator.__main__ import build_parser, build_server
from exporter.simulator.faults import FaultRule, parse_fault_rule
from exporter.simulator.server import SimulatorServer
from exporter.simulator.world import DEFAULT_START, ManualClock, TimeView, World, WorldSpec
from tests.support.simulator_calls import (
    KEY,
    SECRET,
    RunningSimulator,
    call,
    error,
    results,
    walk,
)

T0 = DEFAULT_START
Key = tuple[str, str]


def _keys(records: list[dict[str, Any]]) -> list[Key]:
    return [(r["InvokeId"], r["InstanceId"]) for r in records]


def _api_time(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


def _date_header(response: httpx.Response) -> float:
    return email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp()


def _page(
    client: httpx.Client, server: SimulatorServer, size: int, token: str = ""
) -> httpx.Response:
    params = {"MaxResults": str(size)}
    if token:
        params["NextToken"] = token
    return call(client, server, params)


def _token(response: httpx.Response) -> str:
    return str(response.json()["Invocation"]["NextToken"])


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def world(clock: ManualClock) -> World:
    return World(5, clock, "demo")


@pytest.fixture
def server(world: World) -> Iterator[SimulatorServer]:
    with SimulatorServer(world, accounts={KEY: SECRET}, seed=4) as srv:
        yield srv


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


# -- a refused NextToken ---------------------------------------------------------------------


def test_a_token_refused_once_at_a_chosen_page_ends_that_walk_only(
    client: httpx.Client, world: World, server: SimulatorServer
) -> None:
    server.faults.next("invalid_next_token", page=3)
    page1 = _page(client, server, 20)
    page2 = _page(client, server, 20, _token(page1))
    token3 = _token(page2)
    refused = _page(client, server, 20, token3)
    assert error(refused) == (400, "InvalidParameter.NextToken")
    # The refused token stays refused (the walk must start again), though the rule is spent.
    assert error(_page(client, server, 20, token3)) == (400, "InvalidParameter.NextToken")
    assert [s.fault for s in server.served[-2:]] == ["invalid_next_token", ""]
    # A walk from page 1 now gets through and sees every record.
    assert _keys(walk(client, server, {}, page=20)) == _keys(world.records())


def test_a_token_refused_every_time_at_a_chosen_page_stops_every_walk_there(
    client: httpx.Client, server: SimulatorServer
) -> None:
    server.faults.always("invalid_next_token", page=2)
    for _ in range(3):
        first = _page(client, server, 10)
        assert len(results(first)) == 10
        second = _page(client, server, 10, _token(first))
        assert error(second) == (400, "InvalidParameter.NextToken")
    server.faults.clear()
    assert results(_page(client, server, 10, _token(_page(client, server, 10))))


def test_a_token_rule_without_a_page_refuses_the_first_token_never_a_first_page(
    client: httpx.Client, server: SimulatorServer
) -> None:
    server.faults.next("invalid_next_token")
    first = _page(client, server, 10)
    assert first.status_code == 200
    assert error(_page(client, server, 10, _token(first))) == (400, "InvalidParameter.NextToken")


def test_an_empty_page_carries_a_new_token_to_the_records_it_held_back(
    client: httpx.Client, world: World, server: SimulatorServer
) -> None:
    server.faults.next("empty_page", page=2)
    first = _page(client, server, 10)
    empty = _page(client, server, 10, _token(first))
    assert empty.status_code == 200
    assert results(empty) == []
    assert _token(empty) not in ("", _token(first))
    second = _page(client, server, 10, _token(empty))
    assert _keys(results(first) + results(second)) == _keys(world.records())[:20]
    server.faults.always("empty_page", page=1)  # every first page, every time: a walk never ends
    tokens: set[str] = set()
    token = ""
    for _ in range(5):
        answer = _page(client, server, 10, token)
        assert results(answer) == []
        token = _token(answer)
        tokens.add(token)
    assert len(tokens) == 5


def test_any_fault_can_target_a_page_and_a_retried_token_then_goes_on(
    client: httpx.Client, world: World, server: SimulatorServer
) -> None:
    server.faults.next("internal_error", page=2)
    first = _page(client, server, 10)
    assert first.status_code == 200  # page 1 is not page 2
    token = _token(first)
    assert error(_page(client, server, 10, token)) == (500, "InternalError")
    retried = _page(client, server, 10, token)  # unlike a refused token, it still works
    assert _keys(results(retried)) == _keys(world.records())[10:20]


# -- unstable order among equal keys ---------------------------------------------------------


def _tied_world(clock: ManualClock, *, spread: float) -> World:
    """Twelve 5-instance invocations created within ``spread`` seconds, long finished."""
    world = World(1, clock, WorldSpec(instances=5))
    for i in range(12):
        world.add_invocation(5, at=T0 - 3600 + (i * spread / 12), duration=5.0)
    return world


def test_unstable_order_shows_equal_keys_in_a_new_order_on_every_call(
    client: httpx.Client, clock: ManualClock
) -> None:
    world = _tied_world(clock, spread=0.0)  # 60 results, one creation time
    with SimulatorServer(world, accounts={KEY: SECRET}, order="unstable", seed=2) as srv:
        orders = [_keys(results(_page(client, srv, 50))) for _ in range(4)]
        assert len({tuple(o) for o in orders}) == 4  # a different order on every call
        assert len({frozenset(o) for o in orders}) > 1  # so a page holds different results
        # Pages cut the group of equals: walks see some results twice and miss others.
        walks = [_keys(walk(client, srv, {}, page=7)) for _ in range(5)]
    expected = set(_keys(world.records()))
    assert all(len(w) == len(expected) for w in walks)
    assert any(len(set(w)) < len(expected) for w in walks)
    assert all(set(w) <= expected for w in walks)


def test_unstable_order_keeps_different_keys_newest_first(
    client: httpx.Client, clock: ManualClock
) -> None:
    world = _tied_world(clock, spread=120.0)  # one creation second per invocation
    with SimulatorServer(world, accounts={KEY: SECRET}, order="unstable", seed=2) as srv:
        served = [walk(client, srv, {}, page=50) for _ in range(3)]
    newest_first = world.invocation_ids()
    for records in served:
        ids = [r["InvokeId"] for r in records]
        assert sorted(set(ids), key=newest_first.index) == list(dict.fromkeys(ids))
    # The five results of one invocation tie; they move between calls.
    assert len({tuple(_keys(r)) for r in served}) > 1


def test_coarse_times_make_results_of_one_minute_tie(
    client: httpx.Client, clock: ManualClock
) -> None:
    world = _tied_world(clock, spread=50.0)  # created within one minute
    with SimulatorServer(
        world, accounts={KEY: SECRET}, order="unstable", time_resolution=60, seed=2
    ) as srv:
        first, second = (results(_page(client, srv, 50)) for _ in range(2))
        assert srv.time_resolution == 60
    for record in first:
        assert _api_time(record["StartTime"]) % 60 == 0
        assert _api_time(record["FinishedTime"]) % 60 == 0
    assert len({r["StartTime"] for r in first}) <= 2  # the minute might turn inside the spread
    # Invocations of different seconds now tie: the first page mixes them differently.
    assert [r["InvokeId"] for r in first] != [r["InvokeId"] for r in second]


# -- the API's clock -------------------------------------------------------------------------


def test_clock_offset_shifts_result_times_and_the_date_header_not_the_ground_truth(
    client: httpx.Client, clock: ManualClock
) -> None:
    world = World(3, clock, WorldSpec(instances=3))
    invoke_id = world.add_invocation(2, at=T0 - 1000, pending=1.0, duration=10.0)
    truth_before = world.ground_truth()
    with SimulatorServer(world, accounts={KEY: SECRET}, clock_offset=-300) as srv:
        response = _page(client, srv, 10)
        assert _date_header(response) == T0 - 300
        assert _date_header(call(client, srv, secret="wrong")) == T0 - 300  # errors too
        srv.clock_offset = 120  # changeable while serving
        assert _date_header(_page(client, srv, 10)) == T0 + 120
    records = results(response)
    assert {r["InvokeId"] for r in records} == {invoke_id}
    assert all(_api_time(r["StartTime"]) == T0 - 999 - 300 for r in records)
    assert all(_api_time(r["FinishedTime"]) == T0 - 989 - 300 for r in records)
    assert records == world.records(times=TimeView(offset=-300))
    truth = world.ground_truth()
    assert truth == truth_before
    assert {r.finished_time for r in truth.finished_runs} == {T0 - 989}


def test_an_api_clock_far_from_the_request_date_refuses_the_request(
    client: httpx.Client, server: SimulatorServer
) -> None:
    server.clock_offset = -1000  # more than the 15 minutes the API allows
    assert error(call(client, server)) == (400, "InvalidTimeStamp.Expired")
    server.clock_offset = -600
    assert call(client, server).status_code == 200


# -- sustained throttling --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "retry_after_ms", "status", "code"),
    [
        ("throttling_user", None, 400, "Throttling.User"),
        ("throttling_api", 2000, 429, "Throttling.Api"),
        ("throttling_api", None, 429, "Throttling.Api"),
    ],
)
def test_sustained_throttling_refuses_a_share_of_calls(
    client: httpx.Client,
    server: SimulatorServer,
    kind: str,
    retry_after_ms: int | None,
    status: int,
    code: str,
) -> None:
    server.faults.always(kind, 0.4, retry_after_ms=retry_after_ms)
    answers = [call(client, server, {"MaxResults": "1"}) for _ in range(150)]
    refused = [a for a in answers if a.status_code != 200]
    assert 0.3 * len(answers) <= len(refused) <= 0.5 * len(answers)
    assert {error(a) for a in refused} == {(status, code)}
    expected = None if retry_after_ms is None else str(retry_after_ms)
    assert {a.headers.get("x-acs-retry-after") for a in refused} == {expected}


def test_a_walk_that_retries_throttled_pages_still_sees_every_record(
    client: httpx.Client, world: World, server: SimulatorServer
) -> None:
    server.faults.always("throttling_user", 0.5)
    seen: list[dict[str, Any]] = []
    token, calls = "", 0
    while True:
        calls += 1
        response = _page(client, server, 25, token)
        if response.status_code != 200:
            assert error(response) == (400, "Throttling.User")
            continue
        seen.extend(results(response))
        token = _token(response)
        if not token:
            break
    assert _keys(seen) == _keys(world.records())
    assert calls > len(seen) / 25 + 2  # it was throttled on the way


# -- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("invalid_next_token,page=3,n=1", FaultRule("invalid_next_token", count=1, page=3)),
        ("invalid_next_token,page=2", FaultRule("invalid_next_token", page=2)),
        ("throttling_user,p=0.4", FaultRule("throttling_user", probability=0.4)),
        (
            "throttling_api,p=0.3,retry_after=none",
            FaultRule("throttling_api", probability=0.3, retry_after_ms=None),
        ),
    ],
)
def test_quirk_faults_parse_from_the_command_line(text: str, expected: FaultRule) -> None:
    assert parse_fault_rule(text) == expected


@pytest.mark.parametrize(
    "flags",
    [
        ["--faults", "invalid_next_token,page=1"],
        ["--faults", "slow,page=0"],
        ["--faults", "throttling_api,retry_after=soon"],
        ["--clock-offset", "nan"],
        ["--clock-offset", "9e9"],
        ["--time-resolution", "0"],
        ["--order", "sideways"],
    ],
)
def test_bad_quirk_flags_are_refused_without_a_traceback(flags: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "exporter.simulator", *flags],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "error:" in done.stderr
    assert "Traceback" not in done.stderr


def _server_from_flags(flags: list[str], world: World) -> SimulatorServer:
    args: argparse.Namespace = build_parser().parse_args(
        ["--listen", "127.0.0.1:0", "--access-key-id", KEY, "--access-key-secret", SECRET, *flags]
    )
    return build_server(args, world)


def test_command_line_flags_turn_each_quirk_on(client: httpx.Client, clock: ManualClock) -> None:
    world = _tied_world(clock, spread=50.0)
    flags = ["--order", "unstable", "--time-resolution", "60", "--clock-offset", "-300"]
    flags += ["--faults", "invalid_next_token,page=2,n=1", "--faults", "throttling_api,p=0.35"]
    with _server_from_flags(flags, world) as srv:
        assert (srv.order, srv.time_resolution, srv.clock_offset) == ("unstable", 60, -300)
        statuses: Counter[int] = Counter()
        token_refused = False
        orders: set[tuple[Key, ...]] = set()
        for _ in range(40):
            first = _page(client, srv, 20)
            statuses[first.status_code] += 1
            if first.status_code != 200:
                continue
            assert _date_header(first) == T0 - 300
            orders.add(tuple(_keys(results(first))))
            second = _page(client, srv, 20, _token(first))
            statuses[second.status_code] += 1
            if second.status_code == 400:
                assert error(second) == (400, "InvalidParameter.NextToken")
                token_refused = True
    assert token_refused
    assert 0.2 < statuses[429] / sum(statuses.values()) < 0.5
    assert len(orders) > 1


def _lines_of(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout
    assert stdout is not None

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_the_program_serves_on_the_api_clock_and_names_its_faults(client: httpx.Client) -> None:
    command = [sys.executable, "-m", "exporter.simulator", "--listen", "127.0.0.1:0"]
    command += ["--profile", "quiet", "--access-key-id", KEY, "--access-key-secret", SECRET]
    command += ["--clock-offset", "-300", "--faults", "throttling_user,p=0.4"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            printed = _lines_of(proc)
            url = printed.get(timeout=20).rsplit(" ", 1)[-1].strip()
            banner = "".join(printed.get(timeout=5) for _ in range(8))
            assert f"  endpoint:          {url}\n" in banner  # with its scheme, as configs want
            assert "-300 s from the host's" in banner
            assert "throttling_user, 40% of calls" in banner
            # Throttled or not, every answer carries the API's Date.
            shown = _date_header(call(client, RunningSimulator(url)))
            assert abs(shown - (time.time() - 300)) < 30
        finally:
            proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "Traceback" not in stderr
