"""The ECS API client: DescribeInvocationResults with signing, retries, paging and tolerant parsing.

Each HTTP try is a V3 request (``POST /``, business parameters in the query string, empty body)
signed afresh (new date and nonce) with :func:`exporter.ecs.signing.authorization`. The query
string on the wire is exactly the signed canonical string: the URL is built here, never with
httpx's ``params=`` (which would encode a space as ``+``).

The hot path is kept lean on purpose (a refresh may page 10,000 results): one shared connection
pool called directly (:mod:`exporter.ecs.transport`), a plain dict of headers per try, records
decoded by ``msgspec`` (:func:`exporter.ecs.parsing.parse_page`).
"""

from __future__ import annotations

import email.utils
import functools
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace

import httpcore
import httpx

from exporter.ecs import signing
from exporter.ecs.credentials_base import Credentials, CredentialsProvider
from exporter.ecs.errors import (
    ApiError,
    EcsError,
    InvalidRequestError,
    MalformedResponseError,
    RateLimitWaitError,
    RequestTimeoutError,
    ThrottledError,
    classify_api_error,
    is_retryable,
    outcome_code,
    parse_error_body,
    parse_retry_after,
)
from exporter.ecs.models import ECS_API_VERSION, MAX_RESULTS_LIMIT, InvocationQuery, Page
from exporter.ecs.pagememo import PageMemo
from exporter.ecs.parsing import parse_page
from exporter.ecs.ratelimit import RateLimiter
from exporter.ecs.request import (
    default_endpoint,
    parse_endpoint,
    region_id_problem,
    signed_request_headers,
)
from exporter.ecs.transport import CoreWire, HttpxWire, Wire
from exporter.ecs.untrusted import TextCleaner

log = logging.getLogger(__name__)

ACTION = "DescribeInvocationResults"
MAX_EMPTY_PAGES_IN_A_ROW = 20
"""The most pages in a row a walk follows that came back without a record but with a new
``NextToken``; one more fails the walk (:class:`MalformedResponseError`).

Such a page can be legitimate (a service that filters a page after cutting it, records that left
retention under a walk's snapshot) or the start of a loop that hands out a new token every time:
the undocumented API may do either. Twenty pages at the usual 50 results are a thousand entries,
a tenth of what the API keeps, passing without one match; beyond that a loop is far likelier,
and it has then cost 21 calls of the region's quota (a few calls a second, shared) rather than a
whole page cap's worth at every refresh. A token that comes back is a loop at once."""


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """One HTTP try, as the exporter's self-metrics see it."""

    action: str
    region_id: str
    code: str  # outcome_code(): "" on success
    duration_seconds: float
    http_status: int | None
    attempt: int  # 1-based
    rate_limit_wait_seconds: float = 0.0
    server_time: float | None = None  # the answer's Date header (epoch seconds), if any


