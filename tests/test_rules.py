"""The alerting rules rendered from the mixin: current, promtool-clean, unit-tested, documented,
replica-safe and restart-safe."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.ecs.errors import FAILURE_REASONS
from mixin.render import (
    RenderError,
    alert_rules,
    evaluate,
    render_rules,
    runbook_anchor,
    stale_files,
)
from tests.monitoring_queries import ROOT, RULES_FILE, load_rules

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (make system-deps installs it)"
)
UNIT_TEST_FILES = sorted((ROOT / "alerts" / "tests").glob("*.yml"))
RUNBOOKS = ROOT / "docs" / "runbooks.md"
CONFIG_DOC = ROOT / "docs" / "alerts-and-dashboards.md"
SEVERITIES = ("critical", "warning", "info")
EVALUATED = evaluate()
CONFIG: dict[str, Any] = EVALUATED["config"]
ALERTS = alert_rules(EVALUATED)
# Alerts about one exporter process (its reloads, its state directory, its host clock): every
# replica reports its own, so a second replica with the same trouble is a second alert.
PER_PROCESS = {
    "CloudAssistantExporterConfigReloadFailed",
    "CloudAssistantExporterStateReset",
    "CloudAssistantHostClockSkewed",
}
# Alerts about a scrape job, an exporter process or the whole fleet, not one account and region.
NOT_PER_TARGET = {
    "CloudAssistantExporterAbsent",
    "CloudAssistantExporterDown",
    "CloudAssistantExporterShardMissing",
    "CloudAssistantFleetInvocationsFailing",
    *PER_PROCESS,
}
# The second replica of each exporter process: its instance and pod are the first one's with
# this prefix, so the replicas of several processes (the shards of one job) stay apart.
REPLICA_2 = "replica-2-"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )


def _alertname(alert: dict[str, Any]) -> str:
    return str(alert["alert"])


def test_every_rendered_file_is_current() -> None:
    stale = [str(p.relative_to(ROOT)) for p in stale_files()]
    assert not stale, f"out of date (run `.venv/bin/python -m mixin.render`): {stale}"


def test_committed_rules_file_is_the_rendered_mixin() -> None:
    assert RULES_FILE.read_text(encoding="utf-8") == render_rules()


def test_config_overrides_reach_every_rule() -> None:
    """The e2e test and users override _config; the override must change the rules."""
    text = render_rules({"exporterSelector": 'job="other"', "finishedWindow": "20m"})
    assert 'job="aliyun-cloudassistant-exporter"' not in text
    assert "increase20m" in text
    assert "increase15m" not in text


def test_a_jsonnet_error_is_one_clear_message() -> None:
    with pytest.raises(RenderError, match="jsonnet"):
        evaluate({"failureStatuses": 42})


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
        original.read_text(encoding="utf-8").replace("severity: warning", "severity: info", 1),
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


@pytest.mark.parametrize("alert", ALERTS, ids=_alertname)
def test_every_alert_is_unit_tested_firing_and_silent(alert: dict[str, Any]) -> None:
    name = alert["alert"]
    evaluations = [e for e in _unit_test_evaluations() if e["alertname"] == name]
    assert any(e["exp_alerts"] for e in evaluations), f"no unit test where {name} fires"
    assert any(not e["exp_alerts"] for e in evaluations), f"no unit test where {name} is silent"


@pytest.mark.parametrize("alert", ALERTS, ids=_alertname)
def test_every_alert_has_its_summary_and_description_rendered_by_a_unit_test(
    alert: dict[str, Any],
) -> None:
    """promtool renders the templates of an expected alert and compares the text: a template
    error, or a label the alert does not carry (`<no value>`), fails there."""
    name = alert["alert"]
    pinned = [
        expected["exp_annotations"]
        for evaluation in _unit_test_evaluations()
        if evaluation["alertname"] == name
        for expected in evaluation["exp_alerts"]
        if "exp_annotations" in expected
    ]
    assert any({"summary", "description"} <= set(notes) for notes in pinned), name
    for notes in pinned:
        assert not any("<no value>" in str(text) for text in notes.values()), (name, notes)


@pytest.mark.parametrize("alert", ALERTS, ids=_alertname)
def test_alert_follows_the_conventions(alert: dict[str, Any]) -> None:
    name = alert["alert"]
    assert re.fullmatch(r"CloudAssistant(?:[A-Z][a-z0-9]*)+", name)
    assert alert["labels"] == {"severity": alert["labels"]["severity"]}
    assert alert["labels"]["severity"] in SEVERITIES
    assert alert["for"], "every alert waits for a `for:` duration"
    notes = alert["annotations"]
    assert set(notes) == {"summary", "description", "runbook_url", "dashboard_url"}
    assert "$value" in notes["description"]
    assert notes["runbook_url"] == f"{CONFIG['runbookUrlBase']}#{runbook_anchor(name)}"
    assert notes["dashboard_url"].startswith(CONFIG["dashboardUrlBase"] + "/cloudassistant-")
    if name not in NOT_PER_TARGET:
        for label in ("account", "region_id"):
            assert "{{ $labels." + label + " }}" in notes["description"]


def test_fleet_wide_failure_is_the_critical_tier() -> None:
    """Severity follows what operators care about: fleet-wide command failure pages; the
    exporter's own troubles are warnings (kube-prometheus keeps TargetDown at warning)."""
    critical = {a["alert"] for a in ALERTS if a["labels"]["severity"] == "critical"}
    assert critical == {"CloudAssistantFleetInvocationsFailing"}


