"""One target's refresher: schedules refreshes, runs the read plan, hands out snapshots.

A *target* is one account in one region with one set of filters. :class:`TargetRefresher`
owns its :class:`~exporter.tracking.RunTracker` and turns the API's answers into immutable
:class:`TargetSnapshot` objects that the collector renders without waiting on anything.

When a refresh happens
  A scrape (``Application.prepare_scrape``) calls :meth:`TargetRefresher.start_if_due`, which
  starts a refresh when the last one started at least ``min_refresh_interval`` seconds ago,
  waits for the refreshes it got (bounded by Prometheus' scrape timeout) and renders
  :meth:`TargetRefresher.latest`. One refresh at most is in flight per target (see
  :mod:`exporter.refresh.scheduling`); what it reads is :mod:`exporter.refresh.plan`'s.

Failures
  A failing refresh sets ``up`` to 0 and keeps everything already applied: applying a record is
  idempotent and counts are keyed, so nothing is counted twice when the target recovers. A fast
  path that failed half-way is resumed by the next one (which reads on past the pages it saw).
  A bug in a refresh or in building a snapshot is logged and shows as ``up`` 0; the previous
  values keep being served. Failures of one target never touch another; a wall clock set back
  does not hold the refreshes up.

Self-metrics
  The target's :class:`~exporter.refresh.apistats.ApiStatistics` is created before its client
  (whose ``on_request`` hook it is) and handed to the refresher.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, replace
from typing import Literal

from exporter.ecs.errors import FAILURE_REASONS, EcsError
from exporter.ecs.models import InvocationQuery
from exporter.logs import raised_at
from exporter.refresh.apistats import ApiStatistics
from exporter.refresh.options import PageSource, RefreshOptions
from exporter.refresh.plan import ReadPlan
from exporter.refresh.scheduling import RefreshScheduler
from exporter.state import TargetStore
from exporter.tracking import CounterTotals, HistogramValue, RunTracker, ViewSummary


@dataclass(frozen=True, slots=True)
class TargetSnapshot:
    """Everything the collector shows for one target, as of its last refresh.

    ``attempted`` is False until the first refresh finished (successfully or not).
    """

    name: str
    region_id: str
    attempted: bool
    up: bool
    refresh_duration_seconds: float
    last_success_timestamp_seconds: float
    refreshes: int
    refresh_failures: tuple[tuple[str, int], ...]
    refresh_pages: int
    results_truncated: bool
    invalid_records: int
    api_requests: tuple[tuple[str, int], ...]
    api_request_duration: HistogramValue
    api_rate_limit_wait_seconds: float
    view: ViewSummary
    counters: CounterTotals
    command_breakdown: bool
    last_failure_reason: str  # the failure reason of the last refresh, "" when it succeeded
    last_failure_detail: str  # its code and message (never a secret), "" when it succeeded
    label_values_folded: int = 0  # distinct API values shown as "other" (see ValueFolder)
    baseline_done: bool = False
    """The first walk is complete: runs are counted from then on."""
    baseline_pages: int = 0
    """Pages the first walk read so far (over all its attempts)."""
    baseline_results: int = 0
    """Results the first walk recorded so far (the tracked results once it is done)."""
    api_clock_offset_seconds: float | None = None
    """How far the API's clock is ahead of this host's (negative: behind); None while no
    answer told (see :class:`~exporter.refresh.apistats.ApiClock`)."""
    state: str = "fresh"  # "restored": the counters resumed from the state directory
    sweep_interval_seconds: float = 0.0
    """The sweep interval now (see :class:`~exporter.refresh.sweeps.SweepSchedule`)."""


class TargetRefresher:
    """Refreshes one target and hands out immutable snapshots (see the module docstring).

    ``executor`` runs the refreshes (shared by all targets; its size bounds the concurrency);
    ``clock`` gives the wall-clock time in epoch seconds; ``api_stats`` is what the client's
    ``on_request`` hook feeds (a new one when not given). A ``query`` with ``include_history``
    is read without it and turns ``options.include_history`` on (see
    :mod:`exporter.refresh.plan`).
    """

    def __init__(
        self,
        name: str,
        region_id: str,
        client: PageSource,
        query: InvocationQuery,
        options: RefreshOptions,
        executor: Executor,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
        api_stats: ApiStatistics | None = None,
        on_snapshot: Callable[[TargetSnapshot], None] | None = None,
        store: TargetStore | None = None,
        credentials: str = "",
    ) -> None:
        self.name = name
        self.region_id = region_id
        self.client = client
        # History is read per periodic task, never as the target's view: a query asking for it
        # turns the option on instead.
        if query.include_history:
            options = replace(options, include_history=True)
            query = replace(query, include_history=False)
        self.query = query
        self.options = options
        self.api_stats = api_stats if api_stats is not None else ApiStatistics(clock)
        self._clock = clock
        self._log = logger or logging.getLogger("exporter.refresh")
        # Called in the refresh with each new snapshot (the collector renders it ahead of scrapes).
        self._on_snapshot = on_snapshot
        self._tracker = RunTracker(
            include_history=options.include_history,
            tracking_cap=options.tracking_cap,
            command_breakdown=options.command_breakdown,
        )
        # Who the target reads as (see use_credentials); compared with its state's at a refresh.
        self._credentials = credentials
        # Persist, then publish: each refresh's changes are saved before its snapshot is served.
        self._store = store
        self._state = "fresh"
        if store is not None:
            restored = store.restore_into(self._tracker)
            self._state = restored.state
            if restored.state == "restored":
                self._log.info(
                    "state restored: counters resume",
                    extra={**self._fields(), "results": restored.results},
                )
        self._plan = ReadPlan(
            client,
            query,
            options,
            self._tracker,
            self.api_stats.api_clock,
            self._log,
            self._fields(),
        )
        if self._tracker.baseline_done:  # restored: the first walk was done before a restart
            self._plan.baseline.done = True
            self._plan.baseline.results = len(self._tracker)
        self._scheduler = RefreshScheduler(
            self._run, executor, min_interval=options.min_refresh_interval, clock=clock
        )
        # Written only by the refresh in flight (one at a time).
        self._refreshes = 0
        self._failures = dict.fromkeys(FAILURE_REASONS, 0)
        self._last_failure_reason = ""
        self._last_failure_detail = ""
        self._failed_in_a_row = 0
        self._last_success = 0.0
        self._attempted = False
        self._snapshot = self._build_snapshot(up=False, duration=0.0)

    # --- scheduling --------------------------------------------------------------------------

    @property
    def attempted(self) -> bool:
        """True once a refresh finished, successfully or not (for readiness)."""
        return self._attempted

    def stop_refreshing(self) -> None:
        """Start no new refresh from now on (shutdown); the one in flight, if any, goes on."""
        self._scheduler.stop()

    def retire(self) -> None:
        """The target was removed (a reload): start no new refresh, and let the one in flight,
        if any, neither save nor publish what it read.

        The target's stored state may be a new refresher's by then (the same target added
        back: it restored the state and counts on from it); an old refresh saving over it
        would lower its counters after a restart and lose what it counted. Returns once a
        save in progress, if any, has ended.
        """
        self._scheduler.stop()
        if self._store is not None:
            self._store.retire()

    def start_if_due(self) -> Future[None] | None:
        """Start a refresh if none is in flight and the last one is old enough.

        Returns the refresh in flight (new or shared), or None when the snapshot is fresh (or
        the worker pool is shut down, or :meth:`stop_refreshing` was called).
        """
        return self._scheduler.start_if_due()

    def in_flight(self) -> Future[None] | None:
        """The refresh in flight, if any, without starting one."""
        return self._scheduler.in_flight()

    def latest(self) -> TargetSnapshot:
        """The newest snapshot, without starting anything."""
        return self._snapshot

    def refresh_now(self, timeout: float | None = None) -> TargetSnapshot:
        """Refresh now whatever the interval (after the one in flight, if any) and wait for it."""
        self._scheduler.run_now(timeout)
        return self._snapshot

    def use_credentials(self, credentials: str) -> None:
        """From the next refresh on, the target reads as ``credentials`` (an opaque identity:
        :func:`exporter.targets.credentials_identity`)."""
        self._credentials = credentials

    def _check_credentials(self) -> None:
        """When the target now reads as someone else than its state was read as (a reload or a
        restart with another AccessKey or role: maybe another account), the results it shows
        are judged afresh from its last read on (the last its state recorded, after a
        restart): a run that ended before it is backlog, one that ended after it is counted, so
        that rotating a key loses nothing. What it counted stays, and the next read of a result
        it knows changes nothing."""
        tracker, credentials = self._tracker, self._credentials
        if tracker.credentials == credentials:
            return
        last_read = max((entry.seen_at for entry in tracker.view.values()), default=None)
        if tracker.credentials and tracker.baseline_done and last_read is not None:
            self._log.warning(
                "the target reads with other credentials: results that ended before its last "
                "read are taken as backlog",
                extra=self._fields(),
            )
            offset = self.api_stats.api_clock.offset() or 0.0
            tracker.complete_baseline(at=last_read, api_at=last_read + offset)
        tracker.credentials = credentials

    # --- one refresh -------------------------------------------------------------------------

    def _run(self) -> None:
        started = time.monotonic()
        self._check_credentials()
        self._plan.pages.new_refresh()
        baseline_pages = self._plan.baseline.pages
        up = False
        self._last_failure_reason = ""
        self._last_failure_detail = ""
        try:
            self._plan.refresh(self._clock())
            up = True
        except EcsError as exc:
            reason = exc.reason
            self._failures[reason] += 1
            self._last_failure_reason = reason
            # A first walk that advanced keeps its pace: backing off would only make it
            # longer, and it goes on where it stopped.
            advanced = self._plan.baseline.pages > baseline_pages
            if reason == "throttled" and not advanced:
                self._scheduler.throttled()
            self._last_failure_detail = str(exc)  # the client scrubs secrets from API messages
            self._log.warning(
                "refresh failed",
                extra={
                    **self._fields(),
                    "reason": reason,
                    "error": type(exc).__name__,
                    "detail": exc.message,
                    "code": exc.code,
                    "http_status": exc.http_status,
                    "request_id": exc.request_id,
                },
            )
        except Exception as exc:  # a bug must not take the exporter down: up=0, logged
            self._failures["internal"] += 1
            self._last_failure_reason = "internal"
            self._last_failure_detail = f"{type(exc).__name__} at {raised_at(exc)} (see the log)"
            self._log.error(
                "refresh failed with an unexpected error",
                extra={**self._fields(), "error": type(exc).__name__, "at": raised_at(exc)},
            )
        duration = time.monotonic() - started
        self._refreshes += 1
        if up:
            if self._failed_in_a_row:
                self._log.info(
                    "refresh recovered",
                    extra={**self._fields(), "failed_refreshes": self._failed_in_a_row},
                )
            self._failed_in_a_row = 0
            self._scheduler.recovered()
            self._last_success = self._clock()
        else:
            self._failed_in_a_row += 1
        self._attempted = True
        saved = self._persist()
        if saved == "retired":
            # Removed by a reload (see retire): what this refresh read is not this refresher's
            # to keep or show any more.
            self._log.info("refresh of a removed target ended: not saved", extra=self._fields())
            return
        if saved == "failed":
            # What this refresh counted is not on disk: serving it could show a counter that
            # a restart takes back. The previous values stay; the next refresh saves both.
            self._failures["internal"] += 1
            self._publish_previous(duration, "saving the state failed (see the log)")
        else:
            try:
                self._snapshot = self._build_snapshot(up=up, duration=duration)
            except Exception as exc:  # keep serving the previous values, marked down
                self._log.error(
                    "building the snapshot failed",
                    extra={**self._fields(), "error": type(exc).__name__, "at": raised_at(exc)},
                )
                self._publish_previous(duration, "building the snapshot failed")
        if self._on_snapshot is not None:
            try:
                self._on_snapshot(self._snapshot)
            except Exception as exc:  # only work done ahead: the scrape does it again
                self._log.error(
                    "preparing the snapshot for scrapes failed",
                    extra={**self._fields(), "error": type(exc).__name__, "at": raised_at(exc)},
                )

    def _persist(self) -> Literal["saved", "failed", "retired"]:
        """Save what the refresh changed (one transaction): "failed" when it could not be,
        "retired" when the store writes nothing any more (see :meth:`retire`)."""
        if self._store is None:
            return "saved"
        try:
            # Saved at once: the rows are encoded as the store writes them, from the tracker as
            # it is then (see EncodedRows), so nothing may change it in between.
            changes = self._tracker.export_changes()
            if not self._store.save(changes):
                return "retired"
        except Exception as exc:  # a full disk must not stop the refreshes: logged, retried
            self._log.error(
                "saving the state failed",
                extra={**self._fields(), "error": type(exc).__name__, "detail": str(exc)},
            )
            return "failed"
        self._tracker.changes_saved(changes)
        return "saved"

    def _publish_previous(self, duration: float, detail: str) -> None:
        self._snapshot = replace(
            self._snapshot,
            attempted=True,
            up=False,
            refresh_duration_seconds=duration,
            refreshes=self._refreshes,
            refresh_failures=tuple(self._failures.items()),
            last_failure_reason=self._last_failure_reason or "internal",
            last_failure_detail=self._last_failure_detail or detail,
        )

    def _fields(self) -> dict[str, object]:
        """The log fields naming this target (structured fields travel in ``extra``)."""
        return {"target": self.name, "region_id": self.region_id}

    # --- snapshots ---------------------------------------------------------------------------

    def _build_snapshot(self, *, up: bool, duration: float) -> TargetSnapshot:
        api = self.api_stats.totals()
        plan = self._plan
        return TargetSnapshot(
            name=self.name,
            region_id=self.region_id,
            attempted=self._attempted,
            up=up,
            refresh_duration_seconds=duration,
            last_success_timestamp_seconds=self._last_success,
            refreshes=self._refreshes,
            refresh_failures=tuple(self._failures.items()),
            refresh_pages=plan.pages.pages,
            results_truncated=plan.truncated,
            invalid_records=plan.pages.invalid_records,
            api_requests=api.requests,
            api_request_duration=api.duration,
            api_rate_limit_wait_seconds=api.rate_limit_wait_seconds,
            view=self._tracker.view_summary(self._clock()),
            counters=self._tracker.counter_totals(),
            command_breakdown=self.options.command_breakdown.enabled,
            last_failure_reason=self._last_failure_reason,
            last_failure_detail=self._last_failure_detail,
            label_values_folded=self._tracker.values_folded + api.codes_folded,
            baseline_done=plan.baseline.done,
            baseline_pages=plan.baseline.pages,
            baseline_results=plan.baseline.results,
            api_clock_offset_seconds=self.api_stats.api_clock.offset(),
            state=self._state,
            sweep_interval_seconds=plan.sweep_interval,
        )
