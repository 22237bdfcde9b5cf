"""The Prometheus side: the families of :mod:`exporter.metrics`, rendered from target snapshots.

:class:`CloudAssistantCollector` takes a *source of snapshots* (a callable that returns the
newest :class:`~exporter.refresh.TargetSnapshot` of every target; it must not wait on anything)
and builds the families of the metric contract from them. It is a ``prometheus_client``
collector (``registry.register(collector)``, ``registry.get_sample_value(...)``), and it also
renders its own exposition text (:meth:`CloudAssistantCollector.render`): each target's text is
rendered once per snapshot and kept (snapshots are immutable), so a scrape of hundreds of
targets joins cached text instead of formatting every sample again. :class:`Exposition` puts
that text together with a registry of the other collectors (process, platform) for ``/metrics``.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from exporter import metrics as m
from exporter.metrics import (
    NO_ERROR_CODE,
    SUCCESS_CODE,
    BuildInfoKey,
    LabelValues,
    MetricSpec,
    TargetInfoKey,
    TargetKey,
)
from exporter.refresh import TargetSnapshot
from exporter.reload import ReloadStatus
from exporter.tracking import CounterTotals, HistogramValue, ViewSummary

SnapshotSource = Callable[[], Sequence[TargetSnapshot]]
"""Returns the newest snapshot of every target, without waiting (``refresher.latest()``)."""
REVISION_VARIABLE = "EXPORTER_REVISION"
"""The environment variable the container image sets to its VCS revision (build argument
``REVISION``)."""
UNKNOWN_REVISION = "unknown"
_EOF = b"# EOF\n"

Samples = dict[tuple[str, ...], float]
Encoder = Callable[[CollectorRegistry], bytes]
"""An encoder of ``prometheus_client`` (``choose_encoder(accept)[0]``)."""


def build_revision(environ: Mapping[str, str]) -> str:
    """The VCS revision for ``build_info``: :data:`REVISION_VARIABLE`, else ``unknown``."""
    value = environ.get(REVISION_VARIABLE, "").strip()
    if not value or len(value) > m.MAX_LABEL_VALUE_CHARS or not value.isprintable():
        return UNKNOWN_REVISION
    return value


def build_info(version: str, revision: str) -> BuildInfoKey:
    """The ``build_info`` labels of this process."""
    return BuildInfoKey(version, revision, platform.python_version())


def clean_label_value(value: str) -> str:
    """``value`` made encodable as UTF-8 (a lone surrogate becomes U+FFFD).

    The API layer sanitises every string it parses; this is the last line of defence, so that
    no string that reaches a label can make the exposition fail.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value


class _Families(CollectorRegistry):
    """A registry of given families, for the encoders (they only call ``collect()``)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        super().__init__(auto_describe=False)
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


Family = GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily


def _family(spec: MetricSpec) -> Family:
    labels = spec.label_names
    if spec.type == "counter":
        return CounterMetricFamily(spec.family, spec.help, labels=labels, unit=spec.unit)
    if spec.type == "histogram":
        return HistogramMetricFamily(spec.family, spec.help, labels=labels, unit=spec.unit)
    return GaugeMetricFamily(spec.family, spec.help, labels=labels, unit=spec.unit)


def _histogram_buckets(value: HistogramValue) -> list[tuple[str, float]]:
    buckets = [(_le(bound), float(count)) for bound, count in value.buckets]
    buckets.append(("+Inf", float(value.count)))
    return buckets


def _le(bound: float) -> str:
    return str(float(bound))


def _series(spec: MetricSpec, data: Samples) -> Iterator[tuple[LabelValues, float]]:
    """The series of one labelled family for one target: every pre-initialised key, then every
    other key the data has with a non-zero value (a series that never moved is not shown). A
    family without pre-initialised keys shows every key its data has."""
    if not spec.preinitialised:
        yield from data.items()
        return
    for key in spec.preinitialised:
        yield key, data.get(key, 0)
    known = set(spec.preinitialised)
    for key, value in data.items():
        if value and key not in known:
            yield key, value


def _merge(pairs: Iterable[tuple[LabelValues, int | float]]) -> Samples:
    """Sum values whose label keys became equal (``""`` and a literal ``none`` from the API)."""
    merged: Samples = {}
    for key, value in pairs:
        merged[key] = merged.get(key, 0) + value
    return merged


def _explicit(code: str, success: str) -> str:
    return code if code else success


# --- what one target shows ---------------------------------------------------------------------

Rows = Sequence[tuple[LabelValues, float]]
HistogramRows = Sequence[tuple[LabelValues, HistogramValue]]
Series = dict[str, Rows | HistogramRows]
"""Family name -> the label values (after ``account``, ``region_id``) and value of each series."""


def _labelled(spec: MetricSpec, data: Samples) -> Rows:
    return list(_series(spec, data))


def _view_series(view: ViewSummary) -> Series:
    """The families computed from the target's view (gauges)."""
    return {
        m.INVOCATION_RESULTS.name: _labelled(
            m.INVOCATION_RESULTS, _merge(((s,), n) for s, n in view.by_status)
        ),
        m.INVOCATION_RESULTS_BY_ERROR_CODE.name: _labelled(
            m.INVOCATION_RESULTS_BY_ERROR_CODE, _merge(((c,), n) for c, n in view.by_error_code)
        ),
        m.INVOCATION_RUNNING.name: [((), view.running)],
        m.INVOCATION_RUNNING_OLDEST_AGE.name: [((), view.running_oldest_age_seconds)],
        m.OSS_OUTPUT_RESULTS.name: _labelled(
            m.OSS_OUTPUT_RESULTS, _merge(((s,), n) for s, n in view.oss_by_status)
        ),
        m.INVOCATION_RESULTS_WITH_DROPPED_OUTPUT.name: [((), view.with_dropped_output)],
        m.TRACKED_RUNS.name: [((), view.tracked_runs)],
    }


