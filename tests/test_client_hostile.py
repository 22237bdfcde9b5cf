"""Answers no honest service sends: garbled pages, hostile strings, secrets echoed back.

Whatever the answer, the client either returns a page whose every string is safe for any
surface (encodable, printable, bounded, no secret) or raises an error whose every part is.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import httpx
import msgspec
import pytest
from prometheus_client import generate_latest

from exporter.app import build_application
from exporter.ecs.client import RequestEvent, RetryPolicy
from exporter.ecs.errors import (
    ApiError,
    AuthenticationError,
    EcsError,
    MalformedResponseError,
    RateLimitWaitError,
    RequestTimeoutError,
    ServerError,
    failure_reason,
)
from exporter.ecs.models import InvocationQuery, InvocationResult
from exporter.ecs.ratelimit import TokenBucket
from exporter.ecs.untrusted import MAX_MESSAGE_CHARS, MAX_NAME_CHARS
from exporter.server import render_landing_page
from exporter.settings import load_config_file
from tests.support.fakes import (
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    SECURITY_TOKEN,
    FakeClock,
    ServiceChecks,
    all_results,
    api_record,
    mock_http,
    open_client,
    page_answer,
    sequence,
    tried_codes,
)
from tests.support.http_fakes import Answer, error_answer

OK = page_answer([api_record(1)], "")
SURROGATE = "\\ud800"  # a lone UTF-16 surrogate as JSON writes it


def raw_answer(status: int, body: str, headers: dict[str, str] | None = None) -> Answer:
    """An answer whose JSON is written by hand (``json.dumps`` cannot write a lone surrogate)."""
    return Answer(status, {"Content-Type": "application/json", **(headers or {})}, body.encode())


def surfaces(error: EcsError) -> list[str]:
    return [str(error), repr(error), error.code, error.message, error.request_id]


def assert_safe(text: str, limit: int = MAX_MESSAGE_CHARS * 2) -> None:
    text.encode("utf-8")  # raises on a lone surrogate
    assert text.isprintable(), repr(text[:80])
    assert len(text) <= limit
    assert SECURITY_TOKEN not in text
    assert ACCESS_KEY_SECRET not in text


# --- a garbled success answer is retried once -----------------------------------------------

GARBLED: list[tuple[str, Answer]] = [
    ("not JSON", Answer(200, {}, b"<html>captive portal</html>")),
    ("truncated JSON", Answer(200, {}, OK[2][: len(OK[2]) // 2])),
    ("a JSON list", Answer(200, {}, b"[]")),
    ("no Invocation", Answer(200, {}, b'{"RequestId": "R"}')),
    ("results of the wrong type", Answer(200, {}, b'{"Invocation": {"InvocationResults": 5}}')),
]


@pytest.mark.parametrize("answer", [a for _, a in GARBLED], ids=[n for n, _ in GARBLED])
def test_one_garbled_page_is_retried_and_the_walk_goes_on(answer: Answer) -> None:
    http, checks = mock_http(sequence(answer, OK))
    events: list[RequestEvent] = []
    with open_client(http, events=events) as client:
        results = all_results(client, InvocationQuery())
    assert [r.instance_id for r in results] == ["i-00000001"]
    assert tried_codes(events) == ["malformed", ""]
    assert len(checks.seen) == 2


@pytest.mark.parametrize("answer", [a for _, a in GARBLED], ids=[n for n, _ in GARBLED])
def test_the_same_garbled_page_twice_fails_the_call(answer: Answer) -> None:
    http, checks = mock_http(sequence(answer))
    clock = FakeClock()
    with (
        open_client(http, clock=clock) as client,
        pytest.raises(MalformedResponseError) as caught,
    ):
        list(client.iter_pages(InvocationQuery()))
    assert len(checks.seen) == 2  # bounded: one retry, not max_attempts
    assert caught.value.http_status == 200


def test_garbled_retries_can_be_turned_off() -> None:
    http, checks = mock_http(sequence(GARBLED[0][1], OK))
    retry = RetryPolicy(malformed_retries=0)
    with open_client(http, retry=retry) as client, pytest.raises(MalformedResponseError):
        list(client.iter_pages(InvocationQuery()))
    assert len(checks.seen) == 1


def test_a_garbled_page_mid_walk_keeps_the_pages_before_it() -> None:
    pages = [
        page_answer([api_record(1)], "tok-1"),
        Answer(200, {}, b'{"Invocation": '),  # cut short
        page_answer([api_record(2)], ""),
    ]
    http, checks = mock_http(sequence(*pages))
    with open_client(http) as client:
        results = all_results(client, InvocationQuery())
    assert [r.instance_id for r in results] == ["i-00000001", "i-00000002"]
    assert [r.params.get("NextToken") for r in checks.seen] == [None, "tok-1", "tok-1"]


# --- the rate limit never holds a call past its deadline ------------------------------------


def test_a_rate_limit_wait_longer_than_the_deadline_fails_at_once() -> None:
    clock = FakeClock()
    bucket = TokenBucket(0.1, 1, clock=clock, sleep=clock.sleep)  # one request every 10 s
    http, checks = mock_http(sequence(OK))
    retry = RetryPolicy(deadline=5.0)
    with open_client(http, clock=clock, retry=retry, rate_limiter=bucket) as client:
        list(client.iter_pages(InvocationQuery()))  # takes the only token
        with pytest.raises(RequestTimeoutError, match="rate limit") as caught:
            list(client.iter_pages(InvocationQuery()))
    assert isinstance(caught.value, RateLimitWaitError)
    assert failure_reason(caught.value) == "throttled"  # the remedy is throttling's
    assert "delay this request by 10.0s, more than the 5.0s" in str(caught.value)
    assert clock.sleeps == []  # it did not wait at all
    assert len(checks.seen) == 1
    # The refused request took no token: the next caller waits for the first token only.
    assert bucket.acquire() == pytest.approx(10.0)


def test_a_retry_waits_for_the_rate_limit_only_within_the_deadline() -> None:
    clock = FakeClock(1000.0)
    bucket = TokenBucket(0.25, 1, clock=clock, sleep=clock.sleep)  # one request every 4 s
    http, checks = mock_http(sequence(error_answer(503, "ServiceUnavailable", "x")))
    retry = RetryPolicy(max_attempts=10, base_delay=0.0, deadline=10.0)
    with (
        open_client(http, clock=clock, retry=retry, rate_limiter=bucket) as client,
        pytest.raises(ServerError),  # the cause, not the refused wait
    ):
        list(client.iter_pages(InvocationQuery()))
    # tries at 0, 4 and 8 s; a fourth would need a token at 12 s, after the deadline
    assert len(checks.seen) == 3
    assert clock.now - 1000.0 <= 10.0


def test_token_bucket_without_max_wait_still_waits() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1.0, 1, clock=clock, sleep=clock.sleep)
    assert [bucket.acquire(), bucket.acquire(None), bucket.acquire(5.0)] == [0.0, 1.0, 1.0]
    with pytest.raises(RateLimitWaitError):
        bucket.acquire(0.5)


# --- hostile strings ------------------------------------------------------------------------


def echo_checks() -> ServiceChecks:
    return ServiceChecks({ACCESS_KEY_ID: ACCESS_KEY_SECRET}, {ACCESS_KEY_ID: SECURITY_TOKEN})


def test_an_endpoint_echoing_the_sts_token_in_every_field_leaks_it_nowhere() -> None:
    body = json.dumps(
        {
            "Code": f"InvalidSecurityToken.{SECURITY_TOKEN}",
            "Message": f"token {SECURITY_TOKEN} secret {ACCESS_KEY_SECRET}",
            "RequestId": SECURITY_TOKEN,
            "HostId": SECURITY_TOKEN,
            "Recommend": f"https://example.invalid/?t={SECURITY_TOKEN}",
        }
    )
    answer = raw_answer(400, body, {"x-acs-request-id": SECURITY_TOKEN})
    http, _ = mock_http(sequence(answer), checks=echo_checks())
    with (
        open_client(http, security_token=SECURITY_TOKEN) as client,
        pytest.raises(AuthenticationError) as caught,
    ):
        list(client.iter_pages(InvocationQuery()))
    error = caught.value
    for text in surfaces(error):
        assert_safe(text)
    assert error.code == "InvalidSecurityToken.***"
    assert error.request_id == "***"


def test_a_token_echoed_percent_encoded_as_in_the_string_to_sign_is_hidden() -> None:
    # SignatureDoesNotMatch answers quote the server's string to sign: the STS token there is
    # percent-encoded twice ("+" as "%252B"), and once in the header list ("%2B").
    once = quote(SECURITY_TOKEN, safe="-_.~")
    twice = quote(once, safe="-_.~")
    lower_hex = once.replace("%2B", "%2b").replace("%2F", "%2f").replace("%3D", "%3d")
    message = (
        f"server string to sign is:GET&%2F&SecurityToken%3D{twice}&"
        f"x-acs-security-token:{once} lower {lower_hex}"
    )
    body = json.dumps({"Code": "SignatureDoesNotMatch", "Message": message, "RequestId": once})
    http, _ = mock_http(sequence(raw_answer(400, body)), checks=echo_checks())
    with (
        open_client(http, security_token=SECURITY_TOKEN) as client,
        pytest.raises(ApiError) as caught,
    ):
        list(client.iter_pages(InvocationQuery()))
    for text in surfaces(caught.value):
        for form in (SECURITY_TOKEN, once, twice, lower_hex):
            assert form not in text
    assert caught.value.request_id == "***"


def test_a_token_echoed_in_the_request_id_header_is_hidden() -> None:
    answer = raw_answer(503, "not json", {"x-acs-request-id": f"R-{SECURITY_TOKEN}"})
    http, _ = mock_http(sequence(answer), checks=echo_checks())
    retry = RetryPolicy(max_attempts=1)
    with (
        open_client(http, security_token=SECURITY_TOKEN, retry=retry) as client,
        pytest.raises(ServerError) as caught,
    ):
        list(client.iter_pages(InvocationQuery()))
    assert caught.value.request_id == "R-***"


def test_a_token_echoed_in_a_success_page_is_hidden() -> None:
    record = api_record(1, ErrorCode=SECURITY_TOKEN, InvocationStatus=f"x{ACCESS_KEY_SECRET}")
    answer = page_answer([record], "", request_id=SECURITY_TOKEN)
    http, _ = mock_http(sequence(answer), checks=echo_checks())
    with open_client(http, security_token=SECURITY_TOKEN) as client:
        pages = list(client.iter_pages(InvocationQuery()))
    result = pages[0].results[0]
    assert (pages[0].request_id, result.error_code, result.invocation_status) == (
        "***",
        "***",
        "x***",
    )


def test_registered_secrets_are_hidden_too() -> None:
    answer = raw_answer(400, json.dumps({"Code": "Bad", "Message": "db password hunter2-long"}))
    http, _ = mock_http(sequence(answer))
    with (
        open_client(http, redact=lambda text: text.replace("hunter2-long", "***")) as client,
        pytest.raises(ApiError) as caught,
    ):
        list(client.iter_pages(InvocationQuery()))
    assert caught.value.message == "db password ***"


@pytest.mark.parametrize("field", ["Code", "Message", "RequestId"])
def test_a_lone_surrogate_in_an_error_answer_is_replaced(field: str) -> None:
    fields = {"Code": "Throttling.User", "Message": "slow down", "RequestId": "R-1"}
    fields[field] = f"a{SURROGATE}b\\u0000c\\u001b[31m"
    body = "{" + ", ".join(f'"{k}": "{v}"' for k, v in fields.items()) + "}"
    http, _ = mock_http(sequence(raw_answer(400, body)))
    with (
        open_client(http, retry=RetryPolicy(max_attempts=1)) as client,
        pytest.raises(ApiError) as caught,
    ):
        list(client.iter_pages(InvocationQuery()))
    for text in surfaces(caught.value):
        assert_safe(text)
    value = {"Code": caught.value.code, "Message": caught.value.message}.get(
        field, caught.value.request_id
    )
    assert value == "a\ufffdb\ufffdc\ufffd[31m"


def test_lone_surrogates_in_records_never_reach_a_kept_string() -> None:
    record = json.dumps(api_record(1))
    for field in ("ErrorCode", "InvocationStatus", "OssOutputStatus", "OssOutputErrorCode"):
        record = record.replace(f'"{field}": ""', f'"{field}": "{SURROGATE}x"', 1)
        record = record.replace(f'"{field}": "Success"', f'"{field}": "{SURROGATE}x"', 1)
    body = '{"RequestId": "R\\udfff", "Invocation": {"InvocationResults": {"InvocationResult": ['
    body += record + "]}}}"
    http, _ = mock_http(sequence(raw_answer(200, body)))
    with open_client(http) as client:
        pages = list(client.iter_pages(InvocationQuery()))
    result = pages[0].results[0]
    assert result.error_code == "\ufffdx"
    assert result.invocation_status == "\ufffdx"
    assert result.oss_output_status == "\ufffdx"
    assert pages[0].request_id == "R\ufffd"
    assert_strings_safe(result)


def test_huge_strings_are_bounded_and_huge_ids_refused() -> None:
    huge = "E" * 500_000
    records = [
        api_record(1, ErrorCode=huge, Tags={"Tag": [{"TagKey": "k", "TagValue": huge}]}),
        api_record(2, InvokeId="t-" + "9" * 300),
        api_record(3, InstanceId="i-" + "9" * 300),
    ]
    http, _ = mock_http(sequence(page_answer(records, "")))
    with open_client(http) as client:
        pages = list(client.iter_pages(InvocationQuery()))
    (result,) = pages[0].results
    assert len(result.error_code) == MAX_NAME_CHARS
    assert result.error_code.endswith("...")
    assert_strings_safe(result)
    reasons = sorted(record.reason for record in pages[0].invalid)
    assert reasons == [
        f"InstanceId is longer than {MAX_NAME_CHARS} characters",
        f"InvokeId is longer than {MAX_NAME_CHARS} characters",
    ]
    assert all(len(record.invoke_id) <= MAX_NAME_CHARS for record in pages[0].invalid)


def assert_strings_safe(result: InvocationResult) -> None:
    strings = [v for v in vars_of(result) if isinstance(v, str)]
    strings += [text for pair in result.tags for text in pair]
    for text in strings:
        assert_safe(text, MAX_NAME_CHARS)


def vars_of(result: InvocationResult) -> list[object]:
    return [*msgspec.structs.astuple(result), *msgspec.structs.astuple(result.state)]


def test_a_huge_message_is_bounded() -> None:
    answer = raw_answer(400, json.dumps({"Code": "X", "Message": "m" * 100_000}))
    http = httpx.Client(
        transport=httpx.MockTransport(lambda _: httpx.Response(answer[0], content=answer[2]))
    )
    with open_client(http) as client, pytest.raises(ApiError) as caught:
        list(client.iter_pages(InvocationQuery()))
    assert len(caught.value.message) == MAX_MESSAGE_CHARS
    assert len(str(caught.value)) < MAX_MESSAGE_CHARS + 100


# --- end to end: what the exporter shows of a hostile API -------------------------------------

HOSTILE_TOKEN = "CAIS-sts-token-echoed-back-9f2e"


def _hostile_api(request: httpx.Request) -> httpx.Response:
    """Every string a refresh meets is hostile: a lone surrogate, controls, the echoed token."""
    if request.url.params.get("NextToken"):
        body = json.dumps(
            {
                "Code": f"Throttling.{HOSTILE_TOKEN}",
                "Message": f"token {HOSTILE_TOKEN} \x1b[2J",
                "RequestId": HOSTILE_TOKEN,
            }
        )
        return httpx.Response(400, content=body.replace("[2J", "\\ud800").encode())
    record = json.dumps(api_record(1, ErrorCode="SURROGATE", InvocationStatus="Failed"))
    record = record.replace("SURROGATE", f"{SURROGATE}{HOSTILE_TOKEN}\\u0000")
    oss = json.dumps(api_record(2, OssOutputStatus="X", OssOutputErrorCode="Y"))
    oss = oss.replace('"X"', f'"{SURROGATE}"').replace('"Y"', f'"E{"e" * 5000}"')
    body = (
        f'{{"RequestId": "{HOSTILE_TOKEN}", "Invocation": {{"NextToken": "more",'
        f' "InvocationResults": {{"InvocationResult": [{record}, {oss}]}}}}}}'
    )
    return httpx.Response(200, content=body.encode())


def test_a_hostile_api_reaches_no_surface_unsafe(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(
        "targets:\n"
        "  - name: hostile\n"
        "    region_id: cn-hangzhou\n"
        "    credentials:\n"
        "      source: static\n"
        "      access_key_id: LTAI5tHostile\n"
        "      access_key_secret: hostile-secret-value\n"
        f"      security_token: {HOSTILE_TOKEN}\n"
        "api:\n"
        "  max_attempts: 1\n",
        encoding="utf-8",
    )
    app = build_application(load_config_file(config), transport=httpx.MockTransport(_hostile_api))
    try:
        app.refreshers[0].refresh_now()  # page 1 is read, page 2 fails with the hostile error
        app.refreshers[0].refresh_now()
        metrics = generate_latest(app.registry).decode("utf-8")
        page = render_landing_page("/metrics", app.target_statuses())
    finally:
        app.close()
    for surface in (metrics, page):
        surface.encode("utf-8")
        assert HOSTILE_TOKEN not in surface
        assert "hostile-secret-value" not in surface
        assert "\x00" not in surface
        assert "\x1b" not in surface
    assert 'code="Throttling.***"' in metrics  # the error code, redacted, still tells the kind
    assert "e" * 300 not in metrics  # no label holds the 5,000-character code
