"""Test doubles for the ECS client: a signature-checking stub of the API, pages, a fake clock.

:class:`StubEcsServer` is a real loopback HTTP server; :func:`mock_http` runs the same checks in
process through ``httpx.MockTransport``. Both verify each request as the service would (V3
signature, the query string on the wire is the signed canonical string, a fresh nonce) and then
ask a *script* for the answer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from exporter.ecs import signing
from exporter.ecs.client import EcsClient, RequestEvent, RetryPolicy
from exporter.ecs.credentials import StaticProvider
from exporter.ecs.models import InvocationQuery, InvocationResult
from exporter.simulator.metadata import (
    Answer,
    LoopbackServer,
    RecordedRequest,
    check_v3_signature,
    error_answer,
    json_answer,
)

ACCESS_KEY_ID = "testid"
ACCESS_KEY_SECRET = "testsecret-do-not-leak-5f1c"
SECURITY_TOKEN = "CAIS+sts-token-do-not-leak/=="
REGION = "cn-hangzhou"

Script = Callable[[RecordedRequest], Answer]


def api_record(n: int, **overrides: Any) -> dict[str, Any]:
    """One API record like the reference example (with an Output the client must drop)."""
    record: dict[str, Any] = {
        "Dropped": 0,
        "InvocationStatus": "Success",
        "InstanceId": f"i-{n:08d}",
        "ExitCode": 0,
        "ErrorInfo": "",
        "StartTime": "2019-12-20T06:15:55Z",
        "Repeats": 1,
        "InvokeRecordStatus": "Finished",
        "FinishedTime": "2019-12-20T06:15:56Z",
        "OssOutputStatus": "",
        "OssOutputErrorCode": "",
        "Username": "root",
        "ContainerId": "",
        "Output": "MTU6MzA6MDEK" * 20,
        "CommandId": "c-hz0jdfwcsr0001",
        "ErrorCode": "",
        "InvokeId": f"t-{n // 10:06d}",
        "Tags": {"Tag": [{"TagKey": "team", "TagValue": "sre"}]},
        "StopTime": "",
    }
    record.update(overrides)
    return record


def page_answer(
    records: list[Any], next_token: str | None, *, total: int | None = None, request_id: str = ""
) -> Answer:
    """A 200 answer of DescribeInvocationResults (``next_token=None`` leaves the field out)."""
    invocation: dict[str, Any] = {
        "PageSize": len(records),
        "PageNumber": 1,
        "TotalCount": len(records) if total is None else total,
        "InvocationResults": {"InvocationResult": records},
    }
    if next_token is not None:
        invocation["NextToken"] = next_token
    return json_answer(200, {"RequestId": request_id or "REQ-1", "Invocation": invocation})


@dataclass
class PagedResults:
    """A script that pages ``records`` as the API does (MaxResults, then NextToken)."""

    records: list[dict[str, Any]]
    tokens_rejected: int = 0  # answer InvalidParameter.NextToken to this many token requests
    served_tokens: list[str] = field(default_factory=list)

    def __call__(self, request: RecordedRequest) -> Answer:
        params = request.params
        size = int(params.get("MaxResults", "10"))
        token = params.get("NextToken", "")
        if token:
            self.served_tokens.append(token)
            if self.tokens_rejected > 0:
                self.tokens_rejected -= 1
                return error_answer(
                    400,
                    "InvalidParameter.NextToken",
                    "The specified parameter NextToken is not valid.",
                )
            offset = int(token.removeprefix("tok-"))
        else:
            offset = 0
        chunk = self.records[offset : offset + size]
        end = offset + len(chunk)
        next_token = f"tok-{end}" if end < len(self.records) else ""
        return page_answer(chunk, next_token, total=len(self.records))


def sequence(*answers: Answer) -> Script:
    """A script that plays ``answers`` in order, then repeats the last one."""
    lock = threading.Lock()
    queue = list(answers)

    def play(request: RecordedRequest) -> Answer:
        with lock:
            return queue.pop(0) if len(queue) > 1 else queue[0]

    return play


class ServiceChecks:
    """What the service checks before it answers; every request it saw, in order."""

    def __init__(self, secrets: Mapping[str, str], tokens: Mapping[str, str]) -> None:
        self.secrets = dict(secrets)
        self.tokens = dict(tokens)
        self.nonces: set[str] = set()
        self.lock = threading.Lock()
        self.seen: list[RecordedRequest] = []
        self.problems: list[str] = []

    def check(self, request: RecordedRequest) -> Answer | None:
        with self.lock:
            self.seen.append(request)
        if request.method != "POST" or request.path != "/" or request.body:
            return self._fail("not a V3 POST / with an empty body", 400, "InvalidRequest")
        if request.raw_query != signing.canonical_query_string(request.params):
            return self._fail(f"query {request.raw_query!r} is not canonical", 400, "BadQuery")
        failure = check_v3_signature(
            "POST", request.raw_query, request.headers, request.body, self.secrets.get
        )
        if failure is not None:
            return self._fail(f"signature: {failure[1]}", *failure[:2])
        parsed = signing.parse_authorization(request.header("Authorization") or "")
        assert parsed is not None
        expected_token = self.tokens.get(parsed[0])
        if expected_token is not None and request.header("x-acs-security-token") != expected_token:
            return self._fail("security token missing or wrong", 400, "InvalidSecurityToken")
        nonce = request.header("x-acs-signature-nonce") or ""
        with self.lock:
            reused = nonce in self.nonces
            self.nonces.add(nonce)
        if reused:
            return self._fail("nonce reused", 400, "SignatureNonceUsed")
        if request.header("x-acs-action") != "DescribeInvocationResults":
            return self._fail("wrong action", 400, "InvalidAction")
        return None

    def _fail(self, problem: str, status: int, code: str) -> Answer:
        with self.lock:
            self.problems.append(problem)
        return error_answer(status, code, problem)


class StubEcsServer(LoopbackServer):
    """DescribeInvocationResults over real loopback HTTP, answering from a script."""

    def __init__(
        self,
        script: Script,
        *,
        secrets: Mapping[str, str] | None = None,
        tokens: Mapping[str, str] | None = None,
    ) -> None:
        self.script = script
        self.checks = ServiceChecks(secrets or {ACCESS_KEY_ID: ACCESS_KEY_SECRET}, tokens or {})
        super().__init__("127.0.0.1", 0)

    def answer(self, request: RecordedRequest) -> Answer:
        return self.checks.check(request) or self.script(request)


def recorded(request: httpx.Request) -> RecordedRequest:
    """An ``httpx.Request`` as the stub server would have recorded it."""
    target = request.url.raw_path.decode("ascii")
    path, _, query = target.partition("?")
    return RecordedRequest(
        request.method, path, query, list(request.headers.multi_items()), request.read()
    )


def mock_http(
    script: Script, *, checks: ServiceChecks | None = None
) -> tuple[httpx.Client, ServiceChecks]:
    """An ``httpx.Client`` whose transport runs the stub's checks and ``script`` in process.

    A script may raise an ``httpx`` exception (a timeout, a refused connection) instead of
    answering.
    """
    checks = checks or ServiceChecks({ACCESS_KEY_ID: ACCESS_KEY_SECRET}, {})

    def handle(request: httpx.Request) -> httpx.Response:
        seen = recorded(request)
        status, headers, body = checks.check(seen) or script(seen)
        return httpx.Response(status, headers=headers, content=body)

    return httpx.Client(transport=httpx.MockTransport(handle)), checks


class FakeClock:
    """Monotonic time that only moves when the code under test sleeps (or a test advances it)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def make_client(
    http: httpx.Client,
    *,
    endpoint: str | None = "https://ecs.cn-hangzhou.aliyuncs.com",
    clock: FakeClock | None = None,
    retry: RetryPolicy | None = None,
    events: list[RequestEvent] | None = None,
    security_token: str | None = None,
    sleep: Callable[[float], None] | None = None,
    **kwargs: Any,
) -> EcsClient:
    """An :class:`EcsClient` with test credentials, a fake clock and an event list."""
    clock = clock or FakeClock()
    return EcsClient(
        region_id=REGION,
        credentials=StaticProvider(ACCESS_KEY_ID, ACCESS_KEY_SECRET, security_token),
        http=http,
        endpoint=endpoint,
        retry=retry,
        on_request=events.append if events is not None else None,
        sleep=sleep or clock.sleep,
        clock=clock,
        **kwargs,
    )


@contextmanager
def open_client(http: httpx.Client, **kwargs: Any) -> Iterator[EcsClient]:
    """:func:`make_client` for a ``with`` block that closes ``http`` (the caller owns it)."""
    try:
        yield make_client(http, **kwargs)
    finally:
        http.close()


def all_results(client: EcsClient, query: InvocationQuery) -> list[InvocationResult]:
    """Every usable result of every page of ``query``."""
    return [result for page in client.iter_pages(query) for result in page.results]


def tried_codes(events: Iterable[RequestEvent]) -> list[str]:
    """The outcome code of each try."""
    return [event.code for event in events]


def body_json(answer: Answer) -> Any:
    """The decoded JSON body of an answer."""
    return json.loads(answer[2])