def _counter_series(counters: CounterTotals, command_breakdown: bool) -> Series:
    """The families counted since the exporter started."""
    durations: dict[LabelValues, HistogramValue] = {
        (status,): histogram for status, histogram in counters.durations
    }
    started = _series(m.INVOCATION_DURATION, {k: h.count for k, h in durations.items()})
    series: Series = {
        m.INVOCATION_RESULTS_FINISHED.name: _labelled(
            m.INVOCATION_RESULTS_FINISHED,
            _merge(((s, _explicit(c, NO_ERROR_CODE)), n) for (s, c), n in counters.finished),
        ),
        m.INVOCATION_DURATION.name: [
            (key, durations.get(key) or _empty_histogram(m.INVOCATION_DURATION))
            for key, _ in started
        ],
        m.OSS_OUTPUT_DELIVERIES.name: _labelled(
            m.OSS_OUTPUT_DELIVERIES,
            _merge(((s, _explicit(c, NO_ERROR_CODE)), n) for (s, c), n in counters.oss_deliveries),
        ),
        m.OUTPUT_DROPPED_BYTES.name: [((), counters.dropped_bytes)],
        m.RESULTS_FOUND_BY_SWEEP.name: [((), counters.found_by_sweep)],
    }
    if command_breakdown:
        series[m.COMMAND_INVOCATION_RESULTS_FINISHED.name] = list(
            _merge((key, n) for key, n in counters.commands).items()
        )
        series[m.COMMAND_IDS_FOLDED.name] = [((), counters.command_ids_folded)]
    return series


def _refresh_series(snap: TargetSnapshot, info: TargetInfoKey | None) -> Series:
    """The families about the refreshes and API calls (they change with every refresh)."""
    series: Series = {
        m.UP.name: [((), 1 if snap.up else 0)],
        m.REFRESH_DURATION.name: [((), snap.refresh_duration_seconds)],
        m.LAST_REFRESH_SUCCESS.name: [((), snap.last_success_timestamp_seconds)],
        m.REFRESHES.name: [((), snap.refreshes)],
        m.REFRESH_FAILURES.name: _labelled(
            m.REFRESH_FAILURES, _merge(((r,), n) for r, n in snap.refresh_failures)
        ),
        m.REFRESH_PAGES.name: [((), snap.refresh_pages)],
        m.RESULTS_TRUNCATED.name: [((), 1 if snap.results_truncated else 0)],
        m.SWEEP_INTERVAL.name: [((), snap.sweep_interval_seconds)],
        m.INVALID_RECORDS.name: [((), snap.invalid_records)],
        m.FIRST_WALK_COMPLETE.name: [((), 1 if snap.baseline_done else 0)],
        m.LABEL_VALUES_FOLDED.name: [((), snap.label_values_folded)],
        m.API_REQUESTS.name: _labelled(
            m.API_REQUESTS,
            _merge(((_explicit(c, SUCCESS_CODE),), n) for c, n in snap.api_requests),
        ),
        m.API_REQUEST_DURATION.name: [((), snap.api_request_duration)],
        m.API_RATE_LIMIT_WAIT.name: [((), snap.api_rate_limit_wait_seconds)],
    }
    if snap.api_clock_offset_seconds is not None:
        series[m.API_CLOCK_OFFSET.name] = [((), snap.api_clock_offset_seconds)]
    if info is not None:
        series[m.TARGET_INFO.name] = [(tuple(info), 1)]
    return series


