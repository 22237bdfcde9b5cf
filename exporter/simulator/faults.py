"""Fault injection for the simulated ECS API.

A :class:`FaultPlan` is a list of :class:`FaultRule` objects, checked in order for every request
(after the request's AccessKeyId has been read, before anything else is checked). The first rule
that applies decides the fault of that request. A rule applies

* to the next ``count`` requests it matches (then it is spent), or to each matching request with
  ``probability`` (seeded: the same plan and the same request sequence give the same faults), or
  to every matching request when neither is given;
* only to requests signed with ``access_key_id`` / for ``region_id`` when those are set (so one
  target fails while another works);
* only to requests for page ``page`` of a walk when that is set (page 1 is the request without a
  ``NextToken``; page N the one whose token the answer of page N-1 gave; with the legacy paging,
  ``PageNumber``). ``invalid_next_token`` applies only to requests that carry a ``NextToken``.

Sustained throttling is a throttling rule with a probability: ``throttling_user,p=0.4`` refuses
about 40% of the calls without ``x-acs-retry-after``, ``throttling_api,p=0.3,retry_after=2000``
with it (``retry_after=none``: a 429 without the header).

The plan can be changed while the server runs (every method takes the plan's lock). ``latency``
adds a delay to every answered request (per page, for realistic benchmarks), on top of any
``slow`` fault.

Fault kinds (:data:`FAULT_KINDS`, which can fail any request, and :data:`TOKEN_FAULT_KINDS`,
which only apply to requests that carry a ``NextToken``; :data:`ALL_FAULT_KINDS` is both):

====================  ==========================================================================
``throttling_user``   400 ``Throttling.User``
``throttling_api``    429 ``Throttling.Api`` with ``x-acs-retry-after`` (milliseconds; none when
                      ``retry_after`` is None)
``internal_error``    500 ``InternalError``
``service_unavailable`` 503 ``ServiceUnavailable``
``slow``              the normal answer, after ``delay`` seconds
``drop_connection``   the connection is closed without an answer
``malformed_json``    200 with a body that is not JSON
``truncated_body``    200 whose ``Content-Length`` is larger than what is sent, then close
``wrong_types``       200 with wrong field types: ExitCode as a string, Repeats null, Dropped a
                      string, and the first record's InvokeId a number and InstanceId null
``invalid_next_token`` 400 ``InvalidParameter.NextToken`` for a valid token (after the signature
                      checks), as for an expired one; the token is forgotten, so a replay of it
                      is refused too and the walk must start again from page 1
``surrogate_records`` 200 whose records carry a lone UTF-16 surrogate (the JSON escape
                      ``\\ud800``): in turn the ErrorCode, the InvocationStatus and the
                      OssOutputStatus of a record (a record given a bad code is shown failed)
``surrogate_error``   400 whose Code and Message carry a lone UTF-16 surrogate
``huge_records``      200 whose records (up to 20 per answer) each carry a distinct 500 KB
                      ErrorCode and are shown failed
``long_error_code``   400 whose Code is 300 characters long
``echo_token``        400 that echoes the request's ``x-acs-security-token`` in its Code,
                      RequestId, HostId and Message (as a careless proxy might)
``empty_page``        200 without a record but with a new ``NextToken`` to the same page (as a
                      service that filters a page after cutting it might answer): the records
                      come with the next call (``PageNumber`` paging answers normally)
====================  ==========================================================================

The last five are *hostile answers*: whatever the API sends is untrusted, and these are what a
buggy or malicious endpoint could send (see :data:`HOSTILE_RECORD_FAULTS` and
:func:`hostile_error`).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any

from exporter.simulator.http import Answer

FAULT_KINDS: tuple[str, ...] = (
    "throttling_user",
    "throttling_api",
    "internal_error",
    "service_unavailable",
    "slow",
    "drop_connection",
    "malformed_json",
    "truncated_body",
    "wrong_types",
    "surrogate_records",
    "surrogate_error",
    "huge_records",
    "long_error_code",
    "echo_token",
    "empty_page",
)
TOKEN_FAULT_KINDS: tuple[str, ...] = ("invalid_next_token",)
ALL_FAULT_KINDS: tuple[str, ...] = FAULT_KINDS + TOKEN_FAULT_KINDS

# kind -> (HTTP status, Code, Message) for the faults that are API error answers.
ERROR_FAULTS: dict[str, tuple[int, str, str]] = {
    "throttling_user": (400, "Throttling.User", "Request was denied due to user flow control."),
    "throttling_api": (429, "Throttling.Api", "Request was denied due to api flow control."),
    "internal_error": (
        500,
        "InternalError",
        "The request processing has failed due to some unknown error.",
    ),
    "service_unavailable": (
        503,
        "ServiceUnavailable",
        "The request has failed due to a temporary failure of the server.",
    ),
}

# The hostile faults: record faults change the records of a 200 answer, error faults answer 400.
HOSTILE_RECORD_FAULTS: tuple[str, ...] = ("surrogate_records", "huge_records")
HOSTILE_ERROR_FAULTS: tuple[str, ...] = ("surrogate_error", "long_error_code", "echo_token")
LONE_SURROGATE = "\ud800"  # json.dumps writes it as the escape "\ud800": not valid Unicode
HUGE_VALUE_CHARS = 500_000
HUGE_RECORDS_PER_ANSWER = 20
LONG_CODE_CHARS = 300


@dataclass
class FaultRule:
    """One fault and when it applies (see the module docstring)."""

    kind: str
    count: int | None = None
    probability: float | None = None
    access_key_id: str | None = None
    region_id: str | None = None
    retry_after_ms: int | None = 1500  # throttling_api: x-acs-retry-after (None: no header)
    delay: float = 1.0  # slow: seconds
    page: int | None = None  # only this page of a walk (1: the request without a NextToken)
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.kind not in ALL_FAULT_KINDS:
            known = ", ".join(ALL_FAULT_KINDS)
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {known}")
        if self.count is not None and self.count < 0:
            raise ValueError("count must not be negative")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        if self.delay < 0 or (self.retry_after_ms is not None and self.retry_after_ms < 0):
            raise ValueError("delay and retry_after must not be negative")
        if self.page is not None and self.page < 1:
            raise ValueError("page must be at least 1")
        if self.kind == "invalid_next_token" and self.page == 1:
            raise ValueError("invalid_next_token needs page 2 or later (page 1 has no token)")

    @property
    def spent(self) -> bool:
        return self.count is not None and self.fired >= self.count


@dataclass(frozen=True)
class Fault:
    """The fault chosen for one request."""

    kind: str
    retry_after_ms: int | None = 1500
    delay: float = 0.0


class FaultPlan:
    """Rules checked in order; thread-safe; changeable at runtime."""

    def __init__(
        self, rules: list[FaultRule] | None = None, *, seed: int = 0, latency: float = 0.0
    ) -> None:
        self._rules: list[FaultRule] = list(rules or [])
        self._rng = random.Random(f"faults/{seed}")
        self._lock = threading.Lock()
        self.latency = latency

    @property
    def latency(self) -> float:
        """Seconds added to every answered request (0: none)."""
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("latency must not be negative")
        self._latency = seconds

    def add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def next(
        self,
        kind: str,
        count: int = 1,
        *,
        access_key_id: str | None = None,
        region_id: str | None = None,
        page: int | None = None,
        retry_after_ms: int | None = 1500,
        delay: float = 1.0,
    ) -> FaultRule:
        """Fail the next ``count`` matching requests with ``kind``.

        ``page``: see the module docstring (``next("invalid_next_token", page=3)`` refuses the
        token of page 3 once); ``retry_after_ms``: None sends no header.
        """
        return self.add(
            FaultRule(
                kind,
                count=count,
                access_key_id=access_key_id,
                region_id=region_id,
                retry_after_ms=retry_after_ms,
                delay=delay,
                page=page,
            )
        )

    def always(
        self,
        kind: str,
        probability: float | None = None,
        *,
        access_key_id: str | None = None,
        region_id: str | None = None,
        page: int | None = None,
        retry_after_ms: int | None = 1500,
        delay: float = 1.0,
    ) -> FaultRule:
        """Fail every matching request (or each with ``probability``) with ``kind``.

        ``always("throttling_user", 0.4)`` is sustained throttling; ``always("invalid_next_token",
        page=3)`` refuses every walk's token of page 3.
        """
        return self.add(
            FaultRule(
                kind,
                probability=probability,
                access_key_id=access_key_id,
                region_id=region_id,
                retry_after_ms=retry_after_ms,
                delay=delay,
                page=page,
            )
        )

    def remove(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules = [r for r in self._rules if r is not rule]

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def choose(
        self, access_key_id: str, region_id: str, *, page: int = 1, has_token: bool = False
    ) -> Fault | None:
        """Decide the fault of one request (None: answer normally) and spend counted rules.

        ``page``: the page of its walk the request asks for; ``has_token``: it carries a
        ``NextToken``.
        """
        with self._lock:
            for rule in self._rules:
                if rule.spent:
                    continue
                if rule.access_key_id is not None and rule.access_key_id != access_key_id:
                    continue
                if rule.region_id is not None and rule.region_id != region_id:
                    continue
                if rule.page is not None and rule.page != page:
                    continue
                if rule.kind in TOKEN_FAULT_KINDS and not has_token:
                    continue
                if rule.probability is not None and self._rng.random() >= rule.probability:
                    continue
                rule.fired += 1
                return Fault(rule.kind, rule.retry_after_ms, rule.delay)
            self._rules = [r for r in self._rules if not r.spent]
            return None


def parse_fault_rule(text: str) -> FaultRule:
    """Parse ``KIND[,key=value...]`` (keys: ``n``, ``p``, ``key``, ``region``, ``page``,
    ``retry_after`` in ms or ``none``, ``delay`` in s), e.g.
    ``throttling_api,p=0.1,retry_after=2000`` or ``invalid_next_token,page=3,n=1``.

    Raises ``ValueError`` with a message fit for a command line.
    """
    kind, *pairs = [part.strip() for part in text.split(",")]
    rule = FaultRule(kind)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"fault option {pair!r} is not key=value")
        try:
            if key == "n":
                rule.count = int(value)
            elif key == "p":
                rule.probability = float(value)
            elif key == "key":
                rule.access_key_id = value
            elif key == "region":
                rule.region_id = value
            elif key == "page":
                rule.page = int(value)
            elif key == "retry_after":
                rule.retry_after_ms = None if value == "none" else int(value)
            elif key == "delay":
                rule.delay = float(value)
            else:
                raise ValueError(
                    f"unknown fault option {key!r} (n, p, key, region, page, retry_after, delay)"
                )
        except ValueError as exc:
            if "fault option" in str(exc):
                raise
            raise ValueError(f"fault option {key}={value!r} is not a number") from None
    FaultRule.__post_init__(rule)
    return rule


def break_types(records: list[dict[str, Any]]) -> None:
    """The ``wrong_types`` fault: fields with the wrong JSON types."""
    for record in records:
        record["ExitCode"] = str(record["ExitCode"])
        record["Repeats"] = None
        record["Dropped"] = str(record["Dropped"])
    if records:
        records[0]["InvokeId"] = 12345
        records[0]["InstanceId"] = None


def _show_failed(record: dict[str, Any], error_code: str) -> None:
    """Show ``record`` as a finished, failed run with ``error_code`` (so the code is counted)."""
    record["InvocationStatus"] = "Failed"
    record["ErrorCode"] = error_code
    if not record.get("FinishedTime"):
        record["FinishedTime"] = record.get("StartTime") or "2020-01-01T00:00:00Z"


def make_hostile(records: list[dict[str, Any]], kind: str) -> None:
    """The record faults of :data:`HOSTILE_RECORD_FAULTS`, applied to one answer's records."""
    if kind == "surrogate_records":
        for index, record in enumerate(records):
            if index % 3 == 0:
                _show_failed(record, f"Bad{LONE_SURROGATE}Code")
            elif index % 3 == 1:
                record["InvocationStatus"] = f"Odd{LONE_SURROGATE}Status"
            else:
                record["OssOutputStatus"] = f"Odd{LONE_SURROGATE}Delivery"
    elif kind == "huge_records":
        for record in records[:HUGE_RECORDS_PER_ANSWER]:
            # Distinct per record and the same on every answer: 20 records, 20 label values.
            head = f"Huge.{record.get('InvokeId')}.{record.get('InstanceId')}."
            _show_failed(record, head + "X" * (HUGE_VALUE_CHARS - len(head)))
    else:
        raise ValueError(f"{kind!r} is not a hostile record fault")


