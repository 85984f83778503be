"""Every dashboard query returns data from a real Prometheus scraping a real connector.

The simulator (live mode) feeds `connector run` (consumer-ack mode with group g1, so the
consumer series exist), which writes to a private redis-server; /usr/bin/prometheus scrapes it
every second with the project's alert rules loaded. Everything waits on conditions, never on
fixed sleeps, and every process is stopped by the fixture that started it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.support import (
    DEPLOY,
    as_prometheus_query,
    dashboard_targets,
    http_get,
    load_yaml,
    process,
    prometheus_query,
    stop,
    tail,
    tool,
    wait_for,
)
from tests.support.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

RATE_INTERVAL = "5s"  # Grafana's $__rate_interval for a 1 s scrape is 4 s; one more for slack
STARTUP = 30.0
DATA = 45.0


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    log: Path
    port: int
    sandbox: Path | None = None


def _up(running: Running, url: str, expect: int = 200) -> bool | None:
    """True once ``url`` answers ``expect``; fails the test if the process died meanwhile."""
    if running.proc.poll() is not None:
        pytest.fail(
            f"{running.log.stem} exited with {running.proc.returncode}:\n{tail(running.log)}"
        )
    return True if http_get(url)[0] == expect else None


def _clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONNECTOR_")}
    env.update(settings)
    return env


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Running]:
    port = free_port()
    args = [
        sys.executable, "-m", "connector", "simulate", "--mode", "live", "--host", "127.0.0.1",
        "--port", str(port), "--symbols", "AAPL,MSFT", "--rate", "50",
    ]  # fmt: skip
    log = tmp_path / "simulator.log"
    with process(args, log, env=_clean_env()) as proc:
        running = Running(proc, log, port)
        wait_for("the simulator", lambda: _up(running, f"http://127.0.0.1:{port}/report"), STARTUP)
        yield running


@pytest.fixture
def connector(tmp_path: Path, simulator: Running, redis_server: RedisServer) -> Iterator[Running]:
    port = free_port()
    env = _clean_env(
        CONNECTOR_API_URL=f"ws://127.0.0.1:{simulator.port}/v1/ws",
        CONNECTOR_MODE="live",
        CONNECTOR_REDIS_URL=redis_server.url,
        CONNECTOR_HTTP_HOST="127.0.0.1",
        CONNECTOR_HTTP_PORT=str(port),
        CONNECTOR_ACK_MODE="consumer",
        CONNECTOR_CONSUMER_GROUPS="g1",
        CONNECTOR_LOG_FORMAT="json",
        # As in the image (Dockerfile ENV): the dashboard must not need the *_created series,
        # and nothing may be written (the image runs with a read-only root file system).
        PROMETHEUS_DISABLE_CREATED_SERIES="True",
        PYTHONDONTWRITEBYTECODE="1",
    )
    # Working directory, HOME and TMPDIR in an empty sandbox: the test checks it stays empty.
    sandbox = tmp_path / "sandbox"
    for name in ("cwd", "home", "tmp"):
        (sandbox / name).mkdir(parents=True)
    env.update(HOME=str(sandbox / "home"), TMPDIR=str(sandbox / "tmp"))
    log = tmp_path / "connector.log"
    args = [sys.executable, "-m", "connector", "run"]
    with process(args, log, env=env, cwd=sandbox / "cwd") as proc:
        running = Running(proc, log, port, sandbox)
        wait_for("/readyz", lambda: _up(running, f"http://127.0.0.1:{port}/readyz"), STARTUP)
        yield running


@pytest.fixture
def prometheus(tmp_path: Path, connector: Running) -> Iterator[str]:
    binary = tool("prometheus", "CI installs it: apt-get install prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{DEPLOY / 'prometheus' / 'alerts.yaml'}']\n"
        "scrape_configs:\n"
        "  - job_name: connector\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{connector.port}']}}]\n"
    )
    port = free_port()
    args = [
        binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
    ]  # fmt: skip
    log = tmp_path / "prometheus.log"
    with process(args, log) as proc:
        running = Running(proc, log, port)
        base = f"http://127.0.0.1:{port}"
        wait_for("Prometheus", lambda: _up(running, f"{base}/-/ready"), STARTUP)
        yield base


def _all_answer(base: str, queries: dict[str, str], results: dict[str, Any]) -> bool | None:
    for key, query in queries.items():
        if not results.get(key):
            results[key] = prometheus_query(base, query)
    return True if all(results.values()) else None


def test_every_dashboard_query_returns_data(prometheus: str, connector: Running) -> None:
    queries = {
        f"{title} [{ref}]": as_prometheus_query(expr, RATE_INTERVAL)
        for title, ref, expr in dashboard_targets()
    }
    assert len(queries) >= 20
    results: dict[str, Any] = {}
    try:
        wait_for("every panel query", lambda: _all_answer(prometheus, queries, results), DATA)
    finally:
        empty = sorted(key for key in queries if not results.get(key))
        if empty:
            print("queries without data:", *empty, sep="\n  ")

    # Not only present: the live feed flows through a healthy connector. (Polled too: a value
    # is a rate over the last seconds, so one unlucky instant must not decide.)
    def flowing() -> bool | None:
        keys = [f"{title} [A]" for title in ("Events received by type", "Entries stored by type")]
        keys += [f"{title} [A]" for title in ("Trading API session", "Redis", "Scrape target")]
        fresh = {key: prometheus_query(prometheus, queries[key]) or [] for key in keys}
        by_type = {
            s["metric"]["type"]: float(s["value"][1]) for s in fresh["Events received by type [A]"]
        }
        stored = {
            s["metric"]["type"]: float(s["value"][1]) for s in fresh["Entries stored by type [A]"]
        }
        gauges = [
            fresh[f"{title} [A]"] for title in ("Trading API session", "Redis", "Scrape target")
        ]
        healthy = all(len(r) == 1 and float(r[0]["value"][1]) == 1 for r in gauges)
        ok = (
            by_type.get("quote", 0) > 0
            and by_type.get("candle", 0) > 0
            and stored.get("quote", 0) > 0
            and healthy
        )
        return True if ok else None

    wait_for("quotes and candles flowing, session/Redis/scrape up", flowing, DATA)
    (info,) = results["Mode [A]"]
    assert (info["metric"]["mode"], info["metric"]["ack_mode"]) == ("live", "consumer")
    assert {s["metric"]["group"] for s in results["Consumer lag by group [A]"]} == {"g1"}


def test_alert_rules_evaluate_cleanly_against_real_data(
    prometheus: str, connector: Running
) -> None:
    expected = sum(
        len(group["rules"]) for group in load_yaml(DEPLOY / "prometheus" / "alerts.yaml")["groups"]
    )

    def evaluated() -> list[dict[str, Any]] | None:
        status, body = http_get(f"{prometheus}/api/v1/rules")
        if status != 200:
            return None
        rules = [rule for group in json.loads(body)["data"]["groups"] for rule in group["rules"]]
        done = len(rules) == expected and all(rule["health"] != "unknown" for rule in rules)
        return rules if done else None

    rules = wait_for("one evaluation of every rule", evaluated, DATA)
    broken = {rule["name"]: rule.get("lastError") for rule in rules if rule["health"] != "ok"}
    assert broken == {}
    # A healthy connector fed by the simulator sets off nothing that is already firing.
    assert [rule["name"] for rule in rules if rule["state"] == "firing"] == []


def test_image_healthcheck_and_graceful_stop_against_the_real_service(connector: Running) -> None:
    script = str(DEPLOY / "docker" / "healthcheck.py")
    env = {"CONNECTOR_HTTP_PORT": str(connector.port), "PATH": os.environ.get("PATH", "")}
    for path in ("/healthz", "/readyz"):
        check = subprocess.run(
            [sys.executable, script, path], env=env, capture_output=True, text=True, timeout=30
        )
        assert check.returncode == 0, check.stderr
    # SIGTERM (what Docker and Kubernetes send): drain, then exit 0.
    assert stop(connector.proc) == 0, tail(connector.log)
    after = subprocess.run([sys.executable, script], env=env, capture_output=True, timeout=30)
    assert after.returncode == 1
    assert connector.sandbox is not None
    written = sorted(str(p.relative_to(connector.sandbox)) for p in connector.sandbox.rglob("*"))
    assert written == ["cwd", "home", "tmp"], "the service wrote files"
