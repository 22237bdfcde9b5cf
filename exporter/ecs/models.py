"""The data the API returns, as the exporter keeps it, and the query it sends.

Enumerations are the documented values of the API reference (DescribeInvocationResults, 2014-05-26).
The API may add values; code that reads a record keeps unknown values as they are.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from exporter.ecs.errors import InvalidRequestError, MalformedResponseError
from exporter.ecs.untrusted import MAX_NAME_CHARS, PLAIN, TextCleaner

NON_TERMINAL_STATUSES: tuple[str, ...] = ("Pending", "Scheduled", "Running", "Stopping")
TERMINAL_STATUSES: tuple[str, ...] = (
    "Success",
    "Failed",
    "Error",
    "Timeout",
    "Cancelled",
    "Terminated",
    "Aborted",
    "Invalid",
    "Stopped",
)
INVOCATION_STATUSES: tuple[str, ...] = NON_TERMINAL_STATUSES + TERMINAL_STATUSES

INVOKE_RECORD_STATUSES: tuple[str, ...] = (
    "Running",
    "Finished",
    "Success",
    "Failed",
    "PartialFailed",
    "Stopped",
    "Stopping",
)

ERROR_CODES: tuple[str, ...] = (
    "InstanceNotExists",
    "InstanceReleased",
    "InstanceNotRunning",
    "CommandNotApplicable",
    "AccountNotExists",
    "DirectoryNotExists",
    "BadCronExpression",
    "ClientNotRunning",
    "ClientNotResponse",
    "ClientIsUpgrading",
    "ClientNeedUpgrade",
    "DeliveryTimeout",
    "ExecutionTimeout",
    "ExecutionException",
    "ExecutionInterrupted",
    "ExitCodeNonzero",
    "SecurityGroupRuleDenied",
    "TaskConcurrencyLimit",
)

OSS_OUTPUT_STATUSES: tuple[str, ...] = ("InProgress", "Finished", "Failed")
OSS_OUTPUT_ERROR_CODES: tuple[str, ...] = (
    "CloudAssistant.UnsupportedInvocationStatus",
    "CloudAssistant.ClientNeedUpgrade",
    "OSS.AccessDenied",
    "OSS.NoSuchBucket",
    "OSS.FileImmutable",
    "OSS.InvalidObjectName",
)

CONTENT_ENCODINGS: tuple[str, ...] = ("PlainText", "Base64")

ECS_API_VERSION = "2014-05-26"
MAX_RESULTS_LIMIT = 50
MAX_TAGS = 20
MAX_TAG_KEY_CHARS = 64
MAX_TAG_VALUE_CHARS = 128
_RESERVED_TAG_KEY_PREFIXES = ("aliyun", "acs:")


@dataclass(slots=True, frozen=True)
class InvocationResult:
    """One execution result on one instance (or container), as the exporter keeps it.

    Strings are the API values ("" when absent) made safe for any surface by
    :class:`exporter.ecs.untrusted.TextCleaner` (printable, at most 256 characters, secrets
    redacted); unknown enum values are kept as they are.
    Times are epoch seconds (UTC) or ``None``. ``Output`` is never kept. Values repeated across
    records (ids, statuses, codes, times and tags of one invocation) are shared, not copied.
    """

    invoke_id: str
    instance_id: str
    container_id: str
    command_id: str
    invocation_status: str
    invoke_record_status: str
    error_code: str
    exit_code: int | None
    start_time: float | None
    finished_time: float | None
    stop_time: float | None
    repeats: int
    dropped: int
    oss_output_status: str
    oss_output_error_code: str
    tags: tuple[tuple[str, str], ...]

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity of the result: ``(invoke_id, instance_id, container_id)``."""
        return (self.invoke_id, self.instance_id, self.container_id)


@dataclass(frozen=True, slots=True)
class InvalidRecord:
    """A record of an answer that could not be used; ids are what the record had ("" if none)."""

    invoke_id: str
    instance_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Page:
    """One parsed answer of DescribeInvocationResults."""

    results: list[InvocationResult]
    next_token: str
    total_count: int | None
    request_id: str
    invalid: list[InvalidRecord] = field(default_factory=list)


def _tag_problem(index: int, key: object, value: object) -> str | None:
    if not isinstance(key, str) or not isinstance(value, str):
        return f"tag {index}: key and value must be strings"
    if not key:
        return f"tag {index}: the key must not be empty"
    if len(key) > MAX_TAG_KEY_CHARS:
        return f"tag {index}: the key is longer than {MAX_TAG_KEY_CHARS} characters"
    if key.lower().startswith(_RESERVED_TAG_KEY_PREFIXES):
        return f"tag {index}: the key {key!r} must not start with 'aliyun' or 'acs:'"
    if len(value) > MAX_TAG_VALUE_CHARS:
        return f"tag {index} ({key!r}): the value is longer than {MAX_TAG_VALUE_CHARS} characters"
    for part, text in (("key", key), ("value", value)):
        lowered = text.lower()
        if "http://" in lowered or "https://" in lowered:
            return f"tag {index} ({key!r}): the {part} must not contain http:// or https://"
    return None


