"""The config file's model: every section, its fields, defaults and cross-field rules.

A config file (``--config.file``) lists targets; each target is one account (the ``account``
label) in one or more regions, with its credentials and filters::

    targets:
      - name: prod
        region_ids: [cn-hangzhou, cn-beijing]
        credentials: {source: static, access_key_id: LTAI..., access_key_secret_file: /run/ak}
        filters: {tags: {team: sre}}
    refresh: {min_interval_seconds: 30}
    api: {rate_limit_per_second: 5}

Secrets are ``SecretStr``: they never appear in a repr or a summary.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from exporter.ecs.errors import InvalidRequestError
from exporter.ecs.models import MAX_RESULTS_LIMIT, InvocationQuery
from exporter.files import check_secret_text, read_secret_file
from exporter.settings.fields import (
    DEFAULT_SESSION_NAME,
    ApiEndpoint,
    DurationSeconds,
    MetadataUrl,
    Number,
    OidcProviderArn,
    RegionId,
    RoleArn,
    SessionName,
    TargetName,
    WholeNumber,
)
from exporter.validation import MAX_SHOWN_PATH_CHARS, shown_value

# ECS regions, only to catch misspellings (ExporterSettings.warnings); a region missing here
# still works.
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
SECRET_FIELDS: Final = ("access_key_secret", "security_token")
"""Fields whose values are secrets, wherever they stand (their values never reach a message)."""
MIN_RATE_LIMIT_PER_SECOND: Final = 0.01
SUMMARY_TARGETS: Final = 20
"""Targets ``--config.check`` names (it counts them all): a fleet's file may have thousands."""


def endpoint_choice_problem(
    endpoint: str | None, use_vpc_endpoint: bool, names: tuple[str, str]
) -> str | None:
    """The one rule for ``endpoint`` against ``use_vpc_endpoint``, worded with ``names``
    (the config's keys, or the environment's variables)."""
    if endpoint is not None and use_vpc_endpoint:
        return f"give at most one of {names[0]} and {names[1]}"
    return None


class _Section(BaseModel):
    """A config section: unknown keys are errors (typos are caught), values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


def check_secret(name: str, value: SecretStr | None) -> None:
    """Raise ``ValueError`` naming ``name`` (a field or a variable) when ``value`` is set but
    cannot be a secret (:func:`exporter.files.check_secret_text`); the value is never shown."""
    if value is not None:
        try:
            check_secret_text(value.get_secret_value())
        except ValueError as exc:
            raise ValueError(f"{name} {exc}") from None


def _secret_from_file(path: Path, what: str) -> SecretStr:
    try:
        return SecretStr(read_secret_file(path))
    except ValueError as exc:
        raise ValueError(
            f"cannot read {what} {shown_value(str(path), MAX_SHOWN_PATH_CHARS)}: {exc}"
        ) from None


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
            secret = _secret_from_file(self.access_key_secret_file, "access_key_secret_file")
            object.__setattr__(self, "access_key_secret", secret)
        if self.security_token_file is not None:
            token = _secret_from_file(self.security_token_file, "security_token_file")
            object.__setattr__(self, "security_token", token)
        # Inline values follow the rule of secret files (no value is shown).
        for name in SECRET_FIELDS:
            check_secret(name, getattr(self, name))
        return self

    _origin: str = PrivateAttr(default="static")

    @property
    def origin(self) -> str:
        """``static``, or ``environment`` when built from ``ALIBABA_CLOUD_*`` variables."""
        return self._origin

    def mark_from_environment(self) -> None:
        """Label these credentials as the environment's (see ``Target.credentials_label``)."""
        self._origin = "environment"

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
    metadata_url: MetadataUrl | None = None


