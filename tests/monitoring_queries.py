"""The PromQL the project ships, collected for the tests that check it.

Every expression of alerts/cloudassistant.rules.yml and every query of the committed Grafana
dashboards (panel targets and template variables), each with where it came from, plus the
substitution of Grafana's variables that turns a dashboard query into plain PromQL. Used by
tests/test_dashboards.py (every query parses), tests/test_names.py (only contract names) and the
end-to-end test (every query runs against a real Prometheus and returns data).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES_FILE = ROOT / "alerts" / "cloudassistant.rules.yml"
DASHBOARD_FILES = tuple(sorted((ROOT / "dashboards").glob("*.json")))

_GRAFANA_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


@dataclass(frozen=True)
class ShippedQuery:
    """One PromQL expression as shipped, and where it is (for readable test failures)."""

    source: str
    expr: str

    def promql(self, *, rate_interval: str = "1m", range_: str = "1h") -> str:
        """The expression with Grafana's variables replaced: intervals by the given durations,
        template variables (always used inside `=~` matchers) by `.*`, i.e. "All"."""

        def replace(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2)
            if name == "__rate_interval":
                return rate_interval
            if name in ("__range", "__interval"):
                return range_
            return ".*"

        return _GRAFANA_VARIABLE.sub(replace, self.expr)


def load_rules(path: Path = RULES_FILE) -> list[dict[str, Any]]:
    """Every rule (recording and alerting) of a rules file, in file order."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def rule_queries(path: Path = RULES_FILE) -> list[ShippedQuery]:
    queries = []
    for rule in load_rules(path):
        name = rule.get("alert") or rule.get("record")
        queries.append(ShippedQuery(f"{path.name}: {name}", str(rule["expr"])))
    return queries


def load_dashboard(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every non-row panel, including panels nested in collapsed rows."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def panel_queries(path: Path) -> list[ShippedQuery]:
    queries = []
    for panel in iter_panels(load_dashboard(path)):
        for target in panel.get("targets", []):
            source = f"{path.name}: panel {panel['title']!r} query {target['refId']}"
            queries.append(ShippedQuery(source, str(target["expr"])))
    return queries


def variable_queries(path: Path) -> list[ShippedQuery]:
    """Template variable queries (`label_values(...)`, not PromQL themselves)."""
    queries = []
    for variable in load_dashboard(path)["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        queries.append(ShippedQuery(f"{path.name}: variable ${variable['name']}", str(text)))
    return queries


def dashboard_queries() -> list[ShippedQuery]:
    return [q for path in DASHBOARD_FILES for q in panel_queries(path)]


def label_values_selector(query: ShippedQuery) -> tuple[str, str]:
    """(series selector, label) of a `label_values(selector, label)` variable query."""
    match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query.expr.strip())
    if match is None:
        raise ValueError(f"{query.source}: not a label_values() query: {query.expr}")
    return match.group(1), match.group(2)
