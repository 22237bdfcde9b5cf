"""The exporter's ``/metrics`` text as samples keyed by metric name and labels."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

PREFIX = "aliyun_cloudassistant_"

SampleKey = tuple[str, tuple[tuple[str, str], ...]]
Samples = dict[SampleKey, float]


def parse_samples(text: str) -> Samples:
    """Every sample of an exposition, by name and sorted labels."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def sample_key(name: str, **labels: str) -> SampleKey:
    """The key of the exporter's sample ``PREFIX + name`` with ``labels`` in ``Samples``."""
    return (PREFIX + name, tuple(sorted(labels.items())))
