"""The ECS client: the request it puts on the wire, endpoints, retries, deadlines and events."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
from freezegun import freeze_time

from exporter import __version__
from exporter.ecs import signing
from exporter.ecs.client import EcsClient, RequestEvent, RetryPolicy
from exporter.ecs.credentials import StaticProvider
from exporter.ecs.errors import (
    AccessDeniedError,
    AuthenticationError,
    CredentialsError,
    EcsError,
    InvalidRequestError,
    MalformedResponseError,
    RequestTimeoutError,
    ServerError,
    ThrottledError,
    TransportError,
)
from exporter.ecs.models import InvocationQuery
from exporter.ecs.ratelimit import TokenBucket
from exporter.ecs.request import parse_endpoint
from tests.support.fakes import (
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    REGION,
    SECURITY_TOKEN,
    FakeClock,
    PagedResults,
    ServiceChecks,
    StubEcsServer,
    all_results,
    api_record,
    make_client,
    mock_http,
    open_client,
    page_answer,
    sequence,
    tried_codes,
)
from tests.support.http_fakes import Answer, RecordedRequest, error_answer, json_answer


class MaxJitter(random.Random):
    """Full jitter that always draws the top of the range, so backoff is predictable."""

    def uniform(self, a: float, b: float) -> float:
        return b


class NoJitter(random.Random):
    """Full jitter that always draws 0."""

    def uniform(self, a: float, b: float) -> float:
        return a


OK = page_answer([api_record(1)], "")
VECTORS = Path(__file__).parent / "vectors"

# The client takes an httpcore pool (production), an httpx transport or an httpx.Client
# (proxies from the environment): all put the same request on the wire, keep the same deadlines.
HTTP_KINDS = pytest.mark.parametrize(
    "make_http",
    [httpcore.ConnectionPool, httpx.HTTPTransport, httpx.Client],
    ids=["pool", "transport", "client"],
)


@HTTP_KINDS
def test_request_on_the_wire_is_a_signed_v3_post(
    make_http: Callable[[], httpcore.ConnectionPool | httpx.Client | httpx.BaseTransport],
) -> None:
    query = InvocationQuery(
        instance_id="i-1", invoke_record_status="Finished", tags=(("env", "prod x"), ("team", ""))
    )
    with StubEcsServer(PagedResults([api_record(1)])) as server:
        with open_client(make_http(), endpoint=server.url) as client:
            assert len(all_results(client, query)) == 1
        request = server.requests[0]
    assert server.checks.problems == []  # the signature verified
    assert (request.method, request.path, request.body) == ("POST", "/", b"")
    # the query string is exactly the canonical string that was signed: a space is %20
    assert request.raw_query == (
        "InstanceId=i-1&InvokeRecordStatus=Finished&MaxResults=50&RegionId=cn-hangzhou"
        "&Tag.1.Key=env&Tag.1.Value=prod%20x&Tag.2.Key=team&Tag.2.Value="
    )
    assert request.header("host") == server.url.removeprefix("http://")
    assert request.header("x-acs-action") == "DescribeInvocationResults"
    assert request.header("x-acs-version") == "2014-05-26"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", request.header("x-acs-date") or "")
    assert re.fullmatch(r"[0-9a-f]{32}", request.header("x-acs-signature-nonce") or "")
    assert request.header("x-acs-content-sha256") == signing.EMPTY_BODY_SHA256
    assert request.header("x-acs-security-token") is None
    assert request.header("user-agent") == f"aliyun-cloudassistant-exporter/{__version__}"
    assert request.header("accept") == "application/json"
    # Uncompressed answers: the CPU to inflate them would cost more than the bytes saved.
    assert request.header("accept-encoding") is None
    parsed = signing.parse_authorization(request.header("authorization") or "")
    assert parsed is not None
    assert parsed[0] == ACCESS_KEY_ID
    assert parsed[1] == [
        "host",
        "x-acs-action",
        "x-acs-content-sha256",
        "x-acs-date",
        "x-acs-signature-nonce",
        "x-acs-version",
    ]


def test_query_matches_what_the_official_sdk_sent() -> None:
    """Same inputs as the vectors: the SDK's captured query string, byte for byte."""
    vector = json.loads((VECTORS / "sdk_v3_default_endpoint.json").read_text(encoding="utf-8"))
    http, checks = mock_http(sequence(OK))
    query = InvocationQuery(invoke_record_status="Finished", tags=(("env", "prod"),))
    with open_client(http) as client:
        list(client.iter_pages(query))
    assert checks.seen[0].raw_query == vector["captured"]["raw_query"]