class OidcRoleCredentialsSettings(_Section):
    """A RAM role assumed with an OIDC token (ACK RRSA); the token file is re-read each time."""

    source: Literal["oidc_role"]
    role_arn: RoleArn
    oidc_provider_arn: OidcProviderArn
    oidc_token_file: Path
    sts_endpoint: ApiEndpoint | None = None
    session_name: SessionName = DEFAULT_SESSION_NAME

    @field_validator("oidc_token_file")
    @classmethod
    def _check_token_file(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(
                f"{shown_value(str(value), MAX_SHOWN_PATH_CHARS)} does not exist or is not a file"
            )
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
    duration_seconds: DurationSeconds = 3600
    sts_endpoint: ApiEndpoint | None = None


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
    tags: list[TagSettings] = Field(default_factory=list)

    @field_validator("tags", mode="before")
    @classmethod
    def _tags_from_mapping(cls, value: object) -> object:
        # `tags: {team: sre}` is the short form of `tags: [{key: team, value: sre}]`.
        if isinstance(value, Mapping):
            return [{"key": key, "value": "" if v is None else v} for key, v in value.items()]
        return value

    @model_validator(mode="before")
    @classmethod
    def _include_history_is_a_target_option(cls, data: object) -> object:
        if isinstance(data, Mapping) and "include_history" in data:
            raise ValueError(
                "include_history is not a filter: write include_history: true on the target, "
                "next to filters"
            )
        return data

    @model_validator(mode="after")
    def _check_with_api_rules(self) -> Self:
        # The API's own rules (record status, tag count and format) live with the query, so
        # the config refuses exactly what the client would refuse.
        try:
            self.to_query().validate()
        except InvalidRequestError as exc:
            raise ValueError((exc.message or str(exc)).removeprefix("invalid query: ")) from None
        return self

    def to_query(self) -> InvocationQuery:
        """The query this filter describes."""
        return InvocationQuery(
            resource_group_id=self.resource_group_id,
            invoke_id=self.invoke_id,
            instance_id=self.instance_id,
            command_id=self.command_id,
            invoke_record_status=self.invoke_record_status,
            tags=tuple((tag.key, tag.value) for tag in self.tags),
        )


class CommandBreakdownSettings(_Section):
    """Opt-in per-command counters, capped: beyond ``max_command_ids`` ids fold into ``other``."""

    enabled: bool = False
    max_command_ids: Annotated[WholeNumber, Field(ge=1, le=1000)] = 50
    command_names: dict[str, str] = Field(default_factory=dict)
    """Command id -> the ``command_name`` label (the API's results do not carry names)."""


class TargetSettings(_Section):
    """One account in one or more regions."""

    name: TargetName
    region_id: RegionId | None = None
    region_ids: list[RegionId] | None = None
    endpoint: ApiEndpoint | None = None
    use_vpc_endpoint: bool = False
    credentials: CredentialsSettings = Field(default_factory=DefaultChainCredentialsSettings)
    assume_role: AssumeRoleSettings | None = None
    filters: FilterSettings = Field(default_factory=FilterSettings)
    page_cap: Annotated[WholeNumber, Field(ge=1, le=10000)] | None = None
    command_breakdown: CommandBreakdownSettings = Field(default_factory=CommandBreakdownSettings)
    include_history: bool = False
    """Count every run of periodic and on-boot tasks by reading each task's history
    (``IncludeHistory=true`` per task and instance whose run ended); without it a periodic task
    shows only its latest run. The one spelling: ``filters.include_history`` is refused with a
    hint to this one."""

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
        problem = endpoint_choice_problem(
            self.endpoint, self.use_vpc_endpoint, ("endpoint", "use_vpc_endpoint")
        )
        if problem is not None:
            raise ValueError(problem)
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

    min_interval_seconds: Annotated[Number, Field(gt=0, le=86400)] = 30
    """A scrape within this time of the last refresh's start reuses it (the rate limiter still
    bounds the API calls whatever this is)."""
    sweep_interval_seconds: Annotated[Number, Field(ge=0, le=604800)] = 600
    """Seconds between full sweeps of the retained results; 0 disables the sweep."""
    sweep_max_backoff: Annotated[WholeNumber, Field(ge=1, le=1024)] = 32
    """While sweeps find nothing in newest-first order, the sweep interval grows (x4 at a time)
    up to this many times ``sweep_interval_seconds``; 1 keeps it fixed."""
    sweep_pages_per_refresh: Annotated[WholeNumber, Field(ge=0, le=10000)] = 20
    """Pages a spaced-out sweep reads per refresh, going on from its NextToken at the next one
    (0: the whole sweep in one refresh)."""
    page_cap: Annotated[WholeNumber, Field(ge=1, le=10000)] = 200
    workers: Annotated[WholeNumber, Field(ge=1, le=64)] | None = None
    """Targets refreshed in parallel; unset: one per target, 4 at least and 64 at most. It also
    bounds the API connections: one pool per endpoint and region, each with at most
    ``max(10, 2 * workers)`` connections and ``workers`` kept idle (see exporter/ecs/pools.py)."""
    tracking_cap: Annotated[WholeNumber, Field(ge=100, le=10_000_000)] = 50000
    scrape_max_wait_seconds: Annotated[Number, Field(ge=0, le=600)] = 9

    @model_validator(mode="after")
    def _check_sweep(self) -> Self:
        if 0 < self.sweep_interval_seconds < self.min_interval_seconds:
            raise ValueError(
                "sweep_interval_seconds must be 0 (off) or at least min_interval_seconds"
            )
        return self


class ApiSettings(_Section):
    """How the exporter talks to the API: timeouts, retries and its own rate limit."""

    timeout_seconds: Annotated[Number, Field(gt=0, le=300)] = 10
    max_attempts: Annotated[WholeNumber, Field(ge=1, le=20)] = 4
    deadline_seconds: Annotated[Number, Field(gt=0, le=3600)] = 60
    max_results: Annotated[WholeNumber, Field(ge=1, le=MAX_RESULTS_LIMIT)] = MAX_RESULTS_LIMIT
    rate_limit_per_second: Annotated[Number, Field(ge=MIN_RATE_LIMIT_PER_SECOND, le=1000)] = 5
    """Requests per second, at least one every 100 seconds: below, a call that finds the
    bucket empty would wait past any deadline and fail, at every refresh."""
    rate_limit_burst: Annotated[WholeNumber, Field(ge=1, le=1000)] | None = None
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
        """How the target authenticates, without any secret: ``static``, ``static+assume_role``;
        ``environment`` for an AccessKey read from the environment (file or variables alike)."""
        source: str = self.credentials.source
        if isinstance(self.credentials, StaticCredentialsSettings):
            source = self.credentials.origin
        return f"{source}+assume_role" if self.assume_role is not None else source


def _named(labels: list[str]) -> str:
    """Target labels for a message: the first :data:`SUMMARY_TARGETS`, then how many more."""
    named = ", ".join(labels[:SUMMARY_TARGETS])
    return (
        named
        if len(labels) <= SUMMARY_TARGETS
        else f"{named} and {len(labels) - SUMMARY_TARGETS} more"
    )


class ExporterSettings(_Section):
    """Everything the exporter needs, from a config file (or built from the environment)."""

    targets: Annotated[list[TargetSettings], Field(min_length=1)]
    refresh: RefreshSettings = Field(default_factory=RefreshSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)

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
                include_history=target.include_history,
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
        without ``ALIBABA_CLOUD_ACCESS_KEY_ID`` in ``environ`` cannot authenticate. One line per
        doubt, naming the targets it is about (the first :data:`SUMMARY_TARGETS`): a file of
        10,000 accounts in a misspelt region gives one line, not 10,000.
        """
        doubts: dict[str, list[str]] = {}  # doubt -> the targets it is about, in order
        # Once per region id: a file of 10,000 accounts names a few regions 10,000 times.
        close_to: dict[str, list[str]] = {}
        for target in self.expanded_targets():
            region = target.region_id
            if region not in KNOWN_REGIONS:
                if region not in close_to:
                    close_to[region] = difflib.get_close_matches(
                        region, KNOWN_REGIONS, n=1, cutoff=0.8
                    )
                if close := close_to[region]:
                    doubt = f"region {region!r}, did you mean {close[0]!r}?"
                    doubts.setdefault(doubt, []).append(target.label)
            if target.credentials.source == "environment" and not environ.get(
                "ALIBABA_CLOUD_ACCESS_KEY_ID"
            ):
                doubt = (
                    "credentials source 'environment' but ALIBABA_CLOUD_ACCESS_KEY_ID is not set"
                )
                doubts.setdefault(doubt, []).append(target.label)
        return [f"{_named(labels)}: {doubt}" for doubt, labels in doubts.items()]

    def summary(self) -> str:
        """A one-line, secret-free description, for ``--config.check``: the targets, the
        first :data:`SUMMARY_TARGETS` of them by name."""
        targets = self.expanded_targets()
        described = _named([f"{t.label} ({t.credentials_label})" for t in targets])
        noun = "target" if len(targets) == 1 else "targets"
        return f"{len(targets)} {noun}: {described}"
