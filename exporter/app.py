"""Wiring: from validated :class:`~exporter.settings.ExporterSettings` to a running exporter.

For every target (one account in one region) the application builds, in this order:

* a credentials provider, one per configured target and shared by its regions (so temporary
  credentials are fetched once), with ``assume_role`` on top when configured;
* a token bucket per Alibaba account (as far as the config tells: AccessKey id or role) and
  region, shared by every target reading that pair, since the API's quota is per account and
  region;
* an :class:`~exporter.refresh.ApiStatistics` (the target's API self-metrics), then an
  :class:`~exporter.ecs.client.EcsClient` whose ``on_request`` hook feeds it;
* a :class:`~exporter.refresh.TargetRefresher` running on a shared thread pool.

One :class:`CloudAssistantCollector` renders every refresher's snapshot and is registered on a
registry created here (never the global one), next to the process and platform collectors.
The HTTP clients are created here and closed by :meth:`Application.close`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, InvalidStateError, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any, Final

import httpcore
import httpx
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from exporter import __version__
from exporter.collector import CloudAssistantCollector, Exposition, build_info, build_revision
from exporter.connections import ConnectionLimits
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
from exporter.ecs.ratelimit import TokenBucket
from exporter.ecs.transport import api_connection_pool
from exporter.listeners import ListenError, systemd_sockets
from exporter.logs import REDACTOR, SecretRedactor
from exporter.metrics import ShardFigures, TargetInfoKey, TargetKey
from exporter.refresh import ApiStatistics, RefreshOptions, TargetRefresher, TargetSnapshot
from exporter.server import ExporterHTTPServer, TargetStatus
from exporter.settings import (
    EcsRamRoleCredentialsSettings,
    EnvironmentCredentialsSettings,
    ExporterSettings,
    OidcRoleCredentialsSettings,
    StaticCredentialsSettings,
    Target,
    TargetSettings,
)
from exporter.sharding import Sharding, refresh_workers
from exporter.state import StateCollector, StateStore, target_identity
from exporter.tracking import CommandBreakdown
from exporter.webconfig import WebConfig

log = logging.getLogger(__name__)

# At shutdown, how long a refresh still in flight may take to finish. Its result would be thrown
# away, so it is not worth holding up a SIGTERM: a refresh stuck on a slow API is abandoned.
REFRESH_STOP_SECONDS: Final = 2.0


def identity_of(target: Target) -> str:
    """:func:`~exporter.state.target_identity` of ``target``: what it reads (account, region,
    endpoint, filters). Its state and its shard follow it."""
    return target_identity(
        target.account,
        target.region_id,
        target.endpoint,
        target.query,
        include_history=target.include_history,
    )


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


def first_walk_progress(snapshot: TargetSnapshot) -> str:
    """The landing page's word on the first walk: "done", or how far it got."""
    if snapshot.baseline_done:
        return "done"
    if not snapshot.attempted:
        return ""
    return f"reading: {snapshot.baseline_pages} pages, {snapshot.baseline_results} results so far"


