"""The Prometheus side: metric families built from target snapshots on every scrape.

:class:`CloudAssistantCollector` takes its refreshers in its constructor and is registered by the
application on a registry it creates (never the global one). It holds no metric objects: each
``collect()`` builds fresh families from the newest :class:`~exporter.refresh.TargetSnapshot`
of every target, so rendering takes a few milliseconds whatever the API is doing.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import wait as wait_futures

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from exporter.refresh import TargetRefresher, TargetSnapshot
from exporter.tracking import HistogramValue

PREFIX = "aliyun_cloudassistant_"
TARGET_LABELS: tuple[str, ...] = ("account", "region_id")


def _histogram_buckets(value: HistogramValue) -> list[tuple[str, float]]:
    buckets: list[tuple[str, float]] = [
        (str(float(bound)), float(count)) for bound, count in value.buckets
    ]
    buckets.append(("+Inf", float(value.count)))
    return buckets


class CloudAssistantCollector:
    """Every ``aliyun_cloudassistant_*`` family, one series set per target.

    A scrape looks like this (one target; ``…`` stands for
    ``account="prod",region_id="cn-hangzhou"``; most series left out)::

        # HELP aliyun_cloudassistant_up 1 if the last refresh of the target succeeded.
        # TYPE aliyun_cloudassistant_up gauge
        aliyun_cloudassistant_up{account="prod",region_id="cn-hangzhou"} 1.0
        # TYPE aliyun_cloudassistant_invocation_results gauge
        aliyun_cloudassistant_invocation_results{…,invocation_status="Running"} 3.0
        aliyun_cloudassistant_invocation_results{…,invocation_status="Success"} 812.0
        # TYPE aliyun_cloudassistant_invocation_results_finished_total counter
        aliyun_cloudassistant_invocation_results_finished_total{…,invocation_status="Failed",
            error_code="ExitCodeNonzero"} 2.0
        # TYPE aliyun_cloudassistant_exporter_build_info gauge
        aliyun_cloudassistant_exporter_build_info{version="0.1.0",python_version="3.11.9"} 1.0

    ``collect()`` first starts the refreshes that are due for every target, then waits for all
    of them together at most ``scrape_max_wait`` seconds, so a slow target delays the scrape by
    no more than that and never holds up the others' refreshes. With 0 (what the exporter passes:
    its HTTP server has already started and waited for the due refreshes, bounded by Prometheus'
    scrape timeout) ``collect()`` only renders the newest snapshots.
    """

    def __init__(
        self,
        refreshers: Sequence[TargetRefresher],
        *,
        scrape_max_wait: float,
        build_version: str,
    ) -> None:
        self._refreshers = tuple(refreshers)
        self._max_wait = scrape_max_wait
        self._version = build_version
        self._python_version = platform.python_version()
        intervals = [r.options.min_refresh_interval for r in self._refreshers]
        self._interval = max(intervals) if intervals else 30.0

    def describe(self) -> Iterable[Metric]:
        """The families without samples (registration must not start a refresh)."""
        return list(self._families(()))

    def collect(self) -> Iterable[Metric]:
        """Build every family from the newest snapshots."""
        return list(self._families(self._snapshots()))

    def _snapshots(self) -> list[TargetSnapshot]:
        if self._max_wait <= 0:
            # The caller (the exporter's HTTP server) already started the due refreshes and
            # waited for them: only render.
            return [refresher.latest() for refresher in self._refreshers]
        futures = [f for f in (r.start_if_due() for r in self._refreshers) if f is not None]
        if futures:
            wait_futures(futures, timeout=self._max_wait)
        return [refresher.latest() for refresher in self._refreshers]

    def _families(self, snapshots: Sequence[TargetSnapshot]) -> Iterator[Metric]:
        yield from self._view_families(snapshots)
        yield from self._counter_families(snapshots)
        yield from self._refresh_families(snapshots)
        yield from self._api_families(snapshots)
        yield from self._command_families(snapshots)
        build = GaugeMetricFamily(
            PREFIX + "exporter_build_info",
            "Version of the exporter and of Python it runs on (value 1).",
            labels=("version", "python_version"),
        )
        build.add_metric((self._version, self._python_version), 1)
        yield build

    def _as_of(self) -> str:
        return f"as of the last refresh (at most every {self._interval:g} s)"

    def _view_families(self, snapshots: Sequence[TargetSnapshot]) -> Iterator[Metric]:
        as_of = self._as_of()
        results = GaugeMetricFamily(
            PREFIX + "invocation_results",
            f"Results the API returns for the target, by InvocationStatus, {as_of}.",
            labels=(*TARGET_LABELS, "invocation_status"),
        )
        by_error = GaugeMetricFamily(
            PREFIX + "invocation_results_by_error_code",
            f"Results with a non-empty ErrorCode, by ErrorCode, {as_of}.",
            labels=(*TARGET_LABELS, "error_code"),
        )
        running = GaugeMetricFamily(
            PREFIX + "invocation_running",
            f"Results with InvocationStatus Running, {as_of}.",
            labels=TARGET_LABELS,
        )
        oldest = GaugeMetricFamily(
            PREFIX + "invocation_running_oldest_age_seconds",
            f"Seconds since the StartTime of the oldest Running result (0 when none), {as_of}.",
            labels=TARGET_LABELS,
        )
        oss = GaugeMetricFamily(
            PREFIX + "oss_output_results",
            f"Results with an OSS output delivery, by OssOutputStatus, {as_of}.",
            labels=(*TARGET_LABELS, "oss_output_status"),
        )
        dropped = GaugeMetricFamily(
            PREFIX + "invocation_results_with_dropped_output",
            f"Results whose Output was cut (Dropped > 0), {as_of}.",
            labels=TARGET_LABELS,
        )
        tracked = GaugeMetricFamily(
            PREFIX + "tracked_runs",
            f"Entries in the exporter's tracking state for the target, {as_of}.",
            labels=TARGET_LABELS,
        )
        for snap in snapshots:
            target = (snap.name, snap.region_id)
            view = snap.view
            for status, n in view.by_status:
                results.add_metric((*target, status), n)
            for code, n in view.by_error_code:
                by_error.add_metric((*target, code), n)
            running.add_metric(target, view.running)
            oldest.add_metric(target, view.running_oldest_age_seconds)
            for status, n in view.oss_by_status:
                oss.add_metric((*target, status), n)
            dropped.add_metric(target, view.with_dropped_output)
            tracked.add_metric(target, view.tracked_runs)
        yield from (results, by_error, running, oldest, oss, dropped, tracked)

    def _counter_families(self, snapshots: Sequence[TargetSnapshot]) -> Iterator[Metric]:
        finished = CounterMetricFamily(
            PREFIX + "invocation_results_finished",
            "Runs (InvokeId, InstanceId, container, run) that reached a terminal "
            "InvocationStatus since the exporter started, each counted once; the backlog found "
            "by the first refresh is not counted.",
            labels=(*TARGET_LABELS, "invocation_status", "error_code"),
        )
        durations = HistogramMetricFamily(
            PREFIX + "invocation_duration_seconds",
            "FinishedTime - StartTime of the runs counted in "
            "aliyun_cloudassistant_invocation_results_finished_total (runs with both times).",
            labels=(*TARGET_LABELS, "invocation_status"),
        )
        oss = CounterMetricFamily(
            PREFIX + "oss_output_deliveries",
            "OSS output deliveries that reached Finished or Failed, each counted once.",
            labels=(*TARGET_LABELS, "oss_output_status", "oss_output_error_code"),
        )
        dropped = CounterMetricFamily(
            PREFIX + "output_dropped_bytes",
            "Bytes cut from the Output of counted runs (sum of Dropped).",
            labels=TARGET_LABELS,
        )
        found = CounterMetricFamily(
            PREFIX + "results_found_by_sweep",
            "Runs the fast path missed and the periodic full sweep found (and counted).",
            labels=TARGET_LABELS,
        )
        for snap in snapshots:
            target = (snap.name, snap.region_id)
            counters = snap.counters
            for (status, code), n in counters.finished:
                finished.add_metric((*target, status, code), n)
            for status, histogram in counters.durations:
                durations.add_metric(
                    (*target, status), _histogram_buckets(histogram), histogram.sum
                )
            for (status, code), n in counters.oss_deliveries:
                oss.add_metric((*target, status, code), n)
            dropped.add_metric(target, counters.dropped_bytes)
            found.add_metric(target, counters.found_by_sweep)
        yield from (finished, durations, oss, dropped, found)

    def _refresh_families(self, snapshots: Sequence[TargetSnapshot]) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            PREFIX + "up",
            "1 if the last refresh of the target succeeded.",
            labels=TARGET_LABELS,
        )
        duration = GaugeMetricFamily(
            PREFIX + "refresh_duration_seconds",
            "Duration of the last refresh of the target.",
            labels=TARGET_LABELS,
        )
        last_success = GaugeMetricFamily(
            PREFIX + "last_refresh_success_timestamp_seconds",
            "Unix time of the last successful refresh of the target (0 before the first).",
            labels=TARGET_LABELS,
        )
        refreshes = CounterMetricFamily(
            PREFIX + "refreshes",
            "Refreshes of the target attempted.",
            labels=TARGET_LABELS,
        )
        failures = CounterMetricFamily(
            PREFIX + "refresh_failures",
            "Refreshes of the target that failed, by reason.",
            labels=(*TARGET_LABELS, "reason"),
        )
        pages = GaugeMetricFamily(
            PREFIX + "refresh_pages",
            "API pages (calls) fetched by the last refresh of the target.",
            labels=TARGET_LABELS,
        )
        truncated = GaugeMetricFamily(
            PREFIX + "results_truncated",
            "1 if the last full walk (first refresh or sweep) stopped at the page cap.",
            labels=TARGET_LABELS,
        )
        invalid = CounterMetricFamily(
            PREFIX + "invalid_records",
            "Distinct records skipped because they could not be parsed.",
            labels=TARGET_LABELS,
        )
        for snap in snapshots:
            target = (snap.name, snap.region_id)
            up.add_metric(target, 1 if snap.up else 0)
            duration.add_metric(target, snap.refresh_duration_seconds)
            last_success.add_metric(target, snap.last_success_timestamp_seconds)
            refreshes.add_metric(target, snap.refreshes)
            for reason, n in snap.refresh_failures:
                failures.add_metric((*target, reason), n)
            pages.add_metric(target, snap.refresh_pages)
            truncated.add_metric(target, 1 if snap.results_truncated else 0)
            invalid.add_metric(target, snap.invalid_records)
        yield from (up, duration, last_success, refreshes, failures, pages, truncated, invalid)

    def _api_families(self, snapshots: Sequence[TargetSnapshot]) -> Iterator[Metric]:
        as_of = self._as_of()
        requests = CounterMetricFamily(
            PREFIX + "api_requests",
            "HTTP tries to the ECS API, by outcome code (empty on success, else the API Code or "
            f"http_<status>, timeout, transport, malformed), {as_of}.",
            labels=(*TARGET_LABELS, "code"),
        )
        durations = HistogramMetricFamily(
            PREFIX + "api_request_duration_seconds",
            f"Duration of each HTTP try to the ECS API, {as_of}.",
            labels=TARGET_LABELS,
        )
        waits = CounterMetricFamily(
            PREFIX + "api_rate_limit_wait_seconds",
            f"Seconds spent waiting on the per-account/region token bucket, {as_of}.",
            labels=TARGET_LABELS,
        )
        for snap in snapshots:
            target = (snap.name, snap.region_id)
            for code, n in snap.api_requests:
                requests.add_metric((*target, code), n)
            histogram = snap.api_request_duration
            durations.add_metric(target, _histogram_buckets(histogram), histogram.sum)
            waits.add_metric(target, snap.api_rate_limit_wait_seconds)
        yield from (requests, durations, waits)

    def _command_families(self, snapshots: Sequence[TargetSnapshot]) -> Iterator[Metric]:
        commands = CounterMetricFamily(
            PREFIX + "command_invocation_results_finished",
            "Opt-in: runs counted in aliyun_cloudassistant_invocation_results_finished_total, by "
            'CommandId (capped: beyond the cap command_id="other").',
            labels=(*TARGET_LABELS, "command_id", "command_name", "invocation_status"),
        )
        folded = GaugeMetricFamily(
            PREFIX + "command_ids_folded",
            'Opt-in: distinct CommandIds counted under command_id="other".',
            labels=TARGET_LABELS,
        )
        for snap in snapshots:
            if not snap.command_breakdown:
                continue
            target = (snap.name, snap.region_id)
            for (command_id, name, status), n in snap.counters.commands:
                commands.add_metric((*target, command_id, name, status), n)
            folded.add_metric(target, snap.counters.command_ids_folded)
        yield from (commands, folded)
