"""SimConfig: defaults match the real server, bad values fail with a message naming the field."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from connector.sim import SimConfig


def test_defaults_reproduce_the_real_server() -> None:
    config = SimConfig()
    assert config.mode == "backtest"
    assert config.host == "127.0.0.1"
    assert config.port == 0
    assert config.symbols == ("AAPL", "MSFT", "BTCUSD")
    assert config.id_field == "event_id"
    assert config.sort_keys is True
    assert config.step_timeout == 5.0
    assert config.halt_after_timeouts == 5
    assert config.halt_before_first_ack == 24
    assert config.complete_timeout == 10.0
    assert config.queue_size == 1024
    assert config.json_ping_interval == 0.0
    assert config.answer_pings is True
    assert config.shutdown_grace == 0.5
    assert config.timeframe_seconds == 60


def test_is_frozen() -> None:
    config = SimConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.steps = 3  # type: ignore[misc]


def test_forgiving_inputs_are_normalised(tmp_path: Path) -> None:
    data = tmp_path / "bars.csv"
    data.write_text("symbol,timestamp,open,high,low,close,volume\n")
    config = SimConfig(symbols=["F:EURUSD", "BTC/USD"], data_file=str(data))  # type: ignore[arg-type]
    assert config.symbols == ("F:EURUSD", "BTC/USD")
    assert config.data_file == data


def test_burst_means_infinite_rate() -> None:
    assert SimConfig(mode="live", rate=math.inf).burst
    assert not SimConfig(mode="live", rate=100.0).burst


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"mode": "paper"}, "mode"),
        ({"id_field": "eventId"}, "id_field"),
        ({"port": 70000}, "port"),
        ({"symbols": ()}, "symbols"),
        ({"symbols": ("AAPL", "AAPL")}, "unique"),
        ({"symbols": ("AAPL", " MSFT")}, "symbol"),
        ({"timeframe": "3m"}, "timeframe"),
        ({"api_key": "  "}, "api_key"),
        ({"steps": -1}, "steps"),
        ({"step_timeout": 0}, "step_timeout"),
        ({"step_timeout": math.inf}, "step_timeout"),
        ({"halt_after_timeouts": 0}, "halt_after_timeouts"),
        ({"halt_before_first_ack": 0}, "halt_before_first_ack"),
        ({"queue_size": 0}, "queue_size"),
        ({"rate": -1.0}, "rate"),
        ({"rate": math.nan}, "rate"),
        ({"count": -5}, "count"),
        ({"json_ping_interval": -1.0}, "json_ping_interval"),
        ({"malformed_every": -1}, "malformed_every"),
        ({"drop_after": -1}, "drop_after"),
        ({"shutdown_grace": -0.1}, "shutdown_grace"),
        ({"data_file": Path("/nonexistent/bars.csv")}, "data_file"),
    ],
)
def test_bad_values_fail_with_the_field_named(changes: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        SimConfig(**changes)