@dataclass
class Application:
    """Everything a running exporter holds; :meth:`close` releases it."""

    settings: ExporterSettings
    targets: list[Target]
    refreshers: list[TargetRefresher]
    registry: CollectorRegistry
    executor: ThreadPoolExecutor
    http_clients: list[httpx.Client]
    connection_pools: list[httpcore.ConnectionPool] = field(default_factory=list)
    _stopping: Future[None] = field(default_factory=Future)
    _settled: bool = False
    exposition: Exposition | None = None
    """The /metrics body (``registry`` rendered by prometheus_client when None)."""
    sharding: Sharding = field(default_factory=Sharding)
    configured_targets: int = 0
    """Targets in the configuration, this shard's (``targets``) and the others'."""

    def shard_summary(self) -> str:
        """Which shard this is and how many targets it owns, for the log and landing page."""
        return self.sharding.describe(len(self.targets), self.configured_targets)

    state: StateStore | None = None
    """The state directory (``--storage.path``), None when persistence is off."""

    def prepare_scrape(self, max_wait: float) -> None:
        """Start every refresh that is due and wait for them together, at most ``max_wait``.

        Returns at once when :meth:`begin_stop` is called, so a scrape in flight at shutdown
        answers with the last snapshots instead of waiting for a slow API.
        """
        futures = [f for f in (r.start_if_due() for r in self.refreshers) if f is not None]
        if not futures or max_wait <= 0:
            return
        deadline = time.monotonic() + max_wait
        pending: set[Future[None]] = set(futures)
        while pending and not self._stopping.done():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            _, pending = wait_futures(
                pending | {self._stopping}, timeout=left, return_when=FIRST_COMPLETED
            )
            pending.discard(self._stopping)

    def begin_stop(self) -> None:
        """Shutdown has begun: no new refresh starts, and scrapes waiting for refreshes stop
        waiting (idempotent)."""
        for refresher in self.refreshers:
            refresher.stop_refreshing()
        # InvalidStateError: another thread set it first.
        with contextlib.suppress(InvalidStateError):
            self._stopping.set_result(None)

    def start_refreshes(self) -> None:
        """Start the first refresh of every target (so ``/-/ready`` turns true without a scrape)."""
        for refresher in self.refreshers:
            refresher.start_if_due()

    def settle_memory(self) -> None:
        """Once every target's first refresh is done, move what they built (the tracked
        results: most of the process's objects) out of the garbage collector's generations.

        They live as long as the targets, and the refreshes free them by reference counting;
        left in the oldest generation, every full collection would walk all of them again.
        Does nothing after the first time it acted.
        """
        if self._settled or not all(r.latest().attempted for r in self.refreshers):
            return
        self._settled = True
        gc.collect()
        gc.freeze()

    def snapshot_version(self) -> tuple[object, ...]:
        """Every target's latest snapshot: a new object whenever a refresh publishes one, so
        the server knows a rendering of the registry is still current."""
        return tuple(refresher.latest() for refresher in self.refreshers)

    def target_statuses(self) -> list[TargetStatus]:
        """Per-target status for the landing page and ``/-/ready``."""
        return [
            TargetStatus(
                account=snapshot.name,
                region_id=snapshot.region_id,
                up=snapshot.up if snapshot.attempted else None,
                last_success_time=snapshot.last_success_timestamp_seconds or None,
                last_error=snapshot.last_failure_reason,
                last_error_detail=snapshot.last_failure_detail,
                results_in_view=(
                    sum(count for _, count in snapshot.view.by_status)
                    if snapshot.attempted
                    else None
                ),
                first_walk=first_walk_progress(snapshot),
                state=snapshot.state,
            )
            for snapshot in (refresher.latest() for refresher in self.refreshers)
        ]

    def close(self, timeout: float = 10.0) -> bool:
        """Cancel queued refreshes, wait for refreshes in flight, close the HTTP clients.

        Returns False when a refresh is still running after ``timeout`` seconds; the clients
        are then left open (closing them under the refresh would only turn its next try into a
        confusing error) and the caller is expected to exit without waiting for it.
        """
        self.begin_stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        waiter = threading.Thread(
            target=self.executor.shutdown, name="refresh-pool-stop", daemon=True
        )
        waiter.start()
        waiter.join(timeout)
        if waiter.is_alive():
            return False
        if self.state is not None:
            self.state.close()
        for client in self.http_clients:
            client.close()
        for pool in self.connection_pools:
            pool.close()
        return True


