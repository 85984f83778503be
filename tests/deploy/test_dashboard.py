"""deploy/grafana/connector.json: structure, data source variable, queries and coverage.

test_dashboard_live.py runs every query against a real Prometheus scraping a real connector.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.deploy.support import dashboard, dashboard_targets, exposed_metric_names, metric_names_in

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@pytest.fixture(scope="module")
def board() -> dict[str, Any]:
    return dashboard()


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in board["panels"] if panel["type"] != "row"]


def test_identity_and_variables(board: dict[str, Any]) -> None:
    assert board["uid"] == "connector"
    assert board["title"] == "Connector"
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    instance = variables["instance"]
    assert instance["datasource"] == DATASOURCE
    assert instance["query"]["query"] == "label_values(connector_info, instance)"
    assert instance["includeAll"] is True
    assert instance["allValue"] == ".*"


def test_every_panel_and_query_uses_the_datasource_variable(board: dict[str, Any]) -> None:
    for panel in panels(board):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_ids_are_unique_and_panels_do_not_overlap(board: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_queries_use_exposed_metrics_the_rate_interval_and_the_instance_filter() -> None:
    exposed = exposed_metric_names()
    for title, _, expr in dashboard_targets():
        names = metric_names_in(expr)
        assert names <= exposed | {"up"}, f"{title}: {sorted(names - exposed)} not exposed"
        for selector in re.findall(r"\{[^}]*\}", expr):
            assert 'instance=~"$instance"' in selector, f"{title}: {selector} lacks $instance"
        for window in re.findall(r"\[([^\]]+)\]", expr):
            assert window == "$__rate_interval", f"{title}: use $__rate_interval, not {window}"


def test_the_panels_operators_need_are_there() -> None:
    queries = "\n".join(expr for _, _, expr in dashboard_targets())
    quantile = r"histogram_quantile\({q}, sum by \(instance, le\) \(rate\({metric}_bucket"
    required = [
        r"sum by \(type\) \(rate\(connector_events_total",
        quantile.format(q=r"0\.5", metric="connector_ack_latency_seconds"),
        quantile.format(q=r"0\.99", metric="connector_ack_latency_seconds"),
        r"connector_missed_pongs_total",
        r"connector_reconnects_total",
        quantile.format(q=r"0\.5", metric="connector_consumer_confirm_seconds"),
        quantile.format(q=r"0\.99", metric="connector_consumer_confirm_seconds"),
        r"connector_consumer_lag",
        r"connector_pending_acks",
        r"connector_buffered_events",
        r"connector_buffered_bytes",
        r"connector_publish_errors_total",
        r"connector_dropped_events_total",
        r"connector_connected",
        r"connector_redis_up",
    ]
    for pattern in required:
        assert re.search(pattern, queries), f"no panel query matches {pattern}"
