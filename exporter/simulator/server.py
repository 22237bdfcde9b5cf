"""The simulated ECS API: DescribeInvocationResults over real loopback HTTP.

:class:`SimulatorServer` answers as the ECS API does (version 2014-05-26, signature V3):

* requests: ``POST /`` or ``GET /`` with ``x-acs-action``/``x-acs-version`` headers and the
  parameters in the query (a form body is read too); the ACS3-HMAC-SHA256 signature is recomputed
  with the ``SignedHeaders`` the client listed (so both the minimal set and the official SDK's
  all-headers style verify); ``host`` and every ``x-acs-*`` header sent must be signed.
* faults (:mod:`exporter.simulator.faults`) are decided first, from the AccessKeyId and RegionId
  as sent, so one target can fail while another works.
* checks, in order: action and version, ``Authorization`` shape and required headers
  (``IncompleteSignature``), AccessKeyId (``InvalidAccessKeyId.NotFound``), STS token (an
  :class:`Account` with ``sts=True`` needs ``x-acs-security-token``; a permanent key must not
  send one), signature (``SignatureDoesNotMatch``), date within 15 minutes of the API's clock,
  the *wall* clock plus ``clock_offset`` (``InvalidTimeStamp.Expired``), nonce not seen in 15
  minutes (``SignatureNonceUsed``), region (``MissingRegionId``, ``InvalidRegionId.NotFound``),
  then the parameters.
* errors: the API's shape ``{RequestId, HostId, Code, Message, Recommend}`` and status.
* paging: ``MaxResults`` (1-50, default 10) and opaque ``NextToken`` values. A token is a
  *snapshot cursor*: the first page fixes which records the walk covers (the records in view at
  that moment, in the chosen order) and every token of the walk points into that list, so records
  created later never shift pages; records that leave retention meanwhile are skipped; statuses
  are always those at the time of each page. (A test that scripts an invocation *created before*
  a walk's first page while the walk is in progress shifts that walk by its records.) A token is
  bound to the region and filters of its walk, can be replayed (a retried page answers the same
  records) and expires ``token_ttl`` seconds (world clock) after it was issued; an unknown,
  expired or foreign token is ``400 InvalidParameter.NextToken``. The legacy
  ``PageNumber``/``PageSize`` paging works too (no ``NextToken`` then).
* order: ``newest`` (newest invocation first, by creation time: stable while statuses change),
  ``shuffled`` (a random order fixed for each walk) or ``unstable`` (newest first by a coarse key,
  the invocation's creation time, or a history run's start, cut to ``time_resolution``; results
  with equal keys come in a new random order on *every* call, so a walk whose page boundary cuts a
  group of equals can show one of them twice and miss another, as a service that sorts by a
  coarse key and pages by offset does).
* the API's clock: ``clock_offset`` seconds ahead of the world's clock (negative: behind). Times
  in results (``StartTime``, ``FinishedTime``, ``StopTime``) and the ``Date`` header of every
  answer are shown on the API's clock, and the request date is checked against the wall clock
  plus the offset; the world, and so its ground truth, keeps the world's clock.
  ``time_resolution`` cuts shown times down to whole multiples (60: whole minutes).

Everything served is recorded in :attr:`SimulatorServer.served`.
"""

from __future__ import annotations

import calendar
import email.utils
import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from exporter.ecs import signing
from exporter.ecs.models import CONTENT_ENCODINGS
from exporter.simulator.errors import ApiError
from exporter.simulator.faults import (
    ERROR_FAULTS,
    HOSTILE_ERROR_FAULTS,
    HOSTILE_RECORD_FAULTS,
    Fault,
    FaultPlan,
    break_types,
    corrupt,
    hostile_error,
    make_hostile,
)
from exporter.simulator.http import Answer, LoopbackServer, RecordedRequest
from exporter.simulator.paging import Pager
from exporter.simulator.validation import (
    int_param,
    parse_filter,
    parse_query,
    verify_v3_signature,
)
from exporter.simulator.world import TimeView, World

__all__ = [
    "ACTION",
    "API_VERSION",
    "DEFAULT_REGIONS",
    "ORDERS",
    "Account",
    "ApiError",
    "ServedRequest",
    "SimulatorServer",
    "verify_v3_signature",
]

