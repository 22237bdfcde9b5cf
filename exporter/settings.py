"""The exporter's configuration: a YAML file, or the environment for the one-account case.

A config file (``--config.file``) lists targets; each target is one account (the ``account``
label) in one or more regions, with its credentials and filters::

    targets:
      - name: prod
        region_ids: [cn-hangzhou, cn-beijing]
        credentials: {source: static, access_key_id: LTAI..., access_key_secret_file: /run/ak}
        filters: {tags: {team: sre}}
    refresh: {min_interval_seconds: 30}
    api: {rate_limit_per_second: 5}

Without a file, the environment describes one account: ``ALIYUN_CLOUDASSISTANT_REGIONS``
(comma-separated), ``ALIYUN_CLOUDASSISTANT_ACCOUNT`` (default ``default``),
``ALIYUN_CLOUDASSISTANT_ENDPOINT``, and ``ALIBABA_CLOUD_ACCESS_KEY_ID`` /
``ALIBABA_CLOUD_ACCESS_KEY_SECRET`` / ``ALIBABA_CLOUD_SECURITY_TOKEN`` (without them, the default
credentials chain: RRSA/OIDC, then the ECS RAM role). ``ALIYUN_CLOUDASSISTANT_SECRETS_DIR`` names
a directory of secret files (Docker/Kubernetes secrets) named like those variables.

Every mistake becomes a :class:`ConfigError` naming the source, the field as a dotted path
(``targets[1].credentials.access_key_id``) and what is wrong. Secrets are ``SecretStr``: they never
appear in a repr, an error or a summary.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final, Literal, Self
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from exporter.ecs.errors import InvalidRequestError
from exporter.ecs.models import INVOKE_RECORD_STATUSES, InvocationQuery

ENV_PREFIX: Final = "ALIYUN_CLOUDASSISTANT_"
SECRETS_DIR_VARIABLE: Final = "ALIYUN_CLOUDASSISTANT_SECRETS_DIR"
# ECS regions, only to catch misspellings (Settings.warnings); a region missing here still works.
KNOWN_REGIONS: Final = (
    "cn-qingdao", "cn-beijing", "cn-zhangjiakou", "cn-huhehaote", "cn-wulanchabu",
    "cn-hangzhou", "cn-shanghai", "cn-nanjing", "cn-fuzhou", "cn-wuhan-lr", "cn-shenzhen",
    "cn-heyuan", "cn-guangzhou", "cn-chengdu", "cn-hongkong", "ap-northeast-1",
    "ap-northeast-2", "ap-southeast-1", "ap-southeast-3", "ap-southeast-5", "ap-southeast-6",
    "ap-southeast-7", "us-east-1", "us-west-1", "eu-west-1", "eu-central-1", "me-east-1",
    "me-central-1", "na-south-1", "cn-shanghai-finance-1", "cn-shenzhen-finance-1",
    "cn-beijing-finance-1",
)  # fmt: skip
CREDENTIAL_SOURCES: Final = ("static", "environment", "ecs_ram_role", "oidc_role", "default")
MAX_RESULTS_LIMIT: Final = 50  # the API's maximum MaxResults
# A config of thousands of targets is far smaller; a larger file is a mistake (a log, a dump,
# /dev/zero) and reading it whole would only waste memory.
MAX_CONFIG_FILE_BYTES: Final = 4 * 1024 * 1024
MAX_SECRET_FILE_BYTES: Final = 64 * 1024
# An error lists at most this many problems (a file with the same mistake in every target
# would otherwise print thousands of lines).
MAX_PROBLEMS_SHOWN: Final = 20

# cn-hangzhou, ap-southeast-1, cn-shanghai-finance-1, us-east-1 ...
_REGION_ID: Final = re.compile(r"^[a-z]{2,}(?:-[a-z0-9]+){1,4}$")
_TARGET_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$")
_ROLE_ARN: Final = re.compile(r"^acs:ram::\d+:role/\S+$")
_OIDC_PROVIDER_ARN: Final = re.compile(r"^acs:ram::\d+:oidc-provider/\S+$")
_SESSION_NAME: Final = re.compile(r"^[\w.@-]{2,64}$")


class ConfigProblem(BaseModel):
    """One thing wrong with the configuration: where (a dotted path) and what."""

    model_config = ConfigDict(frozen=True)

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """The configuration cannot be used. ``str()`` is the full, secret-free explanation."""

    def __init__(self, source: str, problems: Sequence[ConfigProblem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return f"{self.source}: {self.problems[0]}"
        shown = self.problems[:MAX_PROBLEMS_SHOWN]
        details = "".join(f"\n  {problem}" for problem in shown)
        hidden = len(self.problems) - len(shown)
        more = f"\n  ... and {hidden} more" if hidden else ""
        return f"{self.source}: {len(self.problems)} problems:{details}{more}"


def read_text_file(path: Path, *, max_bytes: int) -> str:
    """The UTF-8 text of the regular file ``path`` (symlinks followed), at most ``max_bytes``.

    Raises ``ValueError`` with a short reason that does not repeat the path or the content:
    missing, unreadable, a directory, not a regular file (a FIFO or a device would block or
    never end), too large, not UTF-8.
    """
    try:
        # O_NONBLOCK: opening a FIFO does not wait for a writer (it is refused below).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ValueError(exc.strerror or type(exc).__name__) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ValueError("is a directory, not a file")
        if not stat.S_ISREG(mode):
            raise ValueError("is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(max_bytes + 1)
    except OSError as exc:
        raise ValueError(exc.strerror or type(exc).__name__) from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ValueError(f"is larger than {max_bytes} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None


def _check_url(value: str) -> str:
    """An http(s) URL with a host and nothing after the path; the URL is echoed only if clean."""
    parts = urlsplit(value)
    if parts.username is not None or parts.password is not None:
        raise ValueError("the URL must not contain credentials")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError(f"{value!r} must not have a query or fragment")
    _ = parts.port  # raises ValueError for a port out of range
    return value


def _check_region_id(value: str) -> str:
    if not _REGION_ID.match(value):
        raise ValueError(f"{value!r} is not a region id (expected something like cn-hangzhou)")
    return value


def _check_target_name(value: str) -> str:
    if not _TARGET_NAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid name (1-64 letters, digits or _ . @ : -, "
            "starting with a letter or digit)"
        )
    return value


def _check_role_arn(value: str) -> str:
    if not _ROLE_ARN.match(value):
        raise ValueError(f"{value!r} is not a RAM role ARN (acs:ram::<uid>:role/<name>)")
    return value


def _check_oidc_provider_arn(value: str) -> str:
    if not _OIDC_PROVIDER_ARN.match(value):
        raise ValueError(
            f"{value!r} is not an OIDC provider ARN (acs:ram::<uid>:oidc-provider/<name>)"
        )
    return value


def _check_session_name(value: str) -> str:
    if not _SESSION_NAME.match(value):
        raise ValueError("must be 2-64 letters, digits or . @ - _")
    return value


Url = Annotated[str, AfterValidator(_check_url)]
RegionId = Annotated[str, AfterValidator(_check_region_id)]
TargetName = Annotated[str, AfterValidator(_check_target_name)]
RoleArn = Annotated[str, AfterValidator(_check_role_arn)]
SessionName = Annotated[str, AfterValidator(_check_session_name)]
DEFAULT_SESSION_NAME: Final = "aliyun-cloudassistant-exporter"


def _read_secret_file(path: Path, what: str) -> SecretStr:
    try:
        text = read_text_file(path, max_bytes=MAX_SECRET_FILE_BYTES)
    except ValueError as exc:
        raise ValueError(f"cannot read {what} {str(path)!r}: {exc}") from None
    secret = text.strip()
    if not secret:
        raise ValueError(f"{what} {str(path)!r} is empty")
    return SecretStr(secret)


class _Section(BaseModel):
    """A config section: unknown keys are errors (typos are caught), values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


