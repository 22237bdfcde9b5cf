"""docs/metrics.md is generated from the metric contract; a scrape shows exactly the contract."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter import metrics
from exporter.collector import CloudAssistantCollector, build_info
from exporter.ecs.models import ERROR_CODES, TERMINAL_STATUSES, InvocationQuery
from exporter.metrics import TargetInfoKey, TargetKey
from exporter.refresh import RefreshOptions, TargetRefresher
from exporter.state import StateCollector, StateStore
from exporter.tracking import CommandBreakdown
from tests.support.fakes import FakeApi, FakeClock, backlog

ROOT = Path(__file__).resolve().parent.parent
METRICS_DOC = ROOT / "docs" / "metrics.md"
GENERATOR = ROOT / "docs" / "generate_metrics.py"

Family = tuple[str, frozenset[str]]  # (type, label names)


def documented() -> dict[str, Family]:
    """The rows ``| `aliyun_cloudassistant_...` | type | extra labels | ...`` of the doc."""
    rows: dict[str, Family] = {}
    for line in METRICS_DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `aliyun_cloudassistant_"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        name = cells[0].strip("`")
        assert name not in rows, f"{name} is listed twice"
        base = frozenset(metrics.TARGET_LABELS) if metrics.BY_NAME[name].per_target else frozenset()
        rows[name] = (cells[1], base | frozenset(re.findall(r"`(\w+)`", cells[2])))
    return rows


def contract() -> dict[str, Family]:
    return {spec.name: (spec.type, frozenset(spec.label_names)) for spec in metrics.METRICS}


@pytest.fixture
def produced(tmp_path: Path) -> Iterator[dict[str, Family]]:
    """Every family of a scrape of a target with every opt-in turned on (and a state directory)."""
    pool = ThreadPoolExecutor(max_workers=1)
    state = StateStore(tmp_path / "state")
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
        CloudAssistantCollector(
            # As after an answer that carried a Date header (FakeApi answers have none).
            lambda: [replace(refresher.latest(), api_clock_offset_seconds=0.0)],
            build=build_info("0.0.0", "unknown"),
            target_info={TargetKey("prod", "cn-hangzhou"): TargetInfoKey("public", "static")},
        )
    )
    registry.register(StateCollector(state))
    families: dict[str, Family] = {}
    try:
        refresher.refresh_now()
        for family in registry.collect():
            name = family.name + "_total" if family.type == "counter" else family.name
            labels = {label for s in family.samples for label in s.labels if label != "le"}
            assert family.samples, f"{name} has no samples"
            families[name] = (family.type, frozenset(labels))
        yield families
    finally:
        pool.shutdown(wait=True)
        state.close()


def test_a_scrape_shows_exactly_the_contract(produced: dict[str, Family]) -> None:
    assert produced == contract()


def test_the_doc_lists_exactly_the_contract() -> None:
    assert documented() == contract()


def test_the_generated_parts_of_the_doc_are_up_to_date() -> None:
    check = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def test_a_stale_doc_is_reported(tmp_path: Path) -> None:
    stale = METRICS_DOC.read_text(encoding="utf-8").replace("| 22 |", "| 171 |")
    assert stale != METRICS_DOC.read_text(encoding="utf-8")
    script = tmp_path / "generate_metrics.py"
    script.write_text(GENERATOR.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "metrics.md").write_text(stale, encoding="utf-8")
    check = subprocess.run(
        [sys.executable, str(script), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 1
    assert "out of date" in check.stderr


def test_the_contract_follows_the_naming_rules() -> None:
    for spec in metrics.METRICS:
        assert spec.name.startswith("aliyun_cloudassistant_")
        assert spec.type in ("gauge", "counter", "histogram")
        assert spec.name.endswith("_total") == (spec.type == "counter"), spec.name
        if spec.unit:
            assert spec.family.endswith("_" + spec.unit), spec.name
        assert len(set(spec.label_names)) == len(spec.label_names)
        assert bool(spec.buckets) == (spec.type == "histogram")
        for key in spec.preinitialised:
            assert len(key) == len(spec.labels), spec.name


def test_the_produced_pairs_are_documented_values_with_a_source() -> None:
    keys = [pair.key for pair in metrics.FINISHED_PAIRS]
    assert len(set(keys)) == len(keys)
    for pair in metrics.FINISHED_PAIRS:
        assert pair.key.invocation_status in TERMINAL_STATUSES
        assert pair.key.error_code in (metrics.NO_ERROR_CODE, *ERROR_CODES)
        assert pair.source
    # Every documented ErrorCode belongs to at least one status.
    assert {key.error_code for key in keys} >= set(ERROR_CODES)
    assert set(metrics.STARTED_STATUSES) <= set(TERMINAL_STATUSES)
    assert set(metrics.FAILURE_STATUSES) <= set(TERMINAL_STATUSES)
