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
from dataclasses import dataclass
from typing import NamedTuple

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from exporter import metrics as m
from exporter.metrics import (
    NO_ERROR_CODE,
    SUCCESS_CODE,
    BuildInfoKey,
    MetricSpec,
    TargetInfoKey,
    TargetKey,
)
from exporter.refresh import TargetSnapshot
from exporter.tracking import HistogramValue

SnapshotSource = Callable[[], Sequence[TargetSnapshot]]
"""Returns the newest snapshot of every target, without waiting (``refresher.latest()``)."""
REVISION_VARIABLE = "EXPORTER_REVISION"
"""The environment variable the container image sets to its VCS revision (build argument
``REVISION``)."""
UNKNOWN_REVISION = "unknown"
_EOF = "# EOF\n"

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
    buckets = [(str(float(bound)), float(count)) for bound, count in value.buckets]
    buckets.append(("+Inf", float(value.count)))
    return buckets


def _series(spec: MetricSpec, data: Samples) -> Iterator[tuple[tuple[str, ...], float]]:
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


def _merge(pairs: Iterable[tuple[tuple[str, ...], int | float]]) -> Samples:
    """Sum values whose label keys became equal (``""`` and a literal ``none`` from the API)."""
    merged: Samples = {}
    for key, value in pairs:
        merged[key] = merged.get(key, 0) + value
    return merged


def _explicit(code: str, success: str) -> str:
    return code if code else success


class _Rendered(NamedTuple):
    """One target's sample lines, family by family, in one exposition format."""

    snapshot: TargetSnapshot
    chunks: tuple[str, ...]


@dataclass(frozen=True)
class _Format:
    """One exposition format: its encoder and the header lines of each per-target family."""

    encoder: Encoder
    headers: tuple[str, ...]


def _sample_lines(encoder: Encoder, family: Metric) -> str:
    text = encoder(_Families((family,))).decode("utf-8")
    return "".join(line + "\n" for line in text.splitlines() if line and not line.startswith("#"))