def build_application(
    settings: ExporterSettings,
    *,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
    transport: httpx.BaseTransport | None = None,
    state: StateStore | None = None,
    exporter_metrics: bool = True,
    sharding: Sharding | None = None,
) -> Application:
    """Build (but do not start) the exporter for ``settings``: of its targets, only those
    ``sharding`` gives this process (every one by default).

    ``environ`` is what the environment-reading credential sources see (``os.environ`` by
    default); ``transport`` replaces the network for every HTTP client (tests). Without
    ``exporter_metrics`` (``--web.disable-exporter-metrics``) the process and platform
    collectors are left out. ``state`` is where the targets' trackers and counters are kept
    across restarts (none when None): the application closes it.
    """
    environ = os.environ if environ is None else environ
    sharding = sharding if sharding is not None else Sharding()
    configured_targets = settings.expanded_targets()
    targets = sharding.select(configured_targets, identity_of)
    workers = refresh_workers(settings.refresh.workers, len(targets))
    limits = httpx.Limits(max_connections=max(10, 2 * workers), max_keepalive_connections=workers)
    # One TLS context (CA bundle loaded once) for both clients: each costs about 0.8 MB.
    tls = httpx.create_ssl_context()
    api_http = httpx.Client(limits=limits, transport=transport, follow_redirects=False, verify=tls)
    # The ECS clients call httpx's transport layer (an httpcore pool) directly: the Client's
    # layers cost a third of a call's CPU and do nothing for them. Only when the environment
    # names a proxy do they go through the Client, which applies it.
    direct = transport is None and not urllib.request.getproxies_environment()
    # One pool per region: httpcore scans every connection of a pool on each request, so one
    # pool for 64 workers costs more CPU than the calls; a region's pool holds what its
    # targets can use at once.
    per_region = Counter(target.region_id for target in targets)
    api_pools = {
        region: api_connection_pool(
            ssl_context=tls,
            max_connections=max(10, 2 * min(workers, count)),
            max_keepalive_connections=min(workers, count),
        )
        for region, count in per_region.items()
        if direct
    }
    # STS may need the environment's HTTP(S)_PROXY; the instance metadata service is link-local
    # and must never go through it (a proxy would answer for it, or refuse it).
    metadata_direct = (
        {} if transport is not None else {"all://100.100.100.200": httpx.HTTPTransport()}
    )
    credentials_http = httpx.Client(
        transport=transport, follow_redirects=False, verify=tls, mounts=metadata_direct
    )
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="refresh")

    providers: dict[int, CredentialsProvider] = {}
    buckets: dict[tuple[str, str], TokenBucket] = {}
    refreshers: list[TargetRefresher] = []
    collector = CloudAssistantCollector(
        lambda: [refresher.latest() for refresher in refreshers],
        build=build_info(__version__, build_revision(environ)),
        target_info={TargetKey(t.account, t.region_id): target_info(t) for t in targets},
        shard=ShardFigures(sharding.shard, sharding.total, len(targets), len(configured_targets)),
    )
    configured = {
        (target.name, region): target for target in settings.targets for region in target.regions
    }
    retry = RetryPolicy(
        max_attempts=settings.api.max_attempts, deadline=settings.api.deadline_seconds
    )
    identities: set[str] = set()
    for target in targets:
        configured_target = configured[(target.account, target.region_id)]
        key = id(configured_target)
        if key not in providers:
            providers[key] = RedactingProvider(
                build_credentials(configured_target, http=credentials_http, environ=environ)
            )
        bucket_key = (quota_identity(configured_target), target.region_id)
        if bucket_key not in buckets:
            buckets[bucket_key] = TokenBucket(
                settings.api.rate_limit_per_second, settings.api.burst
            )
        api_stats = ApiStatistics(clock)
        client = EcsClient(
            region_id=target.region_id,
            credentials=providers[key],
            http=api_pools.get(target.region_id, api_http),
            endpoint=target.endpoint,
            use_vpc_endpoint=target.use_vpc_endpoint,
            retry=retry,
            timeout=settings.api.timeout_seconds,
            rate_limiter=buckets[bucket_key],
            on_request=api_stats.record_request,
            redact=REDACTOR.redact,  # every secret the exporter loaded, beyond the call's own
        )
        identity = identity_of(target)
        identities.add(identity)
        refresher = TargetRefresher(
            target.account,
            target.region_id,
            client,
            target.query,
            refresh_options(settings, target),
            executor,
            clock=clock,
            api_stats=api_stats,
            on_snapshot=collector.prerender,  # rendered by the refresh, not by the scrape
            store=state.target(identity, target.label) if state is not None else None,
        )
        refreshers.append(refresher)
    if state is not None:
        state.forget_others(identities)

    # /metrics renders the process and platform collectors with prometheus_client and the
    # targets' families from the collector's per-snapshot text; ``registry`` has them all.
    runtime = CollectorRegistry()
    registry = CollectorRegistry()
    if exporter_metrics:  # --web.disable-exporter-metrics leaves them out
        ProcessCollector(registry=runtime)
        PlatformCollector(registry=runtime)
        for runtime_collector in (
            ProcessCollector(registry=None),
            PlatformCollector(registry=None),
        ):
            registry.register(runtime_collector)
    if state is not None:
        runtime.register(StateCollector(state))
        registry.register(StateCollector(state))
    registry.register(collector)
    return Application(
        settings=settings,
        targets=targets,
        refreshers=refreshers,
        registry=registry,
        executor=executor,
        http_clients=[api_http, credentials_http],
        connection_pools=list(api_pools.values()),
        exposition=Exposition(runtime, collector),
        sharding=sharding,
        configured_targets=len(configured_targets),
        state=state,
    )


def target_info(target: Target) -> TargetInfoKey:
    """The ``target_info`` labels of ``target``: how it is reached, never a secret."""
    if target.endpoint is not None:
        kind = "custom"
    else:
        kind = "vpc" if target.use_vpc_endpoint else "public"
    return TargetInfoKey(endpoint_kind=kind, credential_source=target.credentials_label)


def quota_identity(target: TargetSettings) -> str:
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


def describe_targets(targets: Sequence[Target]) -> str:
    """``prod/cn-hangzhou, prod/cn-beijing`` for log lines."""
    return ", ".join(target.label for target in targets)


