"""Wiring: from validated :class:`~exporter.settings.ExporterSettings` to a running exporter.

For every target (one account in one region) :class:`~exporter.targets.TargetBuilder` builds,
in this order:

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
:meth:`Application.reconfigure` applies a reloaded configuration (see :mod:`exporter.reload`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

import httpx
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from exporter import __version__
from exporter.allocator import release_free_memory
from exporter.collector import CloudAssistantCollector, Exposition, build_info, build_revision
from exporter.connections import ConnectionLimits
from exporter.ecs.client import EcsClient
from exporter.ecs.pools import ApiPools
from exporter.listeners import ListenError, systemd_sockets
from exporter.metrics import ShardFigures, TargetKey
from exporter.refresh import TargetRefresher, TargetSnapshot
from exporter.reload import ReloadStatus, plan_reload
from exporter.server import ExporterHTTPServer, TargetStatus
from exporter.settings import ExporterSettings, Target
from exporter.sharding import Sharding, refresh_workers
from exporter.signals import RELOAD_SIGNAL, STOP_SIGNALS, SignalInbox, signal_name
from exporter.state import StateCollector, StateStore
from exporter.targets import (
    ClientSpec,
    RunningTarget,
    TargetBuilder,
    credentials_identity,
    identity_of,
    refresh_options,
    target_info,
)
from exporter.webconfig import WebConfig
from exporter.webwatch import WebConfigSource

log = logging.getLogger(__name__)

# At shutdown, how long a refresh still in flight may take to finish. Its result would be thrown
# away, so it is not worth holding up a SIGTERM: a refresh stuck on a slow API is abandoned.
REFRESH_STOP_SECONDS: Final = 2.0
# How often the serving loop looks at ``stop`` when no signal arrives.
SIGNAL_POLL_SECONDS: Final = 0.2
RELEASE_MEMORY_SECONDS: Final = 15.0
"""How often, once every target was refreshed, the pages the C heaps hold free go back to the
system (under a millisecond each time; it kept 8 MB fewer resident with 300 targets)."""
RELEASE_DURING_FIRST_WALKS_SECONDS: Final = 1.0
"""The same while the first walks run (the peak of 300 targets of 1,000 fell from 246 MB to
239 MB, with no measurable CPU)."""


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
    api_pools: ApiPools | None = None
    """The ECS clients' connection pools (None: they call through ``http_clients``)."""
    _stopping: Future[None] = field(default_factory=Future)
    # What the scrapes waiting for refreshes wait on (begin_stop sets them all).
    _scrape_waits: set[threading.Event] = field(default_factory=set)
    _scrape_waits_lock: threading.Lock = field(default_factory=threading.Lock)
    exposition: Exposition | None = None
    """The /metrics body (``registry`` rendered by prometheus_client when None)."""
    builder: TargetBuilder | None = None
    """Builds the targets a reload adds (None: the application cannot be reconfigured)."""
    running: list[RunningTarget] = field(default_factory=list)
    collector: CloudAssistantCollector | None = None
    reload_status: ReloadStatus = field(default_factory=ReloadStatus)
    state: StateStore | None = None
    """The state directory (``--storage.path``), None when persistence is off."""
    sharding: Sharding = field(default_factory=Sharding)
    configured_targets: int = 0
    """Targets in the configuration, this shard's (``targets``) and the others'."""
    workers: int = 0
    """Refresh workers, sized at start (0: not known)."""
    _settled: bool = False
    _released_at: float = 0.0

    def shard_summary(self) -> str:
        """Which shard this is and how many targets it owns, for the log and landing page; ``""``
        when not sharded."""
        return self.sharding.describe(len(self.targets), self.configured_targets)

    def shard_figures(self) -> ShardFigures:
        return ShardFigures(
            self.sharding.shard, self.sharding.total, len(self.targets), self.configured_targets
        )

    def settle_memory(self) -> None:
        """Once every target's first refresh is done, move what they built (the tracked
        results: most of the process's objects) out of the garbage collector's generations.

        They live as long as the targets, and the refreshes free them by reference counting;
        left in the oldest generation, every full collection would walk all of them again.
        Called by the serving loop whenever no signal came for a while. It hands the pages the
        C heaps hold free back to the system: at most every
        :data:`RELEASE_DURING_FIRST_WALKS_SECONDS` while the first walks run (what they free
        between the records they keep), then every :data:`RELEASE_MEMORY_SECONDS` (what the
        refreshes and the scrapes freed).
        """
        if self._settled:
            now = time.monotonic()
            if now - self._released_at >= RELEASE_MEMORY_SECONDS:
                self._released_at = now
                release_free_memory()
            return
        if not all(r.latest().attempted for r in self.refreshers):
            # The first walks free most of what they allocate (answers, parsed pages) between
            # the records they keep: handing those pages back as they go lowers the peak.
            now = time.monotonic()
            if now - self._released_at >= RELEASE_DURING_FIRST_WALKS_SECONDS:
                self._released_at = now
                release_free_memory()
            return
        self._settled = True
        gc.collect()
        gc.freeze()
        release_free_memory()
        self._released_at = time.monotonic()

    def reconfigure(self, settings: ExporterSettings) -> str:
        """Apply a new, valid configuration (a reload); returns a summary for the log.

        Targets whose identity is unchanged keep their refresher (tracker, counters, refresh in
        flight); their client is rebuilt when its credentials or API settings changed. New
        targets start, removed ones stop. Raises ``ValueError`` or ``EcsError`` (what
        validation let through but a constructor refused) before anything changed.
        """
        if self.builder is None or self.collector is None:
            raise ValueError("this exporter cannot be reconfigured")
        clients = self.builder.clients(settings)  # in the order of the new config
        plan = plan_reload(
            {item.identity: item for item in self.running},
            [(identity_of(target), index) for index, (target, _, _) in enumerate(clients)],
        )
        # Build everything first: a constructor that refuses leaves the running config as it is.
        kept: list[tuple[int, RunningTarget, ClientSpec, EcsClient | None]] = []
        for item, index in plan.keep:
            _, spec, make = clients[index]
            changed = spec != item.client_spec
            kept.append((index, item, spec, make(item.refresher.api_stats) if changed else None))
        started = [(index, self.builder.running(settings, *clients[index])) for index in plan.start]
        self._warn_restart_only(
            settings, [(item, clients[index][0]) for item, index in plan.keep], len(clients)
        )
        for _, item, spec, client in kept:
            if client is not None:
                item.source.client = client
                item.refresher.use_credentials(credentials_identity(spec.target))
            item.target, item.client_spec = spec.target, spec
        running = [
            item for _, item in sorted([(i, item) for i, item, _, _ in kept] + started, key=_first)
        ]
        self.collector.retarget(
            {
                TargetKey(i.target.account, i.target.region_id): target_info(i.target)
                for i in running
            }
        )
        self.settings = settings
        self.configured_targets = len(settings.expanded_targets())
        self.targets = [item.target for item in running]
        self.running = running
        # One assignment: a scrape sees the old list or the new one, never a mix.
        self.refreshers = [item.refresher for item in running]
        for item in plan.stop:  # a refresh of theirs in flight saves nothing (see retire)
            item.refresher.retire()
        # The pools no target calls through any more, closed once the refreshes now in flight
        # (a removed target's, an old client's) are done with them.
        close_unused = self.builder.retain_pools(self.targets)
        if close_unused is not None:
            busy = [item.refresher.in_flight() for item in (*plan.stop, *running)]
            when_all_done([f for f in busy if f is not None], close_unused)
        if self.state is not None:
            forget_state(self.state, settings, self.sharding, running)
        for _, item in started:
            if self._stopping.done():  # shutdown began meanwhile (an HTTP reload racing it)
                item.refresher.stop_refreshing()
            else:
                item.refresher.start_if_due()
        new = [item.target for _, item in started]
        return (
            f"{len(plan.keep)} kept, {len(started)} added"
            + (f" ({describe_targets(new)})" if new else "")
            + f", {len(plan.stop)} removed"
            + (f" ({describe_targets([i.target for i in plan.stop])})" if plan.stop else "")
        )

    def _warn_restart_only(
        self,
        settings: ExporterSettings,
        kept: Sequence[tuple[RunningTarget, Target]],
        targets: int,
    ) -> None:
        """Log what a reload cannot apply (it needs a restart): to running targets, and the
        refresh workers, sized at start (also when ``refresh.workers`` is not set and the
        number of ``targets`` this process owns changed what it would be)."""
        for item, target in kept:
            if refresh_options(settings, target) != item.options:
                log.warning(
                    "changed refresh options of a kept target apply after a restart",
                    extra={"target": target.label},
                )
        restart_only = [
            name
            for name in ("workers", "scrape_max_wait_seconds")
            if getattr(settings.refresh, name) != getattr(self.settings.refresh, name)
        ]
        if "workers" not in restart_only and self.workers:
            workers = refresh_workers(settings.refresh.workers, targets)
            if workers != self.workers:
                log.warning(
                    "refresh workers stay as sized at start until a restart",
                    extra={"workers": self.workers, "after_restart": workers},
                )
        if restart_only:
            log.warning(
                "changed settings apply after a restart",
                extra={"settings": ", ".join(f"refresh.{name}" for name in restart_only)},
            )

    def prepare_scrape(self, max_wait: float) -> None:
        """Start every refresh that is due and wait for them together, at most ``max_wait``.

        Returns at once when :meth:`begin_stop` is called, so a scrape in flight at shutdown
        answers with the last snapshots instead of waiting for a slow API.
        """
        futures = [f for f in (r.start_if_due() for r in self.refreshers) if f is not None]
        if not futures or max_wait <= 0:
            return
        # One wake-up, when the last refresh ends: waiting for the first of those pending again
        # and again woke this thread at every refresh and re-armed every future (O(n²)).
        all_done = threading.Event()
        with self._scrape_waits_lock:
            self._scrape_waits.add(all_done)
        try:
            if not self._stopping.done():  # begin_stop() sets it first, then the waits
                when_all_done(futures, all_done.set)
                all_done.wait(max_wait)
        finally:
            with self._scrape_waits_lock:
                self._scrape_waits.discard(all_done)

    def begin_stop(self) -> None:
        """Shutdown has begun: no new refresh starts, and scrapes waiting for refreshes stop
        waiting (idempotent)."""
        for refresher in self.refreshers:
            refresher.stop_refreshing()
        # InvalidStateError: another thread set it first.
        with contextlib.suppress(InvalidStateError):
            self._stopping.set_result(None)
        with self._scrape_waits_lock:
            for waiting in self._scrape_waits:
                waiting.set()

    def start_refreshes(self) -> None:
        """Start the first refresh of every target (so ``/-/ready`` turns true without a scrape)."""
        for refresher in self.refreshers:
            refresher.start_if_due()

    def snapshot_version(self) -> tuple[object, ...]:
        """Every target's latest snapshot: a new object whenever a refresh publishes one, so
        the server knows a rendering of the registry is still current."""
        return (
            *(refresher.latest() for refresher in self.refreshers),
            self.reload_status.read(),
        )

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
        if self.api_pools is not None:
            self.api_pools.close()
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
    """Build (but do not start) the exporter for ``settings``.

    ``environ`` is what the environment-reading credential sources see (``os.environ`` by
    default); ``transport`` replaces the network for every HTTP client (tests). Without
    ``exporter_metrics`` (``--web.disable-exporter-metrics``) the process and platform
    collectors are left out. ``state`` is where the targets' trackers and counters are kept
    across restarts (none when None): the application closes it.
    """
    environ = os.environ if environ is None else environ
    sharding = sharding if sharding is not None else Sharding()
    configured_targets = settings.expanded_targets()
    targets = sharding.select(configured_targets, identity_of)  # this shard's
    workers = refresh_workers(settings.refresh.workers, len(targets))
    limits = httpx.Limits(max_connections=max(10, 2 * workers), max_keepalive_connections=workers)
    # One TLS context (CA bundle loaded once) for both clients: each costs about 0.8 MB.
    tls = httpx.create_ssl_context()
    api_http = httpx.Client(limits=limits, transport=transport, follow_redirects=False, verify=tls)
    # The ECS clients call httpx's transport layer (httpcore pools, one per endpoint and region)
    # directly: the Client's layers cost a third of a call's CPU and do nothing for them. Only
    # when the environment names a proxy do they go through the Client, which applies it.
    api_pools = (
        ApiPools(ssl_context=tls, workers=workers)
        if transport is None and not urllib.request.getproxies_environment()
        else None
    )
    # STS may need the environment's HTTP(S)_PROXY; the instance metadata service is link-local
    # and must never go through it (a proxy would answer for it, or refuse it).
    metadata_direct = (
        {} if transport is not None else {"all://100.100.100.200": httpx.HTTPTransport()}
    )
    credentials_http = httpx.Client(
        transport=transport, follow_redirects=False, verify=tls, mounts=metadata_direct
    )
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="refresh")

    app: Application | None = None  # the collector reads the refreshers of the moment
    reload_status = ReloadStatus(clock)
    collector = CloudAssistantCollector(
        lambda: [] if app is None else [r.latest() for r in app.refreshers],
        build=build_info(__version__, build_revision(environ)),
        target_info={TargetKey(t.account, t.region_id): target_info(t) for t in targets},
        reload_status=reload_status,
        shard=lambda: ShardFigures(0, 1, 0, 0) if app is None else app.shard_figures(),
    )
    builder = TargetBuilder(
        executor=executor,
        api_http=api_http,
        api_pools=api_pools,
        credentials_http=credentials_http,
        environ=environ,
        clock=clock,
        collector=collector,
        state=state,
        sharding=sharding,
    )
    running = builder.build(settings)
    if state is not None:
        forget_state(state, settings, sharding, running)

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
    app = Application(
        settings=settings,
        targets=targets,
        refreshers=[item.refresher for item in running],
        registry=registry,
        executor=executor,
        http_clients=[api_http, credentials_http],
        api_pools=api_pools,
        exposition=Exposition(runtime, collector),
        builder=builder,
        running=running,
        collector=collector,
        reload_status=reload_status,
        state=state,
        sharding=sharding,
        configured_targets=len(configured_targets),
        workers=workers,
    )
    return app


