"""The simulated ECS API over real loopback HTTP: signatures, filters, paging, errors, faults."""

from __future__ import annotations

import base64
import calendar
import json
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.ecs import signing
from exporter.simulator.faults import FaultPlan, FaultRule, parse_fault_rule
from exporter.simulator.server import Account, SimulatorServer
from exporter.simulator.world import DEFAULT_START, ManualClock, RecordFilter, World, WorldSpec
from tests.support.simulator_calls import (
    ACTION,
    KEY,
    SECRET,
    call,
    error,
    request_headers,
    results,
    walk,
)

T0 = DEFAULT_START
STS_KEY, STS_SECRET = "STS.temporary", "sts-secret"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def world(clock: ManualClock) -> World:
    return World(5, clock, "demo")


@pytest.fixture
def server(world: World) -> Iterator[SimulatorServer]:
    accounts: dict[str, str | Account] = {
        KEY: SECRET,
        STS_KEY: Account(STS_SECRET, sts=True),
        "other": "other-secret",
    }
    with SimulatorServer(world, accounts=accounts, token_ttl=300) as srv:
        yield srv


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


# -- signatures ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize("all_headers", [False, True])
def test_good_signatures_are_accepted(
    client: httpx.Client, server: SimulatorServer, method: str, all_headers: bool
) -> None:
    response = call(client, server, {"MaxResults": "5"}, method=method, all_headers=all_headers)
    assert len(results(response)) == 5
    assert response.headers["content-type"].startswith("application/json")


def test_sts_key_with_token_is_accepted_and_without_token_refused(
    client: httpx.Client, server: SimulatorServer
) -> None:
    token = {"x-acs-security-token": "CAIS+anything/=="}
    ok = call(client, server, key=STS_KEY, secret=STS_SECRET, headers=token)
    assert ok.status_code == 200
    refused = call(client, server, key=STS_KEY, secret=STS_SECRET)
    assert error(refused) == (400, "InvalidSecurityToken.MissingParameter")


def _unsigned_header(client: httpx.Client, server: SimulatorServer) -> httpx.Response:
    query = {"RegionId": "cn-hangzhou"}
    headers = request_headers(server)
    headers["Authorization"] = signing.authorization(KEY, SECRET, "POST", "/", query, headers)
    headers["x-acs-extra"] = "not signed"
    return client.post(f"{server.url}/?RegionId=cn-hangzhou", headers=headers)


def _host_not_signed(client: httpx.Client, server: SimulatorServer) -> httpx.Response:
    query = {"RegionId": "cn-hangzhou"}
    headers = request_headers(server)
    signed = {k: v for k, v in headers.items() if k != "host"}
    headers["Authorization"] = signing.authorization(KEY, SECRET, "POST", "/", query, signed)
    return client.post(f"{server.url}/?RegionId=cn-hangzhou", headers=headers)


def _tampered_query(client: httpx.Client, server: SimulatorServer) -> httpx.Response:
    headers = request_headers(server)
    headers["Authorization"] = signing.authorization(
        KEY, SECRET, "POST", "/", {"RegionId": "cn-hangzhou", "MaxResults": "5"}, headers
    )
    return client.post(f"{server.url}/?MaxResults=6&RegionId=cn-hangzhou", headers=headers)


def _reused_nonce(client: httpx.Client, server: SimulatorServer) -> httpx.Response:
    nonce = {"x-acs-signature-nonce": "same-nonce-twice"}
    assert call(client, server, headers=nonce).status_code == 200
    return call(client, server, headers=nonce)


def _no_authorization(client: httpx.Client, server: SimulatorServer) -> httpx.Response:
    return client.post(f"{server.url}/?RegionId=cn-hangzhou", headers=request_headers(server))


