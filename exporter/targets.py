"""Building the parts of one target: credentials, client, refresher (see exporter.app).

:class:`TargetBuilder` holds what every target shares for the application's life (the worker
pool, the HTTP clients and the API's connection pools, the token buckets) and builds a
:class:`RunningTarget` from a configured :class:`~exporter.settings.Target`; a reload builds new
targets with the same builder, so they share the pool, the clients and the buckets of the
targets that stay.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass

import httpx

from exporter.collector import CloudAssistantCollector
from exporter.ecs.client import EcsClient, RetryPolicy
from exporter.ecs.credentials import (
    DEFAULT_METADATA_URL,
    DEFAULT_STS_ENDPOINT,
    AssumeRoleProvider,
    Credentials,
    CredentialsProvider,
    DefaultChain,
    EcsRamRoleProvider,
    EnvironmentProvider,
    OidcRoleProvider,
    StaticProvider,
    sts_endpoint_from_environment,
)
from exporter.ecs.models import InvocationQuery, Page
from exporter.ecs.pools import ApiPools
from exporter.ecs.ratelimit import TokenBucket
from exporter.logs import REDACTOR, SecretRedactor
from exporter.metrics import TargetInfoKey
from exporter.refresh import ApiStatistics, PageSource, RefreshOptions, TargetRefresher
from exporter.settings import (
    ApiSettings,
    EcsRamRoleCredentialsSettings,
    EnvironmentCredentialsSettings,
    ExporterSettings,
    OidcRoleCredentialsSettings,
    StaticCredentialsSettings,
    Target,
    TargetSettings,
)
from exporter.sharding import Sharding
from exporter.state import StateStore, target_identity
from exporter.tracking import CommandBreakdown


def build_credentials(
    target: TargetSettings, *, http: httpx.Client, environ: Mapping[str, str]
) -> CredentialsProvider:
    """The credentials provider a configured target describes (``assume_role`` on top)."""
    settings = target.credentials
    base: CredentialsProvider
    if isinstance(settings, StaticCredentialsSettings):
        token = settings.security_token
        base = StaticProvider(settings.access_key_id, settings.secret, token)
    elif isinstance(settings, EnvironmentCredentialsSettings):
        base = EnvironmentProvider(environ)
    elif isinstance(settings, EcsRamRoleCredentialsSettings):
        base = EcsRamRoleProvider(
            http=http,
            metadata_url=settings.metadata_url or DEFAULT_METADATA_URL,
            role_name=settings.role_name,
        )
    elif isinstance(settings, OidcRoleCredentialsSettings):
        base = OidcRoleProvider(
            role_arn=settings.role_arn,
            oidc_provider_arn=settings.oidc_provider_arn,
            oidc_token_file=settings.oidc_token_file,
            http=http,
            sts_endpoint=settings.sts_endpoint or sts_endpoint_from_environment(environ),
            role_session_name=settings.session_name,
        )
    else:
        base = DefaultChain(environ, http=http)
    role = target.assume_role
    if role is None:
        return base
    return AssumeRoleProvider(
        base,
        role_arn=role.role_arn,
        http=http,
        external_id=role.external_id,
        role_session_name=role.session_name,
        duration_seconds=role.duration_seconds,
        sts_endpoint=role.sts_endpoint or DEFAULT_STS_ENDPOINT,
    )


def refresh_options(settings: ExporterSettings, target: Target) -> RefreshOptions:
    """How ``target`` is refreshed, from the global sections and the target's own options."""
    breakdown = target.command_breakdown
    return RefreshOptions(
        min_refresh_interval=settings.refresh.min_interval_seconds,
        sweep_interval=settings.refresh.sweep_interval_seconds,
        sweep_backoff=settings.refresh.sweep_max_backoff,
        sweep_pages_per_refresh=settings.refresh.sweep_pages_per_refresh,
        page_cap=target.page_cap,
        max_results=settings.api.max_results,
        tracking_cap=settings.refresh.tracking_cap,
        include_history=target.include_history,
        command_breakdown=CommandBreakdown(
            enabled=breakdown.enabled,
            max_command_ids=breakdown.max_command_ids,
            command_names=dict(breakdown.command_names),
        ),
    )


def target_info(target: Target) -> TargetInfoKey:
    """The ``target_info`` labels of ``target``: how it is reached, never a secret."""
    if target.endpoint is not None:
        kind = "custom"
    else:
        kind = "vpc" if target.use_vpc_endpoint else "public"
    return TargetInfoKey(endpoint_kind=kind, credential_source=target.credentials_label)


