"""A first page that says again what the last one said is not parsed again, and whatever the
answer, the memo's page is the page a parse makes (request id and NextToken included)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from exporter.ecs.models import Page
from exporter.ecs.pagememo import MAX_QUERIES, PageMemo
from exporter.ecs.parsing import parse_page
from exporter.ecs.untrusted import TextCleaner

QUERY = "MaxResults=50&RegionId=cn-hangzhou"


def record(invoke_id: str, status: str = "Success") -> dict[str, Any]:
    return {
        "InvokeId": invoke_id,
        "InstanceId": "i-bp1",
        "CommandId": "c-1",
        "InvocationStatus": status,
        "InvokeRecordStatus": "Finished",
        "ErrorCode": "",
        "ExitCode": 0,
        "StartTime": "2026-12-01T10:00:00Z",
        "FinishedTime": "2026-12-01T10:00:05Z",
        "Repeats": 1,
        "Dropped": 0,
        "Tags": {"Tag": []},
    }


def answer(
    request_id: str = "REQ-1",
    token: str = "AAAA-1",
    records: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "RequestId": request_id,
        "Invocation": {
            "PageSize": 50,
            "PageNumber": 1,
            "TotalCount": 2,
            "NextToken": token,
            "InvocationResults": {
                "InvocationResult": records if records is not None else [record("t-1")]
            },
        },
    }


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


class CountingParse:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, body: bytes, text: TextCleaner) -> Page:
        self.calls += 1
        return parse_page(body, text)


def test_an_answer_that_says_the_same_again_is_not_parsed_again() -> None:
    memo, parse, text = PageMemo(), CountingParse(), TextCleaner()
    first = memo.parse(QUERY, encode(answer("REQ-1", "AAAA-1")), text, parse)
    again = memo.parse(QUERY, encode(answer("REQ-2", "AAAA-2")), text, parse)
    assert parse.calls == 1
    assert again == parse_page(encode(answer("REQ-2", "AAAA-2")), text)
    assert (again.request_id, again.next_token) == ("REQ-2", "AAAA-2")
    assert again.results is first.results  # the same records: the tracker compares them fast


SAME_PAGE_EXCEPT: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    (
        "a record changed",
        lambda b: b["Invocation"]["InvocationResults"].update(
            InvocationResult=[record("t-1", status="Failed")]
        ),
    ),
    ("the last page now: the token is empty", lambda b: b["Invocation"].update(NextToken="")),
    ("no token at all", lambda b: b["Invocation"].pop("NextToken")),
    ("an empty request id", lambda b: b.update(RequestId="")),
    ("a request id with an escape", lambda b: b.update(RequestId='a"b')),
    ("a token with an escape", lambda b: b["Invocation"].update(NextToken="AA\u00e9\n")),
    (
        "a second NextToken, nested",
        lambda b: b["Invocation"]["InvocationResults"]["InvocationResult"][0].update(
            NextToken="FAKE"
        ),
    ),
    (
        "a RequestId in a record",
        lambda b: b["Invocation"]["InvocationResults"]["InvocationResult"][0].update(
            RequestId="REQ-2"
        ),
    ),
    ("no RequestId at the top", lambda b: b.pop("RequestId")),
]


@pytest.mark.parametrize(("what", "change"), SAME_PAGE_EXCEPT, ids=[w for w, _ in SAME_PAGE_EXCEPT])
def test_whatever_the_next_answer_the_memo_gives_what_a_parse_gives(
    what: str, change: Callable[[dict[str, Any]], None]
) -> None:
    memo, text = PageMemo(), TextCleaner()
    before = answer("REQ-1", "AAAA-1")
    memo.parse(QUERY, encode(before), text, parse_page)
    changed = copy.deepcopy(answer("REQ-2", "AAAA-2"))
    change(changed)
    body = encode(changed)
    assert memo.parse(QUERY, body, text, parse_page) == parse_page(body, text), what
    # ... and back again: the first answer's shape with new values.
    back = encode(answer("REQ-3", "AAAA-3"))
    assert memo.parse(QUERY, back, text, parse_page) == parse_page(back, text), what


def test_a_token_that_ends_the_pages_is_never_taken_for_the_same_answer() -> None:
    memo, parse, text = PageMemo(), CountingParse(), TextCleaner()
    memo.parse(QUERY, encode(answer("REQ-1", "AAAA-1")), text, parse)
    last = memo.parse(QUERY, encode(answer("REQ-2", "")), text, parse)
    assert (parse.calls, last.next_token) == (2, "")


def test_other_credentials_parse_afresh_and_so_does_another_query() -> None:
    memo, parse = PageMemo(), CountingParse()
    memo.parse(QUERY, encode(answer()), TextCleaner(), parse)
    memo.parse(QUERY, encode(answer("REQ-2", "AAAA-2")), TextCleaner(("secret",)), parse)
    memo.parse(QUERY + "&InvokeId=t-1", encode(answer("REQ-3", "AAAA-3")), TextCleaner(), parse)
    assert parse.calls == 3


def test_a_secret_the_answer_echoes_stays_hidden_on_a_repeated_answer() -> None:
    memo, text = PageMemo(), TextCleaner(("Sup3rS3cret",))
    memo.parse(QUERY, encode(answer("REQ-Sup3rS3cret", "AAAA-1")), text, parse_page)
    again = memo.parse(QUERY, encode(answer("REQ-Sup3rS3cret-2", "AAAA-2")), text, parse_page)
    assert "Sup3rS3cret" not in again.request_id
    assert again == parse_page(encode(answer("REQ-Sup3rS3cret-2", "AAAA-2")), text)


def test_the_memo_holds_a_bounded_number_of_queries() -> None:
    memo, parse, text = PageMemo(), CountingParse(), TextCleaner()
    for n in range(3 * MAX_QUERIES):
        memo.parse(f"{QUERY}&InvokeId=t-{n}", encode(answer()), text, parse)
    assert len(memo._pages) <= MAX_QUERIES
    assert parse.calls == 3 * MAX_QUERIES


def test_look_ups_of_other_invocations_do_not_push_out_the_page_read_every_refresh() -> None:
    memo, parse, text = PageMemo(), CountingParse(), TextCleaner()
    for refresh in range(3):
        memo.parse(QUERY, encode(answer(f"REQ-{refresh}")), text, parse)  # the fast path
        for n in range(MAX_QUERIES - 2):  # then look-ups of other InvokeIds every refresh
            memo.parse(f"{QUERY}&InvokeId=t-{refresh}-{n}", encode(answer()), text, parse)
    assert parse.calls == 1 + 3 * (MAX_QUERIES - 2)  # the fast path's page parsed once


def test_a_key_that_also_appears_inside_a_record_is_never_left_out() -> None:
    """The records come before the token here, one of them with a NextToken of its own equal to
    the page's: leaving out the first one found would hand back the record's token."""

    def body(record_token: str) -> bytes:
        inner = record("t-1") | {"NextToken": record_token}
        text = encode({"RequestId": "REQ-1", "Invocation": {"InvocationResults": {}}})
        records = json.dumps({"InvocationResult": [inner]}, separators=(",", ":"))
        return (
            text.replace(b'"InvocationResults":{}', b'"InvocationResults":' + records.encode())[:-2]
            + b',"NextToken":"X"}}'
        )

    memo, text = PageMemo(), TextCleaner()
    assert memo.parse(QUERY, body("X"), text, parse_page).next_token == "X"
    assert memo.parse(QUERY, body("Y"), text, parse_page) == parse_page(body("Y"), text)
