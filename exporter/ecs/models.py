"""The data the API returns, as the exporter keeps it, and the query it sends.

Enumerations are the documented values of the API reference (DescribeInvocationResults, 2014-05-26).
The API may add values; code that reads a record keeps unknown values as they are.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from exporter.ecs.errors import InvalidRequestError

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
MAX_CLOCK_SKEW_SECONDS = 900.0
"""How far the API's clock can be from the caller's when it answers: it refuses a request dated
more than 15 minutes off (``InvalidTimeStamp.Expired``). A time further ahead of the API's clock
than this is a bad record, not a clock reading."""
MAX_INTEGER = 2**63 - 1
"""The largest integer kept from an answer (``ExitCode``, ``Repeats``, ``Dropped``): the API's
64-bit Long, and what the saved state can hold. Beyond it (or below its negative) a value is
taken as absent."""
MAX_TAGS = 20
MAX_TAG_KEY_CHARS = 64
MAX_TAG_VALUE_CHARS = 128
_RESERVED_TAG_KEY_PREFIXES = ("aliyun", "acs:")


class ResultExtras(msgspec.Struct, frozen=True, gc=False):
    """The fields of an :class:`InvocationResult` that most records leave empty, kept apart
    (one shared object, or none at all) so that most records are smaller."""

    stop_time: float | None = None
    dropped: int = 0
    oss_output_status: str = ""
    oss_output_error_code: str = ""
    tags: tuple[tuple[str, str], ...] = ()


NO_EXTRAS = ResultExtras()
"""What a record without extras (``extras`` None) shows: every field empty."""


class RunState(msgspec.Struct, frozen=True, gc=False):
    """The fields of an :class:`InvocationResult` that say where its run stands. Records have
    few distinct ones between them (most: ``Success``, ``Finished``, no error, exit code 0, one
    run), so each is one object shared by all the records that show it (:func:`run_state`)."""

    invocation_status: str
    invoke_record_status: str
    error_code: str
    exit_code: int | None
    repeats: int


MAX_SHARED_STATES: Final = 4096
"""Distinct :class:`RunState` values :func:`run_state` remembers; when one more comes it starts
afresh (those already shared stay shared), so exit codes and ``Repeats`` of periodic tasks,
without bound, cannot grow it."""
_SHARED_STATES: dict[tuple[str, str, str, int | None, int], RunState] = {}


def run_state(
    invocation_status: str,
    invoke_record_status: str,
    error_code: str,
    exit_code: int | None,
    repeats: int,
) -> RunState:
    """The :class:`RunState` of these values: one object shared by every record of the process
    that shows them. Safe from any thread: at worst two equal objects are both kept."""
    # Looked up by a tuple (cheaper to hash than a RunState); made only when new.
    values = (invocation_status, invoke_record_status, error_code, exit_code, repeats)
    found = _SHARED_STATES.get(values)
    if found is None:
        if len(_SHARED_STATES) >= MAX_SHARED_STATES:
            _SHARED_STATES.clear()
        found = _SHARED_STATES[values] = RunState(*values)
    return found


class InvocationResult(msgspec.Struct, frozen=True, gc=False):
    """One execution result on one instance (or container), as the exporter keeps it.

    Strings are the API values ("" when absent) made safe for any surface by
    :class:`exporter.ecs.untrusted.TextCleaner` (printable, at most 256 characters, secrets
    redacted); unknown enum values are kept as they are.
    Times are epoch seconds (UTC) or ``None``. ``Output`` is never kept. Values repeated across
    records (ids, statuses, codes, times and tags of one invocation) are shared, not copied.

    Immutable, compared and hashed by value. Build one with :meth:`of` (every field by name),
    copy one with changes with :meth:`replace`; every field is read by its name. Its layout is
    for memory: a tracker holds one per result (300,000 in a process of 300 targets of 1,000),
    so, 64 bytes a record instead of 144:

    * the ids are one tuple, :attr:`key`, which the tracker's view also uses as its key (a
      tuple built for the view would cost 64 bytes more per result);
    * statuses, error code, exit code and ``Repeats`` are one :class:`RunState`, shared by
      every record that shows the same (a few objects in all);
    * the fields most records leave empty (stop time, dropped bytes, OSS delivery, tags) are one
      :class:`ResultExtras`, ``None`` when all are empty.

    A ``msgspec.Struct`` rather than a frozen dataclass: a refresh builds up to 10,000 of them,
    and a frozen dataclass costs about 20 times as much to build (each field set through
    ``object.__setattr__``). Not tracked by the garbage collector (``gc=False``: it holds only
    strings, numbers, tuples of them and its :class:`RunState` and :class:`ResultExtras`, which
    hold nothing else, so it can never be part of a cycle), which makes it smaller and
    collections shorter.
    """

    key: tuple[str, str, str]
    """Identity of the result: ``(invoke_id, instance_id, container_id)``."""
    command_id: str
    state: RunState
    start_time: float | None
    finished_time: float | None
    extras: ResultExtras | None = None

    @classmethod
    def of(
        cls,
        invoke_id: str,
        instance_id: str,
        container_id: str,
        command_id: str,
        invocation_status: str,
        invoke_record_status: str,
        error_code: str,
        exit_code: int | None,
        start_time: float | None,
        finished_time: float | None,
        stop_time: float | None,
        repeats: int,
        dropped: int,
        oss_output_status: str,
        oss_output_error_code: str,
        tags: tuple[tuple[str, str], ...],
    ) -> InvocationResult:
        """A record from every field (the order of the API reference)."""
        extras = None
        if stop_time is not None or dropped or oss_output_status or oss_output_error_code or tags:
            extras = ResultExtras(
                stop_time, dropped, oss_output_status, oss_output_error_code, tags
            )
        state = run_state(invocation_status, invoke_record_status, error_code, exit_code, repeats)
        return cls(
            (invoke_id, instance_id, container_id),
            command_id,
            state,
            start_time,
            finished_time,
            extras,
        )

    def replace(self, **changes: Any) -> InvocationResult:
        """A copy with ``changes`` (any field :meth:`of` takes, by name)."""
        fields = {name: getattr(self, name) for name in _FIELDS}
        unknown = changes.keys() - fields.keys()
        if unknown:
            raise TypeError(f"unknown fields: {', '.join(sorted(unknown))}")
        return InvocationResult.of(**{**fields, **changes})

    @property
    def invoke_id(self) -> str:
        return self.key[0]

    @property
    def instance_id(self) -> str:
        return self.key[1]

    @property
    def container_id(self) -> str:
        return self.key[2]

    @property
    def invocation_status(self) -> str:
        return self.state.invocation_status

    @property
    def invoke_record_status(self) -> str:
        return self.state.invoke_record_status

    @property
    def error_code(self) -> str:
        return self.state.error_code

    @property
    def exit_code(self) -> int | None:
        return self.state.exit_code

    @property
    def repeats(self) -> int:
        return self.state.repeats

    @property
    def stop_time(self) -> float | None:
        return (self.extras or NO_EXTRAS).stop_time

    @property
    def dropped(self) -> int:
        return (self.extras or NO_EXTRAS).dropped

    @property
    def oss_output_status(self) -> str:
        return (self.extras or NO_EXTRAS).oss_output_status

    @property
    def oss_output_error_code(self) -> str:
        return (self.extras or NO_EXTRAS).oss_output_error_code

    @property
    def tags(self) -> tuple[tuple[str, str], ...]:
        return (self.extras or NO_EXTRAS).tags


_FIELDS = tuple(inspect.signature(InvocationResult.of).parameters)


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
    restarted: bool = False
    """The first page after the service refused a ``NextToken``: the walk started over from
    the first page (see :meth:`exporter.ecs.client.EcsClient.iter_pages`)."""


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
