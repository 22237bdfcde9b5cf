"""The Grafana dashboards rendered from the mixin: current, importable as they are, every query
parses, thresholds agree with the alerts, the documented scrape interval is Grafana's."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.metrics import METRICS
from mixin.render import DASHBOARDS_DIR, evaluate
from tests.dashboard_lint import ALL_RULES, lint, load_exclusions
from tests.dashboard_typecheck import TSC, typecheck
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
SCHEMA_VERSION = 39
EVALUATED = evaluate()
DASHBOARD_NAME = "cloudassistant-overview.json"
CONFIG: dict[str, Any] = EVALUATED["config"]


def test_committed_dashboards_are_the_rendered_mixin() -> None:
    expected = EVALUATED["dashboards"]
    assert set(expected) == {p.name for p in DASHBOARD_FILES} == set(EXPECTED_UIDS)
    for name, dashboard in expected.items():
        assert load_dashboard(DASHBOARDS_DIR / name) == dashboard, (
            f"{name} is out of date: run `.venv/bin/python -m mixin.render`"
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
    for name in ("job", "instance", "account", "region_id"):
        assert variables[name]["type"] == "query"
        assert variables[name]["query"]["query"].startswith("label_values(")
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


# Series of the exporter process itself: the contract gives them no account or region label.
PER_PROCESS_METRICS = {spec.name for spec in METRICS if not spec.per_target}


def test_every_query_filters_by_the_selected_account_and_region() -> None:
    for query in dashboard_queries():
        for name, selector in re.findall(r"(aliyun_cloudassistant_\w+)\{([^}]*)\}", query.expr):
            if name in PER_PROCESS_METRICS:
                continue
            assert 'account=~"$account"' in selector, query.source
            assert 'region_id=~"$region_id"' in selector, query.source


def test_every_query_filters_by_the_selected_job_and_instance() -> None:
    for query in dashboard_queries():
        selectors = re.findall(r"\b[a-z_]+\{([^}]*)\}", query.expr)
        assert selectors, query.source
        for selector in selectors:
            assert 'job=~"$job"' in selector, query.source
            assert 'instance=~"$instance"' in selector, query.source


def _stat(title: str) -> dict[str, Any]:
    for path in DASHBOARD_FILES:
        for panel in iter_panels(load_dashboard(path)):
            if panel["title"] == title:
                return panel
    raise AssertionError(f"no panel {title!r}")


def _steps(panel: dict[str, Any]) -> list[Any]:
    return [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]


def test_stat_panels_turn_colour_at_the_alert_thresholds() -> None:
    """One config drives both: a threshold and the panel that shows it never disagree."""
    assert _steps(_stat("Failed share")) == [None, CONFIG["failureRatio"]]
    assert _steps(_stat("Success ratio")) == [None, 1 - CONFIG["failureRatio"]]
    assert _steps(_stat("Oldest running run")) == [None, CONFIG["stuckRunningSeconds"]]
    assert _steps(_stat("API throttling ratio")) == [None, CONFIG["apiThrottlingRatio"]]
    assert _steps(_stat("Rate-limit wait")) == [None, CONFIG["rateLimitWaitRatio"]]
    for path in DASHBOARD_FILES:
        for panel in iter_panels(load_dashboard(path)):
            if panel["type"] == "stat":
                assert len(panel["fieldConfig"]["defaults"]["thresholds"]["steps"]) >= 1


def test_ratios_are_percentages_and_the_table_has_units() -> None:
    for title in ("Success ratio", "Failed share", "Rate-limit wait", "API throttling ratio"):
        assert _stat(title)["fieldConfig"]["defaults"]["unit"] == "percentunit", title
    table = _stat("Accounts and regions")
    overrides = {
        o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
        for o in table["fieldConfig"]["overrides"]
    }
    assert overrides["Success ratio"]["unit"] == "percentunit"
    assert overrides["Oldest running"]["unit"] == "s"
    assert overrides["Last refresh"]["mappings"][0]["options"]["0"]["text"] == "failing"
    assert _stat("Exporter version")["type"] == "table", "build_info is a label set, not a line"


def test_per_command_process_and_api_cost_panels_exist() -> None:
    titles = {p["title"] for path in DASHBOARD_FILES for p in iter_panels(load_dashboard(path))}
    for title in (
        "Finished runs by command",
        "Failed share by command",
        "Resident memory",
        "CPU",
        "API calls per hour",
        "API cost per month at this rate",
    ):
        assert title in titles


def test_multi_cluster_mode_adds_a_cluster_variable_and_matcher() -> None:
    dashboards = evaluate({"showMultiCluster": True})["dashboards"]
    for dashboard in dashboards.values():
        names = [v["name"] for v in dashboard["templating"]["list"]]
        assert "cluster" in names
        for panel in iter_panels(dashboard):
            for target in panel["targets"]:
                assert 'cluster=~"$cluster"' in target["expr"], panel["title"]


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


def test_provisioned_grafana_steps_at_the_documented_scrape_interval() -> None:
    """$__rate_interval is at least 4x timeInterval: it must be the real scrape interval (the
    README and the ServiceMonitor scrape every 60 s)."""
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (datasource,) = datasources["datasources"]
    assert datasource["jsonData"]["timeInterval"] == CONFIG["scrapeInterval"]
    monitor = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "servicemonitor.yaml").read_text())
    intervals = {e["interval"] for e in monitor["spec"]["endpoints"]}
    assert intervals == {CONFIG["scrapeInterval"]}


# --- Grafana's dashboard-linter rules (ported: tests/dashboard_lint.py) --------------------------

LINT_EXCLUSIONS = ROOT / "dashboards" / ".lint"


def test_lint_exclusions_name_known_rules_and_say_why() -> None:
    exclusions = load_exclusions(LINT_EXCLUSIONS)
    for rule, reason in exclusions.items():
        assert rule in ALL_RULES, f"unknown rule {rule} in dashboards/.lint"
        assert len(reason) > 20, f"{rule}: say why it is excluded"


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_passes_the_linter_rules(path: Path) -> None:
    excluded = frozenset(load_exclusions(LINT_EXCLUSIONS))
    findings = lint(load_dashboard(path), excluded)
    assert not findings, "\n".join(map(str, findings))


# rule -> (where, key, value): one defect the rule exists to catch. `where` is "dashboard",
# "panel" or "target" (of the first time series panel) or "var:<name>", then dotted keys.
_SELECTED = 'job=~"$job", instance=~"$instance"'
MUTATIONS: dict[str, tuple[str, str, Any]] = {
    "template-datasource-rule": ("var:datasource", "name", "ds"),
    "template-job-rule": ("var:job", "allValue", ".*"),
    "template-instance-rule": ("var:instance", "multi", False),
    "template-on-time-change-reload-rule": ("var:account", "refresh", 1),
    "template-label-promql-rule": ("var:account.query", "query", "label_values(up{job=, account)"),
    "uneditable-dashboard": ("dashboard", "editable", True),
    "panel-datasource-rule": ("panel", "datasource", {"type": "prometheus", "uid": "prometheus"}),
    "panel-title-description-rule": ("panel", "description", ""),
    "panel-units-rule": ("panel.fieldConfig.defaults", "unit", "seconds"),
    "panel-no-targets-rule": ("panel", "targets", []),
    "target-promql-rule": ("target", "expr", "sum(rate(up[5m]"),
    "target-rate-interval-rule": (
        "target",
        "expr",
        f"rate(process_cpu_seconds_total{{{_SELECTED}}}[5m])",
    ),
    "target-job-rule": ("target", "expr", 'up{instance=~"$instance"}'),
    "target-instance-rule": ("target", "expr", 'up{job=~"$job"}'),
    "target-counter-agg-rule": ("target", "expr", f"process_cpu_seconds_total{{{_SELECTED}}}"),
}


def _mutate(dashboard: dict[str, Any], rule: str) -> dict[str, Any]:
    d: dict[str, Any] = json.loads(json.dumps(dashboard))
    panel = next(p for p in d["panels"] if p["type"] == "timeseries")
    roots = {"dashboard": d, "panel": panel, "target": panel["targets"][0]}
    roots |= {f"var:{v['name']}": v for v in d["templating"]["list"]}
    where, key, value = MUTATIONS[rule]
    head, *path = where.split(".")
    node = roots[head]
    for part in path:
        node = node[part]
    node[key] = value
    return d


def test_every_ported_rule_has_a_mutation() -> None:
    assert set(MUTATIONS) == ALL_RULES - {"target-logql-rule"}


@pytest.mark.parametrize("rule", sorted(MUTATIONS))
def test_each_ported_rule_catches_its_defect(rule: str) -> None:
    """The port bites: each rule reports the defect it exists for, and only that rule does."""
    good = load_dashboard(DASHBOARD_FILES[0])
    assert not lint(good, frozenset({"target-logql-rule"}))
    findings = lint(_mutate(good, rule))
    assert {f.rule for f in findings} == {rule}, "\n".join(map(str, findings))


# --- strict TypeScript typecheck against @grafana/schema (tests/dashboard_typecheck.py) ----------

needs_tsc = pytest.mark.skipif(
    not TSC.exists(), reason="typescript and @grafana/schema are not installed (make npm-deps)"
)


@needs_tsc
def test_dashboards_typecheck_against_grafana_schema(tmp_path: Path) -> None:
    result = typecheck(EVALUATED["dashboards"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_tsc
def test_the_typecheck_catches_known_defects(tmp_path: Path) -> None:
    """Five defects Grafana would choke on or silently drop; tsc must report each one."""
    dashboard: dict[str, Any] = json.loads(json.dumps(EVALUATED["dashboards"][DASHBOARD_NAME]))
    panels = dashboard["panels"]
    stat = next(p for p in panels if p["type"] == "stat")
    series = next(p for p in panels if p["type"] == "timeseries")
    table = next(p for p in panels if p["type"] == "table")
    stat["options"]["colorMode"] = "rainbow"  # not a BigValueColorMode
    series["options"]["legend"]["placement"] = "top"  # not a LegendPlacement
    series["gridPos"]["w"] = "12"  # a string where Grafana wants a number
    table["options"]["showHeaders"] = True  # unknown key (a typo of showHeader)
    dashboard["graphTooltip"] = 7  # not a DashboardCursorSync
    result = typecheck({DASHBOARD_NAME: dashboard}, tmp_path)
    errors = [line for line in result.stdout.splitlines() if ": error TS" in line]
    assert len(errors) == 5, result.stdout