SIGNATURE_CASES: list[tuple[str, Any, tuple[int, str]]] = [
    (
        "wrong secret",
        lambda c, s: call(c, s, secret="wrong"),
        (400, "SignatureDoesNotMatch"),
    ),
    ("tampered query", _tampered_query, (400, "SignatureDoesNotMatch")),
    ("unknown key", lambda c, s: call(c, s, key="nobody"), (404, "InvalidAccessKeyId.NotFound")),
    ("no Authorization", _no_authorization, (400, "IncompleteSignature")),
    ("x-acs header not signed", _unsigned_header, (400, "IncompleteSignature")),
    ("host not signed", _host_not_signed, (400, "IncompleteSignature")),
    (
        "date 20 minutes old",
        lambda c, s: call(
            c,
            s,
            headers={
                "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1200))
            },
        ),
        (400, "InvalidTimeStamp.Expired"),
    ),
    (
        "date in another format",
        lambda c, s: call(c, s, headers={"x-acs-date": "Sun, 29 Nov 2026 07:00:00 GMT"}),
        (400, "InvalidTimeStamp.Format"),
    ),
    ("nonce reused", _reused_nonce, (400, "SignatureNonceUsed")),
    (
        "token with a permanent key",
        lambda c, s: call(c, s, headers={"x-acs-security-token": "tok"}),
        (400, "InvalidSecurityToken.Malformed"),
    ),
    (
        "unknown action",
        lambda c, s: call(c, s, headers={"x-acs-action": "DescribeInstances"}),
        (400, "InvalidAction.NotFound"),
    ),
    ("missing RegionId", lambda c, s: call(c, s, region=None), (400, "MissingRegionId")),
    (
        "unknown region",
        lambda c, s: call(c, s, region="mars-north-1"),
        (404, "InvalidRegionId.NotFound"),
    ),
]


@pytest.mark.parametrize(
    ("send", "expected"),
    [(send, expected) for _, send, expected in SIGNATURE_CASES],
    ids=[name for name, _, _ in SIGNATURE_CASES],
)
def test_bad_requests_are_refused_with_the_api_error(
    client: httpx.Client, server: SimulatorServer, send: Any, expected: tuple[int, str]
) -> None:
    assert error(send(client, server)) == expected


VECTORS = Path(__file__).parent / "vectors"
VECTOR_TIME = calendar.timegm((2025, 1, 15, 8, 30, 0, 0, 0, 0))


@pytest.mark.parametrize(
    ("name", "authorization"),
    [
        ("sdk_v3_default_endpoint", None),
        ("sdk_v3_sts_token", None),
        ("sdk_err_throttling_user_400", None),
        ("sdk_err_throttling_user_400", "minimal_signed_headers_variant"),
    ],
)
def test_requests_captured_from_the_official_sdk_verify(
    world: World, name: str, authorization: str | None
) -> None:
    vector = json.loads((VECTORS / f"{name}.json").read_text())
    captured = vector["captured"]
    headers = [(str(k), str(v)) for k, v in captured["headers"]]
    if authorization is not None:
        value = vector[authorization]["authorization"]
        headers = [(k, value if k == "Authorization" else v) for k, v in headers]
    accounts: dict[str, str | Account] = {
        "testid": Account("testsecret", sts=vector["fixed_inputs"]["security_token"] is not None)
    }
    server = SimulatorServer(world, accounts=accounts, wall_clock=lambda: VECTOR_TIME + 60)
    try:
        answer = server.handle("POST", "/?" + captured["raw_query"], headers, b"")
        replayed = server.handle("POST", "/?" + captured["raw_query"], headers, b"")
    finally:
        server.close()
    assert answer.status == 200, answer.body
    assert json.loads(replayed.body)["Code"] == "SignatureNonceUsed"


def test_signature_mismatch_message_shows_the_server_string_to_sign_not_the_secret(
    client: httpx.Client, server: SimulatorServer
) -> None:
    body = call(client, server, secret="wrong").json()
    assert "ACS3-HMAC-SHA256" in body["Message"]
    assert SECRET not in body["Message"]
    assert body["Recommend"].endswith("q=SignatureDoesNotMatch&product=Ecs")


# -- filters ---------------------------------------------------------------------------------


@pytest.fixture
def scripted(clock: ManualClock) -> World:
    world = World(1, clock, WorldSpec(instances=6))
    world.add_invocation(
        ["i-1", "i-2"], "Success", at=T0 - 100, tags=[("env", "prod")], resource_group_id="rg-a"
    )
    world.add_invocation(["i-2"], "Failed", at=T0 - 90, command_id="c-special", duration=5)
    world.add_invocation(
        ["i-3"], "Success", at=T0 - 80, tags=[("env", "dev"), ("team", "x")], duration=500
    )
    world.add_invocation(["i-1", "i-3"], ["Success", "Timeout"], at=T0 - 70, duration=5)
    return world


@pytest.fixture
def scripted_server(scripted: World) -> Iterator[SimulatorServer]:
    with SimulatorServer(scripted) as srv:
        yield srv