def test_low_threshold_alerts_have_hysteresis() -> None:
    keep = {a["alert"] for a in ALERTS if a.get("keep_firing_for") == CONFIG["keepFiringFor"]}
    for name in ("AgentUnavailable", "SecurityGroupDenied", "OssOutputDeliveryFailing"):
        assert "CloudAssistant" + name in keep


def test_every_aggregation_keeps_cluster_namespace_and_job() -> None:
    """A central ruler (Thanos, Mimir) must not merge clusters, and inhibit rules must be able
    to match a run-based alert to CloudAssistantExporterDown."""
    for rule in load_rules():
        for clause in re.findall(r"\b(?:sum|max|min) by \(([^)]*)\)", rule["expr"]):
            labels = {label.strip() for label in clause.split(",")}
            assert set(CONFIG["keepLabels"]) <= labels, (
                rule.get("alert") or rule["record"],
                clause,
            )


def test_counts_take_the_max_over_replicas_before_summing() -> None:
    """Two replicas of an HA pair see the same runs: a sum over them doubles every count."""
    without = f"max without ({', '.join(CONFIG['replicaLabels'])})"
    for rule in load_rules():
        expr = rule["expr"]
        for match in re.finditer(r"\bsum by \([^)]*\) \(\n?\s*", expr):
            inner = expr[match.end() :]
            # A ratio of request rates is not a count: replicas make distinct API calls.
            if inner.startswith("rate(aliyun_cloudassistant_api_requests_total"):
                continue
            assert inner.startswith(without) or re.match(r"\w+:\w+:\w+", inner), (
                rule.get("alert") or rule["record"],
                expr,
            )


def test_every_alert_has_a_runbook_section() -> None:
    headings = set(re.findall(r"^## (\S+)\s*$", RUNBOOKS.read_text(encoding="utf-8"), re.M))
    missing = [a["alert"] for a in ALERTS if a["alert"] not in headings]
    assert not missing, f"docs/runbooks.md has no `## <name>` section for {missing}"


def test_docs_list_every_config_key_with_its_value() -> None:
    text = CONFIG_DOC.read_text(encoding="utf-8")
    for key in CONFIG:
        assert f"| `{key}` |" in text, f"{CONFIG_DOC.name} lacks the _config key {key}"


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
        # The raw reads allowed: a value above 0 of a series younger than the window (a new
        # pod's first sample) or of a process younger than the window (its start time). A
        # restart under the same labels is removed by `unless ... offset`, a process that
        # started long ago by its start time, and a new series starting at 0 by `> 0`, so a
        # restart alone cannot fire them.
        young = re.findall(
            r"\b(aliyun_cloudassistant_\w+_total)(\{[^}]*\})? > 0\s+unless\s+\1\2 offset \w+",
            expr,
        )
        young_process = re.findall(
            r"\baliyun_cloudassistant_\w+_total(?:\{[^}]*\})? > 0\s+and on \([^)]*\)\s+"
            r"time\(\) - process_start_time_seconds(?:\{[^}]*\})? < \d+",
            expr,
        )
        assert len(counters) == len(wrapped) + 2 * len(young) + len(young_process), (
            f"raw counter in {rule.get('alert')}: {expr}"
        )


# --- an HA Prometheus pair ---------------------------------------------------------------------

HA_MARKER = "<!-- ha-prometheus: tests/test_rules.py checks this with promtool check config -->"


