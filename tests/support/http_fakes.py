"""Fake HTTP services for the tests, on the simulator's loopback layer
(:mod:`exporter.simulator.http`): answer builders, signature checks, and fakes of the ECS
instance metadata service (IMDSv2) and of STS for the credential tests.

Every fake is a :class:`RecordingServer`: it listens on a loopback port (``port=0`` picks a free
one) from the moment it is made, is a context manager, and ``.requests`` records what it was sent.

What they imitate:

* :class:`FakeMetadataServer`: ``PUT /latest/api/token`` with
  ``X-aliyun-ecs-metadata-token-ttl-seconds`` (1-21600) hands out a session token;
  ``GET /latest/meta-data/ram/security-credentials/`` lists the instance's RAM role and
  ``GET .../<role>`` answers ``{AccessKeyId, AccessKeySecret, SecurityToken, Expiration,
  LastUpdated, Code: "Success"}``; a GET without a valid token gets 401 (IMDSv2 enforced).
* :class:`FakeStsServer`: ``AssumeRole`` (V3-signed: the signature, the STS token of temporary
  keys, the date and the nonce are checked) and ``AssumeRoleWithOIDC`` (anonymous; parameters in
  the query or a form body); answers ``{RequestId, AssumedRoleUser, Credentials: {AccessKeyId,
  AccessKeySecret, SecurityToken, Expiration}}`` or an error ``{RequestId, HostId, Code,
  Message}``. Credentials it issues can in turn sign AssumeRole (role chaining).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

from exporter.ecs import signing
from exporter.simulator.errors import ApiError
from exporter.simulator.http import Answer, LoopbackServer, RecordedRequest
from exporter.simulator.validation import verify_v3_signature

__all__ = [
    "Answer",
    "FakeMetadataServer",
    "FakeStsServer",
    "IssuedCredentials",
    "RecordedRequest",
    "RecordingServer",
    "check_v3_date",
    "check_v3_signature",
    "error_answer",
    "json_answer",
]

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_MAX_CLOCK_SKEW = timedelta(minutes=15)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def json_answer(status: int, data: object, headers: Mapping[str, str] | None = None) -> Answer:
    """An answer with a JSON body."""
    return Answer(
        status,
        {"Content-Type": "application/json", **(headers or {})},
        json.dumps(data).encode(),
    )


def error_answer(status: int, code: str, message: str, host_id: str = "") -> Answer:
    """An Alibaba Cloud error answer ``{RequestId, HostId, Code, Message, Recommend}``."""
    return json_answer(
        status,
        {
            "RequestId": str(uuid.uuid4()).upper(),
            "HostId": host_id,
            "Code": code,
            "Message": message,
            "Recommend": f"https://api.aliyun.com/troubleshoot?q={code}",
        },
    )


def check_v3_signature(
    method: str,
    raw_query: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    secret_for: Callable[[str], str | None],
) -> tuple[int, str, str] | None:
    """Verify an ACS3-HMAC-SHA256 request with the ECS simulator's own verifier.

    Returns ``None`` when it verifies, else ``(http_status, code, message)``. The query is decoded
    the way servers do (``+`` is a space), so a client that sends anything but the signed
    canonical string fails here.
    """
    items = list(headers)
    lookup = {k.lower(): v for k, v in items}
    parsed = signing.parse_authorization(lookup.get("authorization", ""))
    if parsed is None:
        return 400, "IncompleteSignature", "The request signature does not conform to standards."
    query = dict(parse_qsl(raw_query, keep_blank_values=True))
    try:
        verify_v3_signature(method, "/", query, items, body, parsed, secret_for(parsed[0]))
    except ApiError as exc:
        return exc.status, exc.code, exc.message
    return None


def check_v3_date(value: str | None, now: datetime) -> tuple[int, str, str] | None:
    """Check ``x-acs-date`` (``%Y-%m-%dT%H:%M:%SZ``, within 15 minutes of ``now``)."""
    try:
        when = datetime.strptime(value or "", _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return (
            400,
            "InvalidTimeStamp.Format",
            "Specified time stamp or date value is not well formatted.",
        )
    if abs(when - now) > _MAX_CLOCK_SKEW:
        return 400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired."
    return None


class RecordingServer(LoopbackServer):
    """A fake service that records every request and serves from the moment it is made.

    Subclasses implement :meth:`respond`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._requests_lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        super().__init__(host, port)
        self.start()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in order."""
        with self._requests_lock:
            return list(self._requests)

    def answer(self, request: RecordedRequest) -> Answer:
        with self._requests_lock:
            self._requests.append(request)
        return self.respond(request)

    def respond(self, request: RecordedRequest) -> Answer:
        """The answer to one request (called on a server thread)."""
        raise NotImplementedError


@dataclass(frozen=True)
class IssuedCredentials:
    """Temporary credentials a fake handed out (tests use the secrets to look for leaks)."""

    access_key_id: str
    access_key_secret: str
    security_token: str
    expiration: datetime


@dataclass
class _Issuer:
    prefix: str
    lifetime: timedelta
    now: Callable[[], datetime]
    issued: list[IssuedCredentials] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self) -> IssuedCredentials:
        with self.lock:
            n = len(self.issued) + 1
            expiration = (self.now() + self.lifetime).replace(microsecond=0)
            creds = IssuedCredentials(
                f"STS.{self.prefix}{n:04d}",
                f"{self.prefix}-secret-{n:04d}-{uuid.uuid4().hex}",
                f"CAIS{self.prefix}token{n:04d}{uuid.uuid4().hex}",
                expiration,
            )
            self.issued.append(creds)
            return creds

    def find(self, access_key_id: str) -> IssuedCredentials | None:
        with self.lock:
            return next((c for c in self.issued if c.access_key_id == access_key_id), None)


def _credentials_json(creds: IssuedCredentials) -> dict[str, str]:
    return {
        "AccessKeyId": creds.access_key_id,
        "AccessKeySecret": creds.access_key_secret,
        "SecurityToken": creds.security_token,
        "Expiration": creds.expiration.strftime(_TIME_FORMAT),
    }


class _IssuingServer(RecordingServer):
    """A fake that hands out temporary credentials and remembers them."""

    _issuer: _Issuer

    @property
    def issued(self) -> list[IssuedCredentials]:
        """Every set of credentials handed out, in order."""
        with self._issuer.lock:
            return list(self._issuer.issued)


class FakeMetadataServer(_IssuingServer):
    """The ECS instance metadata service, IMDSv2 enforced, serving one RAM role.

    ``role_name=None`` is an instance without a role (404). ``lifetime`` is how long issued
    credentials last. ``fail_next`` holds HTTP statuses to answer to the next credential GETs
    (an outage). ``now`` is the server's clock (freezegun works: it patches ``datetime``).
    """

    def __init__(
        self,
        *,
        role_name: str | None = "EcsRamRoleTest",
        lifetime: timedelta = timedelta(hours=6),
        now: Callable[[], datetime] = _utc_now,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.role_name = role_name
        self.fail_next: list[int] = []
        self._issuer = _Issuer("ecs", lifetime, now)
        self._tokens: set[str] = set()
        self._lock = threading.Lock()
        super().__init__(host, port)

    def respond(self, request: RecordedRequest) -> Answer:
        text = {"Content-Type": "text/plain"}
        if request.method == "PUT" and request.path == "/latest/api/token":
            ttl = request.header("X-aliyun-ecs-metadata-token-ttl-seconds") or ""
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                return Answer(
                    400, text, b"missing or invalid X-aliyun-ecs-metadata-token-ttl-seconds"
                )
            token = f"imds-v2-token-{uuid.uuid4().hex}"
            with self._lock:
                self._tokens.add(token)
            return Answer(200, text, token.encode())
        if request.method != "GET":
            return Answer(405, text, b"method not allowed")
        with self._lock:
            valid = request.header("X-aliyun-ecs-metadata-token") in self._tokens
        if not valid:
            return Answer(401, text, b"IMDSv2 token required")
        base = "/latest/meta-data/ram/security-credentials/"
        if request.path == base:
            if self.role_name is None:
                return Answer(404, text, b"Not Found")
            return Answer(200, text, self.role_name.encode())
        if request.path.startswith(base) and self.role_name is not None:
            if request.path[len(base) :] != self.role_name:
                return Answer(404, text, b"Not Found")
            with self._lock:
                failure = self.fail_next.pop(0) if self.fail_next else None
            if failure is not None:
                return Answer(failure, text, b"temporarily unavailable")
            creds = self._issuer.issue()
            return json_answer(
                200,
                {
                    **_credentials_json(creds),
                    "LastUpdated": self._issuer.now().strftime(_TIME_FORMAT),
                    "Code": "Success",
                },
            )
        return Answer(404, text, b"Not Found")


class FakeStsServer(_IssuingServer):
    """STS (``2015-04-01``): ``AssumeRole`` and ``AssumeRoleWithOIDC``.

    ``access_keys`` maps the long-term AccessKey ids that may sign ``AssumeRole`` to their
    secrets; ``roles`` maps assumable role ARNs to the ExternalId their trust policy requires
    (``None`` for none); ``oidc_provider_arn`` and ``oidc_tokens`` are what
    ``AssumeRoleWithOIDC`` accepts. Credentials it issues may sign ``AssumeRole`` too.
    """

    def __init__(
        self,
        *,
        access_keys: Mapping[str, str] | None = None,
        roles: Mapping[str, str | None] | None = None,
        oidc_provider_arn: str = "acs:ram::1234567890:oidc-provider/ack-rrsa",
        oidc_tokens: Iterable[str] = (),
        lifetime: timedelta = timedelta(hours=1),
        now: Callable[[], datetime] = _utc_now,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.access_keys = dict(access_keys or {})
        self.roles = dict(roles or {})
        self.oidc_provider_arn = oidc_provider_arn
        self.oidc_tokens = set(oidc_tokens)
        self._issuer = _Issuer("sts", lifetime, now)
        self._nonces: set[str] = set()
        self._lock = threading.Lock()
        super().__init__(host, port)

    def _params(self, request: RecordedRequest) -> dict[str, str]:
        params = request.params
        content_type = request.header("Content-Type") or ""
        if content_type.startswith("application/x-www-form-urlencoded"):
            form = parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True)
            params = {**dict(form), **params}
        return params

    def respond(self, request: RecordedRequest) -> Answer:
        if request.method not in ("GET", "POST") or request.path != "/":
            return error_answer(404, "InvalidAction.NotFound", "Specified api is not found.")
        params = self._params(request)
        action = request.header("x-acs-action") or params.get("Action", "")
        version = request.header("x-acs-version") or params.get("Version", "")
        if version != "2015-04-01":
            return error_answer(400, "InvalidVersion", f"Specified version {version!r} is invalid.")
        if action == "AssumeRole":
            return self._assume_role(request, params)
        if action == "AssumeRoleWithOIDC":
            return self._assume_role_with_oidc(params)
        return error_answer(
            404, "InvalidAction.NotFound", f"Specified api {action!r} is not found."
        )

    def _secret_for(self, access_key_id: str) -> str | None:
        if access_key_id in self.access_keys:
            return self.access_keys[access_key_id]
        issued = self._issuer.find(access_key_id)
        return issued.access_key_secret if issued else None

    def _assume_role(self, request: RecordedRequest, params: dict[str, str]) -> Answer:
        failure = check_v3_signature(
            request.method, request.raw_query, request.headers, request.body, self._secret_for
        )
        failure = failure or check_v3_date(request.header("x-acs-date"), self._issuer.now())
        if failure is not None:
            return error_answer(*failure)
        nonce = request.header("x-acs-signature-nonce") or ""
        with self._lock:
            reused = not nonce or nonce in self._nonces
            self._nonces.add(nonce)
        if reused:
            return error_answer(400, "SignatureNonceUsed", "Specified signature nonce was used.")
        parsed = signing.parse_authorization(request.header("Authorization") or "")
        issued = self._issuer.find(parsed[0]) if parsed else None
        if issued is not None and request.header("x-acs-security-token") != issued.security_token:
            return error_answer(
                400, "InvalidSecurityToken.Mismatch", "Specified SecurityToken is invalid."
            )
        return self._issue_for_role(params, params.get("ExternalId"))

    def _assume_role_with_oidc(self, params: dict[str, str]) -> Answer:
        for name in ("RoleArn", "OIDCProviderArn", "OIDCToken"):
            if not params.get(name):
                return error_answer(400, f"MissingParameter.{name}", f"{name} is mandatory.")
        if params["OIDCProviderArn"] != self.oidc_provider_arn:
            return error_answer(
                404, "EntityNotExist.OIDCProvider", "The specified OIDC provider does not exist."
            )
        if params["OIDCToken"] not in self.oidc_tokens:
            return error_answer(
                400,
                "AuthenticationFail.OIDCToken.Invalid",
                f"The OIDCToken {params['OIDCToken']} is invalid.",
            )
        return self._issue_for_role(params, None, check_external_id=False)

    def _issue_for_role(
        self, params: dict[str, str], external_id: str | None, *, check_external_id: bool = True
    ) -> Answer:
        role_arn = params.get("RoleArn", "")
        session = params.get("RoleSessionName", "")
        if not role_arn or not session:
            return error_answer(
                400, "MissingParameter", "RoleArn and RoleSessionName are mandatory."
            )
        if role_arn not in self.roles:
            return error_answer(404, "EntityNotExist.Role", "The specified Role not exists.")
        required = self.roles[role_arn]
        if check_external_id and required is not None and external_id != required:
            return error_answer(
                403, "NoPermission", "You are not authorized to assume this role (ExternalId)."
            )
        duration = params.get("DurationSeconds", "3600")
        if not duration.isdigit() or not 900 <= int(duration) <= 43200:
            return error_answer(
                400, "InvalidParameter.DurationSeconds", "DurationSeconds is out of range."
            )
        creds = self._issuer.issue()
        return json_answer(
            200,
            {
                "RequestId": str(uuid.uuid4()).upper(),
                "AssumedRoleUser": {
                    "Arn": f"{role_arn}/{session}",
                    "AssumedRoleId": f"3{len(self.issued):017d}:{session}",
                },
                "Credentials": _credentials_json(creds),
            },
        )