API_VERSION = "2014-05-26"
ACTION = "DescribeInvocationResults"
DEFAULT_REGIONS: tuple[str, ...] = (
    "cn-hangzhou",
    "cn-shanghai",
    "cn-beijing",
    "cn-shenzhen",
    "ap-southeast-1",
    "eu-central-1",
    "us-west-1",
)
DEFAULT_ACCOUNTS: dict[str, str] = {"testid": "testsecret"}
ORDERS = ("newest", "shuffled", "unstable")
MAX_CLOCK_SKEW = 900.0
MAX_RESULTS_LIMIT = 50
DEFAULT_MAX_RESULTS = 10
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Account:
    """A known AccessKey. ``sts``: a temporary key that needs ``x-acs-security-token``
    (any non-empty token, or exactly ``security_token`` when that is set)."""

    secret: str = field(repr=False)
    sts: bool = False
    security_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ServedRequest:
    """One request the server answered (or dropped)."""

    time: float  # wall clock
    action: str
    access_key_id: str
    region_id: str
    params: dict[str, str]
    status: int  # HTTP status; 0 when the connection was dropped
    code: str  # API error Code, "" on success
    results: int  # records in the page
    next_token: str
    fault: str  # fault kind injected, "" when none


class SimulatorServer(LoopbackServer):
    """A loopback HTTP server speaking DescribeInvocationResults; a context manager.

    ``world``: one :class:`World` serving every known region, or a mapping region -> world
    (known regions without a world answer empty pages). ``accounts``: AccessKeyId -> secret or
    :class:`Account` (default ``testid``/``testsecret``). ``regions``: the known regions
    (default: the mapping's keys, else :data:`DEFAULT_REGIONS`).
    """

    def __init__(
        self,
        world: World | Mapping[str, World],
        *,
        accounts: Mapping[str, str | Account] | None = None,
        faults: FaultPlan | None = None,
        order: str = "newest",
        regions: Iterable[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        token_ttl: float = 600.0,
        seed: int = 0,
        clock_offset: float = 0.0,
        time_resolution: float = 1.0,
        wall_clock: Callable[[], float] = time.time,
        max_cursors: int = 4096,
        max_nonces: int = 100_000,
    ) -> None:
        if isinstance(world, World):
            self._worlds: dict[str, World] = {}
            self._default_world: World | None = world
            known = list(regions) if regions is not None else list(DEFAULT_REGIONS)
        else:
            self._worlds = dict(world)
            self._default_world = None
            known = list(regions) if regions is not None else list(self._worlds)
        self.regions: tuple[str, ...] = tuple(known)
        self._empty_world: World | None = None
        self._lock = threading.Lock()
        self._accounts: dict[str, Account] = {}
        for key_id, value in (accounts if accounts is not None else DEFAULT_ACCOUNTS).items():
            self.add_account(key_id, value)
        self.faults = faults if faults is not None else FaultPlan(seed=seed)
        self.order = order
        self._times = TimeView(clock_offset, time_resolution)
        self._wall_clock = wall_clock
        self._served: list[ServedRequest] = []
        self._request_count = 0
        self._pager = Pager(seed=seed, token_ttl=token_ttl, max_cursors=max_cursors)
        self._nonces: OrderedDict[str, float] = OrderedDict()
        self._max_nonces = max_nonces
        super().__init__(host, port)

    @property
    def endpoint(self) -> str:
        """``host:port``, as the official SDK's ``endpoint`` wants it."""
        return self.url.removeprefix("http://")

    # -- configuration ------------------------------------------------------------------------

    def add_account(self, access_key_id: str, secret_or_account: str | Account) -> None:
        account = (
            Account(secret_or_account) if isinstance(secret_or_account, str) else secret_or_account
        )
        with self._lock:
            self._accounts[access_key_id] = account

    def remove_account(self, access_key_id: str) -> None:
        with self._lock:
            self._accounts.pop(access_key_id, None)

    @property
    def token_ttl(self) -> float:
        """NextToken lifetime (world clock seconds); settable."""
        return self._pager.token_ttl

    @token_ttl.setter
    def token_ttl(self, seconds: float) -> None:
        self._pager.token_ttl = seconds

    @property
    def order(self) -> str:
        """The result order (:data:`ORDERS`); a change applies to walks started after it."""
        return self._order

    @order.setter
    def order(self, order: str) -> None:
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}")
        self._order = order

    @property
    def clock_offset(self) -> float:
        """Seconds the API's clock is ahead of the world's (negative: behind); settable."""
        return self._times.offset

    @clock_offset.setter
    def clock_offset(self, seconds: float) -> None:
        self._times = TimeView(seconds, self._times.resolution)

    @property
    def time_resolution(self) -> float:
        """Shown times are whole multiples of this many seconds (default 1); settable."""
        return self._times.resolution

    @time_resolution.setter
    def time_resolution(self, seconds: float) -> None:
        self._times = TimeView(self._times.offset, seconds)

    @property
    def times(self) -> TimeView:
        """How answers show the world's times (offset and resolution together)."""
        return self._times

    def api_now(self, region_id: str = "") -> float:
        """The API's clock for ``region_id``: its world's clock plus :attr:`clock_offset`."""
        world = self._default_world or self._worlds.get(region_id)
        if world is None and self._worlds:
            world = next(iter(self._worlds.values()))
        now = world.now() if world is not None else self._wall_clock()
        return now + self._times.offset

    # -- the record of what was served --------------------------------------------------------

    @property
    def served(self) -> list[ServedRequest]:
        with self._lock:
            return list(self._served)

    @property
    def request_count(self) -> int:
        with self._lock:
            return self._request_count

    def reset_served(self) -> None:
        with self._lock:
            self._served.clear()
            self._request_count = 0

    # -- request handling ---------------------------------------------------------------------

    def answer(self, request: RecordedRequest) -> Answer:
        return self.handle(request.method, request.target, request.headers, request.body)

    def handle(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> Answer:
        """Answer one HTTP request (also usable without a socket)."""
        parts = urlsplit(target)
        path = parts.path or "/"
        params = parse_query(parts.query)
        lower = {name.lower(): value for name, value in headers}
        if body and "application/x-www-form-urlencoded" in lower.get("content-type", ""):
            for key, value in parse_query(body.decode("utf-8", "replace")).items():
                params.setdefault(key, value)
        auth = signing.parse_authorization(lower.get("authorization", ""))
        access_key_id = auth[0] if auth else ""
        region_id = params.get("RegionId", "")
        action = lower.get("x-acs-action", "")
        request_id = str(uuid.uuid4()).upper()
        host_id = lower.get("host", "") or f"ecs.{region_id or 'cn-hangzhou'}.aliyuncs.com"

        page, has_token = self._page_asked(params)
        fault = self.faults.choose(access_key_id, region_id, page=page, has_token=has_token)
        fault_kind = fault.kind if fault else ""
        date = self.api_now(region_id)
        entry = {
            "action": action,
            "access_key_id": access_key_id,
            "region_id": region_id,
            "params": params,
            "fault": fault_kind,
        }
        if fault is not None and fault.kind == "drop_connection":
            self._record(entry, 0, "", 0, "")
            return Answer(0, {}, b"", drop=True)
        if fault is not None and fault.kind in ERROR_FAULTS:
            status, code, message = ERROR_FAULTS[fault.kind]
            extra = {}
            if fault.kind == "throttling_api" and fault.retry_after_ms is not None:
                extra["x-acs-retry-after"] = str(fault.retry_after_ms)
            self._record(entry, status, code, 0, "")
            return self._error_answer(
                ApiError(status, code, message), request_id, host_id, date, extra
            )
        if fault is not None and fault.kind in HOSTILE_ERROR_FAULTS:
            status, code, message, echoed_id = hostile_error(
                fault.kind, lower.get("x-acs-security-token", "")
            )
            self._record(entry, status, code, 0, "")
            return self._error_answer(
                ApiError(status, code, message),
                echoed_id or request_id,
                echoed_id or host_id,
                date,
            )
        delay = self.faults.latency + (fault.delay if fault and fault.kind == "slow" else 0.0)
        if delay > 0:
            time.sleep(delay)

        try:
            self._check_request(method, path, action, lower)
            self._check_signature(method, path, params, headers, body, lower, auth)
            world = self._world_for(region_id)
            answer, results, next_token = self._describe(
                world, params, request_id, fault, access_key_id
            )
        except ApiError as exc:
            self._record(entry, exc.status, exc.code, 0, "")
            answer = self._error_answer(exc, request_id, host_id, date)
            if fault is not None and fault.kind in ("malformed_json", "truncated_body"):
                answer = corrupt(answer, fault)
            return answer
        self._record(entry, 200, "", results, next_token)
        return answer._replace(headers={**answer.headers, "Date": _http_date(date)})

    def _page_asked(self, params: Mapping[str, str]) -> tuple[int, bool]:
        """The page of its walk a request asks for, and whether it carries a NextToken."""
        token = params.get("NextToken", "")
        if token:
            return self._pager.page_of(token), True
        number = params.get("PageNumber", "")
        if number.isdigit() and "MaxResults" not in params:
            return max(1, int(number)), False
        return 1, False

    def _record(
        self, entry: dict[str, Any], status: int, code: str, results: int, next_token: str
    ) -> None:
        served = ServedRequest(
            time=self._wall_clock(),
            status=status,
            code=code,
            results=results,
            next_token=next_token,
            **entry,
        )
        with self._lock:
            self._served.append(served)
            self._request_count += 1

    @staticmethod
    def _error_answer(
        exc: ApiError,
        request_id: str,
        host_id: str,
        date: float,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Answer:
        body = {
            "RequestId": request_id,
            "HostId": host_id,
            "Code": exc.code,
            "Message": exc.message,
            "Recommend": f"https://api.aliyun.com/troubleshoot?q={exc.code}&product=Ecs",
        }
        headers = {
            "Content-Type": "application/json;charset=utf-8",
            "x-acs-request-id": request_id,
            "Date": _http_date(date),
            **(extra_headers or {}),
        }
        return Answer(exc.status, headers, json.dumps(body).encode())

    # -- checks -------------------------------------------------------------------------------

    def _check_request(self, method: str, path: str, action: str, lower: Mapping[str, str]) -> None:
        if method not in ("GET", "POST") or path != "/":
            raise ApiError(404, "InvalidAction.NotFound", "Specified api is not found.")
        if not action:
            if "authorization" not in lower:
                raise ApiError(
                    400,
                    "IncompleteSignature",
                    "The request signature does not conform to Aliyun standards: this server "
                    "speaks signature V3 only (x-acs-action and Authorization headers).",
                )
            raise ApiError(400, "MissingParameter.Action", "The x-acs-action header is missing.")
        if action != ACTION:
            raise ApiError(400, "InvalidAction.NotFound", f"Specified api {action} is not found.")
        version = lower.get("x-acs-version", "")
        if version != API_VERSION:
            raise ApiError(
                400,
                "InvalidVersion",
                f"Specified parameter Version {version!r} is not valid (expected {API_VERSION}).",
            )

    def _check_signature(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        headers: list[tuple[str, str]],
        body: bytes,
        lower: Mapping[str, str],
        auth: tuple[str, list[str], str] | None,
    ) -> None:
        if auth is None:
            raise ApiError(
                400,
                "IncompleteSignature",
                "The request signature does not conform to Aliyun standards: the Authorization "
                "header is missing or not ACS3-HMAC-SHA256.",
            )
        with self._lock:
            account = self._accounts.get(auth[0])
        verify_v3_signature(
            method, path, params, headers, body, auth, None if account is None else account.secret
        )
        assert account is not None  # verify_v3_signature refuses an unknown key
        token = lower.get("x-acs-security-token", "")
        if account.sts and not token:
            raise ApiError(
                400,
                "InvalidSecurityToken.MissingParameter",
                "The security token of a temporary AccessKey is missing.",
            )
        if account.sts and account.security_token is not None and token != account.security_token:
            raise ApiError(
                400, "InvalidSecurityToken.Mismatch", "Specified security token is not valid."
            )
        if token and not account.sts:
            raise ApiError(
                400,
                "InvalidSecurityToken.Malformed",
                "A security token was sent with a permanent AccessKey.",
            )
        self._check_freshness(lower)

    def _check_freshness(self, lower: Mapping[str, str]) -> None:
        """The date is within 15 minutes of the wall clock; the nonce is new."""
        stamp = lower.get("x-acs-date", "")
        try:
            when = calendar.timegm(time.strptime(stamp, _TIME_FORMAT))
        except ValueError:
            raise ApiError(
                400,
                "InvalidTimeStamp.Format",
                f"Specified time stamp {stamp!r} is not in the format YYYY-MM-DDThh:mm:ssZ.",
            ) from None
        now = self._wall_clock() + self._times.offset  # the API's clock
        if abs(now - when) > MAX_CLOCK_SKEW:
            raise ApiError(
                400,
                "InvalidTimeStamp.Expired",
                "Specified time stamp or date value is expired (more than 15 minutes from the "
                "server's clock).",
            )
        nonce = lower["x-acs-signature-nonce"]
        with self._lock:
            while self._nonces and (
                len(self._nonces) >= self._max_nonces
                or next(iter(self._nonces.values())) < now - MAX_CLOCK_SKEW
            ):
                self._nonces.popitem(last=False)
            if nonce in self._nonces:
                raise ApiError(
                    400, "SignatureNonceUsed", "Specified signature nonce was used already."
                )
            self._nonces[nonce] = now

    def _world_for(self, region_id: str) -> World:
        if not region_id:
            raise ApiError(400, "MissingRegionId", "RegionId is mandatory for this action.")
        if region_id not in self.regions:
            raise ApiError(
                404,
                "InvalidRegionId.NotFound",
                "The RegionId provided does not exist in our records.",
            )
        if self._default_world is not None:
            return self._default_world
        world = self._worlds.get(region_id)
        if world is None:
            with self._lock:
                if self._empty_world is None:
                    self._empty_world = World(0, spec=None)
                world = self._empty_world
        return world

    # -- DescribeInvocationResults ------------------------------------------------------------

    def _describe(
        self,
        world: World,
        params: Mapping[str, str],
        request_id: str,
        fault: Fault | None,
        access_key_id: str,
    ) -> tuple[Answer, int, str]:
        record_filter = parse_filter(params)
        encoding = params.get("ContentEncoding", "Base64") or "Base64"
        if encoding not in CONTENT_ENCODINGS:
            raise ApiError(
                400,
                "InvalidParameter.ContentEncoding",
                "The specified parameter ContentEncoding is not valid.",
            )
        legacy = ("PageNumber" in params or "PageSize" in params) and not (
            "MaxResults" in params or "NextToken" in params
        )
        with world.lock:
            now = world.sync()
            if record_filter.include_history:
                assert record_filter.invoke_id is not None
                if world.is_periodic(record_filter.invoke_id) is False:
                    raise ApiError(
                        400,
                        "InvalidParameter",
                        "IncludeHistory=true needs the InvokeId of a periodic (Period or "
                        "EveryReboot) invocation.",
                    )
            fingerprint = (id(world), record_filter, self.order)
            if legacy:
                page_number = int_param(params, "PageNumber", 1, "InvalidParam.PageNumber", 1, None)
                max_results = int_param(params, "PageSize", 10, "InvalidParam.PageSize", 1, 50)
                walk = self._pager.start(
                    world, fingerprint, record_filter, now, self.order, self._times.resolution
                )
                offset = (page_number - 1) * max_results
            else:
                max_results = int_param(
                    params,
                    "MaxResults",
                    DEFAULT_MAX_RESULTS,
                    "InvalidParameter.MaxResults",
                    1,
                    MAX_RESULTS_LIMIT,
                )
                token = params.get("NextToken", "")
                walk_page = 1
                if token and fault is not None and fault.kind == "invalid_next_token":
                    self._pager.forget(token)  # refused for good: a replay fails too
                    raise ApiError(
                        400,
                        "InvalidParameter.NextToken",
                        "The specified parameter NextToken is not valid.",
                    )
                if token:
                    walk, offset, walk_page = self._pager.resume(token, fingerprint, now)
                else:
                    offset = 0
                    walk = self._pager.start(
                        world, fingerprint, record_filter, now, self.order, self._times.resolution
                    )
                page_number = offset // max_results + 1
            refs, total = self._pager.page(world, walk, offset, max_results, now)
            next_token = ""
            if not legacy and fault is not None and fault.kind == "empty_page":
                refs, next_token = [], self._pager.issue(walk, offset, now, walk_page)
            elif not legacy and offset + max_results < total:
                next_token = self._pager.issue(walk, offset + max_results, now, walk_page + 1)
            times = self._times
            if fault is not None and fault.kind in ("wrong_types", *HOSTILE_RECORD_FAULTS):
                records = [world.render(ref, now, encoding, times) for ref in refs]
                if fault.kind == "wrong_types":
                    break_types(records)
                else:
                    make_hostile(records, fault.kind)
                items = [json.dumps(r, separators=(",", ":")) for r in records]
            else:
                items = [world.render_json(ref, now, encoding, times) for ref in refs]
        head = json.dumps(
            {
                "RequestId": request_id,
                "Invocation": {
                    "PageSize": max_results,
                    "PageNumber": page_number,
                    "TotalCount": total,
                    "NextToken": next_token,
                },
            },
            separators=(",", ":"),
        )
        # Splice the cached record texts in: '{"RequestId":..,"Invocation":{...}}'.
        body = (
            head[:-2] + ',"InvocationResults":{"InvocationResult":[' + ",".join(items) + "]}}}"
        ).encode()
        answer = Answer(
            200,
            {"Content-Type": "application/json;charset=utf-8", "x-acs-request-id": request_id},
            body,
        )
        if fault is not None and fault.kind in ("malformed_json", "truncated_body"):
            answer = corrupt(answer, fault)
        return answer, len(refs), next_token


def _http_date(epoch: float) -> str:
    """The ``Date`` header value for ``epoch``."""
    return email.utils.formatdate(epoch, usegmt=True)