def _ha_prometheus_config() -> str:
    text = CONFIG_DOC.read_text(encoding="utf-8")
    assert HA_MARKER in text, f"{CONFIG_DOC.name} lacks the HA Prometheus example"
    block = re.search(r"```yaml\n(.*?)```", text[text.index(HA_MARKER) :], re.S)
    assert block is not None
    return block.group(1)


def _relabelled(labels: dict[str, str], configs: list[dict[str, Any]]) -> dict[str, str]:
    """`labeldrop`/`labelkeep` of alert_relabel_configs, the actions the example uses."""
    for config in configs:
        pattern = re.compile(config["regex"])
        keep = config["action"] == "labelkeep"
        assert config["action"] in ("labeldrop", "labelkeep"), config
        labels = {k: v for k, v in labels.items() if bool(pattern.fullmatch(k)) == keep}
    return labels


def test_an_ha_prometheus_pair_sends_alertmanager_identical_alerts() -> None:
    """Alertmanager deduplicates identical label sets only, and each server adds its
    external_labels to the alerts it sends: the documented pair must drop its replica label
    from alerts and keep the others (cluster groups and inhibits)."""
    config = yaml.safe_load(_ha_prometheus_config())
    external = config["global"]["external_labels"]
    relabel = config["alerting"].get("alert_relabel_configs", [])
    alert = {"alertname": "CloudAssistantExporterDown", "job": "aliyun-cloudassistant-exporter"}
    first = _relabelled({**alert, **external}, relabel)
    second = _relabelled({**alert, **external, "replica": "b"}, relabel)
    assert external["replica"] != "b"
    assert first == second, "the two servers' alerts differ: Alertmanager notifies twice"
    assert first["cluster"] == external["cluster"]
    assert config["rule_files"] == [RULES_FILE.name]


@needs_promtool
def test_the_ha_prometheus_example_is_a_valid_config(tmp_path: Path) -> None:
    (tmp_path / RULES_FILE.name).write_text(RULES_FILE.read_text(encoding="utf-8"))
    prometheus_yml = tmp_path / "prometheus.yml"
    prometheus_yml.write_text(_ha_prometheus_config(), encoding="utf-8")
    result = _promtool("check", "config", str(prometheus_yml))
    assert result.returncode == 0, result.stdout + result.stderr


# --- the example Alertmanager configuration ------------------------------------------------------

ALERTMANAGER_EXAMPLE = ROOT / "alerts" / "alertmanager.example.yml"
AMTOOL = shutil.which("amtool")


