"""Generate the Grafana dashboards of the exporter as JSON.

    .venv/bin/python -m dashboards.generate            # rewrite dashboards/*.json
    .venv/bin/python -m dashboards.generate --check    # exit 1 if a committed file is out of date

Two dashboards, both importable and provisionable without edits: a `datasource` variable (no
`${DS_...}` inputs), `account` and `region_id` variables from `label_values`, fixed uids, tags,
`$__rate_interval` for every rate, and a description on every panel.

* `cloudassistant-overview.json`: what Cloud Assistant runs are doing (success ratio, statuses,
  error codes, timeouts, durations, running runs, OSS delivery, dropped output, a per-target table).
* `cloudassistant-exporter.json`: the exporter's own health (up, refreshes, API requests and
  throttling, paging, truncation, tracking state, sweep finds, invalid records, rate-limit wait).

The output is committed; tests/test_dashboards.py fails when it is stale, and checks that every
query parses (offline, with promtool) and uses only names of the metric contract.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCHEMA_VERSION = 39
TAGS = ["aliyun", "cloud-assistant", "ecs"]
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
M = "aliyun_cloudassistant_"
SEL = 'account=~"$account", region_id=~"$region_id"'
JOB_SEL = 'job=~"$job"'
FAILURE_STATUSES = "Failed|Error|Timeout|Aborted|Invalid"

# Grafana's grid is 24 columns wide.
GRID_WIDTH = 24


@dataclass(frozen=True)
class Query:
    """One PromQL query of a panel; `instant` queries feed stat, bar gauge and table panels."""

    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False


@dataclass(frozen=True)
class Panel:
    """A panel before layout; `kind` is the Grafana panel type."""

    kind: str
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    width: int = 12
    height: int = 8
    min_zero: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    title: str


def timeseries(
    title: str, description: str, *queries: Query, unit: str = "short", width: int = 12
) -> Panel:
    return Panel("timeseries", title, description, queries, unit=unit, width=width)


def stat(title: str, description: str, query: Query, unit: str = "short") -> Panel:
    instant = Query(query.expr, query.legend, instant=True)
    return Panel("stat", title, description, (instant,), unit=unit, width=6, height=4)


def _target(query: Query, ref_id: str) -> dict[str, Any]:
    target: dict[str, Any] = {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": query.expr,
        "legendFormat": query.legend or "__auto",
        "range": not query.instant,
        "instant": query.instant,
        "refId": ref_id,
    }
    if query.table:
        target["format"] = "table"
    return target


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.min_zero:
        defaults["min"] = 0
    options: dict[str, Any]
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
        }
        options = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif panel.kind == "stat":
        defaults["color"] = {"mode": "thresholds"}
        defaults["thresholds"] = {"mode": "absolute", "steps": [{"color": "green", "value": None}]}
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "none",
            "textMode": "auto",
        }
    elif panel.kind == "bargauge":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "horizontal",
            "displayMode": "basic",
            "showUnfilled": True,
        }
    else:  # table
        options = {"showHeader": True, "cellHeight": "sm"}
    result: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": [_target(q, chr(ord("A") + i)) for i, q in enumerate(panel.queries)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
    }
    result.update(panel.extra)
    return result


def layout(items: list[Panel | Row]) -> list[dict[str, Any]]:
    """Place panels left to right, wrapping at the grid width; a Row starts a new line."""
    panels: list[dict[str, Any]] = []
    x = y = 0
    line_height = 0
    for number, item in enumerate(items, start=1):
        if isinstance(item, Row):
            y += line_height
            x, line_height = 0, 0
            panels.append(
                {
                    "id": number,
                    "type": "row",
                    "title": item.title,
                    "collapsed": False,
                    "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
                    "panels": [],
                }
            )
            y += 1
            continue
        if x + item.width > GRID_WIDTH:
            y += line_height
            x, line_height = 0, 0
        panels.append(_panel_json(item, number, x, y))
        x += item.width
        line_height = max(line_height, item.height)
    return panels


def _datasource_variable() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
    }


def _query_variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {},
        "hide": 0,
        "options": [],
        "regex": "",
        "sort": 1,
    }


def dashboard(
    uid: str,
    title: str,
    description: str,
    variables: list[dict[str, Any]],
    items: list[Panel | Row],
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": TAGS,
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "1m",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {
                "title": "Cloud Assistant dashboards",
                "type": "dashboards",
                "tags": ["cloud-assistant"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "templating": {"list": variables},
        "panels": layout(items),
    }


def _finished(matchers: str = "", window: str = "$__rate_interval", fn: str = "rate") -> str:
    inner = SEL + (", " + matchers if matchers else "")
    return f"{fn}({M}invocation_results_finished_total{{{inner}}}[{window}])"


def overview() -> dict[str, Any]:
    success_range = _finished('invocation_status="Success"', "$__range", "increase")
    finished_range = _finished("", "$__range", "increase")
    failed_range = _finished(f'invocation_status=~"{FAILURE_STATUSES}"', "$__range", "increase")
    per_target = "sum by (account, region_id)"
    success_rate = _finished('invocation_status="Success"')
    failed_rate = _finished(f'invocation_status=~"{FAILURE_STATUSES}"')
    with_code_rate = _finished('error_code!=""')
    with_code_range = _finished('error_code!=""', "$__range", "increase")
    timeouts_rate = _finished('error_code=~"ExecutionTimeout|DeliveryTimeout"')
    items: list[Panel | Row] = [
        Row("Summary"),
        stat(
            "Success ratio",
            "Share of the runs that finished in the selected time range with InvocationStatus "
            "Success, over all selected accounts and regions.",
            Query(f"sum({success_range})\n/\nsum({finished_range})"),
            unit="percentunit",
        ),
        stat(
            "Runs finished",
            "Runs (one per instance, container and repetition) that reached a terminal status "
            "in the selected time range.",
            Query(f"sum({finished_range})"),
        ),
        stat(
            "Running now",
            "Results currently in InvocationStatus Running.",
            Query(f"sum({M}invocation_running{{{SEL}}})"),
        ),
        stat(
            "Oldest running run",
            "How long the oldest run still in Running has been running (0 when none).",
            Query(f"max({M}invocation_running_oldest_age_seconds{{{SEL}}})"),
            unit="s",
        ),
        Row("Finished runs"),
        timeseries(
            "Success ratio by account and region",
            "Share of finished runs that ended in Success, per account and region. Gaps mean "
            "no run finished in that interval.",
            Query(
                f"{per_target} ({success_rate})\n/\n{per_target} ({_finished()})",
                "{{account}} {{region_id}}",
            ),
            unit="percentunit",
        ),
        timeseries(
            "Finished runs by status",
            "Runs per second reaching each terminal InvocationStatus (Success, Failed, Error, "
            "Timeout, Cancelled, Terminated, Aborted, Invalid, Stopped).",
            Query(f"sum by (invocation_status) ({_finished()})", "{{invocation_status}}"),
            unit="ops",
        ),
        timeseries(
            "Finished runs by ErrorCode",
            "Runs per second that finished with a non-empty ErrorCode, by code (for example "
            "ExitCodeNonzero, ExecutionTimeout, ClientNotRunning, InstanceReleased).",
            Query(f"sum by (error_code) ({with_code_rate})", "{{error_code}}"),
            unit="ops",
        ),
        Panel(
            "bargauge",
            "Top failing error codes",
            "The ten ErrorCodes that ended the most runs in the selected time range.",
            (
                Query(
                    f"topk(10, sum by (error_code) ({with_code_range}))",
                    "{{error_code}}",
                    instant=True,
                ),
            ),
            width=12,
        ),
        timeseries(
            "Timeouts",
            "Runs per second that timed out, per account and region: ExecutionTimeout (the "
            "command ran longer than its Timeout) and DeliveryTimeout (it never reached the "
            "agent).",
            Query(
                f"sum by (account, region_id, error_code) ({timeouts_rate})",
                "{{account}} {{region_id}} {{error_code}}",
            ),
            unit="ops",
        ),
        timeseries(
            "Run duration percentiles",
            "50th, 90th and 99th percentile of FinishedTime - StartTime of the runs that "
            "finished, from the duration histogram (bucket resolution).",
            *(
                Query(
                    f"histogram_quantile({q}, sum by (le) "
                    f"(rate({M}invocation_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))",
                    f"p{round(q * 100)}",
                )
                for q in (0.5, 0.9, 0.99)
            ),
            unit="s",
        ),
        timeseries(
            "Failed share by account and region",
            "Share of finished runs that ended as " + FAILURE_STATUSES.replace("|", ", ") + ", "
            "per account and region (what CloudAssistantInvocationFailureRatioHigh watches).",
            Query(
                f"{per_target} ({failed_rate})\n/\n{per_target} ({_finished()})",
                "{{account}} {{region_id}}",
            ),
            unit="percentunit",
        ),
        Row("Runs in view"),
        timeseries(
            "Results by status",
            "Results the exporter currently sees, by InvocationStatus (all 13 statuses).",
            Query(
                f"sum by (invocation_status) ({M}invocation_results{{{SEL}}})",
                "{{invocation_status}}",
            ),
        ),
        timeseries(
            "Running runs",
            "Results in InvocationStatus Running, per account and region.",
            Query(f"{per_target} ({M}invocation_running{{{SEL}}})", "{{account}} {{region_id}}"),
        ),
        timeseries(
            "Oldest running run by account and region",
            "Age of the oldest run still Running, per account and region; a line that keeps "
            "growing is a stuck run.",
            Query(
                f"max by (account, region_id) ({M}invocation_running_oldest_age_seconds{{{SEL}}})",
                "{{account}} {{region_id}}",
            ),
            unit="s",
        ),
        timeseries(
            "Results by ErrorCode",
            "Results the exporter currently sees with a non-empty ErrorCode, by code.",
            Query(
                f"sum by (error_code) ({M}invocation_results_by_error_code{{{SEL}}})",
                "{{error_code}}",
            ),
        ),
        Row("Output"),
        timeseries(
            "OSS deliveries",
            "Deliveries of command output to OSS that finished, per second, by "
            "OssOutputStatus (Finished or Failed).",
            Query(
                f"sum by (oss_output_status) "
                f"(rate({M}oss_output_deliveries_total{{{SEL}}}[$__rate_interval]))",
                "{{oss_output_status}}",
            ),
            unit="ops",
        ),
        timeseries(
            "OSS delivery failures by error code",
            "Failed deliveries to OSS per second, by OssOutputErrorCode (for example "
            "OSS.AccessDenied, OSS.NoSuchBucket).",
            Query(
                "sum by (account, region_id, oss_output_error_code) "
                f'(rate({M}oss_output_deliveries_total{{{SEL}, oss_output_status="Failed"}}'
                "[$__rate_interval]))",
                "{{account}} {{region_id}} {{oss_output_error_code}}",
            ),
            unit="ops",
        ),
        timeseries(
            "OSS output results in view",
            "Results the exporter currently sees, by OssOutputStatus (InProgress, Finished, "
            "Failed).",
            Query(
                f"sum by (oss_output_status) ({M}oss_output_results{{{SEL}}})",
                "{{oss_output_status}}",
            ),
        ),
        timeseries(
            "Dropped output",
            "Bytes of command output cut by the API (the Dropped field, beyond 24 KB) per "
            "second, per account and region.",
            Query(
                f"{per_target} (rate({M}output_dropped_bytes_total{{{SEL}}}[$__rate_interval]))",
                "{{account}} {{region_id}}",
            ),
            unit="Bps",
        ),
        timeseries(
            "Results with dropped output",
            "Results the exporter currently sees whose Output was cut (Dropped > 0).",
            Query(
                f"{per_target} ({M}invocation_results_with_dropped_output{{{SEL}}})",
                "{{account}} {{region_id}}",
            ),
            width=24,
        ),
        Row("Per account and region"),
        Panel(
            "table",
            "Accounts and regions",
            "One line per account and region: the exporter's last refresh (1 = OK), runs "
            "finished and failed in the selected time range, the success ratio, runs Running now "
            "and the age of the oldest one.",
            (
                Query(f"max by (account, region_id) ({M}up{{{SEL}}})", instant=True, table=True),
                Query(f"{per_target} ({finished_range})", instant=True, table=True),
                Query(f"{per_target} ({failed_range})", instant=True, table=True),
                Query(
                    f"{per_target} ({success_range})\n/\n{per_target} ({finished_range})",
                    instant=True,
                    table=True,
                ),
                Query(f"{per_target} ({M}invocation_running{{{SEL}}})", instant=True, table=True),
                Query(
                    "max by (account, region_id) "
                    f"({M}invocation_running_oldest_age_seconds{{{SEL}}})",
                    instant=True,
                    table=True,
                ),
            ),
            width=24,
            height=9,
            extra={
                "transformations": [
                    {"id": "merge", "options": {}},
                    {
                        "id": "organize",
                        "options": {
                            "excludeByName": {"Time": True},
                            "renameByName": {
                                "account": "Account",
                                "region_id": "Region",
                                "Value #A": "Refresh OK",
                                "Value #B": "Finished",
                                "Value #C": "Failed",
                                "Value #D": "Success ratio",
                                "Value #E": "Running",
                                "Value #F": "Oldest running (s)",
                            },
                        },
                    },
                ]
            },
        ),
    ]
    variables = [
        _datasource_variable(),
        _query_variable("account", "Account", f"label_values({M}up, account)"),
        _query_variable(
            "region_id", "Region", f'label_values({M}up{{account=~"$account"}}, region_id)'
        ),
    ]
    return dashboard(
        "cloudassistant-overview",
        "Alibaba Cloud Assistant / Overview",
        "What ECS Cloud Assistant command runs are doing, per account and region.",
        variables,
        items,
    )


def _rate(metric: str, matchers: str = "") -> str:
    inner = SEL + (", " + matchers if matchers else "")
    return f"rate({M}{metric}{{{inner}}}[$__rate_interval])"


def exporter() -> dict[str, Any]:
    per_target = "sum by (account, region_id)"
    by_target = "{{account}} {{region_id}}"
    throttled_rate = _rate("api_requests_total", 'code=~"(?i)throttling.*|http_429"')
    items: list[Panel | Row] = [
        Row("Scrapes and refreshes"),
        timeseries(
            "Exporter scrape up",
            "Prometheus' own up series for the exporter's scrape job: 0 means Prometheus could "
            "not scrape the exporter at all.",
            Query(f"up{{{JOB_SEL}}}", "{{instance}}"),
        ),
        timeseries(
            "Target refresh up",
            "aliyun_cloudassistant_up per account and region: 1 if the exporter's last refresh "
            "of that target succeeded.",
            Query(f"max by (account, region_id) ({M}up{{{SEL}}})", by_target),
        ),
        timeseries(
            "Refresh duration",
            "How long the last refresh of each target took, API calls and retries included.",
            Query(f"max by (account, region_id) ({M}refresh_duration_seconds{{{SEL}}})", by_target),
            unit="s",
        ),
        timeseries(
            "Time since last successful refresh",
            "Seconds since each target was last refreshed successfully; a line that keeps "
            "growing means the target's data is stale.",
            Query(
                f"time() - max by (account, region_id) "
                f"({M}last_refresh_success_timestamp_seconds{{{SEL}}})",
                by_target,
            ),
            unit="s",
        ),
        timeseries(
            "Refreshes",
            "Refreshes attempted per second, per account and region.",
            Query(f"{per_target} ({_rate('refreshes_total')})", by_target),
            unit="ops",
        ),
        timeseries(
            "Refresh failures by reason",
            "Failed refreshes per second by reason: throttled, server, auth, permission, "
            "invalid_request, malformed, transport, credentials.",
            Query(
                f"sum by (account, region_id, reason) ({_rate('refresh_failures_total')})",
                "{{account}} {{region_id}} {{reason}}",
            ),
            unit="ops",
        ),
        Row("ECS API"),
        timeseries(
            "API requests by code",
            "HTTP tries to the ECS API per second, by outcome: empty for success, else the API "
            "error Code or http_<status>, timeout, transport, malformed.",
            Query(f"sum by (code) ({_rate('api_requests_total')})", "{{code}}"),
            unit="reqps",
        ),
        timeseries(
            "API throttling ratio",
            "Share of API tries answered with a Throttling code or HTTP 429, per account and "
            "region (what CloudAssistantApiThrottling watches).",
            Query(
                f"{per_target} ({throttled_rate})\n/\n{per_target} ({_rate('api_requests_total')})",
                by_target,
            ),
            unit="percentunit",
        ),
        timeseries(
            "API request duration percentiles",
            "50th, 90th and 99th percentile of the duration of one HTTP try to the ECS API.",
            *(
                Query(
                    f"histogram_quantile({q}, sum by (le) "
                    f"({_rate('api_request_duration_seconds_bucket')}))",
                    f"p{round(q * 100)}",
                )
                for q in (0.5, 0.9, 0.99)
            ),
            unit="s",
        ),
        timeseries(
            "Rate-limit wait",
            "Seconds per second spent waiting on the exporter's own token bucket per account "
            "and region (1 = requests were waiting all the time).",
            Query(f"{per_target} ({_rate('api_rate_limit_wait_seconds_total')})", by_target),
            unit="s",
        ),
        Row("Paging and tracking"),
        timeseries(
            "Pages per refresh",
            "API pages the last refresh of each target fetched.",
            Query(f"max by (account, region_id) ({M}refresh_pages{{{SEL}}})", by_target),
        ),
        timeseries(
            "Results truncated",
            "1 when the last sweep or cold walk of a target stopped at the page cap, so older "
            "results are missing.",
            Query(f"max by (account, region_id) ({M}results_truncated{{{SEL}}})", by_target),
        ),
        timeseries(
            "Tracking state size",
            "Runs the exporter keeps in its local mirror per target (bounded).",
            Query(f"{per_target} ({M}tracked_runs{{{SEL}}})", by_target),
        ),
        timeseries(
            "Runs found by the sweep",
            "Runs per second that the fast path missed and the periodic full sweep found; "
            "steadily above zero means the fast path is too narrow.",
            Query(f"{per_target} ({_rate('results_found_by_sweep_total')})", by_target),
            unit="ops",
        ),
        timeseries(
            "Invalid records",
            "Records per second that the exporter skipped because it could not parse them.",
            Query(f"{per_target} ({_rate('invalid_records_total')})", by_target),
            unit="ops",
        ),
        timeseries(
            "Exporter version",
            "The exporter's build: version and Python version of each running instance.",
            Query(
                f"max by (instance, version, python_version) ({M}exporter_build_info{{{JOB_SEL}}})",
                "{{instance}} {{version}} (Python {{python_version}})",
            ),
        ),
    ]
    variables = [
        _datasource_variable(),
        _query_variable("job", "Job", f"label_values({M}exporter_build_info, job)"),
        _query_variable("account", "Account", f"label_values({M}up{{{JOB_SEL}}}, account)"),
        _query_variable(
            "region_id",
            "Region",
            f'label_values({M}up{{{JOB_SEL}, account=~"$account"}}, region_id)',
        ),
    ]
    return dashboard(
        "cloudassistant-exporter",
        "Alibaba Cloud Assistant / Exporter",
        "Health of aliyun-cloudassistant-exporter: refreshes, ECS API calls, paging, tracking.",
        variables,
        items,
    )


DASHBOARDS = {
    "cloudassistant-overview.json": overview,
    "cloudassistant-exporter.json": exporter,
}


def render(dashboard_json: dict[str, Any]) -> str:
    return json.dumps(dashboard_json, indent=2, sort_keys=False) + "\n"


def rendered() -> dict[Path, str]:
    """Every dashboard file and the text it should have."""
    return {HERE / name: render(build()) for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the Grafana dashboards.")
    parser.add_argument("--check", action="store_true", help="fail if a committed file is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in rendered().items():
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path)
        else:
            path.write_text(text, encoding="utf-8")
    for path in stale:
        print(f"{path} is out of date: run `python -m dashboards.generate`", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
