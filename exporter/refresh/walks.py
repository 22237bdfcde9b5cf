"""The walks a read plan makes: pages of one query (:class:`Walk`), the pages and unusable
records of one refresh (:class:`PageLog`) and how far the first walk got
(:class:`BaselineProgress`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from exporter.ecs.models import InvocationQuery, Page
from exporter.refresh.apistats import ApiClock
from exporter.refresh.options import PageSource, RefreshOptions

_MAX_INVALID_LOGGED = 10_000


@dataclass
class BaselineProgress:
    """How far the first walk got (it may take several refreshes under throttling)."""

    done: bool = False
    pages: int = 0
    """Pages the first walk read (all its attempts)."""
    results: int = 0
    """Results it recorded so far."""
    next_token: str = ""
    """Where it goes on from."""
    walk_done: bool = False
    consistent: bool = False
    """One attempt returned every record (nothing missed, nothing changed in between)."""


class PageLog:
    """Counts the pages of a refresh and logs each unusable record once."""

    def __init__(self, log: logging.Logger, fields: dict[str, object], api_clock: ApiClock) -> None:
        self._log = log
        self._fields = fields
        self._api_clock = api_clock
        self.pages = 0
        self.invalid_records = 0
        self._invalid_seen: set[tuple[str, str, str]] = set()

    def new_refresh(self) -> None:
        """Start counting the pages of a new refresh."""
        self.pages = 0

    def note(self, page: Page) -> None:
        """Account for one page an API call returned."""
        self.pages += 1
        starts = [r.start_time for r in page.results if r.start_time is not None]
        if starts:
            self._api_clock.observe_start(max(starts))
        for record in page.invalid:
            marker = (record.invoke_id, record.instance_id, record.reason)
            if marker in self._invalid_seen:
                continue
            if len(self._invalid_seen) < _MAX_INVALID_LOGGED:
                self._invalid_seen.add(marker)
            self.invalid_records += 1
            self._log.warning(
                "skipped a record that could not be parsed",
                extra={
                    **self._fields,
                    "invoke_id": record.invoke_id,
                    "instance_id": record.instance_id,
                    "reason": record.reason,
                    "request_id": page.request_id,
                },
            )


class Walk:
    """The pages of one query, at most ``page_cap`` of them; ``truncated`` tells if it stopped
    early, ``invalid`` how many records it skipped because they could not be parsed.

    A walk that resumes from ``next_token`` (where an earlier one stopped) has the cap of what
    was left. When the service refuses a ``NextToken`` the source starts over from the first
    page (:attr:`Page.restarted`): ``restarted`` is then set, and from that page on the walk
    has the whole ``restart_cap`` (the options' page cap when not given), so that reading
    again what came before does not leave it short.
    """

    def __init__(
        self,
        source: PageSource,
        query: InvocationQuery,
        options: RefreshOptions,
        log: PageLog,
        *,
        next_token: str = "",
        page_cap: int | None = None,
        restart_cap: int | None = None,
    ) -> None:
        self._source = source
        self._query = query
        self._options = options
        self._log = log
        self._next_token = next_token
        self._cap = options.page_cap if page_cap is None else page_cap
        self._restart_cap = options.page_cap if restart_cap is None else restart_cap
        self.truncated = False
        self.restarted = False
        self.invalid = 0

    @property
    def saw_everything(self) -> bool:
        """True when the walk returned every record of its query, each one usable: only then
        does the absence of a record mean that the API no longer has it."""
        return not self.truncated and self.invalid == 0

    def __iter__(self) -> Iterator[Page]:
        cap = self._cap
        max_results = self._options.max_results
        # The walk counts its pages itself: after a restart it may read more than it asked
        # the source for (a source stops reading when its pages are not asked for).
        if self._next_token:  # resuming a walk where it stopped
            pages = self._source.iter_pages(
                self._query, max_results=max_results, next_token=self._next_token
            )
        else:
            pages = self._source.iter_pages(self._query, max_results=max_results)
        count = 0
        for page in pages:
            if page.restarted:
                self.restarted = True
                cap, count = self._restart_cap, 0
            self._log.note(page)
            self.invalid += len(page.invalid)
            count += 1
            yield page
            if count >= cap:
                self.truncated = bool(page.next_token)
                return