def serve(
    app: Application,
    *,
    listen_address: tuple[str, int] | None = None,
    telemetry_path: str = "/metrics",
    web_config: WebConfig | None = None,
    on_listening: Callable[[ExporterHTTPServer], None] | None = None,
    stop: threading.Event | None = None,
    grace_seconds: float = 10.0,
    listen_addresses: Sequence[tuple[str, int]] = (),
    systemd_socket: bool = False,
    route_prefix: str = "",
    limits: ConnectionLimits | None = None,
) -> int:
    """Serve ``app`` until SIGTERM/SIGINT (or ``stop`` is set); return the exit code.

    It listens on ``listen_address`` and ``listen_addresses``, or on the sockets systemd
    passed (``systemd_socket``), with every route under ``route_prefix``.

    Shutdown is graceful and prompt: stop accepting, let requests in flight finish (up to
    ``grace_seconds``; a scrape waiting for a refresh answers at once with the last snapshots),
    give refreshes in flight :data:`REFRESH_STOP_SECONDS` to finish, close the HTTP clients,
    then return 0 (a refresh stuck on a slow API is abandoned: the process exits with 0 without
    it). Returns 1 when the address cannot be bound.
    """
    stop = stop if stop is not None else threading.Event()
    addresses = [] if systemd_socket else [*filter(None, [listen_address]), *listen_addresses]
    try:
        server = ExporterHTTPServer(
            addresses=addresses,
            sockets=systemd_sockets() if systemd_socket else (),
            registry=app.registry,
            target_statuses=app.target_statuses,
            prepare_scrape=app.prepare_scrape,
            render_metrics=app.exposition.render if app.exposition is not None else None,
            scrape_max_wait=app.settings.refresh.scrape_max_wait_seconds,
            telemetry_path=telemetry_path,
            route_prefix=route_prefix,
            web_config=web_config,
            limits=limits,
            data_version=app.snapshot_version,
            shard_summary=app.shard_summary() if app.sharding.enabled else "",
        )
    except (ListenError, OSError) as exc:
        _log_cannot_listen(exc, addresses)
        app.close()
        return 1
    except BaseException:
        app.close()
        raise

    previous_handlers = _handle_signals(stop)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="http", daemon=True
    )
    thread.start()
    for url in server.urls:
        log.info(
            "listening",
            extra={
                "address": url,
                "telemetry_path": server.route_prefix + telemetry_path,
                "tls": server.ssl_context is not None,
                "max_connections": server.connections.max_connections,
                "targets": describe_targets(app.targets),
                **({"shard": app.shard_summary()} if app.sharding.enabled else {}),
            },
        )
    app.start_refreshes()
    if on_listening is not None:
        on_listening(server)
    try:
        # A timed wait, so the main thread returns to the interpreter to run signal handlers.
        while not stop.wait(0.5):
            app.settle_memory()
    finally:
        app.begin_stop()
        finished = server.stop(grace_seconds)
        thread.join(grace_seconds)
        pool_stopped = app.close(min(grace_seconds, REFRESH_STOP_SECONDS))
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
    if not finished:
        log.warning("requests still in flight at shutdown", extra={"grace_seconds": grace_seconds})
    log.info("stopped")
    if not pool_stopped:
        # The interpreter joins the pool's threads at exit and would wait for the stuck refresh
        # forever: leave now, the work that matters (in-flight scrapes) is done.
        log.warning("a refresh did not stop in time; exiting without it")
        logging.shutdown()
        os._exit(0)
    return 0


def _handle_signals(stop: threading.Event) -> dict[int, Any]:
    """SIGTERM and SIGINT set ``stop``; SIGHUP is logged (its default action would end the
    process silently). Returns the handlers replaced (none off the main thread)."""

    def request_stop(signum: int, frame: object) -> None:
        log.info("shutting down", extra={"signal": signal.Signals(signum).name})
        stop.set()

    def ignore_hangup(signum: int, frame: object) -> None:
        log.warning(
            "SIGHUP received: a reload is not supported, restart to apply a new configuration",
            extra={"signal": "SIGHUP"},
        )

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, request_stop)
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, ignore_hangup)
    return previous


def _log_cannot_listen(exc: ListenError | OSError, addresses: Sequence[tuple[str, int]]) -> None:
    if isinstance(exc, ListenError):
        address, err = exc.address, exc.reason
    else:
        address = ", ".join(format_listen_address(address) for address in addresses)
        err = exc.strerror or str(exc)
    log.error("cannot listen", extra={"address": address, "err": err})


def format_listen_address(address: tuple[str, int]) -> str:
    """``host:port`` (``[v6]:port``) for messages."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
