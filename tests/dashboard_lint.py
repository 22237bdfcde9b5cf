"""Grafana's dashboard-linter rules that apply to Prometheus dashboards, ported to Python.

The linter (github.com/grafana/dashboard-linter) is a Go tool and there is no Go toolchain here,
so each rule below re-implements one of its rules by name, on the same terms: Grafana's variables
are replaced by placeholder values before a query is parsed (with the `promql-parser` package),
and a rule excluded in dashboards/.lint (with the reason, like the linter's `.lint` files) is
skipped. Rules of the linter left out on purpose:

* target-logql-rule, target-logql-auto-rule: Loki queries; these dashboards have none.
* target-required-matchers-rule, template-required-variables-rule: need per-project settings;
  target-job-rule and target-instance-rule cover what we require.
* panel-legend-rule, dashboard refresh/time-interval rules, v2 schema rules: newer, experimental.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import yaml

# Stand-ins for Grafana's interval variables, distinctive so a rule can recognise them.
RATE_INTERVAL = "7777s"
RANGE_INTERVAL = "8888s"
INTERVAL = "9999s"
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
# Grafana's unit ids for the panel kinds these dashboards use (from Grafana's value formats).
VALID_UNITS = frozenset(
    {
        "none", "short", "percent", "percentunit", "bytes", "decbytes", "bits", "Bps", "bps",
        "binBps", "s", "ms", "µs", "ns", "m", "h", "d", "dtdurations", "dtdurationms",
        "ops", "reqps", "rps", "wps", "iops", "cps", "cpm", "opm", "rpm", "hertz", "bool",
        "bool_yes_no", "bool_on_off", "currencyUSD", "currencyEUR", "dateTimeAsIso",
        "dateTimeFromNow", "locale", "sci",
    }
)  # fmt: skip
UNIT_PANELS = frozenset({"stat", "singlestat", "graph", "table", "timeseries", "gauge"})


@dataclass(frozen=True)
class Finding:
    rule: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.where}: {self.message}"


def substitute_variables(expr: str) -> str:
    """A dashboard query as plain PromQL: intervals become distinctive durations, template
    variables their names (they appear inside label matcher strings)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return {"__rate_interval": RATE_INTERVAL, "__range": RANGE_INTERVAL}.get(
            name, INTERVAL if name == "__interval" else f"${name}"
        )

    return _VARIABLE.sub(replace, expr)


def _children(node: Any) -> list[Any]:
    if isinstance(node, promql_parser.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, promql_parser.AggregateExpr):
        return [c for c in (node.expr, node.param) if c is not None]
    if isinstance(node, promql_parser.Call):
        return list(node.args)
    if isinstance(node, promql_parser.MatrixSelector):
        return [node.vector_selector]
    if isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr):
        return [node.expr]
    if isinstance(node, promql_parser.SubqueryExpr):
        return [node.expr]
    return []


def walk(node: Any, parents: tuple[Any, ...] = ()) -> Iterator[tuple[Any, tuple[Any, ...]]]:
    """Every node of a parsed expression with its ancestors (nearest last)."""
    yield node, parents
    for child in _children(node):
        yield from walk(child, (*parents, node))


def _seconds(duration: str) -> float:
    return float(duration.removesuffix("s"))


def _template(dashboard: dict[str, Any], name: str) -> dict[str, Any] | None:
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("name") == name:
            return dict(variable)
    return None


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


# --- dashboard rules -----------------------------------------------------------------------------


def template_datasource(d: dict[str, Any]) -> Iterator[str]:
    variables = [v for v in d["templating"]["list"] if v.get("type") == "datasource"]
    if not variables:
        yield "no templated data source"
    for v in variables:
        if v.get("name") not in ("datasource", f"{v.get('query', '')}_datasource"):
            yield f"data source variable named {v.get('name')!r}, should be 'datasource'"
        if len(variables) == 1 and v.get("label") not in ("Data source",):
            yield f"data source variable labelled {v.get('label')!r}, should be 'Data source'"