def quota_identity(target: TargetSettings | Target) -> str:
    """Who the API counts a target's requests against, as far as the config can tell.

    Targets with the same identity in the same region share one token bucket (two targets of
    one account with different filters must not each spend the account's quota). Environment
    and default-chain credentials are the process's one identity.
    """
    if target.assume_role is not None:
        return f"role:{target.assume_role.role_arn}"
    credentials = target.credentials
    if isinstance(credentials, StaticCredentialsSettings):
        return f"access_key:{credentials.access_key_id}"
    if isinstance(credentials, OidcRoleCredentialsSettings):
        return f"role:{credentials.role_arn}"
    if isinstance(credentials, EcsRamRoleCredentialsSettings):
        return f"ecs_ram_role:{credentials.role_name or ''}"
    return f"source:{credentials.source}"


def credentials_identity(target: TargetSettings | Target) -> str:
    """Who a target reads its results as, as an opaque string (a digest of
    :func:`quota_identity`, so no AccessKey id reaches the state files): a target whose identity
    changes judges the results it reads afresh (see ``TargetRefresher.use_credentials``)."""
    return hashlib.sha256(quota_identity(target).encode()).hexdigest()[:16]


class RedactingProvider:
    """A credentials provider that registers every secret it hands out with the log redactor.

    Configured secrets are registered at start-up; temporary ones (STS, instance metadata,
    AssumeRole) appear only at run time, so they are registered here, as defense in depth: no
    code logs them.
    """

    def __init__(self, provider: CredentialsProvider, redactor: SecretRedactor = REDACTOR) -> None:
        self._provider = provider
        self._redactor = redactor
        self._last: Credentials | None = None
        self._previous: tuple[str, ...] = ()
        self._older: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"RedactingProvider({self._provider!r})"

    def get_credentials(self) -> Credentials:
        credentials = self._provider.get_credentials()
        if credentials is not self._last:
            secrets = credentials.secret_values()
            self._redactor.add_all(secrets)
            # Keep the current and the previous set (a request signed with the previous one may
            # still be logging); older ones are forgotten, so the redactor stays small.
            for old in self._older:
                if old not in secrets:
                    self._redactor.discard(old)
            self._older = self._previous
            self._previous = secrets
            self._last = credentials
        return credentials


def pool_key(target: Target) -> tuple[str, str | None, bool]:
    """The connection pool ``target``'s client calls through (:class:`ApiPools`): its region's,
    at the endpoint it calls."""
    return (target.region_id, target.endpoint, target.use_vpc_endpoint)


def identity_of(target: Target) -> str:
    """``target``'s identity (:func:`exporter.state.target_identity`)."""
    return target_identity(
        target.account,
        target.region_id,
        target.endpoint,
        target.query,
        include_history=target.include_history,
    )


class SwitchableSource:
    """The page source a refresher reads through, whose client a reload can replace (new
    credentials or API settings) without touching the refresher and its tracker."""

    def __init__(self, client: PageSource) -> None:
        self.client = client

    def iter_pages(
        self,
        query: InvocationQuery,
        *,
        max_results: int = 50,
        max_pages: int | None = None,
        next_token: str = "",
    ) -> Iterator[Page]:
        # The client of the moment a walk starts serves that whole walk.
        return self.client.iter_pages(
            query, max_results=max_results, max_pages=max_pages, next_token=next_token
        )


ClientFactory = Callable[[ApiStatistics], EcsClient]
"""Builds a target's client, whose requests feed the given statistics."""


@dataclass(frozen=True)
class ClientSpec:
    """What a target's client is built from: when it changes, a reload rebuilds the client."""

    target: Target
    configured: TargetSettings
    api: ApiSettings


@dataclass
class RunningTarget:
    """One target of the running configuration and what was built for it."""

    target: Target
    identity: str
    refresher: TargetRefresher
    source: SwitchableSource
    client_spec: ClientSpec
    options: RefreshOptions