def test_sts_token_is_sent_and_signed() -> None:
    checks = ServiceChecks({ACCESS_KEY_ID: ACCESS_KEY_SECRET}, {ACCESS_KEY_ID: SECURITY_TOKEN})
    http, _ = mock_http(sequence(OK), checks=checks)
    with open_client(http, security_token=SECURITY_TOKEN) as client:
        list(client.iter_pages(InvocationQuery()))
    assert checks.problems == []
    request = checks.seen[0]
    assert request.header("x-acs-security-token") == SECURITY_TOKEN
    parsed = signing.parse_authorization(request.header("authorization") or "")
    assert parsed is not None
    assert "x-acs-security-token" in parsed[1]


@pytest.mark.parametrize(
    ("endpoint", "use_vpc", "base_url", "host"),
    [
        (None, False, "https://ecs.cn-hangzhou.aliyuncs.com/", "ecs.cn-hangzhou.aliyuncs.com"),
        (
            None,
            True,
            "https://ecs-vpc.cn-hangzhou.aliyuncs.com/",
            "ecs-vpc.cn-hangzhou.aliyuncs.com",
        ),
        ("http://127.0.0.1:8080", False, "http://127.0.0.1:8080/", "127.0.0.1:8080"),
        ("https://Proxy.Example:8443/", True, "https://proxy.example:8443/", "proxy.example:8443"),
        ("ecs-cn-hangzhou.aliyuncs.com", False, "https://ecs-cn-hangzhou.aliyuncs.com/", None),
    ],
)
def test_endpoint_choice(
    endpoint: str | None, use_vpc: bool, base_url: str, host: str | None
) -> None:
    http, checks = mock_http(sequence(OK))
    client = EcsClient(
        region_id=REGION,
        credentials=StaticProvider(ACCESS_KEY_ID, ACCESS_KEY_SECRET),
        http=http,
        endpoint=endpoint,
        use_vpc_endpoint=use_vpc,
    )
    list(client.iter_pages(InvocationQuery()))
    expected_host = host or base_url.removeprefix("https://").rstrip("/")
    assert client.base_url == base_url
    assert checks.seen[0].header("host") == expected_host
    assert checks.problems == []


@pytest.mark.parametrize(
    "endpoint",
    ["ftp://ecs.example", "https://ecs.example/prefix", "https://user:pw@ecs.example", "http://"],
)
def test_unusable_endpoint_override_is_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        parse_endpoint(endpoint)


def test_a_huge_endpoint_is_not_repeated_whole_in_its_error() -> None:
    with pytest.raises(ValueError, match="endpoint") as caught:
        parse_endpoint("https://ecs.example/" + "x" * 100_000)
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize("region", ["", "CN-HANGZHOU", "cn hangzhou", "a/b"])
def test_bad_region_is_refused(region: str) -> None:
    with pytest.raises(ValueError, match="region_id"):
        EcsClient(
            region_id=region,
            credentials=StaticProvider(ACCESS_KEY_ID, ACCESS_KEY_SECRET),
            http=httpx.Client(),
        )


def _raise(exc: Exception) -> Any:
    def script(request: RecordedRequest) -> Answer:
        raise exc

    return script


