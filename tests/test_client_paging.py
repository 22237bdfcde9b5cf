"""Paging: every result across pages, and the guards against answers that would never end."""

from __future__ import annotations

import logging

import httpx
import pytest

from exporter.ecs.client import MAX_EMPTY_PAGES_IN_A_ROW, EcsClient, RequestEvent
from exporter.ecs.credentials import StaticProvider
from exporter.ecs.errors import InvalidRequestError, MalformedResponseError
from exporter.ecs.models import InvocationQuery
from tests.support.fakes import (
    PagedResults,
    StubEcsServer,
    all_results,
    api_record,
    mock_http,
    open_client,
    page_answer,
    sequence,
)
from tests.support.http_fakes import Answer, RecordedRequest, error_answer


@pytest.mark.parametrize("total", [0, 1, 50, 51, 149])
def test_every_result_is_returned_once_over_loopback(total: int) -> None:
    script = PagedResults([api_record(n) for n in range(total)])
    with (
        StubEcsServer(script) as server,
        open_client(httpx.Client(), endpoint=server.url) as client,
    ):
        results = all_results(client, InvocationQuery())
    assert [r.instance_id for r in results] == [f"i-{n:08d}" for n in range(total)]
    assert server.checks.problems == []
    expected_pages = max(1, -(-total // 50))
    assert len(server.requests) == expected_pages


def test_first_page_sends_max_results_only_then_the_token() -> None:
    script = PagedResults([api_record(n) for n in range(120)])
    with (
        StubEcsServer(script) as server,
        open_client(httpx.Client(), endpoint=server.url) as client,
    ):
        list(client.iter_pages(InvocationQuery(instance_id="i-1"), max_results=50))
    params = [r.params for r in server.requests]
    assert params[0] == {"RegionId": "cn-hangzhou", "InstanceId": "i-1", "MaxResults": "50"}
    assert [p.get("NextToken") for p in params] == [None, "tok-50", "tok-100"]
    assert all(p["MaxResults"] == "50" and p["InstanceId"] == "i-1" for p in params)


def test_ten_thousand_results_in_two_hundred_pages() -> None:
    records = [api_record(n) for n in range(10_000)]
    http, checks = mock_http(PagedResults(records))
    events: list[RequestEvent] = []
    with open_client(http, events=events) as client:
        pages = list(client.iter_pages(InvocationQuery()))
    assert len(pages) == 200
    assert sum(len(p.results) for p in pages) == 10_000
    assert len({r.key for p in pages for r in p.results}) == 10_000
    assert pages[-1].next_token == ""
    assert [e.attempt for e in events] == [1] * 200
    assert checks.problems == []


def test_absent_next_token_ends_paging() -> None:
    http, _ = mock_http(sequence(page_answer([api_record(1)], None)))
    with open_client(http) as client:
        pages = list(client.iter_pages(InvocationQuery()))
    assert len(pages) == 1


def test_empty_pages_with_a_token_are_followed_to_the_results_after_them() -> None:
    # A service that filters a page after cutting it answers a page without a record but with
    # a working NextToken: the results after it are the user's too.
    http, checks = mock_http(
        sequence(
            page_answer([api_record(1)], "t1"),
            page_answer([], "t2"),
            page_answer([], "t3"),
            page_answer([api_record(2)], ""),
        )
    )
    with open_client(http) as client:
        pages = list(client.iter_pages(InvocationQuery()))
    assert [len(p.results) for p in pages] == [1, 0, 0, 1]
    assert [p.params.get("NextToken") for p in checks.seen] == [None, "t1", "t2", "t3"]


def test_an_empty_first_page_with_a_token_is_followed() -> None:
    http, checks = mock_http(
        sequence(page_answer([], "t1"), page_answer([api_record(1), api_record(2)], ""))
    )
    with open_client(http) as client:
        results = all_results(client, InvocationQuery())
    assert [r.instance_id for r in results] == ["i-00000001", "i-00000002"]
    assert len(checks.seen) == 2


def endless_empty_pages(request: RecordedRequest) -> Answer:
    """Every answer empty, each with a new NextToken: a loop no token repeat shows."""
    return page_answer([], f"t{int(request.params.get('NextToken', 't0')[1:]) + 1}")


def test_endless_empty_pages_with_new_tokens_end_the_walk_with_a_clear_error() -> None:
    http, checks = mock_http(endless_empty_pages)
    with open_client(http) as client:
        pages = client.iter_pages(InvocationQuery())
        followed = [next(pages) for _ in range(MAX_EMPTY_PAGES_IN_A_ROW)]
        with pytest.raises(MalformedResponseError, match="pages in a row came back empty") as err:
            next(pages)
    assert all(not p.results and p.next_token for p in followed)
    assert f"{MAX_EMPTY_PAGES_IN_A_ROW + 1} pages in a row" in err.value.message
    assert err.value.http_status == 200
    assert len(checks.seen) == MAX_EMPTY_PAGES_IN_A_ROW + 1  # not one call more


def test_only_empty_pages_in_a_row_count_towards_the_bound() -> None:
    answers = []
    for block in range(3):  # the bound's worth of empty pages, then a result, three times
        for n in range(MAX_EMPTY_PAGES_IN_A_ROW):
            answers.append(page_answer([], f"e{block}-{n}"))
        answers.append(page_answer([api_record(block)], f"r{block}"))
    answers.append(page_answer([api_record(9)], ""))
    http, checks = mock_http(sequence(*answers))
    with open_client(http) as client:
        results = all_results(client, InvocationQuery())
    assert [r.instance_id for r in results] == [f"i-0000000{n}" for n in (0, 1, 2, 9)]
    assert len(checks.seen) == len(answers)


def test_an_empty_page_that_repeats_a_token_is_a_loop() -> None:
    http, checks = mock_http(
        sequence(
            page_answer([api_record(1)], "t1"),
            page_answer([], "t2"),
            page_answer([], "t1"),
            page_answer([api_record(2)], ""),
        )
    )
    with open_client(http) as client, pytest.raises(MalformedResponseError, match="loop"):
        list(client.iter_pages(InvocationQuery()))
    assert len(checks.seen) == 3


def test_a_resumed_walk_answered_with_its_own_token_is_a_loop_at_once() -> None:
    http, checks = mock_http(sequence(page_answer([], "kept"), page_answer([], "other")))
    with open_client(http) as client, pytest.raises(MalformedResponseError, match="loop"):
        list(client.iter_pages(InvocationQuery(), next_token="kept"))
    assert [p.params.get("NextToken") for p in checks.seen] == ["kept"]


def test_max_pages_counts_empty_pages() -> None:
    http, checks = mock_http(endless_empty_pages)
    with open_client(http) as client:
        pages = list(client.iter_pages(InvocationQuery(), max_pages=3))
    assert len(pages) == 3
    assert len(checks.seen) == 3


def test_repeated_token_is_refused() -> None:
    http, checks = mock_http(
        sequence(
            page_answer([api_record(1)], "t1"),
            page_answer([api_record(2)], "t2"),
            page_answer([api_record(3)], "t1"),
            page_answer([api_record(4)], ""),
        )
    )
    with open_client(http) as client, pytest.raises(MalformedResponseError, match="loop"):
        list(client.iter_pages(InvocationQuery()))
    assert len(checks.seen) == 3


def test_same_token_twice_in_a_row_is_refused() -> None:
    http, checks = mock_http(sequence(page_answer([api_record(1)], "same")))
    with open_client(http) as client, pytest.raises(MalformedResponseError):
        list(client.iter_pages(InvocationQuery()))
    assert len(checks.seen) == 2


def test_rejected_token_restarts_from_the_first_page_once(caplog: pytest.LogCaptureFixture) -> None:
    script = PagedResults([api_record(n) for n in range(120)], tokens_rejected=1)
    http, checks = mock_http(script)
    with open_client(http) as client, caplog.at_level(logging.WARNING):
        pages = list(client.iter_pages(InvocationQuery()))
    # page 1, rejected token, then pages 1-3 again
    assert [p.params.get("NextToken") for p in checks.seen] == [
        None,
        "tok-50",
        None,
        "tok-50",
        "tok-100",
    ]
    assert len(pages) == 4
    assert {r.instance_id for p in pages for r in p.results} == {f"i-{n:08d}" for n in range(120)}
    assert "restarting from the first page" in caplog.text
    # The caller is told where the walk started over (it may hold the pages before).
    assert [p.restarted for p in pages] == [False, True, False, False]


def test_max_pages_counts_from_the_first_page_after_a_restart() -> None:
    script = PagedResults([api_record(n) for n in range(120)], tokens_rejected=1)
    http, checks = mock_http(script)
    with open_client(http) as client:
        pages = list(client.iter_pages(InvocationQuery(), max_pages=2))
    # page 1, the rejected token, then pages 1 and 2 again: two pages after the restart
    assert [p.params.get("NextToken") for p in checks.seen] == [None, "tok-50", None, "tok-50"]
    assert len(pages) == 3


def test_token_rejected_again_after_the_restart_fails_clearly() -> None:
    script = PagedResults([api_record(n) for n in range(120)], tokens_rejected=2)
    http, checks = mock_http(script)
    with open_client(http) as client, pytest.raises(InvalidRequestError) as caught:
        list(client.iter_pages(InvocationQuery()))
    assert caught.value.code == "InvalidParameter.NextToken"
    assert "refused again after restarting" in str(caught.value)
    assert len(checks.seen) == 4


def test_any_4xx_naming_next_token_restarts() -> None:
    http, checks = mock_http(
        sequence(
            page_answer([api_record(1)], "t1"),
            error_answer(400, "InvalidNextToken.Expired", "expired"),
            page_answer([api_record(1)], ""),
        )
    )
    with open_client(http) as client:
        pages = list(client.iter_pages(InvocationQuery()))
    assert len(pages) == 2
    assert len(checks.seen) == 3


def test_max_pages_stops_early() -> None:
    http, checks = mock_http(PagedResults([api_record(n) for n in range(500)]))
    with open_client(http) as client:
        pages = list(client.iter_pages(InvocationQuery(), max_results=10, max_pages=3))
    assert [len(p.results) for p in pages] == [10, 10, 10]
    assert pages[-1].next_token == "tok-30"
    assert len(checks.seen) == 3


@pytest.mark.parametrize("max_results", [0, 51, -1, True, 10.0])
def test_max_results_out_of_range_is_refused_before_sending(max_results: object) -> None:
    http, checks = mock_http(PagedResults([]))
    with open_client(http) as client, pytest.raises(InvalidRequestError, match="max_results"):
        client.iter_pages(InvocationQuery(), max_results=max_results)  # type: ignore[arg-type]
    assert checks.seen == []


def test_invalid_query_is_refused_before_sending() -> None:
    http, checks = mock_http(PagedResults([]))
    with open_client(http) as client, pytest.raises(InvalidRequestError, match="include_history"):
        all_results(client, InvocationQuery(include_history=True))
    assert checks.seen == []


def test_bad_records_are_reported_on_the_page_for_the_caller_to_count_and_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The client reports unusable records on every page and logs nothing about them: the
    refresher counts and logs each once (tests/test_refresh.py), in one place."""
    bad = api_record(2, InstanceId=None, Output="SECRET-OUTPUT")
    http, _ = mock_http(sequence(page_answer([api_record(1), bad, "junk"], "")))
    with open_client(http) as client, caplog.at_level(logging.DEBUG, logger="exporter"):
        first = list(client.iter_pages(InvocationQuery()))
        second = list(client.iter_pages(InvocationQuery()))
    for pages in (first, second):
        assert len(pages[0].results) == 1
        assert [(r.invoke_id, r.instance_id) for r in pages[0].invalid] == [
            ("t-000000", ""),
            ("", ""),
        ]
        assert "SECRET-OUTPUT" not in repr(pages[0].invalid)
    assert not [r for r in caplog.records if r.name.startswith("exporter")]


def test_ten_thousand_results_from_the_simulator() -> None:
    """The simulator (written independently) pages 10,000 records; all arrive, each once."""
    simulator = pytest.importorskip("exporter.simulator.server")
    world_module = pytest.importorskip("exporter.simulator.world")
    world = world_module.World(seed=7, spec=world_module.WorldSpec(instances=50, backlog=10_000))
    with simulator.SimulatorServer(world) as server, httpx.Client() as http:
        client = EcsClient(
            region_id="cn-hangzhou",
            credentials=StaticProvider("testid", "testsecret"),
            http=http,
            endpoint=server.url,
        )
        results = all_results(client, InvocationQuery())
        served = server.served
    truth = world.ground_truth()
    assert len(results) == truth.records == 10_000
    assert len({r.key for r in results}) == 10_000
    assert len(served) == 200
    assert all(s.status == 200 and s.params["MaxResults"] == "50" for s in served)
    by_status: dict[str, int] = {}
    for result in results:
        by_status[result.invocation_status] = by_status.get(result.invocation_status, 0) + 1
    assert by_status == {k: v for k, v in truth.by_status.items() if v}


def test_a_finished_walk_keeps_no_cache_of_the_ids_it_read() -> None:
    """Between walks the client holds no copy of a target's ids (about 37 bytes a result);
    records read by different walks still share their strings."""
    records = [api_record(n) for n in range(120)]
    http, _ = mock_http(PagedResults(records))
    with open_client(http) as client:
        first = [r for page in client.iter_pages(InvocationQuery()) for r in page.results]
        cleaner = client._text_cleaner(client._cleaner[0])
        assert cleaner.known("i-00000007") is None  # forgotten when the walk ended
        again = [r for page in client.iter_pages(InvocationQuery()) for r in page.results]
    assert [r.instance_id for r in again] == [r.instance_id for r in first]
    assert all(a.instance_id is b.instance_id for a, b in zip(again, first, strict=True))