def _check_template(d: dict[str, Any], name: str) -> Iterator[str]:
    t = _template(d, name)
    if t is None:
        yield f"is missing the {name} template"
        return
    if (t.get("datasource") or {}).get("uid") not in ("$datasource", "${datasource}"):
        yield f"{name} template should use datasource '$datasource'"
    if t.get("type") != "query":
        yield f"{name} template should be a Prometheus query"
    if t.get("label") != name.title():
        yield f"{name} template should be labelled {name.title()!r}, is {t.get('label')!r}"
    if not t.get("multi"):
        yield f"{name} template should be a multi select"
    if t.get("allValue") != ".+":
        yield f"{name} template allValue should be '.+', is {t.get('allValue')!r}"


def template_job(d: dict[str, Any]) -> Iterator[str]:
    yield from _check_template(d, "job")


def template_instance(d: dict[str, Any]) -> Iterator[str]:
    yield from _check_template(d, "instance")


def template_on_time_change_reload(d: dict[str, Any]) -> Iterator[str]:
    for v in d["templating"]["list"]:
        if v.get("type") == "query" and v.get("refresh") != 2:
            yield f"variable {v['name']} should refresh on time range change (refresh: 2)"


def template_label_promql(d: dict[str, Any]) -> Iterator[str]:
    for v in d["templating"]["list"]:
        if v.get("type") != "query":
            continue
        query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", str(query).strip())
        if match is None:
            yield f"variable {v['name']}: not a label_values() query: {query}"
            continue
        try:
            promql_parser.parse(substitute_variables(match.group(1)))
        except ValueError as exc:
            yield f"variable {v['name']}: invalid PromQL {match.group(1)!r}: {exc}"


def uneditable_dashboard(d: dict[str, Any]) -> Iterator[str]:
    if d.get("editable") is not False:
        yield "dashboard is editable: provisioned changes would be lost, set editable: false"


# --- panel rules ---------------------------------------------------------------------------------


def panel_datasource(d: dict[str, Any], p: dict[str, Any]) -> Iterator[str]:
    if (p.get("datasource") or {}).get("uid") not in ("$datasource", "${datasource}"):
        yield "does not use the templated data source"


def panel_title_description(d: dict[str, Any], p: dict[str, Any]) -> Iterator[str]:
    if not p.get("title") or not p.get("description"):
        yield "has no title or no description"


def panel_units(d: dict[str, Any], p: dict[str, Any]) -> Iterator[str]:
    if p.get("type") not in UNIT_PANELS:
        return
    unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
    if unit not in VALID_UNITS:
        yield f"has no or an invalid unit: {unit!r}"
    for override in p.get("fieldConfig", {}).get("overrides", []):
        for prop in override.get("properties", []):
            if prop.get("id") == "unit" and prop.get("value") not in VALID_UNITS:
                yield f"override has an invalid unit: {prop.get('value')!r}"


def panel_no_targets(d: dict[str, Any], p: dict[str, Any]) -> Iterator[str]:
    if p.get("type") not in ("text", "news", "dashlist") and not p.get("targets"):
        yield "has no targets"


# --- target rules --------------------------------------------------------------------------------


def _selectors(expr: Any) -> Iterator[Any]:
    for node, _ in walk(expr):
        if isinstance(node, promql_parser.VectorSelector):
            yield node


def _has_matcher(selector: Any, name: str, op: Any, value: str) -> bool:
    return any(
        m.name == name and m.op == op and m.value == value for m in selector.matchers.matchers
    )


def target_rate_interval(expr: Any) -> Iterator[str]:
    for node, parents in walk(expr):
        if not isinstance(node, promql_parser.MatrixSelector) or not parents:
            continue
        call = parents[-1]
        if not isinstance(call, promql_parser.Call) or call.func.name not in ("rate", "irate"):
            continue
        if node.range.total_seconds() != _seconds(RATE_INTERVAL):
            yield f"{call.func.name}() should use $__rate_interval"


