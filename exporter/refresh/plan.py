"""What one refresh reads, and in which order (the read plan of one target).

1. *Baseline* (until the first walk is done): every page up to the page cap; the backlog is
   recorded without being counted. A walk that fails goes on where it stopped at the next
   refresh (see :meth:`ReadPlan._baseline`); its progress is :attr:`ReadPlan.baseline`.
2. *Fast path*: pages from the first one, stopping after a page that brings nothing new or
   changed, or whose last record is known and unchanged (newest-first, nothing new follows).
   A page without a record that still carries a NextToken is read past (it says nothing).
   What this walk itself found new is still news when read again (a walk restarted from the
   first page after a refused ``NextToken``, pages pushed on by new results).
   The API's order is undocumented; when a new record follows an unchanged known one, the
   order is not newest-first: that is logged once and the sweep covers it.
3. *In-flight follow-up*, only when the view holds records the service may still change (not
   terminal, a periodic task, an OSS delivery in progress) that this refresh has not read yet:
   one ``InvokeRecordStatus=Running`` walk for all of them, or a look-up by ``InvokeId`` for
   each when that makes fewer calls; records absent from the walk have left Running and are
   looked up. Once a complete sweep has read the view (an unfiltered target without
   ``include_history``), a periodic task's record between or during runs is followed only once
   per configured sweep interval (nothing it shows then can be counted). A target whose own
   filter is another ``InvokeRecordStatus`` looks each of them up.
4. *History* (``include_history``): ``IncludeHistory=true&InvokeId=..&InstanceId=..`` for each
   periodic task and instance with ended runs not yet counted; each read stops once it has seen
   the runs it needs. Every run is counted once.
5. *Sweep*, every ``sweep_interval`` seconds while sweeps find something, up to
   ``sweep_backoff`` times that while they find nothing (:mod:`exporter.refresh.sweeps`): every
   page up to the page cap; while sweeps find nothing, ``sweep_pages_per_refresh`` of them per
   refresh (it goes on from its NextToken: no refresh, and no scrape, waits for a whole sweep;
   once the service refuses a NextToken kept from the refresh before, sweeps read all their
   pages in one refresh).
   Runs it counts were missed by the steps above and also go to
   ``results_found_by_sweep_total``. A result a complete sweep did not return leaves the view
   when it is older than every result returned (the API drops its oldest), else after a
   complete look-up by its ``InvokeId`` does not return it either; what it counted is
   remembered anyway (see :mod:`exporter.tracking`).
   Once a sweep saw the API drop its oldest results, an unfiltered target's view is trimmed to
   what that sweep saw the API hold, oldest first, at every refresh (the next sweep checks it).

Steady state with no news: one call (two with runs in flight beyond the pages the fast path
reads on to; more once per sweep interval for periodic tasks' records). API calls are
counted in :attr:`ReadPlan.pages`; unusable records are logged once each.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TypeVar

from exporter import viewqueries
from exporter.ecs.errors import InvalidRequestError
from exporter.ecs.models import TERMINAL_STATUSES, InvocationQuery
from exporter.refresh.apistats import ApiClock
from exporter.refresh.options import PageSource, RefreshOptions
from exporter.refresh.scheduling import due
from exporter.refresh.sweeps import OrderWatch, SweepProgress, SweepSchedule
from exporter.refresh.walks import BaselineProgress, PageLog, Walk
from exporter.runledger import ResultKey
from exporter.tracking import Change, RunTracker, run_number
from exporter.viewentry import needs_follow_up

_MAX_HISTORY_REFUSED = 10_000
_MAX_SWEEPS = 3  # walks of one sweep when the order moves between pages
_REACH_PAGES = 3
"""Pages a fast path may read past its stop to reach the records in flight near the top (fewer
calls than following them up)."""
API_MAX_ENTRIES = 10_000
"""The most results the API documents it keeps (it drops its oldest beyond)."""
_T = TypeVar("_T")


class ReadPlan:
    """Reads one target's API into its tracker (see the module docstring).

    Runs one refresh at a time (the scheduler sees to it); ``fields`` name the target in logs.
    """

    def __init__(
        self,
        source: PageSource,
        query: InvocationQuery,
        options: RefreshOptions,
        tracker: RunTracker,
        api_clock: ApiClock,
        log: logging.Logger,
        fields: dict[str, object],
    ) -> None:
        self._source = source
        self._api_clock = api_clock
        self._query = query
        self._options = options
        self._tracker = tracker
        self._log = log
        self._fields = fields
        self._max_lookups = options.max_lookups or options.page_cap
        self.pages = PageLog(log, fields, api_clock)
        self.baseline = BaselineProgress()
        self.truncated = False
        # Results a complete sweep did not return although older ones it did: looked up by
        # their InvokeId before they leave the view (one walk is not proof enough).
        self._suspects: set[ResultKey] = set()
        self._schedule = SweepSchedule(options.sweep_interval, options.sweep_backoff)
        # What a complete sweep saw the API hold when it had dropped its oldest results (an
        # unfiltered target only): the view is trimmed to it between sweeps.
        self._api_holds: int | None = None
        self._periodic_followed = float("-inf")
        # Periodic records are followed slowly only for an unfiltered target (whose view is
        # what the API holds) once a complete sweep saw what the API drops.
        self._slow_periodic = False
        self._arrivals = 0
        self._order_warned = False
        self._order_broke = False  # since the last complete sweep
        self._order_moved = False  # the last sweep saw a result twice
        self._sweeping: SweepProgress | None = None
        # The service refused a NextToken kept from one refresh to the next: sweeps are no
        # longer paced (every slice would start over from the first page).
        self._tokens_expire = False
        # Set while a fast path is in flight, to when it (or the interrupted one before it)
        # started: a fast path that failed half-way has not seen what lay beyond its last page.
        self._fast_path_since: float | None = None
        self._history_refused: set[str] = set()
        self._turn = 0
        self.step = "baseline"
        """The step reading now (for measurements): baseline, fast_path, follow_up, lookup,
        history, sweep or suspects."""

    @property
    def sweep_interval(self) -> float:
        """The sweep interval now (seconds; 0: no sweep), see :class:`SweepSchedule`."""
        return self._schedule.interval

    def _walk(self, query: InvocationQuery) -> Walk:
        return Walk(self._source, query, self._options, self.pages)

    def _of_invocation(self, invoke_id: str, instance_id: str | None = None) -> InvocationQuery:
        """The target's query for one invocation, without its InvokeRecordStatus: that filter
        chooses invocations by their status as a whole, and one the target follows is read
        until its results end, even once it no longer matches (a Running target never read
        the last instance's run of one, nor a stopped task's last runs in its history)."""
        return replace(
            self._query,
            invoke_id=invoke_id,
            instance_id=instance_id or self._query.instance_id,
            invoke_record_status=None,
        )

    def refresh(self, now: float) -> None:
        """Read what this refresh needs; raises the API's error when a call fails (everything
        read until then is applied, and the first walk goes on where it stopped)."""
        tracker = self._tracker
        if not tracker.baseline_done:
            self._baseline(now)
        else:
            self.step = "fast_path"
            self._fast_path(now)
            # Before a sweep, every record the follow-up knows of is read: the sweep then finds
            # only what the other steps missed.
            sweep_due = self._sweeping is None and self._schedule.due(now)
            self._follow_in_flight(now, periodic=sweep_due)
            if self._options.include_history:
                self.step = "history"
                self._read_histories(now)
            if self._api_holds is not None:
                # What the API dropped to make room for what this refresh found.
                tracker.evict_keys(viewqueries.oldest_settled(tracker.view, self._api_holds))
            if sweep_due:
                self._schedule.started(now)
                self._sweeping = SweepProgress(
                    started=now,
                    returned=self._tracker.returned,
                    counted=self._tracker.counter_totals().found_by_sweep,
                )
            if self._sweeping is not None:
                # A sweep that failed goes on where it stopped, at the next refresh.
                self.step = "sweep"
                self._sweep(now, self._sweeping)
            if self._suspects:
                self.step = "suspects"
                self._check_suspects(now)
        tracker.expire(now)

    def _baseline(self, now: float) -> None:
        """The first walk: records the backlog without counting it.

        A long walk that fails (throttling, a server error) keeps what it read and goes on from
        the page where it stopped at the next refresh, so it ends whatever share of calls fail.
        Records read by an earlier attempt may have changed since, and new ones came in at the
        top: the pages from the first one are read again until known records (a fast path),
        and those the service may still change (the in-flight follow-up), before the baseline
        is complete. It takes effect as of its last attempt.
        """
        progress = self.baseline
        # An attempt that read nothing (it failed at the first page) leaves nothing to resume.
        resumed = progress.pages > 0
        if not progress.walk_done:
            order = OrderWatch()
            walk = Walk(
                self._source,
                self._query,
                self._options,
                self.pages,
                next_token=progress.next_token,
                page_cap=max(1, self._options.page_cap - progress.pages),
            )
            for page in walk:
                if page.restarted:  # started over: what the earlier attempts read is read again
                    progress.pages = 0
                order.page(self._tracker.observe_backlog(page.results, now=now))
                progress.pages += 1
                progress.next_token = page.next_token
                progress.results = len(self._tracker)
            progress.walk_done = True
            self.truncated = walk.truncated
            # When the order moved between pages (or the walk started over), another result
            # may have been missed: reading again finds most of those, but the baseline is not
            # taken as complete.
            progress.consistent = not resumed and walk.saw_everything and not order.moved
            if order.moved and walk.saw_everything:
                self._walk_again(now)
        if resumed:
            self._fast_path(now)
            self._follow_in_flight(now)
        offset = self._api_clock.offset()
        self._tracker.complete_baseline(
            at=now,
            api_at=now + (offset or 0.0),
            consistent=progress.consistent,
            # Measured from the answers' Date, the offset is good to a second or two.
            tolerance=2.0 if self._api_clock.measured else None,
        )
        progress.results = len(self._tracker)
        progress.done = True
        self._schedule.started(now)
        self._log_baseline()

    def _walk_again(self, now: float, times: int = 1) -> None:
        for _ in range(times):
            before = len(self._tracker)
            for page in self._walk(self._query):
                self._tracker.observe_backlog(page.results, now=now)
            if len(self._tracker) == before:
                return

    def _log_baseline(self) -> None:
        # A filter that matches nothing looks exactly like a quiet account: say what was found.
        # The results in view, as the landing page counts them (history runs are not results).
        in_view = self._tracker.results_in_view
        fields = {**self._fields, "results": in_view, "pages": self.pages.pages}
        if in_view == 0 and self._query != InvocationQuery():
            self._log.warning(
                "the first refresh found no results: check the target's filters", extra=fields
            )
        else:
            self._log.info(
                "first refresh done: results in view recorded, not counted", extra=fields
            )

    def _warn_order(self) -> None:
        # The fast path cannot be trusted in this order: the sweep comes back at its pace, and
        # the next one does not space out (it may well find nothing: this walk read it all).
        self._schedule.alarm()
        self._order_broke = True
        if not self._order_warned:
            self._order_warned = True
            self._log.warning(
                "results do not come newest-first: the fast path may miss new results until "
                "the next full sweep",
                extra=self._fields,
            )

    def _sweep(self, now: float, sweep: SweepProgress) -> None:
        while True:
            known = len(sweep.seen)
            complete = self._sweep_walk(now, sweep)
            if complete is None:
                return  # paced: it goes on from its NextToken at the next refresh
            if not complete:
                self._sweeping = None
                return  # a page cap, or a record that could not be parsed: nothing is gone
            if sweep.walks == 1:
                # When the order moved between pages, another result may have been missed. When
                # that keeps happening, the sweep reads again (twice at most) while that finds
                # more.
                moved = sweep.order.moved and not sweep.resumed
                again = moved and self._order_moved
                self._order_moved = moved
                if not again:
                    break
            elif len(sweep.seen) == known or sweep.walks >= _MAX_SWEEPS:
                break
        self._sweeping = None
        # The API drops its oldest results (30 days, or beyond its own size cap): a result
        # older than every one the sweep returned is gone. A younger one may just have been
        # missed (an order that is not stable between pages): it is looked up first.
        gone: list[ResultKey] = []
        oldest = sweep.oldest_start
        for key in viewqueries.missing(self._tracker.view, sweep.seen, seen_before=sweep.started):
            entry = self._tracker.view.get(key)
            start = None if entry is None else entry.result.start_time
            if start is not None and oldest is not None and start < oldest:
                gone.append(key)
            else:
                self._suspects.add(key)
        self._tracker.evict_keys(gone)
        if self._query == InvocationQuery():
            # With include_history every run counts from the history, read when the record shows
            # a run ended: those records are followed at every refresh.
            self._slow_periodic = not self._options.include_history
            if gone or self._api_holds is not None:
                # With what came in while the sweep went on (a paced one reads the top first).
                self._api_holds = len(sweep.seen) + viewqueries.taken_in_since(
                    self._tracker.view, sweep.started, sweep.seen
                )
        found = (
            sweep.found
            or self._tracker.counter_totals().found_by_sweep > sweep.counted
            or sweep.order.moved
            or sweep.inverted
            or self._order_broke
            or self._tracker.returned > sweep.returned
            or bool(gone)
        )
        self._order_broke = False
        if found:
            self._schedule.alarm()
        else:
            self._schedule.found_nothing()

    def _sweep_walk(self, now: float, sweep: SweepProgress) -> bool | None:
        """One walk of a sweep (or the rest of one that failed or was paced); True when it
        returned every record (no page cap, no record that could not be parsed), None when it
        read its ``sweep_pages_per_refresh`` pages and goes on at the next refresh."""
        if sweep.pages:
            sweep.resumed = True
        resuming = bool(sweep.next_token)
        cap_left = max(1, self._options.page_cap - sweep.pages)
        # Paced only while sweeps find nothing (the interval spaced out): after a find or with
        # an order that is not newest-first, what the sweep may find is wanted now.
        quiet = self._schedule.interval > self._schedule.configured
        pace = self._options.sweep_pages_per_refresh if quiet and not self._tokens_expire else 0
        limit = min(cap_left, pace) if pace > 0 else cap_left
        walk = Walk(
            self._source,
            self._query,
            self._options,
            self.pages,
            next_token=sweep.next_token,
            page_cap=limit,
        )
        saw_unchanged = False
        kept_token = resuming and pace > 0  # the first call sends the token kept from before
        for page in walk:
            if page.restarted:  # (on the first page: the kept token was refused)
                self._sweep_started_over(sweep, paced=kept_token)
            kept_token = False
            for result in page.results:
                change = self._tracker.observe(result, now=now, from_sweep=True)
                # A record this sweep read already (new results at the top pushed it on to the
                # next slice, or the service restarted the pages) says nothing of the order:
                # repeats are OrderWatch's to judge.
                again = result.key in sweep.seen
                sweep.seen.add(result.key)
                start = result.start_time
                if start is not None and (sweep.oldest_start is None or start < sweep.oldest_start):
                    sweep.oldest_start = start
                order = None if again else viewqueries.read_order(self._tracker.view, result.key)
                if order is not None:
                    sweep.read_in_order(result.key, order, self._tracker.view)
                if change is Change.UNCHANGED:
                    saw_unchanged = True
                elif change is Change.NEW:
                    sweep.found = True
                    if saw_unchanged:
                        self._warn_order()
            if not sweep.walks:
                sweep.order.page([result.key for result in page.results])
            sweep.pages += 1
            sweep.next_token = page.next_token
            sweep.had_invalid = sweep.had_invalid or bool(page.invalid)
        if walk.truncated and limit < cap_left and not walk.restarted:
            return None  # where it stopped (pages, NextToken) is kept in ``sweep``
        self.truncated = walk.truncated
        sweep.walks += 1
        sweep.pages = 0
        sweep.next_token = ""
        return not walk.truncated and not sweep.had_invalid

    def _sweep_started_over(self, sweep: SweepProgress, *, paced: bool) -> None:
        """The service refused the sweep's ``NextToken`` and the walk started over from the
        first page: it goes on from there as one walk (reading the whole page cap, paced or
        not), and the order it saw before says nothing of this one's."""
        sweep.pages = 0
        sweep.resumed = False
        sweep.order = OrderWatch()
        sweep.last_read = sweep.last_order = None
        if paced and not self._tokens_expire:
            self._tokens_expire = True
            self._log.warning(
                "the service refused a NextToken kept from the refresh before: sweeps read "
                "all their pages in one refresh from now on",
                extra=self._fields,
            )

    def _check_suspects(self, now: float) -> None:
        """Look up by ``InvokeId`` the results a sweep missed: only a complete look-up that
        does not return a result takes it out of the view."""
        by_invocation: dict[str, list[ResultKey]] = {}
        for key in self._suspects:
            if key in self._tracker:
                by_invocation.setdefault(key[0], []).append(key)
        self._suspects.intersection_update(k for keys in by_invocation.values() for k in keys)
        for invoke_id in self._look_up(by_invocation, now):
            keys = by_invocation[invoke_id]
            if any(key in self._tracker for key in keys):
                self._schedule.alarm()  # the sweep missed a result the API still has
            self._suspects.difference_update(keys)

    def _look_up(self, by_invocation: dict[str, list[ResultKey]], now: float) -> list[str]:
        """Read each ``InvokeId`` (in turns, see :meth:`_take_turns`); the results a complete
        read did not return left the API's retention and leave the view. Returns the ids
        read completely."""
        complete: list[str] = []
        for invoke_id in self._take_turns(sorted(by_invocation)):
            lookup = self._walk(self._of_invocation(invoke_id))
            found: set[ResultKey] = set()
            wanted = self._query.invoke_record_status
            history = self._options.include_history
            for page in lookup:
                for result in page.results:
                    self._tracker.observe(result, now=now)
                    # Settled outside the filter: out of the view (else each sweep looks it up).
                    if (
                        wanted is None
                        or result.invoke_record_status == wanted
                        or needs_follow_up(result)
                        or (history and self._tracker.history_needed(result.key))
                    ):
                        found.add(result.key)
            if lookup.saw_everything:
                self._tracker.evict_keys(k for k in by_invocation[invoke_id] if k not in found)
                complete.append(invoke_id)
        return complete

    def _fast_path(self, now: float) -> None:
        # After a fast path that failed half-way, the records beyond its last page were never
        # read (new ones among them are not newer than what it saw): read on until a page ends
        # on a record known from before it, even through pages of records it saw.
        interrupted = self._fast_path_since
        self._fast_path_since = now if interrupted is None else interrupted
        saw_unchanged = False
        # What this walk found new or changed: read again, it is still news. A service that
        # refuses a NextToken makes the client start over from the first page, and new results
        # shift the pages: neither is the end of the news.
        touched: set[ResultKey] = set()
        # Records in flight near the top (by the order the walks read them): reading on to them
        # costs fewer calls than a follow-up.
        unread = viewqueries.in_flight_near_top(
            self._tracker.view,
            self._tracker.follow_up_keys(),
            self._tracker.last_arrival,
            now,
            _REACH_PAGES * self._options.max_results,
        )
        extended = 0
        for page in self._walk(self._query):
            if not page.results and not page.invalid:
                # An empty page that still has a NextToken says nothing of what follows: the
                # service may filter after paging (the client bounds how many come in a row).
                continue
            news = False
            last_change = Change.UNCHANGED
            last_key: ResultKey | None = None
            for result in page.results:
                last_change = self._tracker.observe(result, now=now)
                last_key = key = result.key  # (a new tuple at every access)
                unread.discard(key)
                if last_change is Change.UNCHANGED:
                    if key in touched:
                        news = True
                    else:
                        saw_unchanged = True
                elif last_change is Change.NEW or last_change is Change.CHANGED:
                    news = True
                    touched.add(key)
                    # (Resuming, the pages the interrupted walk read come before new ones.)
                    if last_change is Change.NEW and saw_unchanged and interrupted is None:
                        self._warn_order()
            if interrupted is not None:
                seen = None if last_key is None else self._tracker.view.get(last_key)
                known_since = None if seen is None else seen.first_seen
                if known_since is None or known_since >= interrupted:
                    continue
            # Newest-first, a page that ends on a known, unchanged record has shown every new
            # one; older records that change are the in-flight follow-up's (or the sweep's).
            if not news or (
                last_change is Change.UNCHANGED
                and last_key not in touched
                and not self._order_warned
            ):
                if not unread or extended >= _REACH_PAGES:
                    break
                extended += 1
        self._fast_path_since = None

    def _follow_in_flight(self, now: float, *, periodic: bool = False) -> None:
        """Read again the results the service may still change (step 3 of the module
        docstring), reading as little as what is in flight allows.

        Records read by this refresh already are current. A periodic task's record between or
        during runs counts nothing until it changes again: it is followed at the configured
        sweep interval (every refresh without sweeps). The rest are read by one Running walk
        (its pages hold every record in flight) or by a look-up per ``InvokeId``, whichever
        makes fewer calls. ``periodic``: follow every record now (a sweep is next).
        """
        periodic = (
            periodic
            or self._options.sweep_interval <= 0
            or due(self._periodic_followed, now, self._options.sweep_interval)
        )
        # What the API will drop before the next refresh (as many as came in since the last
        # one, twice over) is read now: a periodic record must not leave unread.
        arrived = self._tracker.arrivals - self._arrivals
        self._arrivals = self._tracker.arrivals
        holds = self._api_holds if self._api_holds is not None else API_MAX_ENTRIES
        periodic = periodic or not self._slow_periodic
        at_risk = (  # only periodic records that would otherwise wait need it (a scan)
            set()
            if periodic
            else viewqueries.oldest_in_flight(
                self._tracker.view, self._tracker.results_in_view - holds + 2 * arrived
            )
        )
        in_flight, total = viewqueries.follow_up(
            self._tracker.view,
            self._tracker.follow_up_keys(),
            now,
            periodic=periodic,
            at_risk=at_risk,
        )
        if not in_flight:
            if periodic:
                self._periodic_followed = now
            return
        invocations = {key[0] for key in in_flight}
        walk_pages = -(-total // self._options.max_results)
        returned: set[ResultKey] = set()
        self.step = "follow_up"
        if self._query.invoke_record_status in (None, "Running") and (
            len(invocations) >= walk_pages or len(invocations) > self._max_lookups
        ):
            walk = self._walk(replace(self._query, invoke_record_status="Running"))
            for page in walk:
                for result in page.results:
                    self._tracker.observe(result, now=now)
                    returned.add(result.key)
            if walk.truncated:
                return  # absence from an incomplete walk means nothing
        # else: fewer calls by InvokeId, or the target reads invocations in another
        # InvokeRecordStatus (a Running walk would read outside the target).
        left_running: dict[str, list[ResultKey]] = {}
        for key in in_flight:  # those the walk returned were observed; the others are as before
            if key not in returned:
                left_running.setdefault(key[0], []).append(key)
        self.step = "lookup"
        self._look_up(left_running, now)
        if periodic:
            self._periodic_followed = now

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
            pages = self.pages.pages
            try:
                self._read_history(invoke_id, instance_id, keys, now)
            except InvalidRequestError as exc:
                if self.pages.pages > pages:
                    # Refused after a page was read (a NextToken refused twice): the query
                    # itself is fine; this refresh fails and the read is tried again.
                    raise
                # Not a periodic task after all: the API refuses IncludeHistory for it. The set
                # is bounded: past the bound a refused task is simply asked (and refused) again.
                if len(self._history_refused) >= _MAX_HISTORY_REFUSED:
                    self._history_refused.clear()
                self._history_refused.add(invoke_id)
                for key in keys:
                    self._tracker.history_abandoned(key)
                self._log.warning(
                    "the API refused the history of a task",
                    extra={**self._fields, "invoke_id": invoke_id, "code": exc.code},
                )

    def _read_history(
        self, invoke_id: str, instance_id: str, keys: list[ResultKey], now: float
    ) -> None:
        needed = {key: set(self._tracker.history_needed(key)) for key in keys}
        seen: dict[ResultKey, set[int]] = {key: set() for key in keys}
        settled: dict[ResultKey, set[int]] = {key: set() for key in keys}
        query = replace(self._of_invocation(invoke_id, instance_id), include_history=True)
        walk = self._walk(query)
        complete = True
        unnamed = False  # records without a usable Repeats: a run may hide among them
        moved = False  # a run came twice: the order moved between pages, one may be missing
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
                if run in runs:
                    moved = True
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
            complete = walk.saw_everything and not unnamed and not moved
        for key in keys:
            self._tracker.history_read(key, settled=settled[key], seen=seen[key], complete=complete)