# --- credentials -------------------------------------------------------------------------------


class StaticCredentialsSettings(_Section):
    """An AccessKey pair (and an STS token), given inline or, better, in files."""

    source: Literal["static"]
    access_key_id: Annotated[str, Field(min_length=1, max_length=128)]
    access_key_secret: SecretStr | None = None
    access_key_secret_file: Path | None = None
    security_token: SecretStr | None = None
    security_token_file: Path | None = None

    @model_validator(mode="after")
    def _resolve_secret_files(self) -> Self:
        if (self.access_key_secret is None) == (self.access_key_secret_file is None):
            raise ValueError("give exactly one of access_key_secret and access_key_secret_file")
        if self.security_token is not None and self.security_token_file is not None:
            raise ValueError("give at most one of security_token and security_token_file")
        # The model is frozen; the files are read once, here, so a bad path fails at start-up.
        if self.access_key_secret_file is not None:
            secret = _read_secret_file(self.access_key_secret_file, "access_key_secret_file")
            object.__setattr__(self, "access_key_secret", secret)
        if self.security_token_file is not None:
            token = _read_secret_file(self.security_token_file, "security_token_file")
            object.__setattr__(self, "security_token", token)
        if self.access_key_secret is not None and not self.access_key_secret.get_secret_value():
            raise ValueError("access_key_secret is empty")
        return self

    @property
    def secret(self) -> SecretStr:
        """The AccessKey secret, whichever way it was given."""
        assert self.access_key_secret is not None  # guaranteed by the validator
        return self.access_key_secret


