"""Test doubles shared by the test modules: fakes of the ECS API, a clock, result builders.

* for the client: :class:`StubEcsServer` is a real loopback HTTP server; :func:`mock_http` runs
  the same checks in process through ``httpx.MockTransport``. Both verify each request as the
  service would (V3 signature, the query string on the wire is the signed canonical string, a
  fresh nonce) and then ask a *script* for the answer (:func:`page_answer`, :class:`PagedResults`,
  :func:`sequence`, :func:`api_record`);
* for the refresher and the collector: :class:`FakeApi`, the client's paging contract in memory,
  and the result builders :func:`result` and :func:`backlog`;
* :class:`FakeClock`: time that moves only when told to (or when the code under test sleeps).
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

from exporter.ecs import signing
from exporter.ecs.client import MAX_EMPTY_PAGES_IN_A_ROW, EcsClient, RequestEvent, RetryPolicy
from exporter.ecs.credentials import StaticProvider
from exporter.ecs.errors import MalformedResponseError, ThrottledError
from exporter.ecs.models import (
    TERMINAL_STATUSES,
    InvalidRecord,
    InvocationQuery,
    InvocationResult,
    Page,
)
from exporter.refresh import RefreshOptions, TargetRefresher
from exporter.state import TargetStore
from tests.support.http_fakes import (
    Answer,
    RecordedRequest,
    RecordingServer,
    check_v3_signature,
    error_answer,
    json_answer,
)

ACCESS_KEY_ID = "testid"
ACCESS_KEY_SECRET = "testsecret-do-not-leak-5f1c"
SECURITY_TOKEN = "CAIS+sts-token-do-not-leak/=="
REGION = "cn-hangzhou"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, the simulator's DEFAULT_START
DAY = 86_400.0

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
    # Offsets where every walk first gets a page without a record, with a NextToken (``+``)
    # on to that offset's records (a service that filters after paging).
    empty_at: set[int] = field(default_factory=set)

    def __call__(self, request: RecordedRequest) -> Answer:
        params = request.params
        size = int(params.get("MaxResults", "10"))
        token = params.get("NextToken", "")
        held_back = token.endswith("+")
        if token:
            self.served_tokens.append(token)
            if self.tokens_rejected > 0:
                self.tokens_rejected -= 1
                return error_answer(
                    400,
                    "InvalidParameter.NextToken",
                    "The specified parameter NextToken is not valid.",
                )
            offset = int(token.removeprefix("tok-").removesuffix("+"))
        else:
            offset = 0
        if offset in self.empty_at and not held_back:
            return page_answer([], f"tok-{offset}+", total=len(self.records))
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


class StubEcsServer(RecordingServer):
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

    def respond(self, request: RecordedRequest) -> Answer:
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
        answer = checks.check(seen) or script(seen)
        return httpx.Response(answer.status, headers=answer.headers, content=answer.body)

    return httpx.Client(transport=httpx.MockTransport(handle)), checks


class FakeClock:
    """Time that only moves when the code under test sleeps, a test advances it or sets ``now``
    (a monotonic clock for the client, the wall clock for the refresher)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
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
    http: httpcore.ConnectionPool | httpx.Client | httpx.BaseTransport,
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
def open_client(
    http: httpcore.ConnectionPool | httpx.Client | httpx.BaseTransport, **kwargs: Any
) -> Iterator[EcsClient]:
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
    return json.loads(answer.body)


# --- the client's paging contract in memory, and result builders -----------------------------


def result(
    invoke_id: str,
    instance_id: str = "i-1",
    status: str = "Success",
    *,
    repeats: int | None = None,
    record_status: str | None = None,
    start: float | None = T0,
    finished: float | None = None,
    error_code: str = "",
    oss: str = "",
    oss_code: str = "",
    dropped: int = 0,
    command_id: str = "c-1",
    container_id: str = "",
) -> InvocationResult:
    """A record as the API would show it (defaults: a one-time task, started at T0)."""
    terminal = status in TERMINAL_STATUSES
    if repeats is None:
        repeats = 1 if start is not None and status != "Pending" else 0
    if finished is None and terminal and start is not None:
        finished = start + 10
    if record_status is None:
        record_status = "Finished" if terminal else "Running"
    return InvocationResult.of(
        invoke_id=invoke_id,
        instance_id=instance_id,
        container_id=container_id,
        command_id=command_id,
        invocation_status=status,
        invoke_record_status=record_status,
        error_code=error_code,
        exit_code=0,
        start_time=start if status != "Pending" else None,
        finished_time=finished,
        stop_time=None,
        repeats=repeats,
        dropped=dropped,
        oss_output_status=oss,
        oss_output_error_code=oss_code,
        tags=(),
    )


def backlog(n: int) -> list[InvocationResult]:
    return [result(f"t-{i:04d}", start=T0 - 1000 - i) for i in range(n)]