@pytest.mark.skipif(AMTOOL is None, reason="amtool is not installed (make system-deps)")
def test_example_alertmanager_config_is_valid() -> None:
    assert AMTOOL is not None
    result = subprocess.run(
        [AMTOOL, "check-config", str(ALERTMANAGER_EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _alertname_matchers(matchers: list[str]) -> list[re.Pattern[str]]:
    patterns = []
    for matcher in matchers:
        match = re.fullmatch(r'alertname(=~|=)"(.*)"', matcher)
        if match:
            patterns.append(
                re.compile(match.group(2) if match.group(1) == "=~" else re.escape(match.group(2)))
            )
    return patterns


def test_example_inhibit_rules_name_real_alerts_and_kept_labels() -> None:
    """Each inhibit rule matches alerts the mixin has, on labels those alerts keep."""
    config = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text(encoding="utf-8"))
    names = [a["alert"] for a in ALERTS]
    kept = {*CONFIG["keepLabels"], "account", "region_id"}
    assert config["inhibit_rules"]
    for rule in config["inhibit_rules"]:
        for side in ("source_matchers", "target_matchers"):
            for pattern in _alertname_matchers(rule[side]):
                assert any(pattern.fullmatch(n) for n in names), (side, pattern.pattern)
        assert set(rule["equal"]) <= kept, rule["equal"]
    critical = {a["alert"] for a in ALERTS if a["labels"]["severity"] == "critical"}
    exporter_rule = config["inhibit_rules"][0]
    assert 'severity!="critical"' in exporter_rule["target_matchers"], "never inhibit the page"
    assert critical


def _inhibited_by(rule: dict[str, Any], names: list[str]) -> tuple[set[str], set[str]]:
    """The alerts of the mixin an inhibit rule's source and target alertname matchers select."""
    sources = {
        n for p in _alertname_matchers(rule["source_matchers"]) for n in names if p.fullmatch(n)
    }
    targets = set(names)
    for pattern in _alertname_matchers(rule["target_matchers"]):
        targets &= {n for n in names if pattern.fullmatch(n)}
    for matcher in rule["target_matchers"]:
        negative = re.fullmatch(r'alertname!(~|=)"(.*)"', matcher)
        if negative:
            excluded = (
                negative.group(2) if negative.group(1) == "~" else re.escape(negative.group(2))
            )
            targets -= {n for n in names if re.fullmatch(excluded, n)}
    return sources, targets


def test_one_down_replica_or_shard_never_mutes_the_alerts_of_the_others() -> None:
    """CloudAssistantExporterDown is about one scrape target (it keeps `instance`); per-target
    alerts carry no `instance`, so an inhibit rule cannot tell the down shard's targets from
    those the other shards, or the other replica of an HA pair, still monitor. A down exporter
    may only mute alerts about a job or a process."""
    config = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text(encoding="utf-8"))
    names = [a["alert"] for a in ALERTS]
    for rule in config["inhibit_rules"]:
        sources, targets = _inhibited_by(rule, names)
        if "CloudAssistantExporterDown" in sources:
            assert targets <= NOT_PER_TARGET, (rule, sorted(targets - NOT_PER_TARGET))


def test_every_refresh_failure_reason_has_exactly_one_alert() -> None:
    """The reasons come from the error classes; a new reason must reach an alert (and a
    runbook), and the four refresh-failure alerts stay disjoint."""
    owners: dict[str, list[str]] = {reason: [] for reason in FAILURE_REASONS}
    for alert in ALERTS:
        match = re.search(r'refresh_failures_total\{[^}]*reason=~"([^"]+)"', alert["expr"])
        if match is None:
            continue
        for reason in match.group(1).split("|"):
            assert reason in owners, f"{alert['alert']} reads unknown reason {reason}"
            owners[reason].append(alert["alert"])
    assert {r: o for r, o in owners.items() if len(o) != 1} == {}


def _on_replica_2(alert: dict[str, Any]) -> dict[str, Any]:
    """The same expected alert, raised by the second replica's own process."""
    labels = dict(alert["exp_labels"])
    instance = labels["instance"]
    labels.update(instance=REPLICA_2 + instance, pod=REPLICA_2 + labels.get("pod", ""))
    annotations = {
        key: value.replace(instance, REPLICA_2 + instance)
        for key, value in alert.get("exp_annotations", {}).items()
    }
    return {"exp_labels": labels, "exp_annotations": annotations}


@needs_promtool
@pytest.mark.parametrize("test_file", UNIT_TEST_FILES, ids=lambda p: p.name)
def test_unit_tests_keep_their_outcome_with_every_series_seen_by_two_replicas(
    test_file: Path, tmp_path: Path
) -> None:
    """The HA probe, replayed over every unit test: each exporter series also reported by a
    second replica (another instance and pod) changes no alert and no recorded value, except
    that an alert about one process (PER_PROCESS) is raised by the second replica too."""
    document = yaml.safe_load(test_file.read_text(encoding="utf-8"))
    for test in document["tests"]:
        doubled = []
        for series in test["input_series"]:
            doubled.append(series)
            # The exporter's own series and its process's (a replica is a whole process).
            if series["series"].startswith(("aliyun_cloudassistant_", "process_")):
                instance = re.search(r'instance="([^"]*)"', series["series"])
                pod = re.search(r'pod="([^"]*)"', series["series"])
                labels = (
                    f'instance="{REPLICA_2}{instance.group(1) if instance else ""}", '
                    f'pod="{REPLICA_2}{pod.group(1) if pod else ""}", '
                )
                twin = re.sub(r'\b(?:instance|pod)="[^"]*",?\s*', "", series["series"])
                twin = re.sub(r",\s*}", "}", twin).replace("{", "{" + labels, 1)
                doubled.append({**series, "series": twin})
        test["input_series"] = doubled
        for evaluation in test.get("alert_rule_test", []):
            if evaluation["alertname"] in PER_PROCESS:
                evaluation["exp_alerts"] = [
                    twin
                    for alert in evaluation["exp_alerts"]
                    for twin in (alert, _on_replica_2(alert))
                ]
    (tmp_path / "tests").mkdir()
    (tmp_path / RULES_FILE.name).write_text(RULES_FILE.read_text(encoding="utf-8"))
    replayed = tmp_path / "tests" / test_file.name
    replayed.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    result = _promtool("test", "rules", str(replayed))
    assert result.returncode == 0, result.stdout + result.stderr
