"""The alerting rules: generated file current, promtool-clean, unit-tested, documented and
restart-safe."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from alerts.generate import ALERT_PREFIX, THRESHOLDS, Alert, alerts, render_rules, runbook_anchor
from tests.monitoring_queries import ROOT, RULES_FILE, load_rules

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (make system-deps installs it)"
)
UNIT_TEST_FILES = sorted((ROOT / "alerts" / "tests").glob("*.yml"))
RUNBOOKS = ROOT / "docs" / "runbooks.md"
ALERTS_README = ROOT / "alerts" / "README.md"
SEVERITIES = ("critical", "warning", "info")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )


def test_committed_rules_file_is_generated_from_thresholds() -> None:
    assert RULES_FILE.read_text(encoding="utf-8") == render_rules(THRESHOLDS), (
        "alerts/cloudassistant.rules.yml is out of date: run `.venv/bin/python -m alerts.generate`"
    )


@needs_promtool
def test_promtool_check_rules_passes_with_lint() -> None:
    result = _promtool("check", "rules", "--lint=all", "--lint-fatal", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
@pytest.mark.parametrize("test_file", UNIT_TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(test_file: Path) -> None:
    result = _promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_unit_tests_fail_on_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests are not vacuous: flipping one expected severity makes promtool fail."""
    original = UNIT_TEST_FILES[0]
    # The same layout as the repository: `rule_files` are relative to the test file.
    (tmp_path / "tests").mkdir()
    (tmp_path / RULES_FILE.name).write_text(RULES_FILE.read_text(encoding="utf-8"))
    broken = tmp_path / "tests" / original.name
    broken.write_text(
        original.read_text(encoding="utf-8").replace("severity: critical", "severity: info", 1),
        encoding="utf-8",
    )
    result = _promtool("test", "rules", str(broken))
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def _unit_test_evaluations() -> list[dict[str, Any]]:
    evaluations: list[dict[str, Any]] = []
    for path in UNIT_TEST_FILES:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        for test in document["tests"]:
            evaluations.extend(test.get("alert_rule_test", []))
    return evaluations


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a.alertname)
def test_every_alert_is_unit_tested_firing_and_silent(alert: Alert) -> None:
    evaluations = [e for e in _unit_test_evaluations() if e["alertname"] == alert.alertname]
    assert any(e["exp_alerts"] for e in evaluations), f"no unit test where {alert.alertname} fires"
    assert any(not e["exp_alerts"] for e in evaluations), (
        f"no unit test where {alert.alertname} stays silent"
    )


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a.alertname)
def test_alert_follows_the_conventions(alert: Alert) -> None:
    assert re.fullmatch(ALERT_PREFIX + r"(?:[A-Z][a-z0-9]*)+", alert.alertname)
    assert alert.severity in SEVERITIES
    assert alert.for_, "every alert waits for a `for:` duration"
    assert "$value" in alert.description
    if alert.name != "ExporterDown":  # the one alert about the scrape, not about a target
        for label in ("account", "region_id"):
            assert "{{ $labels." + label + " }}" in alert.description


def test_rules_file_carries_labels_and_annotations() -> None:
    for rule in load_rules():
        if "alert" not in rule:
            continue
        assert set(rule["labels"]) == {"severity"}
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
        assert rule["annotations"]["runbook_url"] == (
            f"{THRESHOLDS.runbook_base_url}#{runbook_anchor(rule['alert'])}"
        )


def test_every_alert_has_a_runbook_section() -> None:
    headings = set(re.findall(r"^## (\S+)\s*$", RUNBOOKS.read_text(encoding="utf-8"), re.M))
    missing = [a.alertname for a in alerts() if a.alertname not in headings]
    assert not missing, f"docs/runbooks.md has no `## <name>` section for {missing}"


def _readme_value(value: object) -> str:
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def test_readme_lists_every_threshold_with_its_value() -> None:
    readme = ALERTS_README.read_text(encoding="utf-8")
    for field in fields(THRESHOLDS):
        value = _readme_value(getattr(THRESHOLDS, field.name))
        row = f"| `{field.name}` | `{value}` |"
        assert row in readme, f"alerts/README.md lacks the row {row!r}"


def test_alerts_read_only_recording_rules_that_exist() -> None:
    rules = load_rules()
    recorded = {rule["record"] for rule in rules if "record" in rule}
    for rule in rules:
        for name in re.findall(r"\b\w+:\w+:\w+\b", rule["expr"]):
            assert name in recorded, f"{rule.get('alert') or rule.get('record')} reads {name}"


def test_counters_are_only_read_through_restart_safe_functions() -> None:
    """A raw counter value jumps to 0 when the exporter restarts; increase(), rate() and
    changes() - resets() do not, so a restart can never fire an alert."""
    for rule in load_rules():
        expr = rule["expr"]
        counters = re.findall(r"\baliyun_cloudassistant_\w+_total\b", expr)
        wrapped = re.findall(
            r"\b(?:increase|rate|changes|resets)\(\s*aliyun_cloudassistant_\w+_total\b", expr
        )
        assert len(counters) == len(wrapped), f"raw counter in {rule.get('alert')}: {expr}"