RETRIED: list[tuple[str, Any, type[EcsError], str]] = [
    (
        "Throttling.User 400",
        sequence(error_answer(400, "Throttling.User", "flow control")),
        ThrottledError,
        "Throttling.User",
    ),
    (
        "Throttling.Api 429 with x-acs-retry-after",
        sequence(
            json_answer(
                429,
                {"Code": "Throttling.Api", "Message": "api flow control", "RequestId": "R"},
                {"x-acs-retry-after": "1500"},
            )
        ),
        ThrottledError,
        "Throttling.Api",
    ),
    (
        "500 InternalError",
        sequence(error_answer(500, "InternalError", "x")),
        ServerError,
        "InternalError",
    ),
    ("500 without a body", sequence(Answer(500, {}, b"")), ServerError, "http_500"),
    (
        "502 from a proxy",
        sequence(Answer(502, {}, b"<html>Bad Gateway</html>")),
        ServerError,
        "http_502",
    ),
    (
        "503 ServiceUnavailable",
        sequence(error_answer(503, "ServiceUnavailable", "x")),
        ServerError,
        "ServiceUnavailable",
    ),
    ("504", sequence(Answer(504, {}, b"")), ServerError, "http_504"),
    (
        "InternalError.Dispatch",
        sequence(error_answer(500, "InternalError.Dispatch", "x")),
        ServerError,
        "InternalError.Dispatch",
    ),
    ("UnknownError", sequence(error_answer(400, "UnknownError", "x")), ServerError, "UnknownError"),
    ("read timeout", _raise(httpx.ReadTimeout("timed out")), RequestTimeoutError, "timeout"),
    ("connect timeout", _raise(httpx.ConnectTimeout("timed out")), RequestTimeoutError, "timeout"),
    (
        "connection refused",
        _raise(httpx.ConnectError("[Errno 111] Connection refused")),
        TransportError,
        "transport",
    ),
    ("connection reset", _raise(httpx.ReadError("reset")), TransportError, "transport"),
]

NOT_RETRIED: list[tuple[str, Answer, type[EcsError]]] = [
    ("SignatureDoesNotMatch", error_answer(400, "SignatureDoesNotMatch", "x"), AuthenticationError),
    (
        "InvalidAccessKeyId.NotFound",
        error_answer(404, "InvalidAccessKeyId.NotFound", "x"),
        AuthenticationError,
    ),
    ("Forbidden.RAM", error_answer(403, "Forbidden.RAM", "x"), AccessDeniedError),
    (
        "InvalidParameter.MaxResults",
        error_answer(400, "InvalidParameter.MaxResults", "x"),
        InvalidRequestError,
    ),
    (
        "InvalidRegionId.NotFound",
        error_answer(404, "InvalidRegionId.NotFound", "x"),
        InvalidRequestError,
    ),
    ("302 redirect", Answer(302, {"Location": "https://elsewhere/"}, b""), MalformedResponseError),
]


@pytest.mark.parametrize(
    ("script", "error", "code"), [case[1:] for case in RETRIED], ids=[case[0] for case in RETRIED]
)
def test_transient_failures_are_retried_up_to_max_attempts(
    script: Any, error: type[EcsError], code: str
) -> None:
    http, checks = mock_http(script)
    events: list[RequestEvent] = []
    retry = RetryPolicy(max_attempts=4, base_delay=0.1, deadline=60)
    with open_client(http, retry=retry, events=events) as client, pytest.raises(error) as caught:
        list(client.iter_pages(InvocationQuery()))
    assert type(caught.value) is error
    assert len(checks.seen) == 4
    assert tried_codes(events) == [code] * 4
    assert [e.attempt for e in events] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("answer", "error"), [case[1:] for case in NOT_RETRIED], ids=[case[0] for case in NOT_RETRIED]
)
def test_other_failures_are_not_retried(answer: Answer, error: type[EcsError]) -> None:
    http, checks = mock_http(sequence(answer, OK))
    clock = FakeClock()
    events: list[RequestEvent] = []
    with open_client(http, clock=clock, events=events) as client, pytest.raises(error):
        list(client.iter_pages(InvocationQuery()))
    assert len(checks.seen) == 1
    assert clock.sleeps == []
    assert len(events) == 1


def test_a_retry_that_succeeds_returns_the_page() -> None:
    http, _ = mock_http(
        sequence(error_answer(503, "ServiceUnavailable", "x"), Answer(504, {}, b""), OK)
    )
    events: list[RequestEvent] = []
    with open_client(http, events=events) as client:
        results = all_results(client, InvocationQuery())
    assert len(results) == 1
    assert tried_codes(events) == ["ServiceUnavailable", "http_504", ""]
    assert [e.http_status for e in events] == [503, 504, 200]


@HTTP_KINDS
def test_real_connection_refused_is_a_transport_error(
    make_http: Callable[[], httpcore.ConnectionPool | httpx.Client | httpx.BaseTransport],
) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    retry = RetryPolicy(max_attempts=2, base_delay=0.0)
    with (
        open_client(make_http(), endpoint=f"http://127.0.0.1:{port}", retry=retry) as client,
        pytest.raises(TransportError, match="ConnectError"),
    ):
        list(client.iter_pages(InvocationQuery()))


