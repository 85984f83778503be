"""deploy/prometheus: scrape config and alert rules, checked and unit-tested with promtool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.deploy.support import (
    DEPLOY,
    DOCS,
    ROOT,
    exposed_metric_names,
    github_anchors,
    load_yaml,
    metric_names_in,
    run,
    tool,
)

PROMETHEUS = DEPLOY / "prometheus"
ALERTS = PROMETHEUS / "alerts.yaml"
ALERT_TESTS = PROMETHEUS / "alerts.test.yaml"


def promtool() -> str:
    return tool("promtool", "CI installs it: apt-get install prometheus")


def rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def test_promtool_checks_the_scrape_config_and_its_rule_files() -> None:
    result = run([promtool(), "check", "config", str(PROMETHEUS / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout + result.stderr


def test_promtool_checks_the_rules() -> None:
    result = run([promtool(), "check", "rules", str(ALERTS)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = run([promtool(), "test", "rules", str(ALERT_TESTS)], cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """Control: a wrong expectation (severity) makes `promtool test rules` fail."""
    (tmp_path / "alerts.yaml").write_text(ALERTS.read_text())
    text = ALERT_TESTS.read_text()
    wrong = text.replace("severity: critical", "severity: page", 1)
    assert wrong != text
    (tmp_path / "alerts.test.yaml").write_text(wrong)
    result = run([promtool(), "test", "rules", "alerts.test.yaml"], cwd=tmp_path)
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(ALERT_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in rules()}
    assert names - firing == set(), "alerts never seen firing in alerts.test.yaml"
    assert names - quiet == set(), "alerts never checked to stay quiet in alerts.test.yaml"
    assert firing | quiet <= names, "tests for alerts that do not exist"


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_alert_has_severity_annotations_and_a_runbook_section(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in ("critical", "warning")
    annotations = rule["annotations"]
    assert annotations["summary"]
    assert annotations["description"]
    anchor = rule["alert"].lower()
    assert annotations["runbook_url"] == f"docs/deploy.md#{anchor}"
    assert (ROOT / annotations["runbook_url"].split("#")[0]) == DOCS
    assert anchor in github_anchors(DOCS.read_text(encoding="utf-8")), f"no section {anchor}"


def test_alerts_use_only_metrics_the_connector_exposes() -> None:
    exposed = exposed_metric_names()
    for rule in rules():
        unknown = metric_names_in(rule["expr"]) - exposed
        assert not unknown, f"{rule['alert']}: {sorted(unknown)} not exposed"


def test_alerts_cover_what_operators_need() -> None:
    used = set().union(*(metric_names_in(rule["expr"]) for rule in rules()))
    for metric in (
        "connector_connected", "connector_redis_up", "connector_missed_pongs_total",
        "connector_reconnects_total", "connector_ack_latency_seconds_bucket",
        "connector_consumer_confirm_seconds_bucket", "connector_unconfirmed_events",
        "connector_consumer_lag", "connector_publish_errors_total",
        "connector_dropped_events_total", "connector_invalid_messages_total",
        "connector_events_total",
    ):  # fmt: skip
        assert metric in used, f"no alert on {metric}"
    assert any(rule["expr"].startswith("up{") for rule in rules())
