"""Signed requests to the simulated ECS API, as a test sends them (no exporter code involved
beyond the signing helpers)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from exporter.ecs import signing

KEY, SECRET = "testid", "testsecret"
ACTION = "DescribeInvocationResults"


class Endpoint(Protocol):
    """Where a simulator listens (a ``SimulatorServer`` or a :class:`RunningSimulator`)."""

    @property
    def url(self) -> str: ...

    @property
    def endpoint(self) -> str: ...


@dataclass(frozen=True)
class RunningSimulator:
    """A simulator in another process, known by the URL it printed."""

    url: str

    @property
    def endpoint(self) -> str:
        return self.url.removeprefix("http://")


def request_headers(server: Endpoint, **overrides: str) -> dict[str, str]:
    headers = {
        "host": server.endpoint,
        "x-acs-action": ACTION,
        "x-acs-version": "2014-05-26",
        "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "x-acs-signature-nonce": uuid.uuid4().hex,
        "x-acs-content-sha256": signing.EMPTY_BODY_SHA256,
    }
    headers.update(overrides)
    return headers


def sign_all(
    secret: str, key: str, method: str, query: Mapping[str, str], headers: dict[str, str]
) -> str:
    """Sign every header, as the official Python SDK does."""
    canonical, names = signing.canonical_request(method, "/", query, headers.items(), headers)
    sig = signing.signature(secret, canonical)
    return f"{signing.ALGORITHM} Credential={key},SignedHeaders={names},Signature={sig}"


def call(
    client: httpx.Client,
    server: Endpoint,
    params: Mapping[str, str] | None = None,
    *,
    key: str = KEY,
    secret: str = SECRET,
    method: str = "POST",
    region: str | None = "cn-hangzhou",
    headers: Mapping[str, str] | None = None,
    all_headers: bool = False,
) -> httpx.Response:
    """Send one V3-signed request (minimal signed header set unless ``all_headers``)."""
    query = dict(params or {})
    if region is not None:
        query.setdefault("RegionId", region)
    hdrs = request_headers(server, **dict(headers or {}))
    if all_headers:
        hdrs["accept"] = "application/json"
        hdrs["user-agent"] = "AlibabaCloud (Linux; x86_64) Python/3.11 Core/0.4 TeaDSL/2"
        hdrs["Authorization"] = sign_all(secret, key, method, query, hdrs)
    else:
        hdrs["Authorization"] = signing.authorization(key, secret, method, "/", query, hdrs)
    url = f"{server.url}/?{signing.canonical_query_string(query)}"
    return client.request(method, url, headers=hdrs)


def results(response: httpx.Response) -> list[dict[str, Any]]:
    """The records of a successful answer (fails the test on an error answer)."""
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["Invocation"]["InvocationResults"][
        "InvocationResult"
    ]
    return items


def error(response: httpx.Response) -> tuple[int, str]:
    """HTTP status and ``Code`` of an error answer, which must have the API's shape."""
    body = response.json()
    assert set(body) == {"RequestId", "HostId", "Code", "Message", "Recommend"}
    return response.status_code, str(body["Code"])


def walk(
    client: httpx.Client, server: Endpoint, params: Mapping[str, str], page: int = 50
) -> list[dict[str, Any]]:
    """Every page of one walk, following NextToken until it is empty."""
    out: list[dict[str, Any]] = []
    token = ""
    while True:
        query = {**params, "MaxResults": str(page)}
        if token:
            query["NextToken"] = token
        response = call(client, server, query)
        out.extend(results(response))
        token = response.json()["Invocation"]["NextToken"]
        if not token:
            return out
