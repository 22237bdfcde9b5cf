"""Alibaba's own SDK (alibabacloud-ecs20140526) signs, pages and parses against the simulator.

If the official SDK accepts the simulator, the simulator's signature checks, paging and answer
shapes match the real API closely enough for the exporter's tests to mean something.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_ecs20140526.client import Client
from alibabacloud_tea_openapi.exceptions import (
    ClientException,
    ServerException,
    ThrottlingException,
)
from alibabacloud_tea_openapi.models import Config

from exporter.simulator.server import Account, SimulatorServer
from exporter.simulator.world import DEFAULT_START, ManualClock, World

REGION = "cn-hangzhou"
KEY, SECRET = "LTAI-sdk-test", "sdk-test-secret"
STS_KEY, STS_SECRET = "STS.sdk-temporary", "sdk-sts-secret"


@pytest.fixture(scope="module")
def world() -> World:
    # The demo world shows every status and error code; its clock stands still here.
    return World(21, ManualClock(DEFAULT_START), "demo")


@pytest.fixture(scope="module")
def server(world: World) -> Iterator[SimulatorServer]:
    accounts: dict[str, str | Account] = {KEY: SECRET, STS_KEY: Account(STS_SECRET, sts=True)}
    with SimulatorServer(world, accounts=accounts) as srv:
        yield srv


def sdk_client(
    server: SimulatorServer,
    key: str = KEY,
    secret: str = SECRET,
    security_token: str | None = None,
) -> Any:
    config = Config(
        access_key_id=key,
        access_key_secret=secret,
        security_token=security_token,
        endpoint=server.endpoint,
        protocol="http",
        region_id=REGION,
    )
    return Client(config)


def walk_with_sdk(client: Any, **filters: Any) -> tuple[list[Any], list[int]]:
    """Page to the end with MaxResults=50 and NextToken; return records and TotalCounts."""
    records: list[Any] = []
    totals: list[int] = []
    token: str | None = None
    while True:
        request = ecs_models.DescribeInvocationResultsRequest(
            region_id=REGION, max_results=50, next_token=token, **filters
        )
        body = client.describe_invocation_results(request).body
        totals.append(body.invocation.total_count)
        records.extend(body.invocation.invocation_results.invocation_result)
        token = body.invocation.next_token
        if not token:
            return records, totals


def test_sdk_pages_to_the_end_and_sees_the_ground_truth(
    server: SimulatorServer, world: World
) -> None:
    records, totals = walk_with_sdk(sdk_client(server))
    truth = world.ground_truth()

    assert len(records) == truth.records
    assert set(totals) == {truth.records}
    statuses = Counter(r.invocation_status for r in records)
    assert {s: n for s, n in truth.by_status.items() if n} == dict(statuses)
    codes = Counter(r.error_code for r in records if r.error_code)
    assert {c: n for c, n in truth.by_error_code.items() if n} == dict(codes)
    assert len({(r.invoke_id, r.instance_id, r.container_id) for r in records}) == len(records)
    tagged = [r for r in records if r.tags.tag]
    assert tagged
    assert all(t.tag_key for r in tagged for t in r.tags.tag)
    assert all(isinstance(r.repeats, int) and isinstance(r.exit_code, int) for r in records)


def test_sdk_filters_and_plain_text(server: SimulatorServer, world: World) -> None:
    records, _ = walk_with_sdk(
        sdk_client(server),
        tag=[ecs_models.DescribeInvocationResultsRequestTag(key="env", value="prod")],
        content_encoding="PlainText",
    )
    assert records
    assert all(("env", "prod") in {(t.tag_key, t.tag_value) for t in r.tags.tag} for r in records)
    assert any(r.output and not r.output.endswith("=") for r in records)


def test_sdk_with_an_sts_token(server: SimulatorServer, world: World) -> None:
    client = sdk_client(server, STS_KEY, STS_SECRET, security_token="CAIS+sdk/token==")
    records, _ = walk_with_sdk(client)
    assert len(records) == world.ground_truth().records
    assert server.served[-1].access_key_id == STS_KEY


def test_sdk_history_of_a_periodic_task(server: SimulatorServer, world: World) -> None:
    periodic = next(
        invoke for invoke in world.invocation_ids() if world.is_periodic(invoke) is True
    )
    records, _ = walk_with_sdk(sdk_client(server), invoke_id=periodic, include_history=True)
    assert records
    assert len({r.repeats for r in records}) == len(records)


def test_wrong_secret_is_signature_does_not_match_in_the_sdk(server: SimulatorServer) -> None:
    client = sdk_client(server, secret="not-the-secret")
    with pytest.raises(ClientException) as caught:
        client.describe_invocation_results(
            ecs_models.DescribeInvocationResultsRequest(region_id=REGION, max_results=50)
        )
    assert caught.value.code == "SignatureDoesNotMatch"
    assert caught.value.status_code == 400


def test_sdk_classifies_simulated_throttling_and_outages(server: SimulatorServer) -> None:
    client = sdk_client(server)
    request = ecs_models.DescribeInvocationResultsRequest(region_id=REGION, max_results=10)
    server.faults.next("throttling_api", retry_after_ms=1500)
    with pytest.raises(ThrottlingException) as throttled:
        client.describe_invocation_results(request)
    assert (throttled.value.code, throttled.value.retry_after) == ("Throttling.Api", 1500)
    server.faults.next("service_unavailable")
    with pytest.raises(ServerException) as outage:
        client.describe_invocation_results(request)
    assert outage.value.code == "ServiceUnavailable"