class FakeApi:
    """Imitates ``EcsClient.iter_pages``: the records matching a query, in list order (index 0
    is the newest, as the service appears to answer), ``page_size`` per page, with offset
    tokens. Every page is one call, recorded in ``calls``; ``errors`` maps a call number
    (1-based) to the error that call raises; the pages of the call numbers in ``garbled`` have
    every record unusable (in ``Page.invalid``); while ``gate`` is set, calls wait for it.
    ``empty_pages`` adds pages without a record that carry a NextToken (see there)."""

    def __init__(self, records: list[InvocationResult] | None = None, page_size: int = 50) -> None:
        self.records: list[InvocationResult] = list(records or [])
        self.history: list[InvocationResult] = []
        self.invalid: list[InvalidRecord] = []
        self.page_size = page_size
        self.calls: list[InvocationQuery] = []
        self.errors: dict[int, Exception] = {}
        self.garbled: set[int] = set()
        self.gate: threading.Event | None = None
        # Quirks the real API may show (issue 9): calls whose NextToken is refused (the client
        # then restarts from the first page: that call answers page 1), records of equal
        # StartTime in a new order at every call, and calls throttled at random.
        self.refuse_token: set[int] = set()
        # Tokens that do not outlive their walk: a NextToken used more than this many calls
        # after the one that returned it is refused (None: tokens never expire).
        self.token_max_age: int | None = None
        self.unstable: random.Random | None = None
        self.throttle: tuple[random.Random, float] | None = None
        # Pages without a record that still carry a NextToken (a service that filters after
        # paging): offset -> how many such pages every walk gets there, in a row, each with a
        # new token to the same place, before that offset's records.
        self.empty_pages: dict[int, int] = {}
        self._lock = threading.Lock()

    def iter_pages(
        self,
        query: InvocationQuery,
        *,
        max_results: int = 50,
        max_pages: int | None = None,
        next_token: str = "",
    ) -> Iterator[Page]:
        size = min(max_results, self.page_size)
        offset_text, _, issued_text = next_token.partition("@")
        offset = int(offset_text or 0)
        issued = int(issued_text or 0)
        pages = 0
        emptied: dict[int, int] = {}  # this walk's empty pages so far, by offset
        while True:
            with self._lock:
                self.calls.append(query)
                number = len(self.calls)
                error = self.errors.pop(number, None)
                if error is None and self.throttle is not None:
                    rng, share = self.throttle
                    if rng.random() < share:
                        error = ThrottledError("slow down", code="Throttling.User")
            if self.gate is not None:
                self.gate.wait(10)
            if error is not None:
                raise error
            expired = self.token_max_age is not None and number - issued > self.token_max_age
            restarted = offset > 0 and (number in self.refuse_token or expired)
            if restarted:
                offset, pages = 0, 0
            rows = self._select(query)
            if emptied.get(offset, 0) < self.empty_pages.get(offset, 0):
                emptied[offset] = emptied.get(offset, 0) + 1
                if emptied[offset] > MAX_EMPTY_PAGES_IN_A_ROW:  # as the client refuses them
                    raise MalformedResponseError("pages in a row came back empty", http_status=200)
                issued = number
                yield Page(
                    [], f"{offset}@{number}", len(rows), f"REQ-{number}", restarted=restarted
                )
                pages += 1
                if max_pages is not None and pages >= max_pages:
                    return
                continue
            chunk = rows[offset : offset + size]
            offset += size
            token = f"{offset}@{number}" if offset < len(rows) else ""
            issued = number
            invalid, self.invalid = self.invalid, []
            if number in self.garbled:
                invalid = [*invalid, *(InvalidRecord(r.invoke_id, "", "garbled") for r in chunk)]
                chunk = []
            yield Page(chunk, token, len(rows), f"REQ-{number}", invalid, restarted=restarted)
            pages += 1
            if not token or (max_pages is not None and pages >= max_pages):
                return

    def _select(self, query: InvocationQuery) -> list[InvocationResult]:
        rows = self.history if query.include_history else self.records
        if query.invoke_id is not None:
            rows = [r for r in rows if r.invoke_id == query.invoke_id]
        if query.instance_id is not None:
            rows = [r for r in rows if r.instance_id == query.instance_id]
        if query.invoke_record_status is not None:
            rows = [r for r in rows if r.invoke_record_status == query.invoke_record_status]
        if self.unstable is not None:
            # Sorted by StartTime only: among equal ones, any order, a new one at every call.
            keyed = [(r.start_time or 0.0, self.unstable.random(), r) for r in rows]
            keyed.sort(key=lambda item: (-item[0], item[1]))
            rows = [r for _, _, r in keyed]
        return rows

    def set(self, record: InvocationResult) -> None:
        """Replace the record with the same key (or add it as the newest)."""
        for index, old in enumerate(self.records):
            if old.key == record.key:
                self.records[index] = record
                return
        self.records.insert(0, record)


def make_refresher(
    api: FakeApi,
    executor: Executor,
    clock: Callable[[], float],
    name: str = "prod",
    *,
    store: TargetStore | None = None,
    query: InvocationQuery | None = None,
    **options: Any,
) -> TargetRefresher:
    """A refresher of target ``name`` in cn-hangzhou that reads ``api`` with ``query`` (the
    default query when None), on ``clock``, with ``options`` as its ``RefreshOptions`` (and
    ``store`` for its state)."""
    return TargetRefresher(
        name,
        "cn-hangzhou",
        api,
        query if query is not None else InvocationQuery(),
        RefreshOptions(**options),
        executor,
        clock=clock,
        store=store,
    )