class TargetBuilder:
    """Builds targets' clients and refreshers on the resources every target shares."""

    def __init__(
        self,
        *,
        executor: Executor,
        api_http: httpx.Client,
        api_pools: ApiPools | None,
        credentials_http: httpx.Client,
        environ: Mapping[str, str],
        clock: Callable[[], float] = time.time,
        collector: CloudAssistantCollector,
        state: StateStore | None = None,
        sharding: Sharding | None = None,
    ) -> None:
        self._executor = executor
        self._api_http = api_http
        self._api_pools = api_pools
        self._credentials_http = credentials_http
        self._environ = environ
        self._clock = clock
        self._collector = collector
        self._state = state
        self._sharding = sharding if sharding is not None else Sharding()
        # Shared by every target reading one account's quota in one region, across reloads.
        self._buckets: dict[tuple[str, str, float, int], TokenBucket] = {}

    def build(self, settings: ExporterSettings) -> list[RunningTarget]:
        """Every target of ``settings``, built (not started)."""
        return [
            self.running(settings, target, spec, make_client)
            for target, spec, make_client in self.clients(settings)
        ]

    def clients(self, settings: ExporterSettings) -> list[tuple[Target, ClientSpec, ClientFactory]]:
        """For each of ``settings``' targets this shard owns, what its client is built from and
        a function that builds it, feeding the given statistics. Targets of one configured
        target share one credentials provider (temporary credentials are fetched once)."""
        configured = {
            (target.name, region): target
            for target in settings.targets
            for region in target.regions
        }
        retry = RetryPolicy(
            max_attempts=settings.api.max_attempts, deadline=settings.api.deadline_seconds
        )
        providers: dict[int, CredentialsProvider] = {}

        def factory(target: Target, configured_target: TargetSettings) -> ClientFactory:
            def make_client(api_stats: ApiStatistics) -> EcsClient:
                key = id(configured_target)
                if key not in providers:
                    providers[key] = RedactingProvider(
                        build_credentials(
                            configured_target, http=self._credentials_http, environ=self._environ
                        )
                    )
                return EcsClient(
                    region_id=target.region_id,
                    credentials=providers[key],
                    http=(
                        self._api_pools.pool(pool_key(target))
                        if self._api_pools is not None
                        else self._api_http
                    ),
                    endpoint=target.endpoint,
                    use_vpc_endpoint=target.use_vpc_endpoint,
                    retry=retry,
                    timeout=settings.api.timeout_seconds,
                    rate_limiter=self._bucket(settings.api, configured_target, target.region_id),
                    on_request=api_stats.record_request,
                    redact=REDACTOR.redact,  # every secret the exporter loaded, beyond its own
                )

            return make_client

        built = []
        for target in self._sharding.select(settings.expanded_targets(), identity_of):
            configured_target = configured[(target.account, target.region_id)]
            spec = ClientSpec(target, configured_target, settings.api)
            built.append((target, spec, factory(target, configured_target)))
        return built

    def retain_pools(self, targets: Iterable[Target]) -> Callable[[], None] | None:
        """Forget the connection pools none of ``targets`` calls through; returns what closes
        them, to be called once no refresh can still be using them (None: nothing to close)."""
        if self._api_pools is None:
            return None
        unused = self._api_pools.retain({pool_key(target) for target in targets})
        if not unused:
            return None

        def close() -> None:
            for pool in unused:
                pool.close()

        return close

    def _bucket(self, api: ApiSettings, target: TargetSettings, region_id: str) -> TokenBucket:
        key = (quota_identity(target), region_id, api.rate_limit_per_second, api.burst)
        if key not in self._buckets:
            self._buckets[key] = TokenBucket(api.rate_limit_per_second, api.burst)
        return self._buckets[key]

    def running(
        self,
        settings: ExporterSettings,
        target: Target,
        spec: ClientSpec,
        make_client: ClientFactory,
    ) -> RunningTarget:
        """A new refresher for ``target`` reading through the client ``make_client`` builds."""
        api_stats = ApiStatistics(self._clock)
        source = SwitchableSource(make_client(api_stats))
        options = refresh_options(settings, target)
        identity = identity_of(target)
        refresher = TargetRefresher(
            target.account,
            target.region_id,
            source,
            target.query,
            options,
            self._executor,
            clock=self._clock,
            api_stats=api_stats,
            on_snapshot=self._collector.prerender,  # rendered by the refresh, not by the scrape
            # Its saved tracker and counters, restored (a reload that adds a target it had).
            store=self._state.target(identity, target.label) if self._state is not None else None,
            credentials=credentials_identity(target),
        )
        return RunningTarget(target, identity, refresher, source, spec, options)
