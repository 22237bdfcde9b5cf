"""The Grafana dashboards: current with their generator, importable as they are, every query
parses."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards.generate import SCHEMA_VERSION, rendered
from tests.monitoring_queries import (
    DASHBOARD_FILES,
    ROOT,
    dashboard_queries,
    iter_panels,
    load_dashboard,
)

PROMTOOL = shutil.which("promtool")
EXPECTED_UIDS = {
    "cloudassistant-overview.json": "cloudassistant-overview",
    "cloudassistant-exporter.json": "cloudassistant-exporter",
}
PROVISIONING = ROOT / "dashboards" / "provisioning"


def test_committed_dashboards_are_generated_by_the_script() -> None:
    expected = rendered()
    assert {p.name for p in expected} == {p.name for p in DASHBOARD_FILES} == set(EXPECTED_UIDS)
    for path, text in expected.items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.name} is out of date: run `.venv/bin/python -m dashboards.generate`"
        )


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_imports_without_edits(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    dashboard = load_dashboard(path)
    assert "__inputs" not in dashboard, "no import-time inputs"
    assert "${DS_" not in text, "no import-time data source placeholders"
    assert dashboard["uid"] == EXPECTED_UIDS[path.name]
    assert dashboard["schemaVersion"] == SCHEMA_VERSION
    assert "cloud-assistant" in dashboard["tags"]
    assert "id" not in dashboard, "a fixed id would clash on import; the uid identifies it"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("account", "region_id"):
        assert variables[name]["type"] == "query"
        assert variables[name]["definition"].startswith("label_values(")
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_every_panel_is_described_and_uses_the_datasource_variable(path: Path) -> None:
    panels = list(iter_panels(load_dashboard(path)))
    assert panels
    ids = [p["id"] for p in load_dashboard(path)["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels:
        assert len(panel["description"]) > 20, f"{panel['title']}: describe what it shows"
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24


def _range_selectors(expr: str) -> list[str]:
    return re.findall(r"\[([^\]]+)\]", expr)


def test_rates_use_grafana_intervals_not_fixed_windows() -> None:
    for query in dashboard_queries():
        for window in _range_selectors(query.expr):
            assert window in ("$__rate_interval", "$__range"), f"{query.source}: [{window}]"


def test_every_query_filters_by_the_selected_account_and_region() -> None:
    for query in dashboard_queries():
        for selector in re.findall(r"aliyun_cloudassistant_\w+\{([^}]*)\}", query.expr):
            if "exporter_build_info" in query.expr:
                continue
            assert 'account=~"$account"' in selector, query.source
            assert 'region_id=~"$region_id"' in selector, query.source


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (make system-deps)")
def test_every_query_parses(tmp_path: Path) -> None:
    """promtool has no offline "parse this query"; `check rules` parses every rule's expression,
    so each dashboard query becomes a recording rule of a throw-away rules file."""
    queries = dashboard_queries()
    rules: list[dict[str, Any]] = [
        {"record": f"dashboard:query_{i}:parsed", "expr": q.promql()} for i, q in enumerate(queries)
    ]
    rules_file = tmp_path / "dashboard-queries.rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    failing = [
        f"{queries[int(n)].source}: {queries[int(n)].expr}"
        for n in re.findall(r"dashboard:query_(\d+):parsed", output)
    ]
    assert result.returncode == 0, "\n".join(failing) or output
    assert f"SUCCESS: {len(queries)} rules found" in output


def test_provisioning_files_point_grafana_at_prometheus_and_the_dashboards() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert datasources["apiVersion"] == 1
    assert [d["type"] for d in datasources["datasources"]] == ["prometheus"]
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "cloudassistant.yml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]