def _ids(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["InvokeId"], r["InstanceId"]) for r in records]


@pytest.mark.parametrize(
    ("params", "record_filter"),
    [
        ({"InstanceId": "i-2"}, RecordFilter(instance_id="i-2")),
        ({"CommandId": "c-special"}, RecordFilter(command_id="c-special")),
        ({"ResourceGroupId": "rg-a"}, RecordFilter(resource_group_id="rg-a")),
        ({"Tag.1.Key": "env", "Tag.1.Value": "prod"}, RecordFilter(tags=(("env", "prod"),))),
        ({"Tag.1.Key": "env"}, RecordFilter(tags=(("env", None),))),
        (
            {"Tag.1.Key": "env", "Tag.1.Value": "dev", "Tag.2.Key": "team"},
            RecordFilter(tags=(("env", "dev"), ("team", None))),
        ),
        ({"InvokeRecordStatus": "Running"}, RecordFilter(invoke_record_status="Running")),
        ({"InvokeRecordStatus": "Finished"}, RecordFilter(invoke_record_status="Finished")),
        ({"InvokeRecordStatus": "Failed"}, RecordFilter(invoke_record_status="Failed")),
        (
            {"InvokeRecordStatus": "PartialFailed"},
            RecordFilter(invoke_record_status="PartialFailed"),
        ),
    ],
)
def test_every_filter_selects_what_the_world_says(
    client: httpx.Client,
    scripted: World,
    scripted_server: SimulatorServer,
    params: dict[str, str],
    record_filter: RecordFilter,
) -> None:
    served = results(call(client, scripted_server, {**params, "MaxResults": "50"}))
    expected = scripted.records(record_filter=record_filter)
    assert served, "the scripted world has matches for every filter"
    assert _ids(served) == _ids(expected)


def test_invoke_id_filter_and_finished_covers_every_completed_status(
    client: httpx.Client, scripted: World, scripted_server: SimulatorServer
) -> None:
    invoke = scripted.invocation_ids()[0]
    served = results(call(client, scripted_server, {"InvokeId": invoke}))
    assert {r["InvokeId"] for r in served} == {invoke}
    finished = results(call(client, scripted_server, {"InvokeRecordStatus": "Finished"}))
    assert {r["InvokeRecordStatus"] for r in finished} == {"Success", "Failed", "PartialFailed"}


TAG_ERRORS = [
    ({f"Tag.{n}.Key": f"k{n}" for n in range(1, 22)}, "NumberExceed.Tags"),
    ({"Tag.1.Key": "env", "Tag.2.Key": "env"}, "Duplicate.TagKey"),
    ({"Tag.1.Key": "aliyun-x"}, "InvalidTagKey.Malformed"),
    ({"Tag.1.Key": "acs:x"}, "InvalidTagKey.Malformed"),
    ({"Tag.1.Key": "k" * 65}, "InvalidTagKey.Malformed"),
    ({"Tag.1.Key": "http://x"}, "InvalidTagKey.Malformed"),
    ({"Tag.1.Key": "env", "Tag.1.Value": "v" * 129}, "InvalidTagValue.Malformed"),
    ({"Tag.1.Key": "env", "Tag.1.Value": "see https://x"}, "InvalidTagValue.Malformed"),
    ({"Tag.1.Value": "prod"}, "MissingParameter.TagKey"),
    ({"Tag.1.Key": ""}, "MissingParameter.TagKey"),
]


@pytest.mark.parametrize(("params", "code"), TAG_ERRORS)
def test_bad_tags_get_the_documented_codes(
    client: httpx.Client, server: SimulatorServer, params: dict[str, str], code: str
) -> None:
    assert error(call(client, server, params)) == (400, code)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"MaxResults": "51"}, "InvalidParameter.MaxResults"),
        ({"MaxResults": "0"}, "InvalidParameter.MaxResults"),
        ({"MaxResults": "ten"}, "InvalidParameter.MaxResults"),
        ({"NextToken": "AAAAAgarbage"}, "InvalidParameter.NextToken"),
        ({"IncludeHistory": "true"}, "InvalidParameter"),
        ({"IncludeHistory": "maybe", "InvokeId": "t-x"}, "InvalidParameter"),
        ({"ContentEncoding": "Hex"}, "InvalidParameter.ContentEncoding"),
        ({"InvokeRecordStatus": "Exploded"}, "InvalidParameter.InvokeRecordStatus"),
        ({"PageSize": "60"}, "InvalidParam.PageSize"),
        ({"PageNumber": "0"}, "InvalidParam.PageNumber"),
    ],
)
def test_bad_parameters_are_refused(
    client: httpx.Client, server: SimulatorServer, params: dict[str, str], code: str
) -> None:
    assert error(call(client, server, params)) == (400, code)