def _empty_histogram(spec: MetricSpec) -> HistogramValue:
    return HistogramValue(tuple((bound, 0) for bound in spec.buckets), 0, 0.0)


# --- rendering ---------------------------------------------------------------------------------


def _escape(value: str) -> str:
    # The exposition formats' label value escapes: backslash, double quote, line feed.
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _label_text(names: tuple[str, ...], values: Iterable[str]) -> str:
    return ",".join(f'{name}="{_escape(value)}"' for name, value in zip(names, values, strict=True))


def _family_text(spec: MetricSpec, target: str, rows: Rows | HistogramRows) -> str:
    """The sample lines of one family of one target (the same in both text formats)."""
    lines: list[str] = []
    for key, value in rows:
        labels = target + ("," + _label_text(spec.labels, key) if key else "")
        if isinstance(value, HistogramValue):
            name = spec.name
            for bound, count in value.buckets:
                lines.append(f'{name}_bucket{{{labels},le="{_le(bound)}"}} {_num(count)}\n')
            lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {_num(value.count)}\n')
            lines.append(f"{name}_count{{{labels}}} {_num(value.count)}\n")
            lines.append(f"{name}_sum{{{labels}}} {_num(value.sum)}\n")
        else:
            lines.append(f"{spec.name}{{{labels}}} {_num(value)}\n")
    return "".join(lines)


def _num(value: float) -> str:
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


class _Rendered(NamedTuple):
    """One target's sample lines by family name (the same in both text formats), in three
    groups: from the view, from the counters, from the refresh (see :meth:`_target_text`)."""

    snapshot: TargetSnapshot
    groups: tuple[dict[str, bytes], dict[str, bytes], dict[str, bytes]]
    """Encoded once, so that a scrape only joins bytes (no copy of the whole text to encode)."""

    def chunk(self, name: str) -> bytes:
        for group in self.groups:
            text = group.get(name)
            if text is not None:
                return text
        return b""


