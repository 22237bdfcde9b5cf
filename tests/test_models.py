"""Models: tolerant page parsing, times, and the query's validation against the API reference."""

from __future__ import annotations

import ast
import json
import random
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from exporter.ecs import models, parsing
from exporter.ecs.errors import InvalidRequestError, MalformedResponseError
from exporter.ecs.models import (
    ERROR_CODES,
    INVOCATION_STATUSES,
    InvalidRecord,
    InvocationQuery,
    InvocationResult,
)
from exporter.ecs.parsing import parse_page, parse_record, parse_time, parse_tolerant_page
from exporter.ecs.untrusted import MAX_NAME_CHARS, TextCleaner, clean

CONTAINER_ID = "ab141ddfbacfe02d9dbc25966ed971536124527097398d419a6746873fea****"
REFERENCE_EXAMPLE: dict[str, Any] = {
    "RequestId": "473469C7-AA6F-4DC5-B3DB-A3DC0DE*****",
    "Invocation": {
        "PageSize": 1,
        "PageNumber": 1,
        "TotalCount": 1,
        "NextToken": "AAAAAdDWBF2",
        "InvocationResults": {
            "InvocationResult": [
                {
                    "Dropped": 0,
                    "OssOutputDelivery": "oss://testBucket/testPrefix",
                    "InvocationStatus": "Success",
                    "InstanceId": "i-bp1i7gg30r52z2em****",
                    "ExitCode": 0,
                    "ErrorInfo": "the specified instance does not exists",
                    "StartTime": "2019-12-20T06:15:55Z",
                    "Repeats": 0,
                    "InvokeRecordStatus": "Running",
                    "FinishedTime": "2019-12-20T06:15:56Z",
                    "OssOutputUri": "oss://testBucket/testPrefix/output.txt",
                    "OssOutputStatus": "Finished",
                    "OssOutputErrorCode": "CloudAssistant.UnsupportedInvocationStatus",
                    "OssOutputErrorInfo": "The invocation status does not support output delivery.",
                    "Username": "test",
                    "ContainerId": CONTAINER_ID,
                    "ContainerName": "test-container",
                    "Output": "MTU6MzA6MDEK",
                    "Launcher": 'python3 -u {{ACS::ScriptFileName|Ext(".py")}}',
                    "CommandId": "c-hz0jdfwcsr****",
                    "ErrorCode": "InstanceNotExists",
                    "InvokeId": "t-hz0jdfwd9f****",
                    "TerminationMode": "ProcessTree",
                    "Tags": {"Tag": [{"TagKey": "owner", "TagValue": "zhangsan"}]},
                    "StopTime": "2020-01-19T09:15:47Z",
                }
            ]
        },
    },
}


def _page_with(record: Any) -> bytes:
    body = {"RequestId": "R", "Invocation": {"InvocationResults": {"InvocationResult": [record]}}}
    return json.dumps(body).encode()


def _record(**fields: Any) -> dict[str, Any]:
    return {"InvokeId": "t-1", "InstanceId": "i-1", **fields}


def test_reference_example_parses_completely() -> None:
    page = parse_page(json.dumps(REFERENCE_EXAMPLE).encode())
    assert (page.next_token, page.total_count, page.invalid) == ("AAAAAdDWBF2", 1, [])
    assert page.request_id == "473469C7-AA6F-4DC5-B3DB-A3DC0DE*****"
    assert page.results == [
        InvocationResult.of(
            invoke_id="t-hz0jdfwd9f****",
            instance_id="i-bp1i7gg30r52z2em****",
            container_id=CONTAINER_ID,
            command_id="c-hz0jdfwcsr****",
            invocation_status="Success",
            invoke_record_status="Running",
            error_code="InstanceNotExists",
            exit_code=0,
            start_time=1576822555.0,
            finished_time=1576822556.0,
            stop_time=1579425347.0,
            repeats=0,
            dropped=0,
            oss_output_status="Finished",
            oss_output_error_code="CloudAssistant.UnsupportedInvocationStatus",
            tags=(("owner", "zhangsan"),),
        )
    ]
    result = page.results[0]
    assert result.key == (result.invoke_id, result.instance_id, result.container_id)


