"""The ``connector simulate`` options map onto SimConfig fields."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest

from connector.sim.command import GATEWAY_RELAY_GAP, config_from_args, configure_parser, run


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(argv)


def test_defaults_give_the_default_config() -> None:
    config = config_from_args(parse())
    assert config.mode == "backtest"
    assert config.symbols == ("AAPL", "MSFT", "BTCUSD")
    assert config.complete_with_id
    assert config.answer_pings
    assert config.sort_keys
    assert config.record_frames is False  # nothing to report, nothing kept


def test_every_option_reaches_the_config(tmp_path: Path) -> None:
    data = tmp_path / "bars.csv"
    data.write_text("symbol,timestamp,open,high,low,close,volume\n")
    config = config_from_args(
        parse(
            "--mode",
            "live",
            "--host",
            "127.0.0.2",
            "--port",
            "8080",
            "--symbols",
            "F:EURUSD, BTC/USD,EUR_USD",
            "--steps",
            "9",
            "--rate",
            "inf",
            "--count",
            "77",
            "--seed",
            "5",
            "--api-key",
            "k",
            "--id-field",
            "id",
            "--step-timeout",
            "0.5",
            "--halt-after-timeouts",
            "2",
            "--complete-timeout",
            "1",
            "--fill-every",
            "0",
            "--other-every",
            "3",
            "--backtest-quotes",
            "--no-complete-id",
            "--json-ping-interval",
            "0.25",
            "--queue-size",
            "64",
            "--data-file",
            str(data),
            "--no-pong",
            "--malformed-every",
            "4",
            "--drop-after",
            "10",
            "--report",
            str(tmp_path / "r.json"),
        )
    )
    assert config.mode == "live"
    assert config.host == "127.0.0.2"
    assert config.port == 8080
    assert config.symbols == ("F:EURUSD", "BTC/USD", "EUR_USD")
    assert config.steps == 9
    assert math.isinf(config.rate)
    assert config.count == 77
    assert config.seed == 5
    assert config.api_key == "k"
    assert config.id_field == "id"
    assert config.step_timeout == 0.5
    assert config.halt_after_timeouts == 2
    assert config.complete_timeout == 1.0
    assert config.fill_every == 0
    assert config.other_every == 3
    assert config.backtest_quotes
    assert not config.complete_with_id
    assert config.json_ping_interval == 0.25
    assert config.queue_size == 64
    assert config.data_file == data
    assert not config.answer_pings
    assert config.malformed_every == 4
    assert config.drop_after == 10
    assert config.record_frames


def test_the_gateway_options_reach_the_config() -> None:
    config = config_from_args(
        parse(
            "--decimal-scale",
            "full",
            "--live-bar-time",
            "emission",
            "--position-time",
            "sim",
            "--fill-correlation-loss",
            "0.25",
            "--live-fill-delay",
            "0.1",
            "--live-fill-group",
            "--relay-gap",
            "0.002",
            "--close-frame-loss",
            "0.17",
        )
    )
    assert config.decimal_scale == "full"
    assert config.live_bar_time == "emission"
    assert config.position_time == "sim"
    assert config.fill_correlation_loss == 0.25
    assert config.live_fill_delay == 0.1
    assert config.live_fill_group
    assert config.relay_gap == 0.002
    assert config.close_frame_loss == 0.17
    assert config_from_args(parse("--gateway-relay")).relay_gap == GATEWAY_RELAY_GAP > 0
    defaults = config_from_args(parse())
    assert (defaults.relay_gap, defaults.close_frame_loss) == (0.0, 0.0)


def test_every_option_has_help() -> None:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    undocumented = [
        action.option_strings[0]
        for action in parser._actions
        if action.option_strings and action.option_strings[0] != "-h" and not action.help
    ]
    assert undocumented == []


def test_burst_flag() -> None:
    assert math.isinf(config_from_args(parse("--mode", "live", "--burst")).rate)


def test_invalid_options_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(parse("--queue-size", "0")) == 2
    assert "queue_size" in capsys.readouterr().err
    assert run(parse("--close-frame-loss", "2")) == 2
    assert "probability" in capsys.readouterr().err


def test_a_halted_backtest_exits_1_and_writes_the_report(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    args = parse(
        "--steps",
        "5",
        "--step-timeout",
        "0.01",
        "--halt-before-first-ack",
        "2",
        "--no-wait-for-client",
        "--shutdown-grace",
        "0",
        "--report",
        str(report),
    )
    assert run(args) == 1
    text = report.read_text()
    assert '"outcome": "halted"' in text
    assert '"steps_timed_out": 2' in text
