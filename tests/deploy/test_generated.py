"""Generated parts cannot drift: the docs' settings table and the Kubernetes PrometheusRule."""

from __future__ import annotations

import re

from tests.deploy.support import DOCS, generator, github_anchors, load_yaml_all


def test_settings_table_in_the_docs_matches_the_settings_model() -> None:
    generate = generator()
    text = DOCS.read_text(encoding="utf-8")
    assert text == generate.docs_with_table(text), (
        "docs/deploy.md is out of date: run `python deploy/tools/generate.py docs`"
    )


def test_settings_table_lists_every_variable_with_its_default() -> None:
    from connector.config import Settings, env_name, flag_name

    table = generator().settings_table()
    rows = {
        match.group(1): line
        for line in table.splitlines()
        if (match := re.match(r"\| `(CONNECTOR_[A-Z_]+)` \|", line))
    }
    assert set(rows) == {env_name(name) for name in Settings.model_fields}
    assert "| `--http-port` | `9464` | integer >= 0, <= 65535 |" in rows["CONNECTOR_HTTP_PORT"]
    assert "| `immediate` | `immediate` \\| `consumer` |" in rows["CONNECTOR_ACK_MODE"]
    assert flag_name("shutdown_timeout") in rows["CONNECTOR_SHUTDOWN_TIMEOUT"]


def test_prometheusrule_is_generated_from_the_alert_rules() -> None:
    generate = generator()
    assert generate.PROMETHEUSRULE.read_text(encoding="utf-8") == generate.prometheus_rule(), (
        "deploy/k8s/base/prometheusrule.yaml is out of date: "
        "run `python deploy/tools/generate.py prometheusrule`"
    )
    (rule,) = load_yaml_all(generate.PROMETHEUSRULE.read_text(encoding="utf-8"))
    assert rule["kind"] == "PrometheusRule"


def test_generator_check_mode_reports_nothing_stale() -> None:
    assert generator().stale_files() == []


def test_docs_links_point_at_existing_sections() -> None:
    text = DOCS.read_text(encoding="utf-8")
    anchors = github_anchors(text)
    for link in re.findall(r"\]\(#([^)]+)\)", text):
        assert link in anchors, f"docs/deploy.md links to a missing section #{link}"