def test_output_is_never_kept_and_results_are_compact() -> None:
    result = parse_page(json.dumps(REFERENCE_EXAMPLE).encode()).results[0]
    assert "output" not in {f.name for f in msgspec.structs.fields(result)}
    assert not hasattr(result, "__dict__")
    assert "MTU6MzA6MDEK" not in repr(result)
    with pytest.raises(AttributeError):
        result.invoke_id = "t-other"  # type: ignore[misc]
    assert result.replace(repeats=3).repeats == 3
    assert hash(result) == hash(msgspec.structs.replace(result))


def test_values_repeated_across_records_are_stored_once() -> None:
    # The mirror keeps up to 10,000 records per target: the records of one invocation share
    # their ids, statuses, times and tags instead of holding a copy each.
    tags = {"Tag": [{"TagKey": "team", "TagValue": "ops"}]}
    same = {"StartTime": "2019-12-20T06:15:55Z", "InvocationStatus": "Success", "Tags": tags}
    records = [{"InvokeId": "t-1", "InstanceId": f"i-{n}", **same} for n in range(3)]
    body = {"Invocation": {"InvocationResults": {"InvocationResult": records}}}
    first, *others = parse_page(json.dumps(body).encode()).results
    for other in others:
        assert other.invoke_id is first.invoke_id
        assert other.invocation_status is first.invocation_status
        assert other.start_time is first.start_time
        assert other.tags is first.tags
    assert first.tags == (("team", "ops"),)


def test_a_record_keeps_its_rarely_set_fields_apart_and_its_ids_as_its_key() -> None:
    # A tracker holds one record per result (300,000 in a process of 300 targets): the ids are
    # the tuple the view is keyed by, and the fields most records leave empty one shared object.
    plain = {
        "InvokeId": "t-1",
        "InvocationStatus": "Success",
        "FinishedTime": "2019-12-20T06:15:55Z",
    }
    tagged = {**plain, "Tags": {"Tag": [{"TagKey": "team", "TagValue": "ops"}]}}
    delivered = {**plain, "OssOutputStatus": "Finished", "Dropped": 10}
    records = [
        *({"InstanceId": f"i-{n}", **plain} for n in range(2)),
        *({"InstanceId": f"i-{n}", **tagged} for n in range(2, 4)),
        *({"InstanceId": f"i-{n}", **delivered} for n in range(4, 6)),
    ]
    body = {"Invocation": {"InvocationResults": {"InvocationResult": records}}}
    results = parse_page(json.dumps(body).encode()).results
    assert [r.key for r in results] == [("t-1", f"i-{n}", "") for n in range(6)]
    assert results[0].extras is None
    assert results[1].extras is None
    assert results[2].extras is not None
    assert results[2].extras is results[3].extras
    assert results[4].extras is not None
    assert results[4].extras is results[5].extras
    assert (results[4].oss_output_status, results[4].dropped, results[4].tags) == (
        "Finished",
        10,
        (),
    )
    assert (results[0].oss_output_status, results[0].dropped, results[0].stop_time) == ("", 0, None)
    # Every field is read by its name, and a copy with changes moves a field in or out.
    delivering = results[0].replace(oss_output_status="InProgress", stop_time=7.0)
    assert (delivering.oss_output_status, delivering.stop_time) == ("InProgress", 7.0)
    assert delivering.replace(oss_output_status="", stop_time=None) == results[0]
    assert delivering.replace(oss_output_status="", stop_time=None).extras is None
    with pytest.raises(TypeError, match="unknown fields: output"):
        results[0].replace(output="secret")


def test_records_share_one_run_state_for_the_whole_process() -> None:
    # Statuses, codes and Repeats take a few values between all records: each value is one
    # object, whatever page, target or way (parsed, built) a record came by; a record is then
    # 64 bytes instead of 96 (300,000 of them in a process of 300 targets of 1,000).
    failed = {
        "InvocationStatus": "Failed",
        "InvokeRecordStatus": "Finished",
        "ErrorCode": "ExitCodeNonzero",
        "Repeats": 1,
    }

    def page(invoke: str, exit_code: int) -> list[models.InvocationResult]:
        records = [
            {"InvokeId": invoke, "InstanceId": f"i-{n}", "ExitCode": exit_code, **failed}
            for n in range(3)
        ]
        body = {"Invocation": {"InvocationResults": {"InvocationResult": records}}}
        return parse_page(json.dumps(body).encode()).results

    first, second, other = page("t-1", 2), page("t-2", 2), page("t-3", 3)
    assert len({id(r.state) for r in first + second}) == 1
    assert other[0].state is not first[0].state
    assert (first[0].exit_code, first[0].error_code, other[0].exit_code) == (
        2,
        failed["ErrorCode"],
        3,
    )
    tolerant = parse_record({"InvokeId": "t-4", "InstanceId": "i-1", "ExitCode": 2, **failed})
    assert isinstance(tolerant, models.InvocationResult)
    assert tolerant.state is first[0].state
    assert first[0].replace(exit_code=3).state is other[0].state
    assert sys.getsizeof(first[0]) == 64