class EnvironmentCredentialsSettings(_Section):
    """``ALIBABA_CLOUD_ACCESS_KEY_ID`` / ``_SECRET`` / ``ALIBABA_CLOUD_SECURITY_TOKEN``."""

    source: Literal["environment"]


class EcsRamRoleCredentialsSettings(_Section):
    """The RAM role of the ECS instance the exporter runs on (instance metadata, IMDSv2)."""

    source: Literal["ecs_ram_role"]
    role_name: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    metadata_url: Url | None = None


class OidcRoleCredentialsSettings(_Section):
    """A RAM role assumed with an OIDC token (ACK RRSA); the token file is re-read each time."""

    source: Literal["oidc_role"]
    role_arn: RoleArn
    oidc_provider_arn: Annotated[str, AfterValidator(_check_oidc_provider_arn)]
    oidc_token_file: Path
    sts_endpoint: Url | None = None
    session_name: SessionName = DEFAULT_SESSION_NAME

    @field_validator("oidc_token_file")
    @classmethod
    def _check_token_file(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"{str(value)!r} does not exist or is not a file")
        return value


class DefaultChainCredentialsSettings(_Section):
    """The default chain: environment, then OIDC (RRSA), then the ECS RAM role."""

    source: Literal["default"] = "default"


CredentialsSettings = Annotated[
    StaticCredentialsSettings
    | EnvironmentCredentialsSettings
    | EcsRamRoleCredentialsSettings
    | OidcRoleCredentialsSettings
    | DefaultChainCredentialsSettings,
    Field(discriminator="source"),
]


class AssumeRoleSettings(_Section):
    """A RAM role assumed on top of the base credentials: how one exporter reads many accounts."""

    role_arn: RoleArn
    external_id: Annotated[str, Field(min_length=2, max_length=1224)] | None = None
    session_name: SessionName = DEFAULT_SESSION_NAME
    duration_seconds: Annotated[int, Field(ge=900, le=43200)] = 3600
    sts_endpoint: Url | None = None


# --- what to query -----------------------------------------------------------------------------


class TagSettings(_Section):
    """One tag filter; an empty value matches any value of the key."""

    key: str
    value: str = ""


class FilterSettings(_Section):
    """The API's filters (DescribeInvocationResults request parameters)."""

    resource_group_id: Annotated[str, Field(min_length=1)] | None = None
    command_id: Annotated[str, Field(min_length=1)] | None = None
    instance_id: Annotated[str, Field(min_length=1)] | None = None
    invoke_id: Annotated[str, Field(min_length=1)] | None = None
    invoke_record_status: str | None = None
    include_history: bool = False
    tags: list[TagSettings] = Field(default_factory=list)

    @field_validator("tags", mode="before")
    @classmethod
    def _tags_from_mapping(cls, value: object) -> object:
        # `tags: {team: sre}` is the short form of `tags: [{key: team, value: sre}]`.
        if isinstance(value, Mapping):
            return [{"key": key, "value": "" if v is None else v} for key, v in value.items()]
        return value

    @field_validator("invoke_record_status")
    @classmethod
    def _check_record_status(cls, value: str | None) -> str | None:
        if value is not None and value not in INVOKE_RECORD_STATUSES:
            raise ValueError(f"{value!r} is not one of {', '.join(INVOKE_RECORD_STATUSES)}")
        return value

    @model_validator(mode="after")
    def _check_with_api_rules(self) -> Self:
        # The API's own rules (tag count and format, IncludeHistory needs InvokeId) live with
        # the query, so the config refuses exactly what the client would refuse.
        try:
            self.to_query().validate()
        except InvalidRequestError as exc:
            raise ValueError(exc.message or str(exc)) from None
        return self

    def to_query(self) -> InvocationQuery:
        """The query this filter describes."""
        return InvocationQuery(
            resource_group_id=self.resource_group_id,
            invoke_id=self.invoke_id,
            instance_id=self.instance_id,
            command_id=self.command_id,
            invoke_record_status=self.invoke_record_status,
            include_history=self.include_history,
            tags=tuple((tag.key, tag.value) for tag in self.tags),
        )


