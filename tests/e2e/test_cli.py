"""The ``connector`` command as a user runs it: separate processes, real signals, exit codes."""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from connector.cli import build_parser
from connector.config import Settings, env_name
from tests.support.processes import clean_env
from tests.support.redis_server import RedisServer, free_port

CONNECTOR = [sys.executable, "-m", "connector"]  # synchronous runs; see support.processes


def connector(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CONNECTOR, *args],
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Simulate:
    """``connector simulate`` in its own process; its URL is read from its first line."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [*CONNECTOR, "simulate", "--port", "0", *args],
            env=clean_env(),
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stderr is not None
        first = self.process.stderr.readline()
        match = re.search(r"(ws://\S+/v1/ws)", first)
        assert match, first
        self.url = match.group(1)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


@pytest.fixture
def simulate() -> Iterator[list[Simulate]]:
    started: list[Simulate] = []
    yield started
    for sim in started:
        if sim.process.poll() is None:
            sim.process.kill()
            sim.process.wait(10)


def test_run_help_documents_every_setting() -> None:
    result = connector("run", "--help")
    assert result.returncode == 0
    for name in Settings.model_fields:
        assert env_name(name) in result.stdout, name
        assert "--" + name.replace("_", "-") in result.stdout


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CONNECTOR_PING_INTERVAL", "fast", "CONNECTOR_PING_INTERVAL: expected a valid number"),
        ("CONNECTOR_MODE", "paper", "CONNECTOR_MODE: expected 'backtest' or 'live'"),
        ("CONNECTOR_REDIS_URL", "http://x", "CONNECTOR_REDIS_URL: must be a redis://"),
    ],
)
def test_bad_configuration_is_one_clear_line_and_exit_2(
    variable: str, value: str, message: str
) -> None:
    result = connector("run", env=clean_env(**{variable: value}))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_print_config_masks_secrets() -> None:
    env = clean_env(
        CONNECTOR_API_KEY="sk-very-secret", CONNECTOR_REDIS_URL="redis://u:pw-secret@h:1/0"
    )
    result = connector("run", "--print-config", env=env)
    assert result.returncode == 0
    shown = json.loads(result.stdout)
    assert shown["settings"]["api_key"] == "***"
    assert shown["settings"]["redis_url"] == "redis://u:***@h:1/0"
    # Where each value came from, so an operator sees which variable won.
    assert shown["sources"]["api_key"] == "CONNECTOR_API_KEY"
    assert shown["sources"]["ping_interval"] == "default"
    assert shown["unknown_variables"] == {}
    assert "secret" not in result.stdout


def test_backtest_through_the_command_line(
    redis_server: RedisServer, simulate: list[Simulate], tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    sim = Simulate(
        "--mode",
        "backtest",
        "--symbols",
        "AAPL,MSFT,BTCUSD",
        "--steps",
        "200",
        "--report",
        str(report),
    )
    simulate.append(sim)
    env = clean_env(
        CONNECTOR_API_URL=sim.url,
        CONNECTOR_MODE="backtest",
        CONNECTOR_REDIS_URL=redis_server.url,
        CONNECTOR_HTTP_PORT="0",
        CONNECTOR_LOG_FORMAT="json",
    )
    result = connector("run", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sim.process.wait(30) == 0
    summary = json.loads(report.read_text())
    assert summary["outcome"] == "completed"
    assert summary["counts"]["timeouts"] == 0
    assert summary["counts"]["acked_ids"] == summary["counts"]["event_ids"] > 600
    logs = [json.loads(line) for line in result.stderr.splitlines()]
    assert any(line["msg"] == "backtest run completed" for line in logs)
    assert logs[-1]["msg"] == "stopped"
    redis = Redis.from_url(redis_server.url)
    try:
        assert redis.xlen("md:{AAPL}:candle:1m") == 200
        assert redis.xlen("md:backtest_complete") == 1
    finally:
        redis.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_service_cleanly(
    redis_server: RedisServer, simulate: list[Simulate], sig: signal.Signals
) -> None:
    sim = Simulate("--mode", "live", "--symbols", "AAPL", "--rate", "100")
    simulate.append(sim)
    port = free_port()
    env = clean_env(
        CONNECTOR_API_URL=sim.url,
        CONNECTOR_REDIS_URL=redis_server.url,
        CONNECTOR_HTTP_PORT=str(port),
        CONNECTOR_LOG_FORMAT="json",
    )
    service = subprocess.Popen([*CONNECTOR, "run"], env=env, stderr=subprocess.PIPE, text=True)
    assert service.stderr is not None
    try:
        for line in service.stderr:  # wait for the session, from the service's own log
            if json.loads(line)["msg"] == "connected to the Trading API":
                break
        service.send_signal(sig)
        assert service.wait(30) == 0
        rest = [json.loads(line) for line in service.stderr.read().splitlines()]
        assert rest[-1]["msg"] == "stopped"
        assert rest[-1]["reason"] == f"signal {sig.name}"
    finally:
        if service.poll() is None:
            service.kill()
            service.wait(10)


def test_demo_runs_against_the_given_redis(redis_server: RedisServer) -> None:
    result = connector("demo", "--steps", "60", env=clean_env(CONNECTOR_REDIS_URL=redis_server.url))
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "backtest completed" in out
    # The strategy traded, and consumer-ack mode had every order filled on the next bar.
    match = re.search(r"strategy: (\d+) orders placed, (\d+) filled, (\d+) on the bar after", out)
    assert match, out
    placed, filled, next_bar = (int(group) for group in match.groups())
    assert placed > 0
    assert next_bar == filled
    assert re.search(r"P&L [+-]\d+\.\d\d", out)
    assert "entries per stream:" in out
    assert "demo:{AAPL}:candle:1m" in out
    assert "ack latency" in out
    assert "missed pongs: 0" in out
    assert f"redis-cli -u {redis_server.url} XRANGE 'demo:{{AAPL}}:candle:1m' - + COUNT 3" in out


def test_consume_reads_confirms_and_stops(redis_server: RedisServer) -> None:
    redis = Redis.from_url(redis_server.url)
    try:
        redis.xadd("md:streams", {"stream": "md:{AAPL}:quote", "type": "quote", "symbol": "AAPL"})
        for n in range(3):
            redis.xadd("md:{AAPL}:quote", {"symbol": "AAPL", "bid": str(n), "ask": "1", "ts": "0"})
        result = connector(
            "consume",
            "--group",
            "g",
            "--start-id",
            "0",
            "--max-events",
            "3",
            "--print",
            env=clean_env(CONNECTOR_REDIS_URL=redis_server.url),
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.count("md:{AAPL}:quote") == 3
        assert "processed 3 events (quote 3)" in result.stderr
        assert redis.xpending("md:{AAPL}:quote", "g")["pending"] == 0
    finally:
        redis.close()


def _options_without_help(parser: argparse.ArgumentParser, path: str) -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options_without_help(sub, f"{path} {name}")
        elif action.option_strings and not action.help and action.dest != "help":
            yield f"{path} {'/'.join(action.option_strings)}"


def test_every_option_of_every_command_has_a_help_text() -> None:
    assert list(_options_without_help(build_parser(), "connector")) == []


def test_top_level_help_has_examples_and_points_to_the_docs() -> None:
    result = connector("--help")
    assert result.returncode == 0
    for command in ("run", "simulate", "consume", "demo", "streams", "bench"):
        assert command in result.stdout
    assert "docs/" in result.stdout
    assert "connector run --print-config" in result.stdout


def test_run_help_shows_choices_and_switches_once_each() -> None:
    text = connector("run", "--help").stdout
    assert "--mode {backtest,live}" in text
    assert "--redis-cluster, --no-redis-cluster" in text
    assert text.count("\n  --ping-interval") == 1  # listed once (and in the usage line)