def test_the_shared_run_states_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # Exit codes and the Repeats of periodic tasks have no bound: past it the table starts
    # afresh, and every record keeps its own values.
    monkeypatch.setattr(models, "MAX_SHARED_STATES", 5)
    monkeypatch.setattr(models, "_SHARED_STATES", {})
    base = parse_record({"InvokeId": "t-1", "InstanceId": "i-1", "InvocationStatus": "Success"})
    assert isinstance(base, models.InvocationResult)
    records = [base.replace(repeats=n, exit_code=n % 7) for n in range(40)]
    assert len(models._SHARED_STATES) <= 5
    assert [(r.repeats, r.exit_code) for r in records] == [(n, n % 7) for n in range(40)]


def test_many_distinct_tag_sets_keep_their_own_tags() -> None:
    records = [
        {
            "InvokeId": f"t-{n}",
            "InstanceId": "i-1",
            "Tags": {"Tag": [{"TagKey": "n", "TagValue": str(n)}]},
        }
        for n in range(3000)
    ]
    body = {"Invocation": {"InvocationResults": {"InvocationResult": records}}}
    results = parse_page(json.dumps(body).encode()).results
    assert [r.tags for r in results] == [(("n", str(n)),) for n in range(3000)]


@pytest.mark.parametrize(
    ("fields", "attribute", "expected"),
    [
        ({"ExitCode": "1"}, "exit_code", 1),
        ({"ExitCode": "-1"}, "exit_code", -1),
        ({"ExitCode": None}, "exit_code", None),
        ({"ExitCode": ""}, "exit_code", None),
        ({"ExitCode": 2.0}, "exit_code", 2),
        ({"ExitCode": 2.5}, "exit_code", None),
        ({"ExitCode": True}, "exit_code", None),
        ({"ExitCode": [1]}, "exit_code", None),
        ({"ExitCode": 4294967295}, "exit_code", 4294967295),
        ({}, "exit_code", None),
        ({"Repeats": "x"}, "repeats", 0),
        ({"Repeats": "7"}, "repeats", 7),
        ({"Repeats": -3}, "repeats", 0),
        ({"Dropped": 1024}, "dropped", 1024),
        ({"Dropped": None}, "dropped", 0),
        # Beyond the API's 64-bit Long: no saved state could hold it; taken as absent.
        ({"ExitCode": 2**63 - 1}, "exit_code", 2**63 - 1),
        ({"ExitCode": -(2**63)}, "exit_code", -(2**63)),
        ({"ExitCode": 2**63}, "exit_code", None),
        ({"ExitCode": -(2**63) - 1}, "exit_code", None),
        ({"ExitCode": 10**20}, "exit_code", None),
        ({"ExitCode": "1" * 5000}, "exit_code", None),
        ({"ExitCode": 1e300}, "exit_code", None),
        ({"Repeats": 2**64 - 1}, "repeats", 0),
        ({"Repeats": str(10**20)}, "repeats", 0),
        ({"Dropped": 10**20}, "dropped", 0),
        ({"StartTime": "yesterday"}, "start_time", None),
        ({"StartTime": ""}, "start_time", None),
        ({"StartTime": 1576822555}, "start_time", None),
        ({"StartTime": "2019-12-20T06:15:55.250Z"}, "start_time", 1576822555.25),
        ({"StartTime": "2019-12-20T14:15:55+08:00"}, "start_time", 1576822555.0),
        ({"StartTime": "2019-12-20T06:15:55"}, "start_time", 1576822555.0),
        ({"StartTime": "2019-02-30T06:15:55Z"}, "start_time", None),
        ({"InvocationStatus": "Rebooting"}, "invocation_status", "Rebooting"),
        ({"InvocationStatus": 3}, "invocation_status", "3"),
        ({"InvocationStatus": None}, "invocation_status", ""),
        ({"InvocationStatus": {"x": 1}}, "invocation_status", ""),
        ({"ErrorCode": "SomethingNew"}, "error_code", "SomethingNew"),
        ({"ContainerId": None}, "container_id", ""),
        ({"Tags": {"Tag": {"TagKey": "k", "TagValue": "v"}}}, "tags", (("k", "v"),)),
        ({"Tags": {"Tag": [{"TagKey": "k"}, {"TagValue": "v"}, "x"]}}, "tags", (("k", ""),)),
        ({"Tags": "owner=me"}, "tags", ()),
        ({"Tags": {"Tag": None}}, "tags", ()),
    ],
)
def test_odd_field_values_are_tolerated(
    fields: dict[str, Any], attribute: str, expected: object
) -> None:
    page = parse_page(_page_with(_record(**fields)))
    assert page.invalid == []
    assert getattr(page.results[0], attribute) == expected