def test_content_encoding_base64_by_default_plain_text_on_request(
    client: httpx.Client, server: SimulatorServer
) -> None:
    default = results(call(client, server, {"MaxResults": "50"}))
    plain = results(call(client, server, {"MaxResults": "50", "ContentEncoding": "PlainText"}))
    with_output = [(d, p) for d, p in zip(default, plain, strict=True) if p["Output"]]
    assert with_output
    for encoded, text in with_output:
        assert base64.b64decode(encoded["Output"]).decode() == text["Output"]


def test_include_history_lists_each_run_of_a_periodic_invocation(
    client: httpx.Client, clock: ManualClock
) -> None:
    world = World(0, clock, WorldSpec(instances=3))
    periodic = world.add_invocation(1, "Success", at=T0, repeat_mode="Period", period=30)
    once = world.add_invocation(1, "Success", at=T0)
    clock.advance(100)
    with SimulatorServer(world) as srv:
        latest = results(call(client, srv, {"InvokeId": periodic}))
        history = results(call(client, srv, {"InvokeId": periodic, "IncludeHistory": "true"}))
        refused = call(client, srv, {"InvokeId": once, "IncludeHistory": "true"})
    assert len(latest) == 1
    assert [r["Repeats"] for r in history] == [3, 2, 1]
    assert error(refused) == (400, "InvalidParameter")


# -- paging ----------------------------------------------------------------------------------


def test_paging_walks_every_record_once_and_ends_with_an_empty_token(
    client: httpx.Client, world: World, server: SimulatorServer
) -> None:
    expected = world.records()
    first = call(client, server, {"MaxResults": "7"})
    invocation = first.json()["Invocation"]
    assert invocation["TotalCount"] == len(expected)
    assert invocation["PageSize"] == 7
    assert len(invocation["InvocationResults"]["InvocationResult"]) == 7
    served = walk(client, server, {}, page=7)
    assert _ids(served) == _ids(expected)
    assert served == expected


def test_default_page_is_ten_and_newest_invocation_comes_first(
    client: httpx.Client, world: World, server: SimulatorServer
) -> None:
    page = results(call(client, server))
    assert len(page) == 10
    assert page[0]["InvokeId"] == world.invocation_ids()[0]