@dataclass(frozen=True)
class RetryPolicy:
    """How a call retries: full-jitter exponential backoff, bounded by tries and a deadline.

    Before try ``n + 1`` the client sleeps ``uniform(0, min(max_delay, base_delay * 2**(n-1)))``,
    and at least the ``retry_after`` the service asked for. ``deadline`` bounds the whole call
    (tries, sleeps and rate-limit waits: the limiter is told how long it may make a try wait);
    a retry that cannot finish before it is not made.

    Throttling, server errors and transport failures are retried. So is a success answer that
    cannot be used (not JSON, truncated, wrong shape), but at most ``malformed_retries`` times
    per call: one garbled answer is a glitch on the way, the same one again is the service's.
    """

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 20.0
    deadline: float = 60.0
    malformed_retries: int = 1

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("base_delay and max_delay must be >= 0")
        if not self.deadline > 0:
            raise ValueError(f"deadline must be > 0, got {self.deadline}")
        if self.malformed_retries < 0:
            raise ValueError(f"malformed_retries must be >= 0, got {self.malformed_retries}")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Return the jittered sleep after the failed try number ``attempt`` (1-based)."""
        cap = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return rng.uniform(0.0, cap)


def _rejects_token(exc: ApiError) -> bool:
    status = exc.http_status
    return status is not None and 400 <= status <= 499 and "nexttoken" in exc.code.lower()


class EcsClient:
    """Calls DescribeInvocationResults for one region with one set of credentials.

    Thread-safe: one instance may serve concurrent refreshes. ``http`` is shared and owned by
    the caller (who closes it): an ``httpcore`` connection pool (the fast path, see
    :mod:`exporter.ecs.transport`), or an ``httpx`` transport or ``httpx.Client`` (proxies from
    the environment, test transports). ``sleep``, ``rng`` and ``clock`` (monotonic seconds,
    used for the deadline and durations) are injectable so tests never wait. ``redact`` hides
    secrets the caller knows of (beyond the call's own credentials, always hidden) in every
    string of an answer (:mod:`exporter.ecs.untrusted`).
    """

    def __init__(
        self,
        *,
        region_id: str,
        credentials: CredentialsProvider,
        http: httpcore.ConnectionPool | httpx.BaseTransport | httpx.Client,
        endpoint: str | None = None,
        use_vpc_endpoint: bool = False,
        retry: RetryPolicy | None = None,
        timeout: float = 10.0,
        rate_limiter: RateLimiter | None = None,
        on_request: Callable[[RequestEvent], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        problem = region_id_problem(region_id)
        if problem is not None:
            raise ValueError(f"region_id {problem}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self.region_id = region_id
        url = endpoint or default_endpoint(region_id, use_vpc_endpoint=use_vpc_endpoint)
        self.base_url, self.host = parse_endpoint(url)
        self._credentials = credentials
        self._wire: Wire = (
            CoreWire(http, self.base_url, clock)
            if isinstance(http, httpcore.ConnectionPool)
            else HttpxWire(http, self.base_url, clock)
        )
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        self._rate_limiter = rate_limiter
        self._on_request = on_request
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._clock = clock
        self._redact = redact
        # The cleaner for the current credentials' secrets (replaced when they rotate).
        self._cleaner: tuple[tuple[str, ...], TextCleaner] = ((), TextCleaner(redact=redact))
        self._first_pages = PageMemo()

    def __repr__(self) -> str:
        return f"EcsClient(region_id={self.region_id!r}, endpoint={self.base_url!r})"

    # --- paging ------------------------------------------------------------------------------

    def iter_pages(
        self,
        query: InvocationQuery,
        *,
        max_results: int = MAX_RESULTS_LIMIT,
        max_pages: int | None = None,
        next_token: str = "",
    ) -> Iterator[Page]:
        """Yield every page of results for ``query`` (from ``next_token``'s page when given).

        The first request carries ``MaxResults`` only; the next ones the ``NextToken`` of the
        previous answer, until it is empty or absent. A page without records that still has a
        token is yielded and followed (the next pages may have some), but more than
        :data:`MAX_EMPTY_PAGES_IN_A_ROW` of them in a row, or a token seen before in this walk
        (the one resumed from included), raise :class:`MalformedResponseError`. A rejected
        ``NextToken`` (``InvalidParameter.NextToken`` or any 4xx whose code names it) restarts
        once from the first page (that page has ``restarted`` set), so the caller may see
        results twice (they are keyed, so counting by key is safe); a second rejection raises.
        ``max_pages`` stops early (empty pages count), counting from the first page read after
        a restart. The query is validated here, before anything is sent
        (:class:`InvalidRequestError`).
        """
        query.validate()
        if type(max_results) is not int or not 1 <= max_results <= MAX_RESULTS_LIMIT:
            raise InvalidRequestError(
                f"max_results must be an integer from 1 to {MAX_RESULTS_LIMIT}, got {max_results!r}"
            )
        if max_pages is not None and (type(max_pages) is not int or max_pages < 1):
            raise InvalidRequestError(f"max_pages must be a positive integer, got {max_pages!r}")
        params = {"RegionId": self.region_id, **query.to_params(), "MaxResults": str(max_results)}
        return self._pages(params, max_pages, next_token)

    def _pages(
        self, first: dict[str, str], max_pages: int | None, token: str = ""
    ) -> Iterator[Page]:
        try:
            yield from self._walk(first, max_pages, token)
        finally:
            self._cleaner[1].forget()  # ids cached for this walk only (see TextCleaner.forget)

    def _walk(self, first: dict[str, str], max_pages: int | None, token: str) -> Iterator[Page]:
        restarted = just_restarted = False
        seen: set[str] = {token} if token else set()
        count = 0
        empty = 0  # pages in a row without a record (each with a new token)
        while True:
            params = {**first, "NextToken": token} if token else first
            try:
                page = self.call(params)
            except ApiError as exc:
                if not token or not _rejects_token(exc):
                    raise
                if restarted:
                    raise InvalidRequestError(
                        f"{exc.message} (NextToken refused again after restarting from the "
                        "first page)",
                        code=exc.code,
                        request_id=exc.request_id,
                        http_status=exc.http_status,
                    ) from None
                log.warning(
                    "the service refused a NextToken (%s, RequestId %s); "
                    "restarting from the first page",
                    exc.code,
                    exc.request_id,
                )
                restarted = just_restarted = True
                seen.clear()
                token = ""
                count = empty = 0  # the walk starts over: ``max_pages`` counts from the first page
                continue
            if just_restarted:
                page = replace(page, restarted=True)
                just_restarted = False
            count += 1
            next_token = page.next_token
            if next_token:
                if next_token in seen:
                    raise MalformedResponseError(
                        f"the NextToken of page {count} was already returned before "
                        "(paging would loop)",
                        request_id=page.request_id,
                        http_status=200,
                    )
                # An empty page may be the service's filtering: the pages after it are read, but
                # only so many in a row (a service that hands out new tokens forever).
                empty = 0 if page.results or page.invalid else empty + 1
                if empty > MAX_EMPTY_PAGES_IN_A_ROW:
                    raise MalformedResponseError(
                        f"{empty} pages in a row came back empty, each with a new NextToken "
                        "(paging would not end)",
                        request_id=page.request_id,
                        http_status=200,
                    )
            yield page
            if not next_token or (max_pages is not None and count >= max_pages):
                return
            seen.add(next_token)
            token = next_token

    # --- one call, with retries --------------------------------------------------------------

    def call(self, params: Mapping[str, str]) -> Page:
        """Send one DescribeInvocationResults request (retried as the policy says); parse it."""
        query_string = signing.canonical_query_string(params)
        target = f"/?{query_string}" if query_string else "/"
        policy = self._retry
        clock = self._clock
        start = clock()
        attempt = 0
        malformed = 0
        error: EcsError | None = None
        while True:
            attempt += 1
            waited = 0.0
            if self._rate_limiter is not None:
                # The limiter refuses at once rather than wait past the deadline; a wait within
                # it still counts against it below. A retry it refuses fails with the error
                # that made the retry necessary: that is what the user must fix.
                try:
                    waited = self._rate_limiter.acquire(policy.deadline - (clock() - start))
                except RateLimitWaitError:
                    if error is not None:
                        raise error from None
                    raise
            remaining = policy.deadline - (clock() - start)
            if remaining <= 0:
                raise RequestTimeoutError(
                    f"the call's deadline of {policy.deadline:g}s ran out before try {attempt}"
                )
            credentials = self._credentials.get_credentials()
            began = clock()
            try:
                page, server_time = self._try_once(target, query_string, credentials, remaining)
            except EcsError as exc:
                error = exc
            else:
                self._emit(began, None, 200, attempt, waited, server_time)
                return page
            self._emit(began, error, error.http_status, attempt, waited)
            if isinstance(error, MalformedResponseError) and error.http_status == 200:
                malformed += 1
                retryable = malformed <= policy.malformed_retries
            else:
                retryable = is_retryable(error)
            if not retryable or attempt >= policy.max_attempts:
                raise error
            delay = policy.backoff(attempt, self._rng)
            if isinstance(error, ThrottledError) and error.retry_after is not None:
                delay = max(delay, error.retry_after)
            if clock() - start + delay >= policy.deadline:
                raise error
            log.debug(
                "%s try %d failed (%s); retrying in %.3fs",
                ACTION,
                attempt,
                outcome_code(error),
                delay,
            )
            self._sleep(delay)

    def _emit(
        self,
        began: float,
        error: EcsError | None,
        status: int | None,
        attempt: int,
        waited: float,
        server_time: float | None = None,
    ) -> None:
        if self._on_request is None:
            return
        self._on_request(
            RequestEvent(
                ACTION,
                self.region_id,
                outcome_code(error),
                self._clock() - began,
                status,
                attempt,
                waited,
                server_time,
            )
        )

    def _try_once(
        self, target: str, query_string: str, credentials: Credentials, remaining: float
    ) -> tuple[Page, float | None]:
        secret = credentials.access_key_secret.get_secret_value()
        token = credentials.security_token
        token_value = token.get_secret_value() if token is not None else None
        headers = signed_request_headers(
            host=self.host,
            action=ACTION,
            version=ECS_API_VERSION,
            query=query_string,  # what the URL carries: the canonical string, made once a call
            access_key_id=credentials.access_key_id,
            access_key_secret=secret,
            security_token=token_value,
        )
        text = self._text_cleaner(credentials.secret_values())
        answer = self._wire.post(
            target,
            headers,
            min(self._timeout, remaining),
            self._clock() + remaining,
            text,
        )
        request_id = answer.headers.get("x-acs-request-id", "")
        if answer.status == 200:
            try:
                if "NextToken=" in query_string:
                    page = parse_page(answer.body, text)
                else:  # a first page: often what the last answer to it said
                    page = self._first_pages.parse(query_string, answer.body, text, parse_page)
                return page, _server_time(answer.headers.get("date", ""))
            except MalformedResponseError as exc:
                raise MalformedResponseError(
                    exc.message,
                    request_id=exc.request_id or text.name(request_id),
                    http_status=200,
                ) from None
        code, message, body_request_id = parse_error_body(answer.body, text)
        raise classify_api_error(
            answer.status,
            code,
            message,
            body_request_id or text.name(request_id),
            parse_retry_after(answer.headers),
        )

    def _text_cleaner(self, secrets: tuple[str, ...]) -> TextCleaner:
        """The cleaner that hides these secrets; kept while the credentials stay the same."""
        known, cleaner = self._cleaner
        if known != secrets:
            cleaner = TextCleaner(secrets, redact=self._redact)
            self._cleaner = (secrets, cleaner)
        return cleaner


@functools.lru_cache(maxsize=16)  # a Date changes once a second; a walk reads it 200 times
def _server_time(date: str) -> float | None:
    """The epoch seconds of an HTTP ``Date`` header, None when absent or unreadable."""
    try:
        return email.utils.parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