@pytest.mark.parametrize(
    ("record", "invalid"),
    [
        ("a string", InvalidRecord("", "", "record is a str, not an object")),
        (None, InvalidRecord("", "", "record is a NoneType, not an object")),
        ({"InstanceId": "i-1"}, InvalidRecord("", "i-1", "missing InvokeId")),
        ({"InvokeId": "t-1"}, InvalidRecord("t-1", "", "missing InstanceId")),
        (
            {"InvokeId": "t-1", "InstanceId": ""},
            InvalidRecord("t-1", "", "empty InstanceId"),
        ),
        (
            {"InvokeId": 7, "InstanceId": "i-1"},
            InvalidRecord("7", "i-1", "InvokeId is not a string (a number)"),
        ),
    ],
)
def test_unusable_records_are_set_aside_with_their_ids(record: Any, invalid: InvalidRecord) -> None:
    page = parse_page(_page_with(record))
    assert page.results == []
    assert page.invalid == [invalid]
    assert parse_record(record) == invalid


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>oops</html>", "not JSON"),
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "JSON list"),
        (b'{"RequestId": "R"}', "no Invocation object"),
        (b'{"Invocation": null}', "no Invocation object"),
        (b'{"Invocation": {"InvocationResults": 5}}', "InvocationResults is a int"),
        (b'{"Invocation": {"InvocationResults": {"InvocationResult": "x"}}}', "not a list"),
    ],
)
def test_answers_of_the_wrong_shape_are_malformed(body: bytes, message: str) -> None:
    with pytest.raises(MalformedResponseError, match=message):
        parse_page(body)


@pytest.mark.parametrize("where", ["body", "tags"])
def test_json_nested_deeper_than_the_stack_is_a_malformed_answer(where: str) -> None:
    # A bug would be a RecursionError, reported as the exporter's own ("internal") failure.
    deep = b"[" * 100_000 + b"]" * 100_000
    if where == "body":
        body = b'{"RequestId": "R", "Invocation": ' + deep + b"}"
    else:
        body = _page_with(_record()).replace(
            b'"InvokeId"', b'"Tags": {"X": ' + deep + b'}, "InvokeId"', 1
        )
        assert body.count(b"[" * 1000) >= 1
    with pytest.raises(MalformedResponseError, match="not JSON"):
        parse_page(body)


@pytest.mark.parametrize(
    ("invocation", "results", "token", "total"),
    [
        ({}, 0, "", None),
        ({"InvocationResults": None, "NextToken": None}, 0, "", None),
        ({"InvocationResults": {}, "TotalCount": "12"}, 0, "", 12),
        ({"InvocationResults": {"InvocationResult": []}, "NextToken": "n"}, 0, "n", None),
        ({"InvocationResults": [{"InvokeId": "t", "InstanceId": "i"}]}, 1, "", None),
        (
            {"InvocationResults": {"InvocationResult": {"InvokeId": "t", "InstanceId": "i"}}},
            1,
            "",
            None,
        ),
    ],
)
def test_missing_or_odd_page_fields_are_tolerated(
    invocation: dict[str, Any], results: int, token: str, total: int | None
) -> None:
    page = parse_page(json.dumps({"Invocation": invocation}).encode())
    assert (len(page.results), page.next_token, page.total_count) == (results, token, total)


