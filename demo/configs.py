"""The files the demo stack writes: exporter, Prometheus, Alertmanager and Grafana configs.

Everything listens on loopback. Prometheus loads the project's rendered rules
(``alerts/*.rules.yml``) exactly as shipped; only the scrape and evaluation interval are the
demo's (15 s, Prometheus' own example value, so the demo moves; the rules' ``for:`` is the
shipped one).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import yaml

ROOT: Final = Path(__file__).resolve().parent.parent
RULES_GLOB: Final = "alerts/*.rules.yml"
DASHBOARDS_DIR: Final = ROOT / "dashboards"
GRAFANA_PROVISIONING: Final = DASHBOARDS_DIR / "provisioning"
# The job name the shipped alerts select (CloudAssistantExporterDown).
JOB: Final = "aliyun-cloudassistant-exporter"
SCRAPE_INTERVAL_SECONDS: Final = 15
REGIONS: Final = ("cn-hangzhou",)
ACCOUNT: Final = "demo"
# Alertmanager receivers, by the severity label every shipped alert carries.
RECEIVERS: Final = {"critical": "demo-pager", "warning": "demo-tickets", "info": "demo-info"}

_DURATION = re.compile(r"(\d+)(ms|y|w|d|h|m|s)")
_UNIT_SECONDS: Final = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
    "y": 365 * 86400,
}


def rule_files(root: Path = ROOT) -> list[Path]:
    """The rendered rule files Prometheus loads, sorted."""
    return sorted(root.glob(RULES_GLOB))


def duration_seconds(text: str) -> float:
    """A Prometheus duration (``5m``, ``1h30m``, ``0s``) in seconds; ``ValueError`` if bad."""
    text = text.strip()
    if text == "0":
        return 0.0
    parts = _DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"{text!r} is not a Prometheus duration")
    return float(sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts))


def shortest_for(paths: Iterable[Path]) -> float:
    """The shortest ``for:`` of any alerting rule in ``paths`` (0 when one has none)."""
    durations: list[float] = []
    for path in paths:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for group in document.get("groups", []):
            for rule in group.get("rules", []):
                if "alert" in rule:
                    durations.append(duration_seconds(str(rule.get("for", "0s"))))
    if not durations:
        raise ValueError("no alerting rule in " + ", ".join(str(p) for p in paths))
    return min(durations)


def exporter_config(simulator_url: str, access_key_id: str, access_key_secret: str) -> str:
    """The exporter's config file: one account read from the simulator, as in production."""
    config = {
        "targets": [
            {
                "name": ACCOUNT,
                "region_ids": list(REGIONS),
                "endpoint": simulator_url,
                "credentials": {
                    "source": "static",
                    "access_key_id": access_key_id,
                    "access_key_secret": access_key_secret,
                },
                "command_breakdown": {"enabled": True, "max_command_ids": 10},
            }
        ],
        # Every scrape finds a refresh due; a sweep every 2 minutes.
        "refresh": {"min_interval_seconds": 10, "sweep_interval_seconds": 120},
    }
    return yaml.safe_dump(config, sort_keys=False)


def prometheus_config(exporter: str, alertmanager: str, rules: Sequence[Path]) -> str:
    """``prometheus.yml``: scrape the exporter, load ``rules``, alert to ``alertmanager``."""
    interval = f"{SCRAPE_INTERVAL_SECONDS}s"
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(path) for path in rules],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            {
                "job_name": JOB,
                "scrape_timeout": "10s",  # above the exporter's scrape_max_wait_seconds (9 s)
                "static_configs": [{"targets": [exporter]}],
            }
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def alertmanager_config(webhook_url: str) -> str:
    """``alertmanager.yml``: a route per severity, each to a webhook of the demo stack."""
    routes = [
        {"matchers": [f'severity="{severity}"'], "receiver": receiver}
        for severity, receiver in RECEIVERS.items()
        if severity != "warning"
    ]
    config = {
        "route": {
            "receiver": RECEIVERS["warning"],
            "group_by": ["alertname", "account", "region_id"],
            "group_wait": "10s",
            "group_interval": "1m",
            "repeat_interval": "4h",
            "routes": routes,
        },
        "receivers": [
            {
                "name": receiver,
                "webhook_configs": [{"url": f"{webhook_url}/{receiver}", "send_resolved": True}],
            }
            for receiver in RECEIVERS.values()
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def grafana_provisioning(destination: Path, prometheus_url: str) -> bool:
    """Copy the shipped Grafana provisioning files to ``destination/provisioning``, the data
    source's ``url`` pointing at ``prometheus_url``, and the dashboards (``dashboards/*.json``
    only: Grafana reads every JSON file under the provider's path) to
    ``destination/dashboards``; False when the repository has none."""
    datasources = sorted((GRAFANA_PROVISIONING / "datasources").glob("*.y*ml"))
    providers = sorted((GRAFANA_PROVISIONING / "dashboards").glob("*.y*ml"))
    dashboards = sorted(DASHBOARDS_DIR.glob("*.json"))
    if not datasources or not providers or not dashboards:
        return False
    (destination / "dashboards").mkdir(parents=True, exist_ok=True)
    for path in dashboards:
        shutil.copyfile(path, destination / "dashboards" / path.name)
    destination = destination / "provisioning"
    for kind, paths in (("datasources", datasources), ("dashboards", providers)):
        (destination / kind).mkdir(parents=True, exist_ok=True)
        for path in paths:
            text = path.read_text(encoding="utf-8")
            if kind == "datasources":
                document = yaml.safe_load(text) or {}
                for source in document.get("datasources", []):
                    if source.get("type") == "prometheus":
                        source["url"] = prometheus_url
                        source.setdefault("jsonData", {})["timeInterval"] = (
                            f"{SCRAPE_INTERVAL_SECONDS}s"
                        )
                text = yaml.safe_dump(document, sort_keys=False)
            (destination / kind / path.name).write_text(text, encoding="utf-8")
    return True


def dashboards_mount_point() -> str | None:
    """Where the shipped dashboard provider reads the JSON files (``options.path``)."""
    for path in sorted((GRAFANA_PROVISIONING / "dashboards").glob("*.y*ml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for provider in document.get("providers", []):
            folder = (provider.get("options") or {}).get("path")
            if isinstance(folder, str):
                return folder
    return None