def when_all_done(futures: Sequence[Future[None]], action: Callable[[], None]) -> None:
    """Call ``action`` once, when every one of ``futures`` is done (now when none is pending):
    in the thread that completes the last one, so it must be quick."""
    lock = threading.Lock()
    left = len(futures) + 1  # + 1: this call's own share, so none runs it before it ends

    def one_done(_: object = None) -> None:
        nonlocal left
        with lock:
            left -= 1
            if left:
                return
        action()

    for future in futures:
        future.add_done_callback(one_done)
    one_done()


def _first(pair: tuple[int, RunningTarget]) -> int:
    return pair[0]


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
    web_config_source: WebConfigSource | None = None,
    reload: Callable[[str], str | None] | None = None,
    lifecycle: bool = False,
    signals: SignalInbox | None = None,
) -> int:
    """Serve ``app`` until a stop signal (or ``stop`` is set); return the exit code.

    It listens on ``listen_address`` and ``listen_addresses``, or on the sockets systemd
    passed (``systemd_socket``), with every route under ``route_prefix``. SIGHUP calls
    ``reload``, as ``POST /-/reload`` does when ``lifecycle`` (``--web.enable-lifecycle``) is
    on; :mod:`exporter.signals` says what every other signal does. The web config comes from
    ``web_config_source`` when given (re-read when its files change), else ``web_config``.
    ``signals`` is an inbox installed earlier (so that a signal during start-up waits for the
    loop instead of ending the process); one is installed here otherwise.

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
            render_metrics=app.exposition.pieces if app.exposition is not None else None,
            scrape_max_wait=app.settings.refresh.scrape_max_wait_seconds,
            telemetry_path=telemetry_path,
            route_prefix=route_prefix,
            web_config=web_config,
            limits=limits,
            data_version=app.snapshot_version,
            web_config_source=web_config_source,
            reload=reload if lifecycle else None,
            shard_summary=app.shard_summary,  # called per page: a reload changes what it says
        )
    except (ListenError, OSError) as exc:
        _log_cannot_listen(exc, addresses)
        app.close()
        return 1
    except BaseException:
        app.close()
        raise

    if signals is None:
        signals = SignalInbox()
        signals.install()
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
                **({"shard": summary} if (summary := app.shard_summary()) else {}),
            },
        )
    app.start_refreshes()
    if on_listening is not None:
        on_listening(server)
    try:
        _serve_signals(signals, stop, reload, on_idle=app.settle_memory)
    finally:
        app.begin_stop()
        finished = server.stop(grace_seconds)
        thread.join(grace_seconds)
        pool_stopped = app.close(min(grace_seconds, REFRESH_STOP_SECONDS))
        signals.restore()
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


def forget_state(
    state: StateStore, settings: ExporterSettings, sharding: Sharding, running: list[RunningTarget]
) -> None:
    """Housekeeping of the state directory: long-unused state of removed targets, and at once
    that of targets another shard owns (see :meth:`StateStore.forget_others`)."""
    elsewhere = {
        identity
        for identity in map(identity_of, settings.expanded_targets())
        if not sharding.owns(identity)
    }
    state.forget_others({item.identity for item in running}, elsewhere)


def _serve_signals(
    signals: SignalInbox,
    stop: threading.Event,
    reload: Callable[[str], str | None] | None,
    on_idle: Callable[[], None] = lambda: None,
) -> None:
    """Act on the signals received until a stop signal or ``stop`` is set (``on_idle`` runs
    whenever no signal came for a while)."""
    # A timed wait, so that the main thread returns to the interpreter to run signal handlers
    # and sees ``stop`` set by another thread.
    while not stop.is_set():
        signum = signals.next(SIGNAL_POLL_SECONDS)
        if signum is None:
            on_idle()
            continue
        name = signal_name(signum)
        if signum == RELOAD_SIGNAL:
            if reload is None:
                log.warning("no configuration file to reload", extra={"signal": name})
            else:
                reload(name)
        elif signum in STOP_SIGNALS:
            log.info("shutting down", extra={"signal": name})
            stop.set()
        else:
            log.warning("signal ignored", extra={"signal": name})


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