def test_parse_time_of_the_api_form() -> None:
    assert parse_time("1970-01-01T00:00:00Z") == 0.0
    assert parse_time("2019-12-20T06:15:55Z") == 1576822555.0
    assert parse_time(None) is None


def test_documented_enumerations() -> None:
    assert len(INVOCATION_STATUSES) == 13
    assert len(set(ERROR_CODES)) == len(ERROR_CODES)


def test_query_parameters_use_the_api_names() -> None:
    query = InvocationQuery(
        resource_group_id="rg-1",
        invoke_id="t-1",
        instance_id="i-1",
        command_id="c-1",
        invoke_record_status="Running",
        include_history=True,
        content_encoding="PlainText",
        tags=(("env", "prod"), ("empty", "")),
    )
    query.validate()
    assert query.to_params() == {
        "ResourceGroupId": "rg-1",
        "InvokeId": "t-1",
        "InstanceId": "i-1",
        "CommandId": "c-1",
        "InvokeRecordStatus": "Running",
        "IncludeHistory": "true",
        "ContentEncoding": "PlainText",
        "Tag.1.Key": "env",
        "Tag.1.Value": "prod",
        "Tag.2.Key": "empty",
        "Tag.2.Value": "",
    }
    assert InvocationQuery().to_params() == {}


def _tags(n: int) -> tuple[tuple[str, str], ...]:
    return tuple((f"k{i}", "v") for i in range(n))


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (InvocationQuery(include_history=True), "include_history needs invoke_id"),
        (InvocationQuery(invoke_record_status="Done"), "invoke_record_status 'Done'"),
        (InvocationQuery(content_encoding="gzip"), "content_encoding 'gzip'"),
        (InvocationQuery(instance_id=""), "instance_id must be a non-empty string"),
        (InvocationQuery(tags=_tags(21)), "at most 20 tags"),
        (InvocationQuery(tags=(("", "v"),)), "the key must not be empty"),
        (InvocationQuery(tags=(("k" * 65, "v"),)), "longer than 64"),
        (InvocationQuery(tags=(("k", "v" * 129),)), "longer than 128"),
        (InvocationQuery(tags=(("aliyun-env", "v"),)), "must not start with 'aliyun' or 'acs:'"),
        (InvocationQuery(tags=(("acs:owner", "v"),)), "must not start with 'aliyun' or 'acs:'"),
        (InvocationQuery(tags=(("see http://x", "v"),)), "key must not contain http"),
        (InvocationQuery(tags=(("k", "https://x"),)), "value must not contain http"),
        (InvocationQuery(tags=(("k", "a"), ("k", "b"))), "given more than once"),
        (InvocationQuery(tags=(("k",),)), "must be a \\(key, value\\) pair"),  # type: ignore[arg-type]
    ],
)
def test_invalid_queries_are_refused_with_a_clear_message(
    query: InvocationQuery, message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        query.validate()


@pytest.mark.parametrize(
    "query",
    [
        InvocationQuery(tags=_tags(20)),
        InvocationQuery(tags=(("k" * 64, "v" * 128),)),
        InvocationQuery(tags=(("env", ""),)),
        InvocationQuery(invoke_id="t-1", include_history=True),
        InvocationQuery(content_encoding="Base64"),
    ],
)
def test_queries_at_the_limits_are_accepted(query: InvocationQuery) -> None:
    query.validate()


# --- strings from the API are made safe once, where they are parsed -------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Success", "Success"),
        ("ExitCodeNonzero", "ExitCodeNonzero"),
        ("\ud800", "\ufffd"),
        ("a\x00b\x1b[31mc\x7f", "a\ufffdb\ufffd[31mc\ufffd"),
        ("line\nbreak\ttab", "line\ufffdbreak\ufffdtab"),
        ("rtl\u202eoverride", "rtl\ufffdoverride"),
        ("no\u00a0break\u3000space", "no break space"),
        ("命令执行超时", "命令执行超时"),
    ],
)
def test_clean_replaces_what_cannot_be_shown(raw: str, expected: str) -> None:
    assert clean(raw, 100) == expected
    clean(raw, 100).encode("utf-8")