def _encoded(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate slipped through: never fail the scrape
        return clean_label_value(text).encode("utf-8")


def _header_lines(encoder: Encoder, spec: MetricSpec) -> bytes:
    text = encoder(_Families((_family(spec),))).decode("utf-8")
    return "".join(
        line + "\n" for line in text.splitlines() if line.startswith(("# HELP", "# TYPE", "# UNIT"))
    ).encode("utf-8")


class CloudAssistantCollector:
    """Every family of :data:`exporter.metrics.METRICS`, one series set per target.

    A scrape looks like this (one target; ``…`` stands for
    ``account="prod",region_id="cn-hangzhou"``; most series left out)::

        # HELP aliyun_cloudassistant_up 1 if the last refresh of the target succeeded.
        # TYPE aliyun_cloudassistant_up gauge
        aliyun_cloudassistant_up{account="prod",region_id="cn-hangzhou"} 1.0
        # TYPE aliyun_cloudassistant_invocation_results gauge
        aliyun_cloudassistant_invocation_results{…,invocation_status="Running"} 3.0
        # TYPE aliyun_cloudassistant_invocation_results_finished_total counter
        aliyun_cloudassistant_invocation_results_finished_total{…,invocation_status="Failed",
            error_code="ExitCodeNonzero"} 2.0
        aliyun_cloudassistant_invocation_results_finished_total{…,invocation_status="Success",
            error_code="none"} 812.0
        # TYPE aliyun_cloudassistant_exporter_build_info gauge
        aliyun_cloudassistant_exporter_build_info{version="0.1.0",revision="3f2c1e9",
            python_version="3.11.9"} 1.0

    ``snapshots`` returns the newest snapshot of every target and never waits (who starts the
    refreshes and how long a scrape waits for them is the application's business);
    ``target_info`` gives the ``target_info`` labels of each target (targets without an entry
    have no ``target_info`` series).
    """

    def __init__(
        self,
        snapshots: SnapshotSource,
        *,
        build: BuildInfoKey,
        target_info: Mapping[TargetKey, TargetInfoKey] | None = None,
        reload_status: ReloadStatus | None = None,
        shard: Callable[[], m.ShardFigures] | None = None,
    ) -> None:
        self._snapshots = snapshots
        self._build = build
        self._shard = shard
        self._target_info = dict(target_info or {})
        self._reload_status = reload_status if reload_status is not None else ReloadStatus()
        self._specs = tuple(spec for spec in m.METRICS if spec.per_target)
        self._lock = threading.Lock()
        self._headers: dict[str, tuple[bytes, ...]] = {}  # by content type
        self._rendered: dict[TargetKey, _Rendered] = {}

    # --- the prometheus_client collector -----------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        """The families without samples (registration must not read anything)."""
        return [_family(spec) for spec in m.METRICS]

    def collect(self) -> Iterable[Metric]:
        """Every family, built from the newest snapshots."""
        families = {spec.name: _family(spec) for spec in self._specs}
        for snap in self._snapshots():
            target = tuple(clean_label_value(v) for v in (snap.name, snap.region_id))
            for name, rows in self._target_series(snap).items():
                family = families[name]
                for key, value in rows:
                    labels = (*target, *(clean_label_value(v) for v in key))
                    if isinstance(value, HistogramValue):
                        assert isinstance(family, HistogramMetricFamily)
                        family.add_metric(labels, _histogram_buckets(value), value.sum)
                    else:
                        assert not isinstance(family, HistogramMetricFamily)
                        family.add_metric(labels, value)
        return [*families.values(), *self._process_families()]

    # --- the cached exposition ---------------------------------------------------------------

    def render(self, accept: str = "") -> tuple[str, str]:
        """The exposition text of every family, in the format ``accept`` (an HTTP ``Accept``
        header) asks for, and its content type (OpenMetrics' ``# EOF`` left out).

        Each target's lines are rendered once per snapshot and reused until its next refresh
        (:meth:`prerender` does it ahead of the scrape).
        """
        parts, content_type = self.render_parts(accept)
        return b"".join(parts).decode("utf-8"), content_type

    def render_parts(self, accept: str = "") -> tuple[list[bytes], str]:
        """:meth:`render`'s text as UTF-8 pieces, to be joined with whatever goes around them
        (a fleet's exposition is megabytes: joining it once is all a scrape does with it)."""
        encoder, content_type = choose_encoder(accept)
        headers = self._headers.get(content_type)
        if headers is None:
            headers = tuple(_header_lines(encoder, spec) for spec in self._specs)
            self._headers[content_type] = headers
        snapshots = self._snapshots()
        rendered = [self._rendered_target(snapshot) for snapshot in snapshots]
        parts: list[bytes] = []
        for spec, header in zip(self._specs, headers, strict=True):
            parts.append(header)
            parts.extend(target.chunk(spec.name) for target in rendered)
        process = _Families(self._process_families(len(snapshots)))
        parts.append(encoder(process).removesuffix(_EOF))
        return parts, content_type

    def retarget(self, target_info: Mapping[TargetKey, TargetInfoKey]) -> None:
        """The targets changed (a reload): new ``target_info`` labels; the text rendered for a
        target that is gone or whose labels changed is dropped."""
        with self._lock:
            for key in list(self._rendered):
                if key not in target_info or target_info[key] != self._target_info.get(key):
                    del self._rendered[key]
            self._target_info = dict(target_info)

    def prerender(self, snapshot: TargetSnapshot) -> None:
        """Render ``snapshot`` now (from the refresh that made it), so the scrape finds it ready."""
        self._rendered_target(snapshot)

    def _rendered_target(self, snapshot: TargetSnapshot) -> _Rendered:
        target = TargetKey(snapshot.name, snapshot.region_id)
        with self._lock:
            cached = self._rendered.get(target)
        if cached is not None and cached.snapshot is snapshot:
            return cached
        # Rendered outside the lock: two scrapes that race render the same text twice.
        rendered = _Rendered(snapshot, self._target_text(snapshot, cached))
        with self._lock:
            self._rendered[target] = rendered
        return rendered

    def _target_text(
        self, snap: TargetSnapshot, previous: _Rendered | None
    ) -> tuple[dict[str, bytes], dict[str, bytes], dict[str, bytes]]:
        # Most refreshes change only some of the refresh families: the text of a family whose
        # rows are equal to those of the last rendering is reused (cheaper to compare than to
        # format), the text of a whole group when what it shows is equal.
        target = _label_text(m.TARGET_LABELS, (snap.name, snap.region_id))
        old = previous.snapshot if previous is not None else None

        def text(series: Series, before: Series | None, group: int) -> dict[str, bytes]:
            chunks = previous.groups[group] if previous is not None and before else {}
            return {
                name: (
                    chunks[name]
                    if name in chunks and before is not None and before.get(name) == rows
                    else _encoded(_family_text(m.BY_NAME[name], target, rows))
                )
                for name, rows in series.items()
            }

        if previous is not None and old is not None and old.view == snap.view:
            view = previous.groups[0]
        else:
            view = text(_view_series(snap.view), None if old is None else _view_series(old.view), 0)
        if (
            previous is not None
            and old is not None
            and old.counters == snap.counters
            and old.command_breakdown == snap.command_breakdown
        ):
            counters = previous.groups[1]
        else:
            counters = text(
                _counter_series(snap.counters, snap.command_breakdown),
                None if old is None else _counter_series(old.counters, old.command_breakdown),
                1,
            )
        info = self._target_info.get(TargetKey(snap.name, snap.region_id))
        refresh = text(
            _refresh_series(snap, info), None if old is None else _refresh_series(old, info), 2
        )
        return (view, counters, refresh)

    # --- building the families ---------------------------------------------------------------

    def _process_families(self, targets: int | None = None) -> list[Metric]:
        """The families of the exporter itself (no target labels): build, reload and shard
        (not sharded: shard 0 of 1, owning the ``targets`` it exports)."""
        family = GaugeMetricFamily(
            m.BUILD_INFO.family, m.BUILD_INFO.help, labels=m.BUILD_INFO.label_names
        )
        family.add_metric(self._build, 1)
        successful, success_time = self._reload_status.read()
        last_reload, last_success = (
            m.CONFIG_LAST_RELOAD_SUCCESSFUL,
            m.CONFIG_LAST_RELOAD_SUCCESS_TIME,
        )
        shard = self._shard() if self._shard is not None else None
        if shard is None:
            owned = len(self._snapshots()) if targets is None else targets
            shard = m.ShardFigures(0, 1, owned, owned)
        gauges = (
            (m.EXPORTER_SHARD, shard.shard),
            (m.EXPORTER_TOTAL_SHARDS, shard.total_shards),
            (m.EXPORTER_OWNED_TARGETS, shard.owned_targets),
            (m.EXPORTER_CONFIGURED_TARGETS, shard.configured_targets),
        )
        return [
            family,
            GaugeMetricFamily(last_reload.family, last_reload.help, 1 if successful else 0),
            GaugeMetricFamily(
                last_success.family, last_success.help, success_time, unit=last_success.unit
            ),
            *(GaugeMetricFamily(spec.family, spec.help, value) for spec, value in gauges),
        ]

    def _target_series(self, snap: TargetSnapshot) -> Series:
        """Every per-target family of one snapshot."""
        info = self._target_info.get(TargetKey(snap.name, snap.region_id))
        return {
            **_view_series(snap.view),
            **_counter_series(snap.counters, snap.command_breakdown),
            **_refresh_series(snap, info),
        }


class Exposition:
    """The ``/metrics`` body: ``runtime`` (a registry of the process and platform collectors,
    rendered by ``prometheus_client``) followed by the collector's cached text."""

    def __init__(self, runtime: CollectorRegistry, collector: CloudAssistantCollector) -> None:
        self._runtime = runtime
        self._collector = collector

    def pieces(self, accept: str) -> tuple[list[bytes], str]:
        """The body, in pieces to be joined (or compressed one after the other), and its
        content type for a request's ``Accept`` header."""
        encoder, _ = choose_encoder(accept)
        runtime = encoder(self._runtime)
        parts, content_type = self._collector.render_parts(accept)
        if runtime.endswith(_EOF):  # OpenMetrics: the end marker goes after everything
            return [runtime.removesuffix(_EOF), *parts, _EOF], content_type
        return [runtime, *parts], content_type

    def render(self, accept: str) -> tuple[bytes, str]:
        """The body and its content type for a request's ``Accept`` header."""
        pieces, content_type = self.pieces(accept)
        return b"".join(pieces), content_type
