"""docs/metrics.md lists exactly the families the collector produces: names, types, labels."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.collector import TARGET_LABELS, CloudAssistantCollector
from exporter.ecs.models import InvocationQuery
from exporter.refresh import RefreshOptions, TargetRefresher
from exporter.tracking import CommandBreakdown
from tests.support.fakes import FakeApi, FakeClock, backlog

METRICS_DOC = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"
UNLABELLED = "aliyun_cloudassistant_exporter_build_info"

Family = tuple[str, frozenset[str]]  # (type, label names)


def documented() -> dict[str, Family]:
    """The rows ``| `aliyun_cloudassistant_...` | type | extra labels | meaning |``."""
    rows: dict[str, Family] = {}
    for line in METRICS_DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `aliyun_cloudassistant_"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        name = cells[0].strip("`")
        assert name not in rows, f"{name} is listed twice"
        base = frozenset() if name == UNLABELLED else frozenset(TARGET_LABELS)
        rows[name] = (cells[1], base | frozenset(re.findall(r"`(\w+)`", cells[2])))
    return rows


@pytest.fixture
def produced() -> Iterator[dict[str, Family]]:
    """Every family of a scrape of a target with every opt-in turned on."""
    pool = ThreadPoolExecutor(max_workers=1)
    refresher = TargetRefresher(
        "prod",
        "cn-hangzhou",
        FakeApi(backlog(3)),
        InvocationQuery(),
        RefreshOptions(command_breakdown=CommandBreakdown(enabled=True, command_names={"c": ""})),
        pool,
        clock=FakeClock(),
    )
    registry = CollectorRegistry()
    registry.register(
        CloudAssistantCollector([refresher], scrape_max_wait=5, build_version="0.0.0")
    )
    families: dict[str, Family] = {}
    try:
        for family in registry.collect():
            name = family.name + "_total" if family.type == "counter" else family.name
            labels = {label for s in family.samples for label in s.labels if label != "le"}
            assert family.samples, f"{name} has no samples"
            families[name] = (family.type, frozenset(labels))
        yield families
    finally:
        pool.shutdown(wait=True)


def test_every_produced_family_is_documented_with_its_type_and_labels(
    produced: dict[str, Family],
) -> None:
    assert produced == documented()


def test_the_documented_families_follow_the_naming_rules() -> None:
    for name, (kind, _) in documented().items():
        assert name.startswith("aliyun_cloudassistant_")
        assert kind in ("gauge", "counter", "histogram")
        assert name.endswith("_total") == (kind == "counter"), name
