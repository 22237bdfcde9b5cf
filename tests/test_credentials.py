"""Credential providers and the default chain, against fake STS and instance-metadata servers."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from freezegun import freeze_time

from exporter.ecs.client import EcsClient
from exporter.ecs.credentials import (
    AssumeRoleProvider,
    Credentials,
    DefaultChain,
    EcsRamRoleProvider,
    EnvironmentProvider,
    OidcRoleProvider,
    StaticProvider,
    sts_endpoint_from_environment,
)
from exporter.ecs.errors import CredentialsError
from exporter.ecs.models import InvocationQuery
from tests.support.fakes import PagedResults, StubEcsServer, all_results, api_record
from tests.support.http_fakes import FakeMetadataServer, FakeStsServer, IssuedCredentials

VECTORS = Path(__file__).parent / "vectors"
ROLE_ARN = "acs:ram::1234567890:role/cloudassistant-reader"
OTHER_ROLE_ARN = "acs:ram::2222222222:role/cross-account-reader"
OIDC_PROVIDER_ARN = "acs:ram::1234567890:oidc-provider/ack-rrsa-c123"
OIDC_TOKEN = "eyJhbGciOiJSUzI1NiJ9.oidc-token-do-not-leak.sig"
BASE_KEY_ID = "LTAI-base-key"
BASE_SECRET = "base-secret-do-not-leak-77e1"


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


@pytest.fixture
def imds() -> Iterator[FakeMetadataServer]:
    with FakeMetadataServer() as server:
        yield server


@pytest.fixture
def sts() -> Iterator[FakeStsServer]:
    with FakeStsServer(
        access_keys={BASE_KEY_ID: BASE_SECRET},
        roles={ROLE_ARN: None, OTHER_ROLE_ARN: "ext-4711"},
        oidc_provider_arn=OIDC_PROVIDER_ARN,
        oidc_tokens={OIDC_TOKEN},
    ) as server:
        yield server


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(OIDC_TOKEN + "\n", encoding="utf-8")
    return path


def _oidc_environ(token_file: Path) -> dict[str, str]:
    return {
        "ALIBABA_CLOUD_ROLE_ARN": ROLE_ARN,
        "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": OIDC_PROVIDER_ARN,
        "ALIBABA_CLOUD_OIDC_TOKEN_FILE": str(token_file),
    }


ENV_KEYS = {
    "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-env",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "env-secret-do-not-leak",
}


def _assert_no_secret(texts: list[str], issued: list[IssuedCredentials]) -> None:
    secrets = [BASE_SECRET, OIDC_TOKEN, ENV_KEYS["ALIBABA_CLOUD_ACCESS_KEY_SECRET"]]
    for creds in issued:
        secrets += [creds.access_key_secret, creds.security_token]
    for text in texts:
        for secret in secrets:
            assert secret not in text


# --- static and environment ------------------------------------------------------------------


def test_static_credentials_with_an_sts_token() -> None:
    creds = StaticProvider("LTAI-x", "s3cret", "tok").get_credentials()
    assert creds.access_key_id == "LTAI-x"
    assert creds.access_key_secret.get_secret_value() == "s3cret"
    assert creds.security_token is not None
    assert creds.security_token.get_secret_value() == "tok"
    assert (creds.expiration, creds.provider) == (None, "static")
    assert "s3cret" not in repr(creds)
    assert "tok'" not in repr(creds)


def test_environment_variables() -> None:
    environ = {**ENV_KEYS, "ALIBABA_CLOUD_SECURITY_TOKEN": "env-token"}
    creds = EnvironmentProvider(environ).get_credentials()
    assert (creds.access_key_id, creds.provider) == ("LTAI-env", "environment")
    assert creds.security_token is not None
    assert creds.security_token.get_secret_value() == "env-token"


@pytest.mark.parametrize(
    ("environ", "missing"),
    [
        ({"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-env"}, "ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
        (
            {"ALIBABA_CLOUD_ACCESS_KEY_SECRET": "env-secret-do-not-leak"},
            "ALIBABA_CLOUD_ACCESS_KEY_ID",
        ),
    ],
)
def test_half_an_access_key_is_a_clear_error(environ: dict[str, str], missing: str) -> None:
    with pytest.raises(CredentialsError, match=missing) as caught:
        DefaultChain(environ, http=httpx.Client()).get_credentials()
    _assert_no_secret([str(caught.value)], [])


# --- the default chain -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sources", "provider"),
    [
        (("env", "oidc"), "environment"),
        (("oidc",), "oidc_role"),
        ((), "ecs_ram_role"),
    ],
)
def test_chain_order_env_then_oidc_then_ecs_ram_role(
    sources: tuple[str, ...],
    provider: str,
    http: httpx.Client,
    imds: FakeMetadataServer,
    sts: FakeStsServer,
    token_file: Path,
) -> None:
    environ: dict[str, str] = {}
    if "env" in sources:
        environ.update(ENV_KEYS)
    if "oidc" in sources:
        environ.update(_oidc_environ(token_file))
    chain = DefaultChain(environ, http=http, sts_endpoint=sts.url, metadata_url=imds.url)
    assert chain.get_credentials().provider == provider
    assert len(imds.requests) == (4 if provider == "ecs_ram_role" else 0)
    assert len(sts.requests) == (1 if provider == "oidc_role" else 0)


def test_partly_configured_oidc_is_an_error_not_a_fallback(
    http: httpx.Client, imds: FakeMetadataServer
) -> None:
    environ = {"ALIBABA_CLOUD_ROLE_ARN": ROLE_ARN}
    chain = DefaultChain(environ, http=http, metadata_url=imds.url)
    with pytest.raises(CredentialsError, match="ALIBABA_CLOUD_OIDC_PROVIDER_ARN"):
        chain.get_credentials()
    assert imds.requests == []


def test_no_source_at_all_says_what_to_set(http: httpx.Client) -> None:
    environ = {"ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true"}
    with pytest.raises(CredentialsError, match="no credentials found: set ALIBABA_CLOUD_ACCESS"):
        DefaultChain(environ, http=http).get_credentials()


def test_off_ecs_the_chain_fails_clearly(http: httpx.Client) -> None:
    with FakeMetadataServer() as stopped:
        url = stopped.url
    chain = DefaultChain({}, http=http, metadata_url=url)
    with pytest.raises(CredentialsError) as caught:
        chain.get_credentials()
    message = str(caught.value)
    assert "no AccessKey in the environment and no OIDC role configured" in message
    assert "instance metadata service" in message


@pytest.mark.parametrize(
    ("environ", "endpoint"),
    [
        ({}, "https://sts.aliyuncs.com"),
        ({"ALIBABA_CLOUD_STS_REGION": "cn-shanghai"}, "https://sts.cn-shanghai.aliyuncs.com"),
        (
            {
                "ALIBABA_CLOUD_STS_REGION": "cn-shanghai",
                "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED": "true",
            },
            "https://sts-vpc.cn-shanghai.aliyuncs.com",
        ),
    ],
)
def test_sts_endpoint_follows_the_sdk_variables(environ: dict[str, str], endpoint: str) -> None:
    assert sts_endpoint_from_environment(environ) == endpoint


# --- ECS RAM role (IMDSv2) -------------------------------------------------------------------


def _capture() -> list[tuple[str, str, dict[str, str]]]:
    """(method, path, X-aliyun-* headers) of each request the official SDK made."""
    data = json.loads((VECTORS / "credentials_imds_capture.json").read_text(encoding="utf-8"))
    requests = []
    for raw in data["sync"]["requests"]:
        head, *lines = raw.split("\r\n")
        method, target, _ = head.split(" ")
        headers = dict(line.split(": ", 1) for line in lines if ": " in line)
        path = target.removeprefix("http://100.100.100.200")
        aliyun = {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-aliyun")}
        requests.append((method, path, aliyun))
    return requests


def test_imds_exchange_matches_the_official_sdk(http: httpx.Client) -> None:
    with FakeMetadataServer(role_name="EcsRamRoleTest") as imds:
        creds = EcsRamRoleProvider(http=http, metadata_url=imds.url).get_credentials()
        seen = imds.requests
    expected = _capture()
    assert [(r.method, r.path) for r in seen] == [(m, p) for m, p, _ in expected]
    for request, (_, _, headers) in zip(seen, expected, strict=True):
        ours = {k.lower(): v for k, v in request.headers if k.lower().startswith("x-aliyun")}
        assert ours.keys() == headers.keys()
        if "x-aliyun-ecs-metadata-token-ttl-seconds" in headers:
            assert ours == headers  # the TTL: 21600
    # each GET carries the token the PUT before it handed out
    assert seen[1].header("X-aliyun-ecs-metadata-token") is not None
    assert creds.provider == "ecs_ram_role"
    assert creds.access_key_id == imds.issued[0].access_key_id
    assert creds.security_token is not None
    assert creds.security_token.get_secret_value() == imds.issued[0].security_token


def test_configured_role_name_skips_the_lookup(
    http: httpx.Client, imds: FakeMetadataServer
) -> None:
    EcsRamRoleProvider(
        http=http, metadata_url=imds.url, role_name="EcsRamRoleTest"
    ).get_credentials()
    assert [(r.method, r.path) for r in imds.requests] == [
        ("PUT", "/latest/api/token"),
        ("GET", "/latest/meta-data/ram/security-credentials/EcsRamRoleTest"),
    ]


def test_instance_without_a_role(http: httpx.Client) -> None:
    with FakeMetadataServer(role_name=None) as imds:
        provider = EcsRamRoleProvider(http=http, metadata_url=imds.url)
        with pytest.raises(CredentialsError, match="no RAM role is attached"):
            provider.get_credentials()


@pytest.mark.parametrize(
    ("lifetime", "still_cached", "refreshed"),
    [
        # the SDK's 15 minutes early for long-lived credentials...
        (timedelta(hours=6), timedelta(hours=5, minutes=44), timedelta(hours=5, minutes=46)),
        # ...a third of the lifetime for short ones
        (timedelta(minutes=30), timedelta(minutes=19), timedelta(minutes=21)),
    ],
)
def test_temporary_credentials_are_refreshed_before_they_expire(
    http: httpx.Client, lifetime: timedelta, still_cached: timedelta, refreshed: timedelta
) -> None:
    start = datetime(2025, 1, 15, 8, 30, tzinfo=UTC)
    with freeze_time(start) as frozen, FakeMetadataServer(lifetime=lifetime) as imds:
        provider = EcsRamRoleProvider(http=http, metadata_url=imds.url)
        first = provider.get_credentials()
        assert first.expiration == start + lifetime
        frozen.move_to(start + still_cached)
        assert provider.get_credentials() is first
        frozen.move_to(start + refreshed)
        second = provider.get_credentials()
        assert second.access_key_id != first.access_key_id
        assert len(imds.issued) == 2


def test_a_failed_refresh_keeps_valid_credentials_until_they_expire(
    http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    start = datetime(2025, 1, 15, 8, 30, tzinfo=UTC)
    with freeze_time(start) as frozen, FakeMetadataServer(lifetime=timedelta(hours=1)) as imds:
        provider = EcsRamRoleProvider(http=http, metadata_url=imds.url)
        first = provider.get_credentials()
        imds.fail_next.extend([500, 500])
        frozen.move_to(start + timedelta(minutes=50))
        with caplog.at_level(logging.WARNING):
            assert provider.get_credentials() is first
        assert "using the current ones" in caplog.text
        frozen.move_to(start + timedelta(minutes=50, seconds=10))
        assert provider.get_credentials() is first  # no new attempt within 30 s
        assert len(imds.fail_next) == 1
        frozen.move_to(start + timedelta(minutes=61))
        with pytest.raises(CredentialsError, match="HTTP 500"):
            provider.get_credentials()
        assert provider.get_credentials().access_key_id != first.access_key_id
        _assert_no_secret([caplog.text], imds.issued)


def test_concurrent_callers_share_one_fetch(http: httpx.Client, imds: FakeMetadataServer) -> None:
    provider = EcsRamRoleProvider(http=http, metadata_url=imds.url)
    got: list[Credentials] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        got.append(provider.get_credentials())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 8
    assert len({c.access_key_id for c in got}) == 1
    assert len(imds.issued) == 1


# --- OIDC role (RRSA) ------------------------------------------------------------------------


def oidc_provider(
    token_file: Path, http: httpx.Client, sts: FakeStsServer, **options: Any
) -> OidcRoleProvider:
    """The OIDC (RRSA) provider these tests use, against the fake STS."""
    return OidcRoleProvider(
        role_arn=ROLE_ARN,
        oidc_provider_arn=OIDC_PROVIDER_ARN,
        oidc_token_file=token_file,
        http=http,
        sts_endpoint=sts.url,
        **options,
    )


def test_oidc_role_request_and_token_rotation(
    http: httpx.Client, sts: FakeStsServer, token_file: Path
) -> None:
    start = datetime(2025, 1, 15, 8, 30, tzinfo=UTC)
    with freeze_time(start) as frozen:
        provider = oidc_provider(token_file, http, sts, role_session_name="exporter-test")
        creds = provider.get_credentials()
        rotated = OIDC_TOKEN + "-rotated"
        sts.oidc_tokens.add(rotated)
        token_file.write_text(rotated, encoding="utf-8")
        frozen.move_to(start + timedelta(minutes=50))
        again = provider.get_credentials()
    assert creds.provider == "oidc_role"
    assert again.access_key_id != creds.access_key_id
    first, second = sts.requests
    assert first.method == "POST"
    assert first.header("Authorization") is None  # anonymous: the OIDC token is the proof
    assert first.params["Action"] == "AssumeRoleWithOIDC"
    assert first.params["Version"] == "2015-04-01"
    assert OIDC_TOKEN not in first.raw_query  # the token travels in the form body
    form = dict(x.split("=", 1) for x in first.body.decode().split("&"))
    assert form["RoleSessionName"] == "exporter-test"
    assert form["DurationSeconds"] == "3600"
    assert rotated in second.body.decode()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(lambda p: os.mkfifo(p), "not a regular file", id="fifo"),
        pytest.param(lambda p: p.mkdir(), "not a regular file", id="directory"),
        pytest.param(lambda p: p.write_bytes(b"x" * 70_000), "larger than", id="huge"),
        pytest.param(lambda p: None, "No such file", id="missing"),
    ],
)
def test_an_unusable_oidc_token_file_is_a_clear_error_at_once(
    http: httpx.Client, sts: FakeStsServer, tmp_path: Path, make: Any, reason: str
) -> None:
    path = tmp_path / "token"
    make(path)
    provider = oidc_provider(path, http, sts)
    with pytest.raises(CredentialsError, match=reason):
        provider.get_credentials()  # a FIFO must not block: no writer ever comes
    assert sts.requests == []


def test_oidc_refusal_is_clear_and_hides_the_token(
    http: httpx.Client, sts: FakeStsServer, token_file: Path
) -> None:
    token_file.write_text("eyJ-expired-token-do-not-leak", encoding="utf-8")
    provider = oidc_provider(token_file, http, sts)
    with pytest.raises(CredentialsError) as caught:
        provider.get_credentials()
    assert caught.value.code == "AuthenticationFail.OIDCToken.Invalid"
    assert caught.value.http_status == 400
    assert "eyJ-expired-token-do-not-leak" not in str(caught.value)
    assert "STS AssumeRoleWithOIDC was refused" in str(caught.value)


def test_missing_oidc_token_file(http: httpx.Client, sts: FakeStsServer, tmp_path: Path) -> None:
    provider = oidc_provider(tmp_path / "absent", http, sts)
    with pytest.raises(CredentialsError, match="cannot read the OIDC token file"):
        provider.get_credentials()
    assert sts.requests == []


# --- AssumeRole ------------------------------------------------------------------------------


def test_assume_role_is_v3_signed_and_passes_the_external_id(
    http: httpx.Client, sts: FakeStsServer
) -> None:
    provider = AssumeRoleProvider(
        StaticProvider(BASE_KEY_ID, BASE_SECRET),
        role_arn=OTHER_ROLE_ARN,
        external_id="ext-4711",
        http=http,
        sts_endpoint=sts.url,
    )
    creds = provider.get_credentials()
    request = sts.requests[0]
    assert creds.provider == "assume_role"
    assert creds.access_key_id == sts.issued[0].access_key_id
    assert (request.method, request.path, request.body) == ("POST", "/", b"")
    assert request.header("x-acs-action") == "AssumeRole"
    assert request.header("x-acs-version") == "2015-04-01"
    assert request.params == {
        "DurationSeconds": "3600",
        "ExternalId": "ext-4711",
        "RoleArn": OTHER_ROLE_ARN,
        "RoleSessionName": "aliyun-cloudassistant-exporter",
    }


@pytest.mark.parametrize(
    ("base_secret", "role_arn", "external_id", "code"),
    [
        (BASE_SECRET, OTHER_ROLE_ARN, "wrong", "NoPermission"),
        (BASE_SECRET, OTHER_ROLE_ARN, None, "NoPermission"),
        (BASE_SECRET, "acs:ram::1:role/absent", None, "EntityNotExist.Role"),
        ("not-the-secret", ROLE_ARN, None, "SignatureDoesNotMatch"),
    ],
)
def test_assume_role_refusals_are_credentials_errors(
    http: httpx.Client,
    sts: FakeStsServer,
    base_secret: str,
    role_arn: str,
    external_id: str | None,
    code: str,
) -> None:
    provider = AssumeRoleProvider(
        StaticProvider(BASE_KEY_ID, base_secret),
        role_arn=role_arn,
        external_id=external_id,
        http=http,
        sts_endpoint=sts.url,
    )
    with pytest.raises(CredentialsError) as caught:
        provider.get_credentials()
    assert caught.value.code == code
    _assert_no_secret([str(caught.value), repr(caught.value), repr(provider)], [])
    assert "not-the-secret" not in str(caught.value)


def test_assume_role_chained_on_temporary_credentials(
    http: httpx.Client, sts: FakeStsServer, token_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """OIDC -> AssumeRole into another account, then the ECS API with the result."""
    oidc = oidc_provider(token_file, http, sts)
    cross = AssumeRoleProvider(
        oidc, role_arn=OTHER_ROLE_ARN, external_id="ext-4711", http=http, sts_endpoint=sts.url
    )
    with caplog.at_level(logging.DEBUG):
        creds = cross.get_credentials()
    assert [r.header("x-acs-action") or r.params.get("Action") for r in sts.requests] == [
        "AssumeRoleWithOIDC",
        "AssumeRole",
    ]
    # the AssumeRole call carried the OIDC session's STS token (the fake checks it)
    assert sts.requests[1].header("x-acs-security-token") == sts.issued[0].security_token
    assert creds.access_key_id == sts.issued[1].access_key_id

    token = creds.security_token
    assert token is not None
    secrets = {creds.access_key_id: creds.access_key_secret.get_secret_value()}
    tokens = {creds.access_key_id: token.get_secret_value()}
    with StubEcsServer(PagedResults([api_record(1)]), secrets=secrets, tokens=tokens) as ecs:
        client = EcsClient(region_id="cn-hangzhou", credentials=cross, http=http, endpoint=ecs.url)
        with caplog.at_level(logging.DEBUG):
            assert len(all_results(client, InvocationQuery())) == 1
        assert ecs.checks.problems == []
    _assert_no_secret([caplog.text, repr(cross), repr(creds)], sts.issued)


def test_credentials_repr_and_logs_hold_no_secret(
    http: httpx.Client, imds: FakeMetadataServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        chain = DefaultChain({}, http=http, metadata_url=imds.url)
        creds = chain.get_credentials()
    texts: list[Any] = [caplog.text, repr(chain), repr(creds), str(creds), repr(chain.chosen)]
    _assert_no_secret([str(t) for t in texts], imds.issued)
    assert "STS.ecs0001" in caplog.text  # the key id is logged, which is fine
