"""Parsing answers of DescribeInvocationResults into :mod:`exporter.ecs.models` records.

Two decoders, one result. A refresh may parse 10,000 records, so a page is first decoded by
``msgspec`` into structs of the fields the exporter keeps (the ``Output`` of each record, most of
its bytes, is skipped unread, and nothing else is built). Any page that does not have exactly the
documented types (a number as a string, a single record not in a list, a lone UTF-16 surrogate,
null where a string belongs, ...) is parsed again by the tolerant decoder below, which accepts
what it can and sets aside what it cannot. Both turn a record into the same
:class:`~exporter.ecs.models.InvocationResult` through the same rules (``_id_problem``,
``TextCleaner``, ``_time``); ``tests/test_models.py`` checks they agree.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Annotated

import msgspec

from exporter.ecs.errors import MalformedResponseError
from exporter.ecs.models import (
    MAX_INTEGER,
    InvalidRecord,
    InvocationResult,
    Page,
    ResultExtras,
    RunState,
    run_state,
)
from exporter.ecs.untrusted import MAX_NAME_CHARS, PLAIN, TextCleaner

# --- the tolerant decoder --------------------------------------------------------------------
# Plain code on purpose: as few function calls per field as readable code allows.


def parse_time(value: object) -> float | None:
    """Return epoch seconds for an ISO 8601 time (``2019-12-20T06:15:55Z``), else ``None``.

    A time without an offset is taken as UTC. ``datetime.fromisoformat`` (C code since 3.11,
    accepts ``Z``) measured faster than a hand-written parser of the exact API form.
    """
    if type(value) is not str or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _integer(value: object) -> int | None:
    """An integer field: ints, integral floats and decimal strings within the 64-bit range
    (see :data:`MAX_INTEGER`); ``None`` otherwise."""
    if type(value) is str:
        try:
            value = int(value)
        except ValueError:  # (Python's own limit on digits is a ValueError too)
            return None
    elif type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is int and -MAX_INTEGER - 1 <= value <= MAX_INTEGER:
        return value
    return None


def _count(value: object) -> int:
    """A non-negative counter field (``Repeats``, ``Dropped``): 0 when absent or unusable."""
    if type(value) is int:  # the usual case, without a call
        return value if 0 < value <= MAX_INTEGER else 0
    number = _integer(value)
    return number if number is not None and number > 0 else 0


_TAG_SETS: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}
_MAX_TAG_SETS = 1024


def _tags(value: object, name: Callable[[object], str]) -> tuple[tuple[str, str], ...]:
    """The ``Tags`` field of a record as tolerantly as it may come (a list or a single tag)."""
    if type(value) is not dict:
        return ()
    items = value.get("Tag")
    if type(items) is dict:
        items = [items]
    elif type(items) is not list or not items:
        return ()
    return _tag_set(
        ((item.get("TagKey"), item.get("TagValue")) for item in items if type(item) is dict), name
    )


def _tag_set(
    items: Iterable[tuple[object, object]], name: Callable[[object], str]
) -> tuple[tuple[str, str], ...]:
    """The record's tags as ``(key, value)`` pairs; one shared tuple per distinct tag set.

    A tag without a key is dropped. An invocation's tags are the same on each of its records,
    and a deployment has few tag sets: sharing them saves two tuples per record. The cache is
    bounded (emptied when full) and only ever a shortcut, so concurrent refreshes may share it.
    """
    tags = tuple((name(key), name(value)) for key, value in items if type(key) is str and key)
    if not tags:
        return ()
    shared = _TAG_SETS.get(tags)
    if shared is None:
        if len(_TAG_SETS) >= _MAX_TAG_SETS:
            _TAG_SETS.clear()
        shared = _TAG_SETS[tags] = tags
    return shared


def _new_time(value: str | None, memo: dict[str | None, float | None]) -> float | None:
    """:func:`parse_time` of a value not in ``memo`` yet, remembered there (the exact
    decoder's hot path: the look-up was made by the caller)."""
    parsed = memo[value] = parse_time(value)
    return parsed


def _time(value: object, memo: dict[str | None, float | None]) -> float | None:
    """:func:`parse_time` through a per-page memo: records of one invocation share times."""
    if type(value) is not str or not value:
        return None
    if value in memo:
        return memo[value]
    return _new_time(value, memo)


def _json_type(value: object) -> str:
    """The JSON type of a decoded value, as an API user would name it."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _id_problem(invoke_id: object, instance_id: object, container_id: object) -> str | None:
    """Why a record's identity is unusable (missing, empty, not a string, far too long)."""
    for field_name, value in (("InvokeId", invoke_id), ("InstanceId", instance_id)):
        if value is None:
            return f"missing {field_name}"
        if type(value) is not str:
            return f"{field_name} is not a string ({_json_type(value)})"
        if not value:
            return f"empty {field_name}"
        # Cutting an id would merge distinct results: refuse it instead.
        if len(value) > MAX_NAME_CHARS:
            return f"{field_name} is longer than {MAX_NAME_CHARS} characters"
    if type(container_id) is str and len(container_id) > MAX_NAME_CHARS:
        return f"ContainerId is longer than {MAX_NAME_CHARS} characters"
    return None


def parse_record(
    record: object,
    memo: dict[str | None, float | None] | None = None,
    text: TextCleaner = PLAIN,
) -> InvocationResult | InvalidRecord:
    """Turn one API record into an :class:`InvocationResult`, or say why it cannot be used.

    ``memo`` caches parsed times across the records of one page (:func:`parse_page` passes
    one); without it each call uses its own. ``text`` cleans every string kept.
    """
    name = text.name
    if type(record) is not dict:
        return InvalidRecord("", "", f"record is a {type(record).__name__}, not an object")
    get = record.get
    problem = _id_problem(get("InvokeId"), get("InstanceId"), get("ContainerId"))
    if problem is not None:
        return InvalidRecord(name(get("InvokeId")), name(get("InstanceId")), problem)
    if memo is None:
        memo = {}
    # Every string kept is cleaned once and shared (TextCleaner.name): an invocation's id,
    # status and times are on each of its records.
    return InvocationResult.of(
        name(get("InvokeId")),
        name(get("InstanceId")),
        name(get("ContainerId", "")),
        name(get("CommandId", "")),
        name(get("InvocationStatus", "")),
        name(get("InvokeRecordStatus", "")),
        name(get("ErrorCode", "")),
        _integer(get("ExitCode")),
        _time(get("StartTime"), memo),
        _time(get("FinishedTime"), memo),
        _time(get("StopTime"), memo),
        _count(get("Repeats")),
        _count(get("Dropped")),
        name(get("OssOutputStatus", "")),
        name(get("OssOutputErrorCode", "")),
        _tags(get("Tags"), name),
    )


def _token(value: object) -> str:
    if type(value) is str:
        return value
    if type(value) is int:
        return str(value)
    return ""


def _records(invocation: dict[str, object]) -> list[object]:
    container = invocation.get("InvocationResults")
    if container is None or container == "":
        return []
    if type(container) is list:  # some gateways flatten the XML-style wrapper
        return container
    if type(container) is not dict:
        raise MalformedResponseError(
            f"Invocation.InvocationResults is a {type(container).__name__}, not an object"
        )
    records = container.get("InvocationResult")
    if records is None:
        return []
    if type(records) is dict:  # a single record not wrapped in a list
        return [records]
    if type(records) is not list:
        raise MalformedResponseError(
            f"Invocation.InvocationResults.InvocationResult is a {type(records).__name__}, "
            "not a list"
        )
    return records


def parse_page(body: bytes, text: TextCleaner = PLAIN) -> Page:
    """Parse one answer of DescribeInvocationResults.

    Raises :class:`MalformedResponseError` when the body is not JSON or has no ``Invocation``
    object; a record that cannot be used goes to ``Page.invalid`` and never raises. Every
    string kept is cleaned by ``text`` (give it the call's secrets).
    """
    try:
        return _parse_exact_page(_EXACT_PAGE.decode(body), text)
    except (msgspec.DecodeError, _NotExact, RecursionError):
        # Not exactly the documented shape (or nested too deep for it): the tolerant decoder
        # decides.
        return parse_tolerant_page(body, text)


def parse_tolerant_page(body: bytes, text: TextCleaner = PLAIN) -> Page:
    """:func:`parse_page` by the tolerant decoder alone (what the fast one must agree with)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # (RecursionError: nested deeper than the interpreter's stack allows.)
        raise MalformedResponseError(f"the answer is not JSON ({exc.__class__.__name__})") from None
    if type(data) is not dict:
        raise MalformedResponseError(f"the answer is a JSON {type(data).__name__}, not an object")
    request_id = text.name(data.get("RequestId"))
    invocation = data.get("Invocation")
    if type(invocation) is not dict:
        raise MalformedResponseError(
            "the answer has no Invocation object", request_id=request_id, http_status=200
        )
    try:
        records = _records(invocation)
    except MalformedResponseError as exc:
        raise MalformedResponseError(exc.message, request_id=request_id, http_status=200) from None
    results: list[InvocationResult] = []
    invalid: list[InvalidRecord] = []
    memo: dict[str | None, float | None] = {}
    for record in records:
        parsed = parse_record(record, memo, text)
        if type(parsed) is InvocationResult:
            results.append(parsed)
        else:
            invalid.append(parsed)  # type: ignore[arg-type]  # the only other case
    return Page(
        results=results,
        # The token is only sent back (never shown), so it is kept as it came, unless it is
        # not text at all.
        next_token=_token(invocation.get("NextToken")),
        total_count=_integer(invocation.get("TotalCount")),
        request_id=request_id,
        invalid=invalid,
    )


# --- the fast decoder of exactly documented pages ------------------------------------------
# Only the fields the exporter keeps; msgspec skips the rest (``Output``) without building it.
# A field the API may leave out or send as null is optional; any other type is not "exact".


class _NotExact(Exception):
    """The page decoded, but not as the exact form this decoder handles."""


# Beyond it the exact decoder refuses the page, and the tolerant one takes the value as absent.
_Long = Annotated[int, msgspec.Meta(ge=-MAX_INTEGER - 1, le=MAX_INTEGER)]


class _Tag(msgspec.Struct, gc=False):
    TagKey: str | None = None
    TagValue: str | None = None


class _TagList(msgspec.Struct, gc=False):
    Tag: list[_Tag] = msgspec.field(default_factory=list)


class _Record(msgspec.Struct, gc=False):
    InvokeId: str | None = None
    InstanceId: str | None = None
    ContainerId: str | None = None
    CommandId: str | None = None
    InvocationStatus: str | None = None
    InvokeRecordStatus: str | None = None
    ErrorCode: str | None = None
    ExitCode: _Long | None = None
    StartTime: str | None = None
    FinishedTime: str | None = None
    StopTime: str | None = None
    Repeats: _Long | None = None
    Dropped: _Long | None = None
    OssOutputStatus: str | None = None
    OssOutputErrorCode: str | None = None
    # Kept as raw JSON: the records of one invocation carry the same tags, decoded once a page.
    Tags: msgspec.Raw = msgspec.Raw(b"")


class _Results(msgspec.Struct, gc=False):
    InvocationResult: list[_Record] | None = None


class _Invocation(msgspec.Struct, gc=False):
    InvocationResults: _Results | None = None
    NextToken: str | None = None
    TotalCount: int | None = None


class _Answer(msgspec.Struct, gc=False):
    RequestId: str | None = None
    Invocation: _Invocation | None = None


_EXACT_PAGE = msgspec.json.Decoder(_Answer)
_NO_TAGS = msgspec.Raw(b'{"Tag":[]}')  # how the API writes a record without tags
_EXACT_TAGS = msgspec.json.Decoder(_TagList | None)


def _exact_tags(raw: bytes, name: Callable[[object], str]) -> tuple[tuple[str, str], ...]:
    """The tags of a record from their raw JSON (``msgspec.DecodeError`` if not exact)."""
    tags = _EXACT_TAGS.decode(raw) if raw else None
    return _tag_set(((t.TagKey, t.TagValue) for t in tags.Tag), name) if tags else ()


# What the records of one invocation have alike (see _parse_exact_page): as read, and as kept.
_SharedKey = tuple[str | None, str | None, str | None, str | None, str | None, str | None,
                   str | None, int | None, int | None]  # fmt: skip
_Shared = tuple[str, str, str, str, RunState]


def _shared_fields(
    key: _SharedKey, text: TextCleaner, shared: dict[_SharedKey, _Shared]
) -> _Shared:
    """The invocation id, command id, OSS status and OSS error code of ``key`` (as
    ``_parse_exact_page`` reads them) cleaned, and its :class:`RunState` (a ``Repeats`` absent
    or below 1 is 0); remembered in ``shared``."""
    names = text.names(key[:7])
    invoke_id, command_id, status, record_status, error_code, oss_status, oss_error_code = names
    exit_code, repeats = key[7], key[8]
    count = repeats if repeats is not None and repeats > 0 else 0
    state = run_state(status, record_status, error_code, exit_code, count)
    shared[key] = (invoke_id, command_id, oss_status, oss_error_code, state)
    return shared[key]


def _parse_exact_page(answer: _Answer, text: TextCleaner) -> Page:
    invocation = answer.Invocation
    if invocation is None:
        raise _NotExact  # the tolerant decoder words the error
    container = invocation.InvocationResults
    records = (container.InvocationResult if container is not None else None) or []
    name, known = text.name, text.known
    # Per page, what records of one invocation share: their times, tags, run states and the
    # fields that are the invocation's (cleaned once, looked up after).
    memo: dict[str | None, float | None] = {None: None, "": None}
    page_tags: dict[bytes, tuple[tuple[tuple[str, str], ...], ResultExtras | None]] = {}
    page_extras: dict[tuple[object, ...], ResultExtras] = {}
    shared: dict[_SharedKey, _Shared] = {}
    results: list[InvocationResult] = []
    invalid: list[InvalidRecord] = []
    append = results.append
    for r in records:
        invoke, instance, box = r.InvokeId, r.InstanceId, r.ContainerId
        # Most records pass this cheap test; _id_problem decides for the others.
        if (
            not invoke
            or not instance
            or len(invoke) > MAX_NAME_CHARS
            or len(instance) > MAX_NAME_CHARS
            or (box is not None and len(box) > MAX_NAME_CHARS)
        ):
            problem = _id_problem(invoke, instance, box)
            if problem is not None:
                invalid.append(InvalidRecord(name(invoke), name(instance), problem))
                continue
        key = (
            invoke,
            r.CommandId,
            r.InvocationStatus,
            r.InvokeRecordStatus,
            r.ErrorCode,
            r.OssOutputStatus,
            r.OssOutputErrorCode,
            r.ExitCode,
            r.Repeats,
        )
        common = shared.get(key) or _shared_fields(key, text, shared)
        invoke_id, command_id, oss_status, oss_error_code, state = common
        instance_id = known(instance)
        if instance_id is None:
            instance_id = name(instance)
        container_id = known(box)
        if container_id is None:
            container_id = name(box)
        # Look-ups are cheaper than calls: _time only for a time not seen on this page yet.
        start, finished, stop = r.StartTime, r.FinishedTime, r.StopTime
        # A record's extras (see InvocationResult) are shared too: most have none, or only
        # tags, whose extras are made with them.
        tags_extras: ResultExtras | None = None
        if r.Tags == _NO_TAGS:  # most records: compared as they are, without a copy
            tags: tuple[tuple[str, str], ...] = ()
        else:
            raw_tags = bytes(r.Tags)
            found = page_tags.get(raw_tags)
            if found is None:
                made = _exact_tags(raw_tags, name)
                found = page_tags[raw_tags] = (made, ResultExtras(tags=made) if made else None)
            tags, tags_extras = found
        stop_time = memo[stop] if stop in memo else _new_time(stop, memo)
        dropped = r.Dropped if r.Dropped is not None and r.Dropped > 0 else 0
        if stop_time is None and not dropped and not oss_status and not oss_error_code:
            extras = tags_extras
        else:
            fields = (stop_time, dropped, oss_status, oss_error_code, tags)
            extras = page_extras.get(fields)
            if extras is None:
                extras = page_extras[fields] = ResultExtras(*fields)
        append(
            InvocationResult(
                (invoke_id, instance_id, container_id),
                command_id,
                state,
                memo[start] if start in memo else _new_time(start, memo),
                memo[finished] if finished in memo else _new_time(finished, memo),
                extras,
            )
        )
    return Page(
        results=results,
        next_token=invocation.NextToken or "",
        total_count=invocation.TotalCount,
        request_id=name(answer.RequestId),
        invalid=invalid,
    )