def test_clean_bounds_the_length() -> None:
    assert clean("x" * 10, 10) == "x" * 10
    assert clean("x" * 11, 10) == "x" * 7 + "..."


def test_text_cleaner_redacts_before_cutting_and_never_caches_huge_values() -> None:
    secret = "S3CR3T-VALUE"
    cleaner = TextCleaner([secret, "ab", ""])  # too-short secrets would redact words
    assert cleaner.name(f"{'x' * 250}{secret}") == "x" * 250 + "***"
    assert cleaner.name("about") == "about"
    assert cleaner.message(f"the key {secret}!") == "the key ***!"
    assert cleaner.name(5) == "5"
    assert cleaner.name(None) == ""
    huge = "E" * 100_000
    assert len(cleaner.name(huge)) == MAX_NAME_CHARS
    assert huge not in cleaner._cache


def test_the_ecs_package_has_no_import_cycle() -> None:
    """Not even under TYPE_CHECKING: each module imports only modules below it."""
    package = Path(models.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "exporter.ecs":
                    imported.update(alias.name for alias in node.names)
                elif node.module.startswith("exporter.ecs."):
                    imported.add(node.module.rsplit(".", 1)[1])
        graph[path.stem] = imported - {path.stem}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join((*path, module))
        if module in done:
            return
        for dependency in graph.get(module, ()):
            visit(dependency, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())
    assert "client" not in graph["credentials"]


def _varied_record(rng: random.Random, n: int) -> dict[str, Any]:
    """A record of documented types, with every optional field sometimes absent or null."""
    record: dict[str, Any] = {
        "InvokeId": rng.choice([f"t-{n // 7}", "", None, "t-" + "x" * 300]),
        "InstanceId": rng.choice([f"i-{n}", f"i-{n}", "", None, "i-" + "y" * 300]),
        "ContainerId": rng.choice(["", None, f"c-{n}", "c" * 300]),
        "CommandId": rng.choice(["c-1", "", None]),
        "InvocationStatus": rng.choice([*INVOCATION_STATUSES, "New", None, "a\x00b"]),
        "InvokeRecordStatus": rng.choice(["Finished", "Running", None]),
        "ErrorCode": rng.choice(["", *ERROR_CODES[:3], "E" * 400, None]),
        "ExitCode": rng.choice([0, 1, -1, None, 2**40]),
        "StartTime": rng.choice(["2019-12-20T06:15:55Z", "", None, "not a time"]),
        "FinishedTime": rng.choice(["2019-12-20T06:16:55Z", "2019-12-20T06:16:55", None]),
        "StopTime": rng.choice(["", None]),
        "Repeats": rng.choice([0, 1, 5, -3, None]),
        "Dropped": rng.choice([0, 2, -1, None]),
        "OssOutputStatus": rng.choice(["", "Finished", None]),
        "OssOutputErrorCode": rng.choice(["", "OSS.AccessDenied", None]),
        "Tags": rng.choice(
            [
                None,
                {},
                {"Tag": []},
                {"Tag": [{"TagKey": "team", "TagValue": "sre"}]},
                {"Tag": [{"TagKey": "", "TagValue": "x"}, {"TagKey": "k", "TagValue": None}]},
            ]
        ),
        "Output": "aGVsbG8=" * rng.randint(0, 20),
    }
    for key in list(record):
        if rng.random() < 0.1:
            del record[key]
    return record


@pytest.mark.parametrize("seed", range(20))
def test_the_fast_decoder_agrees_with_the_tolerant_one(seed: int) -> None:
    rng = random.Random(seed)
    records = [_varied_record(rng, n) for n in range(50)]
    invocation: dict[str, Any] = {"InvocationResults": {"InvocationResult": records}}
    if rng.random() < 0.8:
        invocation["NextToken"] = rng.choice(["", "tok", None])
    if rng.random() < 0.8:
        invocation["TotalCount"] = rng.choice([50, None])
    body = json.dumps({"RequestId": rng.choice(["R", None]), "Invocation": invocation}).encode()
    secret = TextCleaner(["sre-secret"])
    exact = parsing._parse_exact_page(parsing._EXACT_PAGE.decode(body), secret)
    assert exact == parse_tolerant_page(body, secret)
    assert exact == parse_page(body, secret)
    assert exact.results or exact.invalid