def test_concurrent_walks_each_see_every_record(world: World, server: SimulatorServer) -> None:
    expected = _ids(world.records())
    seen: list[list[tuple[str, str]]] = []

    def one_walk() -> None:
        with httpx.Client(timeout=10) as own:
            seen.append(_ids(walk(own, server, {}, page=20)))

    threads = [threading.Thread(target=one_walk) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert seen == [expected] * 4


def test_a_walk_is_a_snapshot_new_invocations_do_not_shift_pages(
    client: httpx.Client, world: World, clock: ManualClock, server: SimulatorServer
) -> None:
    before = world.records()
    first = call(client, server, {"MaxResults": "50"})
    clock.advance(120)  # new invocations arrive, statuses move on
    assert len(world.records()) > len(before)
    token = first.json()["Invocation"]["NextToken"]
    rest: list[dict[str, Any]] = []
    while token:
        response = call(client, server, {"MaxResults": "50", "NextToken": token})
        rest.extend(results(response))
        token = response.json()["Invocation"]["NextToken"]
    assert _ids(results(first) + rest) == _ids(before)


def test_a_token_can_be_replayed_but_expires_and_is_bound_to_its_filters(
    client: httpx.Client, clock: ManualClock, server: SimulatorServer
) -> None:
    token = call(client, server, {"MaxResults": "5"}).json()["Invocation"]["NextToken"]
    once = results(call(client, server, {"MaxResults": "5", "NextToken": token}))
    again = results(call(client, server, {"MaxResults": "5", "NextToken": token}))
    assert _ids(once) == _ids(again)
    other_filter = call(client, server, {"NextToken": token, "InstanceId": "i-x"})
    assert error(other_filter) == (400, "InvalidParameter.NextToken")
    clock.advance(301)
    expired = call(client, server, {"MaxResults": "5", "NextToken": token})
    assert error(expired) == (400, "InvalidParameter.NextToken")


def test_legacy_page_number_paging(
    client: httpx.Client, world: World, server: SimulatorServer
) -> None:
    expected = world.records()
    page2 = call(client, server, {"PageNumber": "2", "PageSize": "5"}).json()["Invocation"]
    assert (page2["PageNumber"], page2["PageSize"], page2["NextToken"]) == (2, 5, "")
    assert _ids(page2["InvocationResults"]["InvocationResult"]) == _ids(expected[5:10])


def test_shuffled_order_is_random_but_fixed_for_a_walk(client: httpx.Client, world: World) -> None:
    expected = world.records()
    with SimulatorServer(world, order="shuffled", seed=3) as srv:
        first = walk(client, srv, {}, page=50)
        second = walk(client, srv, {}, page=50)
    assert sorted(_ids(first)) == sorted(_ids(expected))
    assert len(set(_ids(first))) == len(first)
    assert _ids(first) != _ids(expected)
    assert _ids(first) != _ids(second)


def test_retention_limits_what_the_api_returns(client: httpx.Client, clock: ManualClock) -> None:
    world = World(0, clock, WorldSpec(instances=10, max_entries=30))
    for i in range(10):
        world.add_invocation(5, "Success", at=T0 + i)
    clock.advance(60)
    with SimulatorServer(world) as srv:
        served = walk(client, srv, {}, page=50)
    assert len(served) == 30


def test_regions_of_a_mapping_have_their_own_worlds(
    client: httpx.Client, clock: ManualClock
) -> None:
    hangzhou = World(0, clock, WorldSpec(instances=3))
    hangzhou.add_invocation(2, at=T0 - 10)
    with SimulatorServer({"cn-hangzhou": hangzhou}, regions=["cn-hangzhou", "cn-beijing"]) as srv:
        assert len(results(call(client, srv, region="cn-hangzhou"))) == 2
        assert results(call(client, srv, region="cn-beijing")) == []
        assert error(call(client, srv, region="cn-shanghai")) == (404, "InvalidRegionId.NotFound")


# -- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("throttling_user", 400, "Throttling.User"),
        ("throttling_api", 429, "Throttling.Api"),
        ("internal_error", 500, "InternalError"),
        ("service_unavailable", 503, "ServiceUnavailable"),
    ],
)
def test_error_faults_answer_the_api_error_then_stop(
    client: httpx.Client, server: SimulatorServer, kind: str, status: int, code: str
) -> None:
    server.faults.next(kind, 2, retry_after_ms=2500)
    first, second, third = (call(client, server) for _ in range(3))
    assert error(first) == (status, code)
    assert error(second) == (status, code)
    assert third.status_code == 200
    if kind == "throttling_api":
        assert first.headers["x-acs-retry-after"] == "2500"


def test_dropped_connection_and_truncated_body_break_the_transport(
    client: httpx.Client, server: SimulatorServer
) -> None:
    server.faults.next("drop_connection")
    with pytest.raises(httpx.RemoteProtocolError):
        call(client, server)
    server.faults.next("truncated_body")
    with pytest.raises(httpx.RemoteProtocolError):
        call(client, server)
    assert call(client, server).status_code == 200


def test_malformed_json_and_wrong_types(client: httpx.Client, server: SimulatorServer) -> None:
    server.faults.next("malformed_json")
    response = call(client, server)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)
    server.faults.next("wrong_types")
    records = results(call(client, server, {"MaxResults": "3"}))
    assert all(isinstance(r["ExitCode"], str) and r["Repeats"] is None for r in records)
    assert records[0]["InvokeId"] == 12345


def test_slow_answers_and_latency(client: httpx.Client, server: SimulatorServer) -> None:
    server.faults.next("slow", delay=0.3)
    started = time.monotonic()
    assert call(client, server).status_code == 200
    assert time.monotonic() - started >= 0.3
    server.faults.latency = 0.2
    started = time.monotonic()
    assert call(client, server).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_fault_for_one_access_key_leaves_another_working(
    client: httpx.Client, server: SimulatorServer
) -> None:
    server.faults.always("service_unavailable", access_key_id="other")
    assert error(call(client, server, key="other", secret="other-secret")) == (
        503,
        "ServiceUnavailable",
    )
    assert call(client, server).status_code == 200
    server.faults.clear()
    assert call(client, server, key="other", secret="other-secret").status_code == 200