@dataclass(frozen=True)
class InvocationQuery:
    """The filters of DescribeInvocationResults (every one the API reference lists).

    ``RegionId``, ``MaxResults`` and ``NextToken`` are added by the client. ``tags`` filter on
    the execution's tags, as ``(key, value)`` pairs.
    """

    resource_group_id: str | None = None
    invoke_id: str | None = None
    instance_id: str | None = None
    command_id: str | None = None
    invoke_record_status: str | None = None
    include_history: bool = False
    content_encoding: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    def validate(self) -> None:
        """Raise :class:`InvalidRequestError` (with what is wrong) for a query the API refuses."""
        problems: list[str] = []
        for name in ("resource_group_id", "invoke_id", "instance_id", "command_id"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                problems.append(f"{name} must be a non-empty string when set")
        if (
            self.invoke_record_status is not None
            and self.invoke_record_status not in INVOKE_RECORD_STATUSES
        ):
            problems.append(
                f"invoke_record_status {self.invoke_record_status!r} is not one of "
                + ", ".join(INVOKE_RECORD_STATUSES)
            )
        if self.content_encoding is not None and self.content_encoding not in CONTENT_ENCODINGS:
            problems.append(
                f"content_encoding {self.content_encoding!r} is not one of "
                + ", ".join(CONTENT_ENCODINGS)
            )
        if self.include_history and not self.invoke_id:
            problems.append("include_history needs invoke_id (the API requires InvokeId with it)")
        problems.extend(self._tag_problems())
        if problems:
            raise InvalidRequestError("invalid query: " + "; ".join(problems))

    def _tag_problems(self) -> list[str]:
        problems: list[str] = []
        if len(self.tags) > MAX_TAGS:
            problems.append(f"at most {MAX_TAGS} tags are allowed, got {len(self.tags)}")
        seen: set[str] = set()
        for index, pair in enumerate(self.tags, start=1):
            if not isinstance(pair, tuple) or len(pair) != 2:
                problems.append(f"tag {index}: must be a (key, value) pair")
                continue
            key, value = pair
            problem = _tag_problem(index, key, value)
            if problem is not None:
                problems.append(problem)
            elif key in seen:
                problems.append(f"tag {index}: the key {key!r} is given more than once")
            seen.add(key)
        return problems

    def to_params(self) -> dict[str, str]:
        """Return the API parameters of the filters (``Tag.N.Key``/``Tag.N.Value`` for tags)."""
        params: dict[str, str] = {}
        if self.resource_group_id is not None:
            params["ResourceGroupId"] = self.resource_group_id
        if self.invoke_id is not None:
            params["InvokeId"] = self.invoke_id
        if self.instance_id is not None:
            params["InstanceId"] = self.instance_id
        if self.command_id is not None:
            params["CommandId"] = self.command_id
        if self.invoke_record_status is not None:
            params["InvokeRecordStatus"] = self.invoke_record_status
        if self.include_history:
            params["IncludeHistory"] = "true"
        if self.content_encoding is not None:
            params["ContentEncoding"] = self.content_encoding
        for index, (key, value) in enumerate(self.tags, start=1):
            params[f"Tag.{index}.Key"] = key
            params[f"Tag.{index}.Value"] = value
        return params


# --- parsing ---------------------------------------------------------------------------------
# Plain code on purpose: a refresh parses up to 10,000 records, so no validation framework and
# as few function calls per field as readable code allows.


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
    """An integer field: ints, integral floats and decimal strings; ``None`` otherwise."""
    if type(value) is int:
        return value
    if type(value) is str:
        try:
            return int(value)
        except ValueError:
            return None
    if type(value) is float and value.is_integer():
        return int(value)
    return None


def _count(value: object) -> int:
    """A non-negative counter field (``Repeats``, ``Dropped``): 0 when absent or unusable."""
    if type(value) is int:  # the usual case, without a call
        return value if value > 0 else 0
    number = _integer(value)
    return number if number is not None and number > 0 else 0


_TAG_SETS: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}
_MAX_TAG_SETS = 1024


def _tags(value: object, name: Callable[[object], str]) -> tuple[tuple[str, str], ...]:
    """The record's tags as ``(key, value)`` pairs; one shared tuple per distinct tag set.

    An invocation's tags are the same on each of its records, and a deployment has few tag
    sets: sharing them saves two tuples per record. The cache is bounded (emptied when full)
    and only ever a shortcut, so concurrent refreshes may share it.
    """
    if type(value) is not dict:
        return ()
    items = value.get("Tag")
    if type(items) is dict:
        items = [items]
    elif type(items) is not list or not items:
        return ()
    pairs = []
    for item in items:
        if type(item) is dict:
            key = item.get("TagKey")
            if type(key) is str and key:
                pairs.append((name(key), name(item.get("TagValue"))))
    tags = tuple(pairs)
    shared = _TAG_SETS.get(tags)
    if shared is None:
        if len(_TAG_SETS) >= _MAX_TAG_SETS:
            _TAG_SETS.clear()
        shared = _TAG_SETS[tags] = tags
    return shared


def _time(value: object, memo: dict[str, float | None]) -> float | None:
    """:func:`parse_time` through a per-page memo: records of one invocation share times."""
    if type(value) is not str or not value:
        return None
    if value in memo:
        return memo[value]
    parsed = memo[value] = parse_time(value)
    return parsed


def _id_problem(record: dict[str, object]) -> str | None:
    """Why the record's identity is unusable (missing, empty, not a string, far too long)."""
    for field_name in ("InvokeId", "InstanceId", "ContainerId"):
        value = record.get(field_name)
        if field_name == "ContainerId" and (value is None or value == ""):
            continue
        if type(value) is not str or not value:
            return f"missing or empty {field_name}"
        # Cutting an id would merge distinct results: refuse it instead.
        if len(value) > MAX_NAME_CHARS:
            return f"{field_name} is longer than {MAX_NAME_CHARS} characters"
    return None


def parse_record(
    record: object,
    memo: dict[str, float | None] | None = None,
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
    problem = _id_problem(record)
    if problem is not None:
        return InvalidRecord(name(get("InvokeId")), name(get("InstanceId")), problem)
    if memo is None:
        memo = {}
    # Every string kept is cleaned once and shared (TextCleaner.name): an invocation's id,
    # status and times are on each of its records.
    return InvocationResult(
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
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
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
    memo: dict[str, float | None] = {}
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
