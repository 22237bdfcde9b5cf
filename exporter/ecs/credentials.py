"""Credential providers and the default chain that real deployments use.

Providers: a static AccessKey (optionally with an STS token), the standard environment variables,
an OIDC role (ACK RRSA: STS ``AssumeRoleWithOIDC``), the ECS instance RAM role (instance metadata,
IMDSv2), and ``AssumeRole`` on top of any of them (how one exporter reaches several accounts).
:class:`DefaultChain` picks the first configured of environment -> OIDC -> ECS RAM role.

Why not the official ``alibabacloud-credentials`` package: it reads the environment at import
time, starts a scheduler thread for background refreshes, and pulls in about 20 packages
(aiohttp, requests, APScheduler, ...). The exporter already has an ``httpx.Client`` and a V3
signer, and its tests need every endpoint (STS, metadata) and the clock injectable; the chain
below is a few hundred lines on top of those.

Temporary credentials are cached and refreshed before they expire: ``min(15 minutes, a third of
their lifetime)`` early (the SDK refreshes 15 minutes early; a third keeps short-lived test
credentials usable). Refreshes are serialised by a lock. Secrets are ``SecretStr`` and never
appear in a log line, a repr or an error message.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode

import httpx
from pydantic import SecretStr

from exporter.ecs import signing
from exporter.ecs.credentials_base import Credentials as Credentials  # re-exported
from exporter.ecs.credentials_base import CredentialsProvider as CredentialsProvider  # re-exported
from exporter.ecs.credentials_base import RefreshingProvider, temporary_credentials
from exporter.ecs.errors import CredentialsError, parse_error_body
from exporter.ecs.request import USER_AGENT, acs_date, parse_endpoint, signed_request_headers
from exporter.ecs.untrusted import PLAIN, TextCleaner
from exporter.files import read_secret_file

log = logging.getLogger(__name__)

STS_API_VERSION = "2015-04-01"
DEFAULT_STS_ENDPOINT = "https://sts.aliyuncs.com"
DEFAULT_METADATA_URL = "http://100.100.100.200"
DEFAULT_ROLE_SESSION_NAME = "aliyun-cloudassistant-exporter"
METADATA_TOKEN_TTL_SECONDS = 21600
METADATA_TOKEN_PATH = "/latest/api/token"
METADATA_ROLE_PATH = "/latest/meta-data/ram/security-credentials/"

ENV_ACCESS_KEY_ID = "ALIBABA_CLOUD_ACCESS_KEY_ID"
ENV_ACCESS_KEY_SECRET = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
ENV_SECURITY_TOKEN = "ALIBABA_CLOUD_SECURITY_TOKEN"
ENV_ROLE_ARN = "ALIBABA_CLOUD_ROLE_ARN"
ENV_OIDC_PROVIDER_ARN = "ALIBABA_CLOUD_OIDC_PROVIDER_ARN"
ENV_OIDC_TOKEN_FILE = "ALIBABA_CLOUD_OIDC_TOKEN_FILE"
ENV_ROLE_SESSION_NAME = "ALIBABA_CLOUD_ROLE_SESSION_NAME"
ENV_ECS_ROLE_NAME = "ALIBABA_CLOUD_ECS_METADATA"
ENV_ECS_METADATA_DISABLED = "ALIBABA_CLOUD_ECS_METADATA_DISABLED"
ENV_STS_REGION = "ALIBABA_CLOUD_STS_REGION"
ENV_VPC_ENDPOINT_ENABLED = "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED"

_SESSION_NAME_RE = re.compile(r"^[\w.@-]{2,64}$")
_ROLE_ARN_RE = re.compile(r"^acs:ram::\d+:role/\S+$")
MIN_DURATION_SECONDS, MAX_DURATION_SECONDS = 900, 43200


def _secret(value: str | SecretStr) -> SecretStr:
    return value if isinstance(value, SecretStr) else SecretStr(value)


class StaticProvider:
    """Fixed credentials: an AccessKey pair, optionally with an STS security token."""

    def __init__(
        self,
        access_key_id: str,
        access_key_secret: str | SecretStr,
        security_token: str | SecretStr | None = None,
        *,
        provider: str = "static",
    ) -> None:
        secret = _secret(access_key_secret)
        if not access_key_id or not secret.get_secret_value():
            raise CredentialsError("an AccessKey needs both an id and a secret")
        token = _secret(security_token) if security_token else None
        self._credentials = Credentials(access_key_id, secret, token, None, provider)

    def __repr__(self) -> str:
        return f"StaticProvider(access_key_id={self._credentials.access_key_id!r})"

    def get_credentials(self) -> Credentials:
        """Return the fixed credentials."""
        return self._credentials


class EnvironmentProvider:
    """``ALIBABA_CLOUD_ACCESS_KEY_ID`` / ``_SECRET`` (+ ``ALIBABA_CLOUD_SECURITY_TOKEN``).

    ``environ`` is passed in (``os.environ`` in production), read when credentials are asked for.
    """

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def __repr__(self) -> str:
        return "EnvironmentProvider()"

    def is_configured(self) -> bool:
        """Tell whether the id or the secret variable is set."""
        return bool(
            self._environ.get(ENV_ACCESS_KEY_ID) or self._environ.get(ENV_ACCESS_KEY_SECRET)
        )

    def get_credentials(self) -> Credentials:
        """Return the credentials of the environment, or raise :class:`CredentialsError`."""
        key_id = self._environ.get(ENV_ACCESS_KEY_ID, "").strip()
        secret = self._environ.get(ENV_ACCESS_KEY_SECRET, "").strip()
        if not key_id or not secret:
            missing = ENV_ACCESS_KEY_SECRET if key_id else ENV_ACCESS_KEY_ID
            raise CredentialsError(f"{missing} is not set (both the id and the secret are needed)")
        token = self._environ.get(ENV_SECURITY_TOKEN, "").strip()
        return Credentials(
            key_id, SecretStr(secret), SecretStr(token) if token else None, None, "environment"
        )


def _sts_answer(
    response: httpx.Response, action: str, provider: str, hide: tuple[str, ...]
) -> Credentials:
    source = f"STS {action}"
    if response.status_code != 200:
        code, message, request_id = parse_error_body(response.content, TextCleaner(hide))
        raise CredentialsError(
            f"{source} was refused: {message or 'no message'}",
            code=code,
            request_id=request_id,
            http_status=response.status_code,
        )
    try:
        data = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        raise CredentialsError(f"{source}: the answer is not JSON", http_status=200) from None
    if not isinstance(data, dict):
        raise CredentialsError(f"{source}: the answer is not a JSON object", http_status=200)
    return temporary_credentials(data.get("Credentials"), source, provider)


# The STS rules, checked here and by the config (which reports them under the field's name).


def role_arn_problem(role_arn: str) -> str | None:
    """What is wrong with a RAM role ARN, or ``None``."""
    if not _ROLE_ARN_RE.match(role_arn):
        return f"{role_arn!r} is not a RAM role ARN (acs:ram::<account>:role/<name>)"
    return None


def session_name_problem(session_name: str) -> str | None:
    """What is wrong with a role session name, or ``None``."""
    if not _SESSION_NAME_RE.match(session_name):
        return f"{session_name!r} is not 2-64 letters, digits or . @ - _"
    return None


def duration_problem(duration_seconds: int) -> str | None:
    """What is wrong with an STS ``DurationSeconds``, or ``None``."""
    if not MIN_DURATION_SECONDS <= duration_seconds <= MAX_DURATION_SECONDS:
        return (
            f"must be {MIN_DURATION_SECONDS} to {MAX_DURATION_SECONDS} seconds, "
            f"got {duration_seconds}"
        )
    return None


def _check_sts_options(role_arn: str, session_name: str, duration_seconds: int) -> None:
    for what, problem in (
        ("role ARN", role_arn_problem(role_arn)),
        ("role session name", session_name_problem(session_name)),
        ("duration_seconds", duration_problem(duration_seconds)),
    ):
        if problem is not None:
            raise CredentialsError(f"{what}: {problem}")


def _transport_failure(source: str, url: str, exc: httpx.RequestError) -> CredentialsError:
    return CredentialsError(f"{source}: no answer from {url} ({type(exc).__name__})")


class OidcRoleProvider(RefreshingProvider):
    """An OIDC role (ACK RRSA): STS ``AssumeRoleWithOIDC`` with the pod's service-account token.

    The call is anonymous (the OIDC token is the proof). Like the official SDKs, the action,
    version and timestamp go in the query and the parameters in a form body (which keeps the
    token out of URLs and access logs). The token file is read again on every refresh, because
    the kubelet rotates it.
    """

    name = "oidc_role"

    def __init__(
        self,
        *,
        role_arn: str,
        oidc_provider_arn: str,
        oidc_token_file: str | Path,
        http: httpx.Client,
        sts_endpoint: str = DEFAULT_STS_ENDPOINT,
        role_session_name: str = DEFAULT_ROLE_SESSION_NAME,
        duration_seconds: int = 3600,
        timeout: float = 10.0,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(now)
        _check_sts_options(role_arn, role_session_name, duration_seconds)
        if not oidc_provider_arn:
            raise CredentialsError("the OIDC provider ARN is empty")
        self.role_arn = role_arn
        self._provider_arn = oidc_provider_arn
        self._token_file = Path(oidc_token_file)
        self._http = http
        self._base_url, _ = parse_endpoint(sts_endpoint)
        self._session_name = role_session_name
        self._duration = duration_seconds
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"OidcRoleProvider(role_arn={self.role_arn!r}, sts={self._base_url!r})"

    def _read_token(self) -> str:
        # The one reader of secret files: bounded (a FIFO or a device is refused, never read).
        try:
            return read_secret_file(self._token_file)
        except ValueError as exc:
            raise CredentialsError(
                f"cannot read the OIDC token file {self._token_file}: {exc}"
            ) from None

    def _fetch(self) -> Credentials:
        token = self._read_token()
        query = {
            "Action": "AssumeRoleWithOIDC",
            "Format": "JSON",
            "Version": STS_API_VERSION,
            "Timestamp": acs_date(),
        }
        form = {
            "RoleArn": self.role_arn,
            "OIDCProviderArn": self._provider_arn,
            "OIDCToken": token,
            "RoleSessionName": self._session_name,
            "DurationSeconds": str(self._duration),
        }
        url = f"{self._base_url}?{signing.canonical_query_string(query)}"
        try:
            response = self._http.post(
                url,
                content=urlencode(form).encode(),
                headers={
                    "content-type": "application/x-www-form-urlencoded",
                    "accept": "application/json",
                    "user-agent": USER_AGENT,
                },
                timeout=self._timeout,
            )
        except httpx.RequestError as exc:
            raise _transport_failure("STS AssumeRoleWithOIDC", self._base_url, exc) from None
        return _sts_answer(response, "AssumeRoleWithOIDC", self.name, (token,))


class EcsRamRoleProvider(RefreshingProvider):
    """The RAM role of the ECS instance, from the instance metadata service (IMDSv2 only).

    The exchange is the one the official SDK makes (``tests/vectors/credentials_imds_capture
    .json``): before each GET a session token is fetched with ``PUT /latest/api/token``
    (``X-aliyun-ecs-metadata-token-ttl-seconds: 21600``) and sent as
    ``X-aliyun-ecs-metadata-token``; the role name comes from
    ``GET /latest/meta-data/ram/security-credentials/`` unless configured, then the credentials
    from ``GET .../<role>``. The metadata address is link-local: give this provider an
    ``httpx.Client`` that does not route it through an ``HTTP(S)_PROXY`` (``trust_env=False``, or
    ``NO_PROXY=100.100.100.200``).
    """

    name = "ecs_ram_role"

    def __init__(
        self,
        *,
        http: httpx.Client,
        metadata_url: str = DEFAULT_METADATA_URL,
        role_name: str | None = None,
        timeout: float = 1.0,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(now)
        self._http = http
        base, _ = parse_endpoint(metadata_url, default_scheme="http")
        self._base_url = base.rstrip("/")
        self._role_name = role_name or None
        self._discovered_role: str | None = None
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"EcsRamRoleProvider(metadata_url={self._base_url!r}, role={self._role_name!r})"

    def _request(self, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
        url = self._base_url + path
        try:
            return self._http.request(
                method,
                url,
                headers={"user-agent": USER_AGENT, **headers},
                timeout=self._timeout,
            )
        except httpx.RequestError as exc:
            raise CredentialsError(
                f"the ECS instance metadata service at {self._base_url} did not answer "
                f"({type(exc).__name__}); is this an ECS instance with a RAM role attached?"
            ) from None

    def _session_token(self) -> str:
        response = self._request(
            "PUT",
            METADATA_TOKEN_PATH,
            {"X-aliyun-ecs-metadata-token-ttl-seconds": str(METADATA_TOKEN_TTL_SECONDS)},
        )
        token = response.text.strip() if response.status_code == 200 else ""
        if not token:
            raise CredentialsError(
                "the instance metadata service refused a session token (IMDSv2 is required)",
                http_status=response.status_code,
            )
        return token

    def _get(self, path: str) -> httpx.Response:
        token = self._session_token()
        return self._request("GET", path, {"X-aliyun-ecs-metadata-token": token})

    def _role(self) -> str:
        if self._role_name:
            return self._role_name
        if self._discovered_role:
            return self._discovered_role
        response = self._get(METADATA_ROLE_PATH)
        lines = response.text.split() if response.status_code == 200 else []
        if not lines:
            raise CredentialsError(
                "no RAM role is attached to this ECS instance",
                http_status=response.status_code,
            )
        self._discovered_role = PLAIN.name(lines[0])
        return self._discovered_role

    def _fetch(self) -> Credentials:
        role = self._role()
        response = self._get(METADATA_ROLE_PATH + role)
        source = f"ECS RAM role {role!r}"
        if response.status_code != 200:
            self._discovered_role = None  # the role may have been replaced; look it up again
            raise CredentialsError(
                f"{source}: the metadata service handed out no credentials",
                http_status=response.status_code,
            )
        try:
            data = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            raise CredentialsError(f"{source}: the answer is not JSON") from None
        if not isinstance(data, dict) or data.get("Code") != "Success":
            code = PLAIN.name(data.get("Code")) if isinstance(data, dict) else ""
            raise CredentialsError(
                f"{source}: the metadata service answered Code {code!r}, not 'Success'",
                code=code,
            )
        return temporary_credentials(data, source, self.name)


class AssumeRoleProvider(RefreshingProvider):
    """A RAM role assumed with STS ``AssumeRole``, signed (V3) with a base provider's credentials.

    ``external_id`` is the role's confused-deputy guard when the trust policy demands one.
    """

    name = "assume_role"

    def __init__(
        self,
        base: CredentialsProvider,
        *,
        role_arn: str,
        http: httpx.Client,
        external_id: str | None = None,
        role_session_name: str = DEFAULT_ROLE_SESSION_NAME,
        duration_seconds: int = 3600,
        sts_endpoint: str = DEFAULT_STS_ENDPOINT,
        timeout: float = 10.0,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(now)
        _check_sts_options(role_arn, role_session_name, duration_seconds)
        self.role_arn = role_arn
        self._base = base
        self._http = http
        self._external_id = external_id or None
        self._session_name = role_session_name
        self._duration = duration_seconds
        self._base_url, self._host = parse_endpoint(sts_endpoint)
        self._timeout = timeout

    def __repr__(self) -> str:
        return (
            f"AssumeRoleProvider(role_arn={self.role_arn!r}, base={self._base!r}, "
            f"sts={self._base_url!r})"
        )

    def _fetch(self) -> Credentials:
        try:
            base = self._base.get_credentials()
        except CredentialsError as exc:
            raise CredentialsError(
                f"AssumeRole {self.role_arn}: the base credentials failed: {exc.message}",
                code=exc.code,
                request_id=exc.request_id,
                http_status=exc.http_status,
            ) from None
        params = {
            "RoleArn": self.role_arn,
            "RoleSessionName": self._session_name,
            "DurationSeconds": str(self._duration),
        }
        if self._external_id is not None:
            params["ExternalId"] = self._external_id
        headers = signed_request_headers(
            host=self._host,
            action="AssumeRole",
            version=STS_API_VERSION,
            query=params,
            access_key_id=base.access_key_id,
            access_key_secret=base.access_key_secret.get_secret_value(),
            security_token=base.security_token.get_secret_value() if base.security_token else None,
        )
        url = f"{self._base_url}?{signing.canonical_query_string(params)}"
        try:
            response = self._http.post(url, headers=headers, timeout=self._timeout)
        except httpx.RequestError as exc:
            raise _transport_failure("STS AssumeRole", self._base_url, exc) from None
        return _sts_answer(response, "AssumeRole", self.name, base.secret_values())


def sts_endpoint_from_environment(environ: Mapping[str, str]) -> str:
    """The STS endpoint the SDK would use: regional (and VPC) when ``ALIBABA_CLOUD_STS_REGION``."""
    region = environ.get(ENV_STS_REGION, "").strip()
    if not region:
        return DEFAULT_STS_ENDPOINT
    vpc = environ.get(ENV_VPC_ENDPOINT_ENABLED, "").strip().lower() == "true"
    return f"https://{'sts-vpc' if vpc else 'sts'}.{region}.aliyuncs.com"


class DefaultChain:
    """The first configured of: environment AccessKey -> OIDC role (RRSA) -> ECS RAM role.

    The choice is made on the first call, from ``environ`` (passed in), and kept. A partly
    configured source is an error, not a reason to silently try the next one. The ECS RAM role
    is the fallback unless ``ALIBABA_CLOUD_ECS_METADATA_DISABLED=true``;
    ``ALIBABA_CLOUD_ECS_METADATA`` names the role.
    """

    def __init__(
        self,
        environ: Mapping[str, str],
        *,
        http: httpx.Client,
        sts_endpoint: str | None = None,
        metadata_url: str = DEFAULT_METADATA_URL,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._environ = environ
        self._http = http
        self._sts_endpoint = sts_endpoint or sts_endpoint_from_environment(environ)
        self._metadata_url = metadata_url
        self._now = now
        self._lock = threading.Lock()
        self._chosen: CredentialsProvider | None = None

    def __repr__(self) -> str:
        return f"DefaultChain(chosen={self._chosen!r})"

    @property
    def chosen(self) -> CredentialsProvider | None:
        """The provider picked by the first call (``None`` before it)."""
        return self._chosen

    def _choose(self) -> CredentialsProvider:
        env = self._environ
        environment = EnvironmentProvider(env)
        if environment.is_configured():
            return environment
        oidc = {
            name: env.get(name, "").strip()
            for name in (ENV_ROLE_ARN, ENV_OIDC_PROVIDER_ARN, ENV_OIDC_TOKEN_FILE)
        }
        if any(oidc.values()):
            missing = [name for name, value in oidc.items() if not value]
            if missing:
                raise CredentialsError(
                    "OIDC role credentials are partly configured: "
                    + ", ".join(missing)
                    + " not set"
                )
            return OidcRoleProvider(
                role_arn=oidc[ENV_ROLE_ARN],
                oidc_provider_arn=oidc[ENV_OIDC_PROVIDER_ARN],
                oidc_token_file=oidc[ENV_OIDC_TOKEN_FILE],
                http=self._http,
                sts_endpoint=self._sts_endpoint,
                role_session_name=env.get(ENV_ROLE_SESSION_NAME, "").strip()
                or DEFAULT_ROLE_SESSION_NAME,
                now=self._now,
            )
        if env.get(ENV_ECS_METADATA_DISABLED, "").strip().lower() == "true":
            raise CredentialsError(
                f"no credentials found: set {ENV_ACCESS_KEY_ID} and {ENV_ACCESS_KEY_SECRET}, or "
                f"the OIDC role variables ({ENV_ROLE_ARN}, {ENV_OIDC_PROVIDER_ARN}, "
                f"{ENV_OIDC_TOKEN_FILE}); the ECS RAM role is disabled by "
                f"{ENV_ECS_METADATA_DISABLED}"
            )
        return EcsRamRoleProvider(
            http=self._http,
            metadata_url=self._metadata_url,
            role_name=env.get(ENV_ECS_ROLE_NAME, "").strip() or None,
            now=self._now,
        )

    def get_credentials(self) -> Credentials:
        """Return credentials from the chosen provider (chosen on the first call)."""
        with self._lock:
            if self._chosen is None:
                self._chosen = self._choose()
            chosen = self._chosen
        if isinstance(chosen, EcsRamRoleProvider):
            try:
                return chosen.get_credentials()
            except CredentialsError as exc:
                raise CredentialsError(
                    f"no AccessKey in the environment and no OIDC role configured, and the ECS "
                    f"RAM role failed: {exc.message}",
                    code=exc.code,
                    http_status=exc.http_status,
                ) from None
        return chosen.get_credentials()