def test_probabilistic_faults_are_seeded() -> None:
    def pattern() -> list[bool]:
        plan = FaultPlan([FaultRule("internal_error", probability=0.5)], seed=9)
        return [plan.choose(KEY, "cn-hangzhou") is not None for _ in range(40)]

    first = pattern()
    assert first == pattern()
    assert 5 < sum(first) < 35


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "throttling_api,p=0.1,retry_after=2000",
            FaultRule("throttling_api", probability=0.1, retry_after_ms=2000),
        ),
        ("slow,n=3,delay=0.5,key=abc", FaultRule("slow", count=3, delay=0.5, access_key_id="abc")),
    ],
)
def test_fault_rules_parse_from_the_command_line(text: str, expected: FaultRule) -> None:
    assert parse_fault_rule(text) == expected


@pytest.mark.parametrize("text", ["nope", "slow,n", "slow,p=x", "slow,p=2", "slow,colour=red"])
def test_bad_fault_rules_are_refused(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - messages differ per case
        parse_fault_rule(text)


# -- what was served -------------------------------------------------------------------------


def test_served_log_records_each_request(client: httpx.Client, server: SimulatorServer) -> None:
    server.reset_served()
    call(client, server, {"MaxResults": "4"})
    call(client, server, secret="wrong")
    server.faults.next("drop_connection")
    with pytest.raises(httpx.RemoteProtocolError):
        call(client, server)

    ok, bad, dropped = server.served
    assert server.request_count == 3
    assert (ok.action, ok.access_key_id, ok.region_id) == (ACTION, KEY, "cn-hangzhou")
    assert (ok.status, ok.code, ok.results, ok.params["MaxResults"]) == (200, "", 4, "4")
    assert ok.next_token
    assert (bad.status, bad.code, bad.results) == (400, "SignatureDoesNotMatch", 0)
    assert (dropped.status, dropped.fault) == (0, "drop_connection")
    server.reset_served()
    assert server.served == []
    assert server.request_count == 0


def test_benchmark_backlog_pages_quickly(client: httpx.Client, clock: ManualClock) -> None:
    world = World(0, clock, "bench")
    with SimulatorServer(world) as srv:
        started = time.monotonic()
        served = walk(client, srv, {}, page=50)
        elapsed = time.monotonic() - started
    assert len(served) == 10_000
    assert len({(r["InvokeId"], r["InstanceId"], r["ContainerId"]) for r in served}) == 10_000
    assert elapsed < 20  # generous: the machine is shared; typically ~1-2 s


# -- the command line ------------------------------------------------------------------------


def _lines_of(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    """Lines the process prints, read by a thread (a blocking read never stalls the test)."""
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout
    assert stdout is not None

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_command_line_serves_prints_credentials_and_stops_on_sigterm(
    client: httpx.Client,
) -> None:
    command = [sys.executable, "-m", "exporter.simulator", "--listen", "127.0.0.1:0"]
    command += ["--profile", "quiet", "--access-key-id", "cli-id", "--access-key-secret", "cli-s"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            printed = _lines_of(proc)
            url = printed.get(timeout=20).rsplit(" ", 1)[-1].strip()
            lines = [printed.get(timeout=5) for _ in range(6)]  # through the secret's line
            assert any("secret" in line for line in lines)
            assert any("cli-id" in line for line in lines)
            assert not any("cli-s\n" in line for line in lines)  # a passed secret is not echoed
            endpoint = url.removeprefix("http://")
            query = {"RegionId": "cn-hangzhou"}
            headers = {
                "host": endpoint,
                "x-acs-action": ACTION,
                "x-acs-version": "2014-05-26",
                "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "x-acs-signature-nonce": uuid.uuid4().hex,
                "x-acs-content-sha256": signing.EMPTY_BODY_SHA256,
            }
            headers["Authorization"] = signing.authorization(
                "cli-id", "cli-s", "POST", "/", query, headers
            )
            response = client.post(f"{url}/?RegionId=cn-hangzhou", headers=headers)
            assert response.status_code == 200
        finally:
            proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    "flags",
    [["--listen", "nowhere"], ["--profile", "nope"], ["--faults", "bogus"], ["--seed", "x"]],
)
def test_command_line_refuses_bad_flags_without_a_traceback(flags: list[str]) -> None:
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