class CommandBreakdownSettings(_Section):
    """Opt-in per-command counters, capped: beyond ``max_command_ids`` ids fold into ``other``."""

    enabled: bool = False
    max_command_ids: Annotated[int, Field(ge=1, le=1000)] = 50
    command_names: dict[str, str] = Field(default_factory=dict)
    """Command id -> the ``command_name`` label (the API's results do not carry names)."""


class TargetSettings(_Section):
    """One account in one or more regions."""

    name: TargetName
    region_id: RegionId | None = None
    region_ids: list[RegionId] | None = None
    endpoint: Url | None = None
    use_vpc_endpoint: bool = False
    credentials: CredentialsSettings = Field(default_factory=DefaultChainCredentialsSettings)
    assume_role: AssumeRoleSettings | None = None
    filters: FilterSettings = Field(default_factory=FilterSettings)
    page_cap: Annotated[int, Field(ge=1, le=10000)] | None = None
    command_breakdown: CommandBreakdownSettings = Field(default_factory=CommandBreakdownSettings)
    include_history: bool = False
    """Count every run of periodic and on-boot tasks by reading each task's history
    (``IncludeHistory=true`` per task and instance whose run ended); without it a periodic task
    shows only its latest run. ``filters.include_history`` (which the API ties to an invoke_id)
    turns this on too: the target is then read without it and each run read from the history."""

    @field_validator("region_ids")
    @classmethod
    def _check_region_ids(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("region_ids is empty")
        duplicates = sorted({region for region in value if value.count(region) > 1})
        if duplicates:
            raise ValueError(f"region_ids lists {', '.join(duplicates)} more than once")
        return value

    @model_validator(mode="after")
    def _check_choices(self) -> Self:
        if (self.region_id is None) == (self.region_ids is None):
            raise ValueError("give exactly one of region_id and region_ids")
        if self.endpoint is not None and self.use_vpc_endpoint:
            raise ValueError("give at most one of endpoint and use_vpc_endpoint")
        return self

    @property
    def regions(self) -> tuple[str, ...]:
        """The regions this target covers, in the order given."""
        if self.region_ids is not None:
            return tuple(self.region_ids)
        assert self.region_id is not None  # guaranteed by the validator
        return (self.region_id,)


# --- global sections ---------------------------------------------------------------------------


class RefreshSettings(_Section):
    """How often and how deep the exporter reads the API."""

    min_interval_seconds: Annotated[float, Field(gt=0, le=86400)] = 30
    """A scrape within this time of the last refresh's start reuses it (the rate limiter still
    bounds the API calls whatever this is)."""
    sweep_interval_seconds: Annotated[float, Field(ge=0, le=604800)] = 600
    """Seconds between full sweeps of the retained results; 0 disables the sweep."""
    page_cap: Annotated[int, Field(ge=1, le=10000)] = 200
    workers: Annotated[int, Field(ge=1, le=64)] = 4
    tracking_cap: Annotated[int, Field(ge=100, le=10_000_000)] = 50000
    scrape_max_wait_seconds: Annotated[float, Field(ge=0, le=600)] = 9

    @model_validator(mode="after")
    def _check_sweep(self) -> Self:
        if 0 < self.sweep_interval_seconds < self.min_interval_seconds:
            raise ValueError(
                "sweep_interval_seconds must be 0 (off) or at least min_interval_seconds"
            )
        return self


class ApiSettings(_Section):
    """How the exporter talks to the API: timeouts, retries and its own rate limit."""

    timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 4
    deadline_seconds: Annotated[float, Field(gt=0, le=3600)] = 60
    max_results: Annotated[int, Field(ge=1, le=MAX_RESULTS_LIMIT)] = MAX_RESULTS_LIMIT
    rate_limit_per_second: Annotated[float, Field(gt=0, le=1000)] = 5
    rate_limit_burst: Annotated[int, Field(ge=1, le=1000)] | None = None
    """Requests allowed at once; defaults to the per-second rate (rounded up)."""

    @model_validator(mode="after")
    def _check_deadline(self) -> Self:
        if self.deadline_seconds < self.timeout_seconds:
            raise ValueError("deadline_seconds must be at least timeout_seconds")
        return self

    @property
    def burst(self) -> int:
        """The token bucket's size."""
        if self.rate_limit_burst is not None:
            return self.rate_limit_burst
        return max(1, -int(-self.rate_limit_per_second // 1))


# --- the whole configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One account in one region: what one refresher and one ``EcsClient`` serve."""

    account: str
    region_id: str
    credentials: (
        StaticCredentialsSettings
        | EnvironmentCredentialsSettings
        | EcsRamRoleCredentialsSettings
        | OidcRoleCredentialsSettings
        | DefaultChainCredentialsSettings
    )
    assume_role: AssumeRoleSettings | None
    endpoint: str | None
    use_vpc_endpoint: bool
    query: InvocationQuery
    page_cap: int
    command_breakdown: CommandBreakdownSettings
    include_history: bool = False

    @property
    def label(self) -> str:
        """``account/region`` for logs and the landing page."""
        return f"{self.account}/{self.region_id}"

    @property
    def credentials_label(self) -> str:
        """How the target authenticates, without any secret: ``static``, ``static+assume_role``."""
        source = self.credentials.source
        return f"{source}+assume_role" if self.assume_role is not None else source


class ExporterSettings(BaseSettings):
    """Everything the exporter needs, from a config file (or built from the environment)."""

    model_config = SettingsConfigDict(
        extra="forbid", frozen=True, hide_input_in_errors=True, env_prefix=ENV_PREFIX
    )

    targets: Annotated[list[TargetSettings], Field(min_length=1)]
    refresh: RefreshSettings = Field(default_factory=RefreshSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file is the whole truth: it is passed in, and the environment does not mix in.
        return (init_settings,)

    @model_validator(mode="after")
    def _check_unique_targets(self) -> Self:
        seen: set[tuple[str, str]] = set()
        for target in self.targets:
            for region in target.regions:
                if (target.name, region) in seen:
                    raise ValueError(f"target {target.name!r} is listed twice for region {region}")
                seen.add((target.name, region))
        return self

    def expanded_targets(self) -> list[Target]:
        """One :class:`Target` per (target, region), in file order."""
        return [
            Target(
                account=target.name,
                region_id=region,
                credentials=target.credentials,
                assume_role=target.assume_role,
                endpoint=target.endpoint,
                use_vpc_endpoint=target.use_vpc_endpoint,
                query=target.filters.to_query(),
                page_cap=target.page_cap if target.page_cap is not None else self.refresh.page_cap,
                command_breakdown=target.command_breakdown,
                include_history=target.include_history or target.filters.include_history,
            )
            for target in self.targets
            for region in target.regions
        ]

    def secret_values(self) -> Iterator[str]:
        """Every secret of the configuration, for the log redactor."""
        for target in self.targets:
            credentials = target.credentials
            if isinstance(credentials, StaticCredentialsSettings):
                yield credentials.secret.get_secret_value()
                if credentials.security_token is not None:
                    yield credentials.security_token.get_secret_value()

    def warnings(self, environ: Mapping[str, str]) -> list[str]:
        """Doubts that are not errors: what looks like a typo or a missing variable.

        A region id close to a known one but not one of them (``cn-hangzou``) is most likely
        misspelt (a new region far from any known one is not flagged); ``source: environment``
        without ``ALIBABA_CLOUD_ACCESS_KEY_ID`` in ``environ`` cannot authenticate.
        """
        found = []
        for target in self.expanded_targets():
            close = difflib.get_close_matches(target.region_id, KNOWN_REGIONS, n=1, cutoff=0.8)
            if target.region_id not in KNOWN_REGIONS and close:
                found.append(
                    f"{target.label}: region {target.region_id!r}, did you mean {close[0]!r}?"
                )
            if target.credentials.source == "environment" and not environ.get(
                "ALIBABA_CLOUD_ACCESS_KEY_ID"
            ):
                found.append(
                    f"{target.label}: credentials source 'environment' but "
                    "ALIBABA_CLOUD_ACCESS_KEY_ID is not set"
                )
        return found

    def summary(self) -> str:
        """A one-line, secret-free description, for ``--config.check``."""
        targets = self.expanded_targets()
        described = ", ".join(f"{t.label} ({t.credentials_label})" for t in targets)
        noun = "target" if len(targets) == 1 else "targets"
        return f"{len(targets)} {noun}: {described}"


class EnvironmentSettings(BaseSettings):
    """The one-account configuration read from environment variables (no config file)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
    )

    regions: Annotated[list[RegionId], NoDecode, Field(min_length=1)]
    account: TargetName = "default"
    endpoint: Url | None = None
    use_vpc_endpoint: bool = False
    access_key_id: str | None = Field(
        default=None, validation_alias=AliasChoices("ALIBABA_CLOUD_ACCESS_KEY_ID")
    )
    access_key_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    )
    security_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ALIBABA_CLOUD_SECURITY_TOKEN")
    )
    refresh: RefreshSettings = Field(default_factory=RefreshSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)

    @field_validator("regions", mode="before")
    @classmethod
    def _split_regions(cls, value: object) -> object:
        if isinstance(value, str):
            return [region.strip() for region in value.split(",") if region.strip()]
        return value

    @model_validator(mode="after")
    def _check_secret(self) -> Self:
        if self.access_key_id and self.access_key_secret is None:
            raise ValueError(
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET is required "
                "when ALIBABA_CLOUD_ACCESS_KEY_ID is set"
            )
        # A secret or token without its key id is half a configuration: say so now rather
        # than fail every refresh with "no credentials".
        for name, value in (
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", self.access_key_secret),
            ("ALIBABA_CLOUD_SECURITY_TOKEN", self.security_token),
        ):
            if value is not None and not self.access_key_id:
                raise ValueError(f"ALIBABA_CLOUD_ACCESS_KEY_ID is required when {name} is set")
        return self

    def to_exporter_settings(self) -> ExporterSettings:
        """The equivalent config file (validated the same way)."""
        credentials: dict[str, object]
        if self.access_key_id:
            credentials = {
                "source": "static",
                "access_key_id": self.access_key_id,
                "access_key_secret": self.access_key_secret,
                "security_token": self.security_token,
            }
        else:
            credentials = {"source": "default"}
        target: dict[str, object] = {
            "name": self.account,
            "region_ids": self.regions,
            "credentials": credentials,
            "use_vpc_endpoint": self.use_vpc_endpoint,
        }
        if self.endpoint:
            target["endpoint"] = self.endpoint
        return ExporterSettings.model_validate(
            {"targets": [target], "refresh": self.refresh, "api": self.api}
        )


# --- loading and error reporting ---------------------------------------------------------------

_MESSAGES: Final = {
    "missing": "required field is missing",
    "extra_forbidden": "unknown field (check the spelling)",
    "union_tag_not_found": f"'source' is missing (one of: {', '.join(CREDENTIAL_SOURCES)})",
    "union_tag_invalid": f"unknown 'source' (one of: {', '.join(CREDENTIAL_SOURCES)})",
}


def dotted_path(loc: Sequence[int | str]) -> str:
    """``('targets', 1, 'credentials', 'static', 'access_key_id')`` -> the path a user wrote.

    The discriminator tag pydantic inserts after ``credentials`` is not part of the file.
    """
    path = ""
    previous: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not (previous == "credentials" and part in CREDENTIAL_SOURCES):
            path += f".{part}" if path else part
        previous = part
    return path


def _sections() -> dict[type[BaseModel], str]:
    """Every section of the config file and where it stands, for error messages."""
    return {
        ExporterSettings: "at the top level",
        TargetSettings: "in a target",
        StaticCredentialsSettings: "in credentials",
        EcsRamRoleCredentialsSettings: "in credentials",
        OidcRoleCredentialsSettings: "in credentials",
        AssumeRoleSettings: "in assume_role",
        FilterSettings: "in filters",
        TagSettings: "in a tag",
        CommandBreakdownSettings: "in command_breakdown",
        RefreshSettings: "in refresh",
        ApiSettings: "in api",
    }


def _known_field_names() -> list[str]:
    return sorted({name for section in _sections() for name in section.model_fields})


def _unknown_field_message(loc: Sequence[int | str]) -> str:
    message = _MESSAGES["extra_forbidden"]
    name = loc[-1] if loc else ""
    if isinstance(name, str):
        places = sorted(
            {where for section, where in _sections().items() if name in section.model_fields}
        )
        close = difflib.get_close_matches(name, _known_field_names(), n=1, cutoff=0.75)
        if places:  # a real key in the wrong section
            message = f"not a field here: {name!r} belongs {' or '.join(places)}"
        elif close:
            message = f"unknown field, did you mean {close[0]!r}?"
    return message


def problems_from(error: ValidationError) -> list[ConfigProblem]:
    """Secret-free problems from a validation error (messages only, never the input values)."""
    problems = []
    for detail in error.errors(include_url=False, include_input=False, include_context=False):
        message = _MESSAGES.get(detail["type"], detail["msg"])
        if detail["type"] == "extra_forbidden":
            message = _unknown_field_message(detail["loc"])
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        problems.append(ConfigProblem(path=dotted_path(detail["loc"]), message=message))
    return problems


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping.

    Plain YAML keeps the last value, so a second ``targets:`` (or ``api:``) section would
    silently drop the first one.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        first_lines: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                seen = key in first_lines
            except TypeError:  # unhashable: the base constructor reports it
                continue
            if seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first given on line {first_lines[key] + 1})",
                    key_node.start_mark,
                )
            first_lines[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError) -> ConfigProblem:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "cannot parse"
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return ConfigProblem(path="", message=f"invalid YAML: {where}{problem}")


def parse_yaml(text: str) -> object:
    """Parse YAML safely (no arbitrary objects) and strictly (a duplicate key is an error).

    Raises ``ValueError`` with the position and the problem, never the offending text (it
    could hold a secret). Used for the config file and the web config file alike.
    """
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        raise ValueError(_yaml_problem(exc).message) from None
    except RecursionError:  # thousands of nested [ or {: PyYAML's composer recurses
        raise ValueError("invalid YAML: nested too deeply") from None


def load_config_file(path: Path) -> ExporterSettings:
    """Read and validate a YAML config file; raises :class:`ConfigError` naming ``path``."""
    source = f"config file {str(path)!r}"
    try:
        text = read_text_file(path, max_bytes=MAX_CONFIG_FILE_BYTES)
    except ValueError as exc:
        raise ConfigError(source, [ConfigProblem(path="", message=str(exc))]) from None
    try:
        data = parse_yaml(text)
    except ValueError as exc:
        raise ConfigError(source, [ConfigProblem(path="", message=str(exc))]) from None
    if data is None:
        raise ConfigError(source, [ConfigProblem(path="", message="the file is empty")])
    if not isinstance(data, dict):
        message = f"expected a mapping with 'targets' at the top, got a {type(data).__name__}"
        raise ConfigError(source, [ConfigProblem(path="", message=message)])
    try:
        return ExporterSettings(**{str(key): value for key, value in data.items()})
    except ValidationError as exc:
        raise ConfigError(source, problems_from(exc)) from None
    except RecursionError:  # a self-referencing YAML alias (&a [*a])
        message = "the structure is nested too deeply (a recursive YAML alias?)"
        raise ConfigError(source, [ConfigProblem(path="", message=message)]) from None


def load_environment() -> ExporterSettings:
    """The one-account configuration from ``ALIYUN_CLOUDASSISTANT_*`` and ``ALIBABA_CLOUD_*``.

    Secrets may also come from files named like the variables in the directory given by
    ``ALIYUN_CLOUDASSISTANT_SECRETS_DIR``. Raises :class:`ConfigError`.
    """
    source = "environment"
    unknown = _unknown_environment_variables(os.environ)
    if unknown:
        raise ConfigError(source, unknown)
    secrets_dir = os.environ.get(SECRETS_DIR_VARIABLE) or None
    if secrets_dir is not None and not Path(secrets_dir).is_dir():
        message = f"{secrets_dir!r} is not a directory"
        raise ConfigError(source, [ConfigProblem(path=SECRETS_DIR_VARIABLE, message=message)])
    # pydantic-settings only warns about a secret "file" that is a directory (the secret is
    # then silently missing): such a warning is an error, reported before anything else.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            from_environment = EnvironmentSettings(_secrets_dir=secrets_dir)  # type: ignore[call-arg]
            settings = from_environment.to_exporter_settings()
        except ValidationError as exc:
            _raise_for_secret_warnings(source, caught)
            problems = [
                ConfigProblem(path=_environment_name(problem.path), message=problem.message)
                for problem in problems_from(exc)
            ]
            raise ConfigError(source, problems) from None
        except SettingsError as exc:  # a nested section's variable that is not JSON
            raise ConfigError(source, [_settings_error_problem(exc)]) from None
        except OSError as exc:  # a secret file that cannot be read
            message = f"cannot read a secret file: {exc.strerror or type(exc).__name__}"
            problem = ConfigProblem(path=SECRETS_DIR_VARIABLE, message=message)
            raise ConfigError(source, [problem]) from None
    _raise_for_secret_warnings(source, caught)
    return settings


# A Kubernetes Service named aliyun-cloudassistant-exporter injects service-link variables
# (ALIYUN_CLOUDASSISTANT_EXPORTER_SERVICE_HOST, ...) that share the prefix: not typos.
_SERVICE_LINK_PREFIX: Final = f"{ENV_PREFIX}EXPORTER_"


def _known_environment_variables() -> set[str]:
    names = {SECRETS_DIR_VARIABLE}
    for name, info in EnvironmentSettings.model_fields.items():
        if info.validation_alias is not None:
            continue  # the standard ALIBABA_CLOUD_* names
        names.add(f"{ENV_PREFIX}{name.upper()}")
    for section, model in (("REFRESH", RefreshSettings), ("API", ApiSettings)):
        names.update(f"{ENV_PREFIX}{section}__{field.upper()}" for field in model.model_fields)
    return names


def _unknown_environment_variables(environ: Mapping[str, str]) -> list[ConfigProblem]:
    """A problem for each ``ALIYUN_CLOUDASSISTANT_*`` variable the exporter does not read.

    A misspelled variable would otherwise be ignored silently (``..._ENDPIONT``: the real API
    instead of the intended endpoint).
    """
    known = _known_environment_variables()
    problems = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known:
            continue
        if name.startswith(_SERVICE_LINK_PREFIX):
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
        hint = f", did you mean {close[0]}?" if close else f" (known: {', '.join(sorted(known))})"
        problems.append(ConfigProblem(path=name, message=f"unknown variable{hint}"))
    return problems


_SETTINGS_ERROR_FIELD: Final = re.compile(r'error parsing value for field "(\w+)"')


def _settings_error_problem(error: SettingsError) -> ConfigProblem:
    """The variable pydantic-settings could not decode (the value itself is never shown)."""
    match = _SETTINGS_ERROR_FIELD.search(str(error))
    variable = f"{ENV_PREFIX}{match.group(1).upper()}" if match else ""
    return ConfigProblem(
        path=variable,
        message="not valid JSON (set single fields instead, e.g. "
        f"{ENV_PREFIX}REFRESH__MIN_INTERVAL_SECONDS=60)",
    )


def _raise_for_secret_warnings(source: str, caught: Sequence[warnings.WarningMessage]) -> None:
    problems = [
        ConfigProblem(path=SECRETS_DIR_VARIABLE, message=str(warning.message))
        for warning in caught
        if "secret file" in str(warning.message)
    ]
    if problems:
        raise ConfigError(source, problems)


def _environment_name(path: str) -> str:
    """The variable a field of :class:`EnvironmentSettings` is read from."""
    if not path or path.startswith("ALIBABA_CLOUD_"):
        return path
    head, _, rest = path.partition("[")
    name = f"{ENV_PREFIX}{head.replace('.', '__').upper()}"
    return f"{name}[{rest}" if rest else name


def load_settings(config_file: Path | None) -> ExporterSettings:
    """The configuration: the file when one is given, else the environment."""
    if config_file is not None:
        return load_config_file(config_file)
    return load_environment()
