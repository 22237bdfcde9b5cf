"""Dashboards and rules use only metric names and labels of the metric contract (docs/metrics.md).

The contract is the table in docs/metrics.md: rows that start with "| `aliyun_cloudassistant_...",
then the type, then the extra labels. Every per-target series also carries account and region_id;
Prometheus adds job and instance; histograms add le on their _bucket series.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.monitoring_queries import (
    DASHBOARD_FILES,
    ROOT,
    ShippedQuery,
    dashboard_queries,
    label_values_selector,
    load_dashboard,
    load_rules,
    rule_queries,
    variable_queries,
)

METRICS_DOC = ROOT / "docs" / "metrics.md"
# Prometheus adds job and instance; the Prometheus Operator's target labels add namespace and pod,
# and a central ruler's external labels cluster (the mixin keeps and aggregates over them).
PROMETHEUS_LABELS = frozenset({"job", "instance", "namespace", "pod", "cluster"})
TARGET_LABELS = frozenset({"account", "region_id"})
UNLABELLED_METRICS = frozenset({"aliyun_cloudassistant_exporter_build_info"})
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# A contract metric name that is not part of a recording rule name (`level:metric:operation`).
METRIC_NAME = re.compile(r"(?<![:\w])aliyun_cloudassistant_\w+(?![:\w])")
SELECTOR = re.compile(r"(?<![:\w])(aliyun_cloudassistant_\w+)\{([^}]*)\}")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


@dataclass(frozen=True)
class ContractMetric:
    name: str
    type: str
    labels: frozenset[str]


def _cell_labels(cell: str) -> frozenset[str]:
    quoted = re.findall(r"`(\w+)`", cell)
    names = quoted or re.findall(r"\b[a-z][a-z0-9_]*\b", cell)
    return frozenset(n for n in names if n not in ("none", "and"))


def load_contract(path: Path = METRICS_DOC) -> dict[str, ContractMetric]:
    if not path.exists():
        pytest.fail(f"{path.relative_to(ROOT)} is missing: it holds the metric contract table")
    contract = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `aliyun_cloudassistant_"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = cells[0].strip("`")
        base = frozenset() if name in UNLABELLED_METRICS else TARGET_LABELS
        contract[name] = ContractMetric(
            name, cells[1].strip("`").lower(), base | _cell_labels(cells[2])
        )
    if not contract:
        pytest.fail(f"no '| `aliyun_cloudassistant_...' rows in {path.relative_to(ROOT)}")
    return contract


def _metric(contract: dict[str, ContractMetric], name: str) -> ContractMetric | None:
    if name in contract:
        return contract[name]
    for suffix in HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and base in contract and contract[base].type == "histogram":
            labels = contract[base].labels | ({"le"} if suffix == "_bucket" else set())
            return ContractMetric(name, "histogram", frozenset(labels))
    return None


def _all_labels(contract: dict[str, ContractMetric]) -> frozenset[str]:
    labels = set(PROMETHEUS_LABELS) | {"le"}
    for metric in contract.values():
        labels |= metric.labels
    return frozenset(labels)


def _shipped() -> list[ShippedQuery]:
    return (
        rule_queries()
        + dashboard_queries()
        + [
            ShippedQuery(q.source, label_values_selector(q)[0])
            for path in DASHBOARD_FILES
            for q in variable_queries(path)
        ]
    )


def test_contract_table_is_readable() -> None:
    contract = load_contract()
    assert "aliyun_cloudassistant_up" in contract
    assert "account" in contract["aliyun_cloudassistant_up"].labels


def test_metric_names_and_matchers_are_in_the_contract() -> None:
    contract = load_contract()
    problems = []
    for query in _shipped():
        for name in METRIC_NAME.findall(query.expr):
            if _metric(contract, name) is None:
                problems.append(f"{query.source}: {name} is not in docs/metrics.md")
        for name, matchers in SELECTOR.findall(query.expr):
            metric = _metric(contract, name)
            if metric is None:
                continue
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
                if label not in metric.labels | PROMETHEUS_LABELS:
                    problems.append(f"{query.source}: {name} has no label {label!r}")
    assert not problems, "\n".join(problems)


def test_grouping_labels_are_in_the_contract() -> None:
    known = _all_labels(load_contract())
    problems = []
    for query in rule_queries() + dashboard_queries():
        for clause in GROUPING.findall(query.expr):
            for label in re.findall(r"\w+", clause):
                if label not in known:
                    problems.append(f"{query.source}: unknown label {label!r}")
    assert not problems, "\n".join(problems)


def test_labels_in_alert_templates_and_legends_are_in_the_contract() -> None:
    known = _all_labels(load_contract()) | {"alertname"}
    for rule in load_rules():
        for text in rule.get("annotations", {}).values():
            for label in re.findall(r"\$labels\.(\w+)", text):
                assert label in known, f"{rule['alert']}: $labels.{label}"
    for path in DASHBOARD_FILES:
        dashboard = load_dashboard(path)
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
                    assert label in known, f"{path.name} {panel['title']}: {{{{{label}}}}}"
        for query in variable_queries(path):
            assert label_values_selector(query)[1] in known, query.source