def test_retry_after_header_is_honoured_in_milliseconds() -> None:
    throttled = json_answer(429, {"Code": "Throttling.Api"}, {"x-acs-retry-after": "1500"})
    http, _ = mock_http(sequence(throttled, OK))
    clock = FakeClock()
    with open_client(http, clock=clock, rng=NoJitter()) as client:
        list(client.iter_pages(InvocationQuery()))
    assert clock.sleeps == [1.5]


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    http, _ = mock_http(sequence(error_answer(503, "ServiceUnavailable", "x")))
    clock = FakeClock()
    retry = RetryPolicy(max_attempts=6, base_delay=0.5, max_delay=3.0, deadline=100)
    with (
        open_client(http, clock=clock, retry=retry, rng=MaxJitter()) as client,
        pytest.raises(ServerError),
    ):
        list(client.iter_pages(InvocationQuery()))
    assert clock.sleeps == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_deadline_bounds_the_whole_call() -> None:
    clock = FakeClock()

    def slow_failure(request: RecordedRequest) -> Answer:
        clock.advance(2.0)  # each try takes 2 s
        return error_answer(503, "ServiceUnavailable", "x")

    http, checks = mock_http(slow_failure)
    retry = RetryPolicy(max_attempts=100, base_delay=1.0, max_delay=20.0, deadline=10.0)
    start = clock()
    with (
        open_client(http, clock=clock, retry=retry, rng=MaxJitter()) as client,
        pytest.raises(ServerError),
    ):
        list(client.iter_pages(InvocationQuery()))
    # tries at 0, 3 (2 + sleep 1), 7 (5 + sleep 2); a fourth would start after sleeping 4 at 9+4
    assert len(checks.seen) == 3
    assert clock() - start <= 10.0


def test_per_request_timeout_shrinks_to_the_remaining_deadline() -> None:
    timeouts: list[float] = []
    clock = FakeClock()

    def record_timeout(request: httpx.Request) -> httpx.Response:
        timeouts.append(request.extensions["timeout"]["read"])
        clock.advance(4.0)
        return httpx.Response(503, json={"Code": "ServiceUnavailable"})

    http = httpx.Client(transport=httpx.MockTransport(record_timeout))
    retry = RetryPolicy(max_attempts=5, base_delay=0.0, deadline=10.0)
    with (
        open_client(http, clock=clock, retry=retry, timeout=5.0) as client,
        pytest.raises(ServerError),
    ):
        list(client.iter_pages(InvocationQuery()))
    assert timeouts == [5.0, 5.0, 2.0]


def test_every_try_is_signed_afresh_with_a_new_nonce_and_date() -> None:
    http, checks = mock_http(
        sequence(
            error_answer(400, "Throttling.User", "x"),
            error_answer(503, "ServiceUnavailable", "x"),
            OK,
        )
    )
    clock = FakeClock()
    with freeze_time("2025-01-15T08:30:00Z") as frozen:

        def sleep(seconds: float) -> None:
            clock.sleep(seconds)
            frozen.tick(timedelta(seconds=seconds))

        retry = RetryPolicy(base_delay=1.0)
        client = make_client(http, clock=clock, rng=MaxJitter(), sleep=sleep, retry=retry)
        list(client.iter_pages(InvocationQuery()))
    assert checks.problems == []  # a reused nonce would have been refused
    assert [r.header("x-acs-date") for r in checks.seen] == [
        "2025-01-15T08:30:00Z",
        "2025-01-15T08:30:01Z",
        "2025-01-15T08:30:03Z",
    ]
    assert len({r.header("x-acs-signature-nonce") for r in checks.seen}) == 3
    assert len({r.header("authorization") for r in checks.seen}) == 3


def test_request_events_and_rate_limit_waits() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, 1, clock=clock, sleep=clock.sleep)
    http, _ = mock_http(PagedResults([api_record(n) for n in range(30)]))
    events: list[RequestEvent] = []
    with open_client(http, clock=clock, events=events, rate_limiter=bucket) as client:
        list(client.iter_pages(InvocationQuery(), max_results=10))
    assert [(e.action, e.region_id, e.code, e.http_status, e.attempt) for e in events] == [
        ("DescribeInvocationResults", REGION, "", 200, 1)
    ] * 3
    assert [e.rate_limit_wait_seconds for e in events] == [0.0, 0.5, 0.5]
    assert all(e.duration_seconds >= 0 for e in events)


