"""Reading the API for one target, on scrape but never more often than needed.

A *target* is one account in one region with one set of filters. :class:`TargetRefresher` owns
its :class:`~exporter.tracking.RunTracker` and turns the API's answers into immutable
:class:`TargetSnapshot` objects that the collector renders without waiting on anything.

When a refresh happens
  A scrape calls :meth:`TargetRefresher.start_if_due`, which starts a refresh when the last one
  started at least ``min_refresh_interval`` seconds ago, waits for the refreshes it got (the
  server bounds that wait by Prometheus' scrape timeout) and renders :meth:`latest`. One refresh
  at most is in flight per target: concurrent scrapes (an HA Prometheus pair, a human with
  curl) share it. A refresh that outlives the wait keeps running in the worker pool; the next
  scrape gets its result. :meth:`snapshot` does both steps for one target.

What a refresh reads (API calls are counted in ``refresh_pages`` and ``api_requests_total``)
  1. *Baseline* (first successful refresh): every page up to the page cap; the backlog is
     recorded without being counted.
  2. *Fast path*: pages from the first one, stopping after a page that brings nothing new or
     changed, or whose last record is known and unchanged (newest-first, nothing new follows).
     The API's order is undocumented; when a new record follows an unchanged known one, the
     order is not newest-first: that is logged once and the sweep covers it.
  3. *In-flight follow-up*, only when the view holds records the service may still change
     (not terminal, a periodic task, an OSS delivery in progress): one
     ``InvokeRecordStatus=Running`` walk for all of them; records absent from it have left
     Running and are looked up by ``InvokeId`` (one paged call per distinct id). A target whose
     own filter is another ``InvokeRecordStatus`` looks each of them up (a Running walk would
     read outside the target).
  4. *History* (``include_history``): ``IncludeHistory=true&InvokeId=..&InstanceId=..`` for
     each periodic task and instance with ended runs not yet counted; each read stops once it
     has seen the runs it needs. Every run is counted once.
  5. *Sweep*, every ``sweep_interval`` seconds: every page up to the page cap. Runs it counts
     were missed by the steps above and also go to ``results_found_by_sweep_total``. A complete
     sweep drops entries the API no longer returns.
  Steady state with no news: one call (two with tasks in flight or periodic tasks).

Failures
  A failing refresh sets ``up`` to 0 and keeps everything already applied: applying a record is
  idempotent and counts are keyed, so nothing is counted twice when the target recovers. A fast
  path that failed half-way is resumed by the next one (which reads on past the pages it saw).
  Only a walk that returned every record of its query, each one usable, makes the exporter
  forget what it did not return. A bug in a refresh or in building a snapshot is logged and
  shows as ``up`` 0; the previous values keep being served. Failures of one target never touch
  another; a wall clock set back does not hold the refreshes up.

Self-metrics
  :meth:`TargetRefresher.record_request` is the client's ``on_request`` hook. The client is
  built before the refresher, so the application gives each target's ``EcsClient`` a hook that
  forwards to the refresher once it exists (clients may share an ``httpx.Client`` and a rate
  limiter, but each target needs its own client for its own self-metrics).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

from exporter.ecs.client import RequestEvent
from exporter.ecs.errors import EcsError, InvalidRequestError, failure_reason
from exporter.ecs.models import TERMINAL_STATUSES, InvocationQuery, Page
from exporter.logs import raised_at
from exporter.metrics import API_DURATION_BUCKETS
from exporter.tracking import (
    Change,
    CommandBreakdown,
    CounterTotals,
    Histogram,
    HistogramValue,
    ResultKey,
    RunTracker,
    ValueFolder,
    ViewSummary,
    run_number,
)

FAILURE_REASONS: tuple[str, ...] = (
    "throttled",
    "server",
    "auth",
    "permission",
    "invalid_request",
    "malformed",
    "transport",
    "credentials",
    "internal",  # a bug in the exporter (logged with where it was raised), never the API's fault
)
_MAX_INVALID_LOGGED = 10_000
_MAX_HISTORY_REFUSED = 10_000
_MAX_THROTTLE_BACKOFF = 8
_T = TypeVar("_T")


class PageSource(Protocol):
    """What the refresher needs of :class:`exporter.ecs.client.EcsClient`."""

    def iter_pages(
        self, query: InvocationQuery, *, max_results: int = 50, max_pages: int | None = None
    ) -> Iterator[Page]:
        """Yield the pages of ``query`` (see ``EcsClient.iter_pages``)."""
        ...


@dataclass(frozen=True)
class RefreshOptions:
    """How one target is refreshed.

    ``page_cap`` bounds each walk (baseline, fast path, follow-up, each look-up, sweep);
    ``sweep_interval`` 0 turns the periodic sweep off. ``max_lookups`` bounds the ``InvokeId``
    look-ups and history reads of one refresh (the rest wait for the next one); ``None`` means
    ``page_cap``.
    """

    min_refresh_interval: float = 30.0
    sweep_interval: float = 600.0
    page_cap: int = 200
    max_results: int = 50
    tracking_cap: int = 50_000
    include_history: bool = False
    command_breakdown: CommandBreakdown = field(default_factory=CommandBreakdown)
    max_lookups: int | None = None


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


class _Walk:
    """The pages of one query, at most ``cap`` of them; ``truncated`` tells if it stopped early,
    ``invalid`` how many records it skipped because they could not be parsed."""

    def __init__(self, refresher: TargetRefresher, query: InvocationQuery) -> None:
        self._refresher = refresher
        self._query = query
        self.truncated = False
        self.invalid = 0

    @property
    def saw_everything(self) -> bool:
        """True when the walk returned every record of its query, each one usable: only then
        does the absence of a record mean that the API no longer has it."""
        return not self.truncated and self.invalid == 0

    def __iter__(self) -> Iterator[Page]:
        options = self._refresher.options
        pages = self._refresher.client.iter_pages(
            self._query, max_results=options.max_results, max_pages=options.page_cap
        )
        for count, page in enumerate(pages, start=1):
            self._refresher._note_page(page)
            self.invalid += len(page.invalid)
            yield page
            if count >= options.page_cap:
                self.truncated = bool(page.next_token)
                return


class TargetRefresher:
    """Refreshes one target and hands out immutable snapshots (see the module docstring).

    ``executor`` runs the refreshes (shared by all targets; its size bounds the concurrency);
    ``clock`` gives the wall-clock time in epoch seconds. A ``query`` with ``include_history``
    is read without it and turns ``options.include_history`` on (see the module docstring).
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
        on_snapshot: Callable[[TargetSnapshot], None] | None = None,
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
        self._executor = executor
        self._clock = clock
        self._log = logger or logging.getLogger(__name__)
        # Called in the refresh with each new snapshot (the collector renders it ahead of scrapes).
        self._on_snapshot = on_snapshot
        self._tracker = RunTracker(
            include_history=options.include_history,
            tracking_cap=options.tracking_cap,
            command_breakdown=options.command_breakdown,
        )
        self._max_lookups = options.max_lookups or options.page_cap

        # Guards the in-flight refresh and when the last one started. Reentrant: a refresh that
        # ends before ``add_done_callback`` runs calls ``_finished`` in the submitting thread.
        self._lock = threading.RLock()
        self._inflight: Future[None] | None = None
        self._stopped = False
        self._last_started: float | None = None

        self._stats_lock = threading.Lock()  # request statistics (written by client threads)
        self._code_folder = ValueFolder(("",))
        self._api_requests: dict[str, int] = {"": 0}
        self._api_durations = Histogram(API_DURATION_BUCKETS)
        self._rate_limit_wait = 0.0

        # Written only by the refresh in flight (one at a time).
        self._refreshes = 0
        self._failures = dict.fromkeys(FAILURE_REASONS, 0)
        self._last_failure_reason = ""
        self._last_failure_detail = ""
        self._failed_in_a_row = 0
        # While the API throttles this target, refreshes space out (the minimum interval doubles
        # per throttled refresh, up to _MAX_THROTTLE_BACKOFF times): retrying at the usual pace
        # would only add to the load that got it throttled.
        self._backoff = 1
        self._last_success = 0.0
        self._last_sweep = 0.0
        self._pages = 0
        self._truncated = False
        self._invalid_records = 0
        self._invalid_seen: set[tuple[str, str, str]] = set()
        self._order_warned = False
        # Set while a fast path is in flight, to when it (or the interrupted one before it)
        # started: a fast path that failed half-way has not seen what lay beyond its last page.
        self._fast_path_since: float | None = None
        self._history_refused: set[str] = set()
        self._turn = 0
        self._attempted = False
        self._snapshot = self._build_snapshot(up=False, duration=0.0)

    # --- self-metrics hooks ------------------------------------------------------------------

    def record_request(self, event: RequestEvent) -> None:
        """The client's ``on_request`` hook: one call per HTTP try."""
        with self._stats_lock:
            code = self._code_folder.fold(event.code)
            self._api_requests[code] = self._api_requests.get(code, 0) + 1
            self._api_durations.observe(event.duration_seconds)
            self._rate_limit_wait += event.rate_limit_wait_seconds

    # --- scheduling --------------------------------------------------------------------------

    @property
    def attempted(self) -> bool:
        """True once a refresh finished, successfully or not (for readiness)."""
        return self._attempted

    def stop_refreshing(self) -> None:
        """Start no new refresh from now on (shutdown); the one in flight, if any, goes on."""
        with self._lock:
            self._stopped = True

    def start_if_due(self) -> Future[None] | None:
        """Start a refresh if none is in flight and the last one is old enough.

        Returns the refresh in flight (new or shared), or None when the snapshot is fresh (or
        the worker pool is shut down, or :meth:`stop_refreshing` was called).
        """
        with self._lock:
            if self._inflight is not None and not self._inflight.done():
                return self._inflight
            if self._stopped:
                return None
            now = self._clock()
            if self._last_started is not None and not _due(
                self._last_started, now, self.options.min_refresh_interval * self._backoff
            ):
                return None
            return self._submit(now)

    def _submit(self, now: float) -> Future[None] | None:
        # Called with self._lock held.
        try:
            future = self._executor.submit(self._run)
        except RuntimeError:  # the pool is shutting down: keep serving the last snapshot
            return None
        self._last_started = now
        self._inflight = future
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: Future[None]) -> None:
        with self._lock:
            if self._inflight is future:
                self._inflight = None

    def snapshot(self, max_wait: float) -> TargetSnapshot:
        """Return the newest snapshot, refreshing first when due (waiting at most ``max_wait``)."""
        future = self.start_if_due()
        if future is not None and max_wait > 0:
            wait_futures([future], timeout=max_wait)
        return self._snapshot

    def latest(self) -> TargetSnapshot:
        """The newest snapshot, without starting anything."""
        return self._snapshot

    def refresh_now(self, timeout: float | None = None) -> TargetSnapshot:
        """Refresh now whatever the interval (after the one in flight, if any) and wait for it."""
        with self._lock:
            previous = self._inflight
        if previous is not None:
            wait_futures([previous], timeout=timeout)
        with self._lock:
            future = self._inflight
            if future is None or future.done():
                future = self._submit(self._clock())
        if future is not None:
            wait_futures([future], timeout=timeout)
        return self._snapshot

    # --- one refresh -------------------------------------------------------------------------

    def _run(self) -> None:
        started = time.monotonic()
        self._pages = 0
        up = False
        self._last_failure_reason = ""
        self._last_failure_detail = ""
        try:
            self._refresh(self._clock())
            up = True
        except EcsError as exc:
            reason = failure_reason(exc)
            self._failures[reason] += 1
            self._last_failure_reason = reason
            if reason == "throttled":
                self._backoff = min(self._backoff * 2, _MAX_THROTTLE_BACKOFF)
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
            self._backoff = 1
            self._last_success = self._clock()
        else:
            self._failed_in_a_row += 1
        self._attempted = True
        try:
            self._snapshot = self._build_snapshot(up=up, duration=duration)
        except Exception as exc:  # keep serving the previous values, marked down
            self._log.error(
                "building the snapshot failed",
                extra={**self._fields(), "error": type(exc).__name__, "at": raised_at(exc)},
            )
            self._snapshot = replace(
                self._snapshot,
                attempted=True,
                up=False,
                refresh_duration_seconds=duration,
                refreshes=self._refreshes,
                refresh_failures=tuple(self._failures.items()),
                last_failure_reason=self._last_failure_reason or "internal",
                last_failure_detail=self._last_failure_detail or "building the snapshot failed",
            )
        if self._on_snapshot is not None:
            try:
                self._on_snapshot(self._snapshot)
            except Exception as exc:  # only work done ahead: the scrape does it again
                self._log.error(
                    "preparing the snapshot for scrapes failed",
                    extra={**self._fields(), "error": type(exc).__name__, "at": raised_at(exc)},
                )

    def _refresh(self, now: float) -> None:
        tracker = self._tracker
        if not tracker.baseline_done:
            self._full_walk(now, sweep=False)
            tracker.complete_baseline(at=now)
            self._last_sweep = now
            self._log_baseline()
        else:
            self._fast_path(now)
            self._follow_in_flight(now)
            if self.options.include_history:
                self._read_histories(now)
            interval = self.options.sweep_interval
            if interval > 0 and _due(self._last_sweep, now, interval):
                self._last_sweep = now  # a failing sweep waits for the next interval too
                self._full_walk(now, sweep=True)
        tracker.expire(now)

    def _log_baseline(self) -> None:
        # A filter that matches nothing looks exactly like a quiet account: say what was found.
        in_view = len(self._tracker)
        fields = {**self._fields(), "results": in_view, "pages": self._pages}
        if in_view == 0 and self.query != InvocationQuery():
            self._log.warning(
                "the first refresh found no results: check the target's filters", extra=fields
            )
        else:
            self._log.info(
                "first refresh done: results in view recorded, not counted", extra=fields
            )

    def _fields(self) -> dict[str, object]:
        """The log fields naming this target (structured fields travel in ``extra``)."""
        return {"target": self.name, "region_id": self.region_id}

    def _note_page(self, page: Page) -> None:
        self._pages += 1
        for record in page.invalid:
            marker = (record.invoke_id, record.instance_id, record.reason)
            if marker in self._invalid_seen:
                continue
            if len(self._invalid_seen) < _MAX_INVALID_LOGGED:
                self._invalid_seen.add(marker)
            self._invalid_records += 1
            self._log.warning(
                "skipped a record that could not be parsed",
                extra={
                    **self._fields(),
                    "invoke_id": record.invoke_id,
                    "instance_id": record.instance_id,
                    "reason": record.reason,
                    "request_id": page.request_id,
                },
            )

    def _warn_order(self) -> None:
        if not self._order_warned:
            self._order_warned = True
            self._log.warning(
                "results do not come newest-first: the fast path may miss new results until "
                "the next full sweep",
                extra=self._fields(),
            )

    def _full_walk(self, now: float, *, sweep: bool) -> None:
        walk = _Walk(self, self.query)
        seen: set[ResultKey] = set()
        saw_unchanged = False
        for page in walk:
            for result in page.results:
                change = self._tracker.observe(result, now=now, from_sweep=sweep)
                seen.add(result.key)
                if change is Change.UNCHANGED:
                    saw_unchanged = True
                elif change is Change.NEW and saw_unchanged and sweep:
                    self._warn_order()
        self._truncated = walk.truncated
        # A record that could not be parsed is not in ``seen``: forgetting it would count it
        # again when it reads well next time.
        if walk.saw_everything:
            self._tracker.evict_missing(seen, seen_before=now)

    def _fast_path(self, now: float) -> None:
        # After a fast path that failed half-way, the records beyond its last page were never
        # read (new ones among them are not newer than what it saw): read on until a page ends
        # on a record known from before it, even through pages of records it saw.
        interrupted = self._fast_path_since
        self._fast_path_since = now if interrupted is None else interrupted
        saw_unchanged = False
        for page in _Walk(self, self.query):
            news = False
            last_change = Change.UNCHANGED
            last_key: ResultKey | None = None
            for result in page.results:
                last_change = self._tracker.observe(result, now=now)
                last_key = result.key
                if last_change is Change.UNCHANGED:
                    saw_unchanged = True
                elif last_change is Change.NEW or last_change is Change.CHANGED:
                    news = True
                    # (Resuming, the pages the interrupted walk read come before new ones.)
                    if last_change is Change.NEW and saw_unchanged and interrupted is None:
                        self._warn_order()
            if interrupted is not None:
                known_since = None if last_key is None else self._tracker.first_seen(last_key)
                if known_since is None or known_since >= interrupted:
                    continue
            # Newest-first, a page that ends on a known, unchanged record has shown every new
            # one; older records that change are the in-flight follow-up's (or the sweep's).
            if not news or (last_change is Change.UNCHANGED and not self._order_warned):
                break
        self._fast_path_since = None

    def _follow_in_flight(self, now: float) -> None:
        in_flight = self._tracker.follow_up_keys()  # one pass over the mirror per refresh
        if not in_flight:
            return
        returned: set[ResultKey] = set()
        if self.query.invoke_record_status in (None, "Running"):
            walk = _Walk(self, replace(self.query, invoke_record_status="Running"))
            for page in walk:
                for result in page.results:
                    self._tracker.observe(result, now=now)
                    returned.add(result.key)
            if walk.truncated:
                return  # absence from an incomplete walk means nothing
        # else: the target reads invocations in another InvokeRecordStatus; a Running walk
        # would read outside the target. Each result in flight is looked up by its InvokeId.
        left_running: dict[str, list[ResultKey]] = {}
        for key in in_flight:  # those the walk returned were observed; the others are as before
            if key not in returned:
                left_running.setdefault(key[0], []).append(key)
        for invoke_id in self._take_turns(sorted(left_running)):
            lookup = _Walk(self, replace(self.query, invoke_id=invoke_id))
            found: set[ResultKey] = set()
            for page in lookup:
                for result in page.results:
                    self._tracker.observe(result, now=now)
                    found.add(result.key)
            if lookup.saw_everything:
                # Not returned for its own InvokeId: it left the API's retention.
                self._tracker.evict_keys(k for k in left_running[invoke_id] if k not in found)

    def _take_turns(self, items: list[_T]) -> list[_T]:
        """At most ``max_lookups`` of ``items``, starting further on at each call, so that
        reads that never settle cannot starve the others."""
        if len(items) <= self._max_lookups:
            return items
        start = self._turn % len(items)
        self._turn += self._max_lookups
        return (items[start:] + items[:start])[: self._max_lookups]

    def _read_histories(self, now: float) -> None:
        """Read ``IncludeHistory=true`` per periodic task and instance whose runs ended.

        One read per (InvokeId, InstanceId): it stops as soon as every run it needs was seen,
        whatever the order, so a long history costs one page, not all of it.
        """
        groups: dict[tuple[str, str], list[ResultKey]] = {}
        for key in self._tracker.history_due():
            groups.setdefault((key[0], key[1]), []).append(key)
        for invoke_id, instance_id in self._take_turns(sorted(groups)):
            keys = groups[(invoke_id, instance_id)]
            if invoke_id in self._history_refused:
                for key in keys:
                    self._tracker.history_abandoned(key)
                continue
            try:
                self._read_history(invoke_id, instance_id, keys, now)
            except InvalidRequestError as exc:
                # Not a periodic task after all: the API refuses IncludeHistory for it. The set
                # is bounded: past the bound a refused task is simply asked (and refused) again.
                if len(self._history_refused) >= _MAX_HISTORY_REFUSED:
                    self._history_refused.clear()
                self._history_refused.add(invoke_id)
                for key in keys:
                    self._tracker.history_abandoned(key)
                self._log.warning(
                    "the API refused the history of a task",
                    extra={**self._fields(), "invoke_id": invoke_id, "code": exc.code},
                )

    def _read_history(
        self, invoke_id: str, instance_id: str, keys: list[ResultKey], now: float
    ) -> None:
        needed = {key: set(self._tracker.history_needed(key)) for key in keys}
        seen: dict[ResultKey, set[int]] = {key: set() for key in keys}
        settled: dict[ResultKey, set[int]] = {key: set() for key in keys}
        query = replace(
            self.query, invoke_id=invoke_id, instance_id=instance_id, include_history=True
        )
        walk = _Walk(self, query)
        complete = True
        unnamed = False  # records without a usable Repeats: a run may hide among them
        for page in walk:
            for result in page.results:
                self._tracker.observe_history_run(result, now=now)
                runs = seen.get(result.key)
                if runs is None:
                    continue
                if result.repeats < 1:
                    unnamed = True
                    continue
                run = run_number(result)
                runs.add(run)
                if (
                    result.invocation_status in TERMINAL_STATUSES
                    and result.oss_output_status != "InProgress"
                ):
                    settled[result.key].add(run)
            if all(needed[key] <= seen[key] for key in keys):
                complete = False  # stopped early: everything needed was seen
                break
        else:
            # A run missing from a read with unusable records may just not have read well.
            complete = walk.saw_everything and not unnamed
        for key in keys:
            self._tracker.history_read(key, settled=settled[key], seen=seen[key], complete=complete)

    # --- snapshots ---------------------------------------------------------------------------

    def _build_snapshot(self, *, up: bool, duration: float) -> TargetSnapshot:
        with self._stats_lock:
            api_requests = tuple(self._api_requests.items())
            api_durations = self._api_durations.value()
            rate_limit_wait = self._rate_limit_wait
        return TargetSnapshot(
            name=self.name,
            region_id=self.region_id,
            attempted=self._attempted,
            up=up,
            refresh_duration_seconds=duration,
            last_success_timestamp_seconds=self._last_success,
            refreshes=self._refreshes,
            refresh_failures=tuple(self._failures.items()),
            refresh_pages=self._pages,
            results_truncated=self._truncated,
            invalid_records=self._invalid_records,
            api_requests=api_requests,
            api_request_duration=api_durations,
            api_rate_limit_wait_seconds=rate_limit_wait,
            view=self._tracker.view_summary(self._clock()),
            counters=self._tracker.counter_totals(),
            command_breakdown=self.options.command_breakdown.enabled,
            last_failure_reason=self._last_failure_reason,
            last_failure_detail=self._last_failure_detail,
            label_values_folded=self._tracker.values_folded + self._code_folder.folded,
        )


def _due(last: float, now: float, interval: float) -> bool:
    """True when ``interval`` seconds passed since ``last``, or the wall clock went back (it
    was set back: waiting for it to catch up would stop the refreshes for that long)."""
    elapsed = now - last
    return elapsed < 0 or elapsed >= interval