def _header_lines(encoder: Encoder, spec: MetricSpec) -> str:
    text = encoder(_Families((_family(spec),))).decode("utf-8")
    return "".join(
        line + "\n" for line in text.splitlines() if line.startswith(("# HELP", "# TYPE", "# UNIT"))
    )


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
    ) -> None:
        self._snapshots = snapshots
        self._build = build
        self._target_info = dict(target_info or {})
        self._specs = tuple(spec for spec in m.METRICS if spec.per_target)
        self._lock = threading.Lock()
        # By content type: the formats scrapes asked for so far (what prerender renders).
        self._formats: dict[str, _Format] = {}
        self._rendered: dict[tuple[str, TargetKey], _Rendered] = {}

    # --- the prometheus_client collector -----------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        """The families without samples (registration must not read anything)."""
        return [_family(spec) for spec in m.METRICS]

    def collect(self) -> Iterable[Metric]:
        """Every family, built from the newest snapshots."""
        families: dict[str, Metric] = {spec.name: _family(spec) for spec in m.METRICS}
        for snapshot in self._snapshots():
            for spec, family in self._target_families(snapshot, clean=True):
                for sample in family.samples:
                    families[spec.name].samples.append(sample)
        families[m.BUILD_INFO.name] = self._build_family()
        return list(families.values())

    # --- the cached exposition ---------------------------------------------------------------

    def render(self, accept: str = "") -> tuple[str, str]:
        """The exposition text of every family, in the format ``accept`` (an HTTP ``Accept``
        header) asks for, and its content type (OpenMetrics' ``# EOF`` left out).

        Each target's lines are rendered once per snapshot and format and reused until its next
        refresh (:meth:`prerender` can do it ahead of the scrape).
        """
        encoder, content_type = choose_encoder(accept)
        fmt = self._format(encoder, content_type)
        rendered = [self._rendered_target(s, content_type, fmt) for s in self._snapshots()]
        parts: list[str] = []
        for index, header in enumerate(fmt.headers):
            parts.append(header)
            parts.extend(target.chunks[index] for target in rendered)
        build = encoder(_Families((self._build_family(),))).decode("utf-8")
        parts.append(build.removesuffix(_EOF))
        return "".join(parts), content_type

    def prerender(self, snapshot: TargetSnapshot) -> None:
        """Render ``snapshot`` now in every format scrapes asked for so far (from the refresh
        that made it, so that the next scrape finds it ready)."""
        with self._lock:
            formats = list(self._formats.items())
        for content_type, fmt in formats:
            self._rendered_target(snapshot, content_type, fmt)

    def _format(self, encoder: Encoder, content_type: str) -> _Format:
        with self._lock:
            fmt = self._formats.get(content_type)
        if fmt is None:
            fmt = _Format(encoder, tuple(_header_lines(encoder, spec) for spec in self._specs))
            with self._lock:
                self._formats.setdefault(content_type, fmt)
        return fmt

    def _rendered_target(
        self, snapshot: TargetSnapshot, content_type: str, fmt: _Format
    ) -> _Rendered:
        cache_key = (content_type, TargetKey(snapshot.name, snapshot.region_id))
        with self._lock:
            cached = self._rendered.get(cache_key)
        if cached is not None and cached.snapshot is snapshot:
            return cached
        # Rendered outside the lock: two scrapes that race render the same text twice.
        try:
            chunks = tuple(
                _sample_lines(fmt.encoder, family)
                for _, family in self._target_families(snapshot, clean=False)
            )
        except UnicodeEncodeError:
            chunks = tuple(
                _sample_lines(fmt.encoder, family)
                for _, family in self._target_families(snapshot, clean=True)
            )
        rendered = _Rendered(snapshot, chunks)
        with self._lock:
            self._rendered[cache_key] = rendered
        return rendered

    # --- building the families ---------------------------------------------------------------

    def _build_family(self) -> Metric:
        family = GaugeMetricFamily(
            m.BUILD_INFO.family, m.BUILD_INFO.help, labels=m.BUILD_INFO.label_names
        )
        family.add_metric(self._build, 1)
        return family

    def _target_families(
        self, snap: TargetSnapshot, *, clean: bool
    ) -> Iterator[tuple[MetricSpec, Metric]]:
        """The per-target families of one snapshot, in the order of :data:`METRICS`."""
        target = TargetKey(snap.name, snap.region_id)
        if clean:
            target = TargetKey(*(clean_label_value(v) for v in target))
        view = snap.view
        counters = snap.counters
        labelled: dict[str, Samples] = {
            m.INVOCATION_RESULTS.name: _merge(((s,), n) for s, n in view.by_status),
            m.INVOCATION_RESULTS_BY_ERROR_CODE.name: _merge(
                ((c,), n) for c, n in view.by_error_code
            ),
            m.OSS_OUTPUT_RESULTS.name: _merge(((s,), n) for s, n in view.oss_by_status),
            m.INVOCATION_RESULTS_FINISHED.name: _merge(
                ((s, _explicit(c, NO_ERROR_CODE)), n) for (s, c), n in counters.finished
            ),
            m.OSS_OUTPUT_DELIVERIES.name: _merge(
                ((s, _explicit(c, NO_ERROR_CODE)), n) for (s, c), n in counters.oss_deliveries
            ),
            m.REFRESH_FAILURES.name: _merge(((r,), n) for r, n in snap.refresh_failures),
            m.API_REQUESTS.name: _merge(
                ((_explicit(c, SUCCESS_CODE),), n) for c, n in snap.api_requests
            ),
        }
        if snap.command_breakdown:
            labelled[m.COMMAND_INVOCATION_RESULTS_FINISHED.name] = _merge(
                (key, n) for key, n in counters.commands
            )
        info = self._target_info.get(TargetKey(snap.name, snap.region_id))
        if info is not None:
            labelled[m.TARGET_INFO.name] = {tuple(info): 1}
        plain: dict[str, float] = {
            m.INVOCATION_RUNNING.name: view.running,
            m.INVOCATION_RUNNING_OLDEST_AGE.name: view.running_oldest_age_seconds,
            m.INVOCATION_RESULTS_WITH_DROPPED_OUTPUT.name: view.with_dropped_output,
            m.TRACKED_RUNS.name: view.tracked_runs,
            m.OUTPUT_DROPPED_BYTES.name: counters.dropped_bytes,
            m.RESULTS_FOUND_BY_SWEEP.name: counters.found_by_sweep,
            m.UP.name: 1 if snap.up else 0,
            m.REFRESH_DURATION.name: snap.refresh_duration_seconds,
            m.LAST_REFRESH_SUCCESS.name: snap.last_success_timestamp_seconds,
            m.REFRESHES.name: snap.refreshes,
            m.REFRESH_PAGES.name: snap.refresh_pages,
            m.RESULTS_TRUNCATED.name: 1 if snap.results_truncated else 0,
            m.INVALID_RECORDS.name: snap.invalid_records,
            m.LABEL_VALUES_FOLDED.name: snap.label_values_folded,
            m.API_RATE_LIMIT_WAIT.name: snap.api_rate_limit_wait_seconds,
        }
        if snap.command_breakdown:
            plain[m.COMMAND_IDS_FOLDED.name] = counters.command_ids_folded
        histograms: dict[str, dict[tuple[str, ...], HistogramValue]] = {
            m.INVOCATION_DURATION.name: {(s,): h for s, h in counters.durations},
            m.API_REQUEST_DURATION.name: {(): snap.api_request_duration},
        }
        for spec in self._specs:
            family = _family(spec)
            if isinstance(family, HistogramMetricFamily):
                data = histograms.get(spec.name, {})
                keys = (
                    [key for key, _ in _series(spec, {k: h.count for k, h in data.items()})]
                    if spec.labels
                    else [()]
                )
                for key in keys:
                    histogram = data.get(key) or _empty_histogram(spec)
                    family.add_metric(
                        _labels(target, key, clean), _histogram_buckets(histogram), histogram.sum
                    )
            elif spec.name in labelled:
                for key, value in _series(spec, labelled[spec.name]):
                    family.add_metric(_labels(target, key, clean), value)
            elif spec.name in plain:
                family.add_metric(target, plain[spec.name])
            yield spec, family


def _labels(target: TargetKey, key: tuple[str, ...], clean: bool) -> tuple[str, ...]:
    if clean:
        return (*target, *(clean_label_value(value) for value in key))
    return (*target, *key)


def _empty_histogram(spec: MetricSpec) -> HistogramValue:
    return HistogramValue(tuple((bound, 0) for bound in spec.buckets), 0, 0.0)


class Exposition:
    """The ``/metrics`` body: ``runtime`` (a registry of the process and platform collectors,
    rendered by ``prometheus_client``) followed by the collector's cached text."""

    def __init__(self, runtime: CollectorRegistry, collector: CloudAssistantCollector) -> None:
        self._runtime = runtime
        self._collector = collector

    def render(self, accept: str) -> tuple[bytes, str]:
        """The body and its content type for a request's ``Accept`` header."""
        encoder, _ = choose_encoder(accept)
        runtime = encoder(self._runtime).decode("utf-8")
        text, content_type = self._collector.render(accept)
        if runtime.endswith(_EOF):  # OpenMetrics: the end marker goes after everything
            return (runtime.removesuffix(_EOF) + text + _EOF).encode("utf-8"), content_type
        return (runtime + text).encode("utf-8"), content_type