def test_credentials_failure_sends_nothing() -> None:
    class Broken:
        def get_credentials(self) -> Any:
            raise CredentialsError("no credentials found")

    http, checks = mock_http(sequence(OK))
    client = EcsClient(region_id=REGION, credentials=Broken(), http=http)
    with pytest.raises(CredentialsError, match="no credentials"):
        list(client.iter_pages(InvocationQuery()))
    assert checks.seen == []


def test_secrets_never_reach_errors_logs_or_reprs(caplog: pytest.LogCaptureFixture) -> None:
    echo = error_answer(
        400, "InvalidSecurityToken.Malformed", f"bad token {SECURITY_TOKEN} / {ACCESS_KEY_SECRET}"
    )
    checks = ServiceChecks({ACCESS_KEY_ID: ACCESS_KEY_SECRET}, {ACCESS_KEY_ID: SECURITY_TOKEN})
    http, _ = mock_http(sequence(error_answer(503, "ServiceUnavailable", "x"), echo), checks=checks)
    with caplog.at_level(logging.DEBUG):
        client = make_client(http, security_token=SECURITY_TOKEN)
        with pytest.raises(AuthenticationError) as caught:
            list(client.iter_pages(InvocationQuery()))
    texts = [str(caught.value), repr(caught.value), caught.value.message, caplog.text, repr(client)]
    texts.append(repr(StaticProvider(ACCESS_KEY_ID, ACCESS_KEY_SECRET, SECURITY_TOKEN)))
    texts.append(repr(StaticProvider(ACCESS_KEY_ID, ACCESS_KEY_SECRET).get_credentials()))
    for text in texts:
        assert ACCESS_KEY_SECRET not in text
        assert SECURITY_TOKEN not in text
    assert "bad token ***" in str(caught.value)


@HTTP_KINDS
def test_an_answer_trickling_in_is_cut_at_the_calls_deadline(
    make_http: Callable[[], httpcore.ConnectionPool | httpx.Client | httpx.BaseTransport],
) -> None:
    """A read timeout alone bounds the gap between two reads: a server sending one byte at a
    time would hold the call for ever. The call's deadline bounds the whole answer."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def trickle() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            while not stop.is_set():
                try:
                    connection.sendall(b"x")
                except OSError:
                    return
                stop.wait(0.02)

    server = threading.Thread(target=trickle, daemon=True)
    server.start()
    retry = RetryPolicy(max_attempts=1, deadline=0.5)
    started = time.monotonic()
    http = make_http()
    client = EcsClient(
        region_id="cn-hangzhou",
        credentials=StaticProvider("testid", "testsecret"),
        http=http,
        endpoint=f"http://127.0.0.1:{port}",
        retry=retry,
        timeout=5.0,
    )
    try:
        with http, pytest.raises(RequestTimeoutError, match="deadline"):
            list(client.iter_pages(InvocationQuery()))
    finally:
        stop.set()
        listener.close()
    assert time.monotonic() - started < 3.0


def test_an_answer_larger_than_any_real_page_is_refused() -> None:
    huge = b'{"Invocation": {"x": "' + b"a" * (17 * 1024 * 1024) + b'"}}'
    http = httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(200, content=huge)))
    with open_client(http) as client, pytest.raises(MalformedResponseError, match="larger than"):
        list(client.iter_pages(InvocationQuery()))


@HTTP_KINDS
def test_a_server_that_never_answers_times_out_per_try(
    make_http: Callable[[], httpcore.ConnectionPool | httpx.Client | httpx.BaseTransport],
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(listener.accept()[0])  # and never answer

    threading.Thread(target=accept, daemon=True).start()
    retry = RetryPolicy(max_attempts=2, base_delay=0.0, deadline=5.0)
    started = time.monotonic()
    try:
        with (
            open_client(
                make_http(), endpoint=f"http://127.0.0.1:{port}", retry=retry, timeout=0.3
            ) as client,
            pytest.raises(RequestTimeoutError, match="ReadTimeout") as caught,
        ):
            list(client.iter_pages(InvocationQuery()))
    finally:
        listener.close()
        for connection in accepted:
            connection.close()
    assert "0.3s" in str(caught.value)
    assert time.monotonic() - started < 3.0  # two tries of 0.3 s, not the 5 s deadline