def hostile_error(kind: str, security_token: str) -> tuple[int, str, str, str | None]:
    """``(status, Code, Message, RequestId or None)`` of a :data:`HOSTILE_ERROR_FAULTS` answer.

    ``security_token``: the ``x-acs-security-token`` the request carried (``echo_token``).
    """
    if kind == "surrogate_error":
        return 400, f"Invalid{LONE_SURROGATE}Parameter", f"bad {LONE_SURROGATE} request", None
    if kind == "long_error_code":
        code = "InvalidParameter." + "Long" * LONG_CODE_CHARS
        return 400, code[:LONG_CODE_CHARS], "The error code is very long.", None
    if kind == "echo_token":
        token = security_token or "no-token-sent"
        return (
            400,
            f"InvalidSecurityToken.{token}",
            f"The security token {token} is not valid.",
            token,
        )
    raise ValueError(f"{kind!r} is not a hostile error fault")


def corrupt(answer: Answer, fault: Fault) -> Answer:
    """``answer`` as the ``malformed_json`` or ``truncated_body`` fault sends it."""
    if fault.kind == "malformed_json":
        garbled = b'{"RequestId": "' + answer.body[:40] + b"<html>502 Bad Gateway</html>"
        return answer._replace(body=garbled)
    return answer._replace(truncate=True)