def target_job(expr: Any) -> Iterator[str]:
    for selector in _selectors(expr):
        if not _has_matcher(selector, "job", promql_parser.MatchOp.Re, "$job"):
            yield f'{selector.prettify()} has no job=~"$job" matcher'


def target_instance(expr: Any) -> Iterator[str]:
    for selector in _selectors(expr):
        if not _has_matcher(selector, "instance", promql_parser.MatchOp.Re, "$instance"):
            yield f'{selector.prettify()} has no instance=~"$instance" matcher'


def target_counter_agg(expr: Any) -> Iterator[str]:
    for node, parents in walk(expr):
        if not isinstance(node, promql_parser.VectorSelector):
            continue
        if not (node.name or "").endswith("_total"):
            continue
        ok = (
            len(parents) >= 2
            and isinstance(parents[-1], promql_parser.MatrixSelector)
            and isinstance(parents[-2], promql_parser.Call)
            and parents[-2].func.name in ("rate", "irate", "increase")
        )
        if not ok:
            yield f"counter {node.name} is not aggregated with rate, irate or increase"


DashboardRule = Callable[[dict[str, Any]], Iterator[str]]
PanelRule = Callable[[dict[str, Any], dict[str, Any]], Iterator[str]]
TargetRule = Callable[[Any], Iterator[str]]

DASHBOARD_RULES: dict[str, DashboardRule] = {
    "template-datasource-rule": template_datasource,
    "template-job-rule": template_job,
    "template-instance-rule": template_instance,
    "template-on-time-change-reload-rule": template_on_time_change_reload,
    "template-label-promql-rule": template_label_promql,
    "uneditable-dashboard": uneditable_dashboard,
}
PANEL_RULES: dict[str, PanelRule] = {
    "panel-datasource-rule": panel_datasource,
    "panel-title-description-rule": panel_title_description,
    "panel-units-rule": panel_units,
    "panel-no-targets-rule": panel_no_targets,
}
TARGET_RULES: dict[str, TargetRule] = {
    "target-rate-interval-rule": target_rate_interval,
    "target-job-rule": target_job,
    "target-instance-rule": target_instance,
    "target-counter-agg-rule": target_counter_agg,
}
ALL_RULES = frozenset(
    {*DASHBOARD_RULES, *PANEL_RULES, *TARGET_RULES, "target-promql-rule", "target-logql-rule"}
)


def load_exclusions(path: Path) -> dict[str, str]:
    """Rule name -> reason, from a `.lint` file (`exclusions: {rule: {reason: ...}}`)."""
    if not path.exists():
        return {}
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {rule: str(body["reason"]) for rule, body in document.get("exclusions", {}).items()}


def lint(dashboard: dict[str, Any], excluded: frozenset[str] = frozenset()) -> list[Finding]:
    """Every finding of the ported rules on one dashboard, except the excluded rules."""
    title = str(dashboard.get("title"))
    findings: list[Finding] = []

    def add(rule: str, where: str, messages: Iterator[str]) -> None:
        if rule not in excluded:
            findings.extend(Finding(rule, where, m) for m in messages)

    for rule, check in DASHBOARD_RULES.items():
        add(rule, title, check(dashboard))
    for panel in _panels(dashboard):
        where = f"{title} / {panel.get('title')}"
        for rule, panel_check in PANEL_RULES.items():
            add(rule, where, panel_check(dashboard, panel))
        for target in panel.get("targets", []):
            target_where = f"{where} / {target.get('refId')}"
            try:
                expr = promql_parser.parse(substitute_variables(str(target["expr"])))
            except ValueError as exc:
                add("target-promql-rule", target_where, iter([f"invalid PromQL: {exc}"]))
                continue
            for rule, target_check in TARGET_RULES.items():
                add(rule, target_where, target_check(expr))
    return findings
