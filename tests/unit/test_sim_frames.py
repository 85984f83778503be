"""Frame builders: ids where the server puts them, sorted engine frames, exact timestamps."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from connector.sim.config import SimConfig
from connector.sim.fills import Portfolio
from connector.sim.frames import MALFORMED_KINDS, FrameFactory
from connector.sim.market import Bar, quote_from_last
from connector.sim.timefmt import IsoClock, iso_seconds, parse_iso_seconds

FIXED_NS = 1_752_398_102_123_456_789  # 2025-07-13T09:15:02.123456789Z
WALL = "2025-07-13T09:15:02.123456789Z"
BAR = Bar("AAPL", 1_704_067_200, "150", "152", "149", "151", "10000")


def _factory(**changes: Any) -> FrameFactory:
    return FrameFactory(SimConfig(**changes), IsoClock(lambda: FIXED_NS))


def _keys_sorted_everywhere(value: Any) -> bool:
    if isinstance(value, dict):
        keys = list(value)
        return keys == sorted(keys) and all(_keys_sorted_everywhere(v) for v in value.values())
    if isinstance(value, list):
        return all(_keys_sorted_everywhere(v) for v in value)
    return True


def test_candle_matches_the_protocol_example() -> None:
    out = _factory().candle(BAR)
    assert out.payload == (
        b'{"bar":{"close":"151","high":"152","low":"149","open":"150","provider":"tektii",'
        b'"symbol":"AAPL","timeframe":"1m","timestamp":"2024-01-01T00:00:00Z","volume":"10000"},'
        b'"event_id":"evt-1","timestamp":"' + WALL.encode() + b'","type":"candle"}'
    )
    assert (out.type, out.event_id, out.symbol) == ("candle", "evt-1", "AAPL")


def test_ids_count_up_across_frame_kinds() -> None:
    frames = _factory()
    ids = [frames.candle(BAR).event_id, frames.financing("AAPL", "-0.10").event_id]
    ids.append(frames.backtest_complete(with_id=True).event_id)
    assert ids == ["evt-1", None, "evt-2"]  # financing carries no id, as on the real server


def test_documentation_style_uses_id() -> None:
    frame = orjson.loads(_factory(id_field="id").candle(BAR).payload)
    assert frame["id"] == "evt-1"
    assert "event_id" not in frame


def test_unsorted_engine_frames_start_with_type() -> None:
    frame = orjson.loads(_factory(sort_keys=False).candle(BAR).payload)
    assert next(iter(frame)) == "type"


def test_fill_group_has_four_frames_each_with_its_own_id() -> None:
    frames = _factory()
    fill = Portfolio().fill("AAPL", "151.00", iso_seconds(BAR.start))
    group = frames.fill_group(fill, "AAPL")
    decoded = [orjson.loads(out.payload) for out in group]
    assert [f["type"] for f in decoded] == ["order", "trade", "account", "position"]
    assert [f["event"] for f in decoded] == [
        "ORDER_FILLED",
        "TRADE_FILLED",
        "BALANCE_UPDATED",
        "POSITION_OPENED",
    ]
    assert len({out.event_id for out in group}) == 4
    assert all(_keys_sorted_everywhere(f) for f in decoded)
    assert decoded[1]["trade"]["price"] == "151.00"


def test_second_fill_modifies_the_position() -> None:
    portfolio = Portfolio()
    portfolio.fill("AAPL", "150", "2024-01-01T00:00:00Z")
    second = portfolio.fill("AAPL", "152", "2024-01-01T00:01:00Z")
    assert second.position_event == "POSITION_MODIFIED"
    assert second.position["quantity"] == "20"
    assert second.position["average_entry_price"] == "151"


@pytest.mark.parametrize(
    ("build", "frame_type"),
    [
        (lambda f: f.connection("DISCONNECTING"), "connection"),
        (lambda f: f.staleness("STALE", ["AAPL"]), "data_staleness"),
        (
            lambda f: f.server("rate_limit", event="RATE_LIMIT_HIT", requests_remaining=0),
            "rate_limit",
        ),
        (lambda f: f.server("error", code="LIQUIDATION", message="x"), "error"),
        (lambda f: f.ping(), "ping"),
    ],
)
def test_server_frames_never_carry_ids(build: Any, frame_type: str) -> None:
    for style in ("event_id", "id"):
        out = build(_factory(id_field=style))
        frame = orjson.loads(out.payload)
        assert next(iter(frame)) == "type"
        assert frame["type"] == frame_type
        assert "event_id" not in frame
        assert "id" not in frame
        assert out.event_id is None
        assert frame["timestamp"] == WALL


def test_backtest_complete_without_id() -> None:
    out = _factory().backtest_complete(with_id=False)
    assert orjson.loads(out.payload) == {"type": "backtest_complete", "timestamp": WALL}
    assert out.event_id is None


def test_quote_fields() -> None:
    out = _factory().quote(quote_from_last("F:EURUSD", "1.08000"), "2024-01-01T00:00:59.123Z")
    quote = orjson.loads(out.payload)["quote"]
    assert quote["symbol"] == "F:EURUSD"
    assert quote["timestamp"] == "2024-01-01T00:00:59.123Z"
    assert {"bid", "ask", "last", "bid_size", "ask_size", "provider"} <= set(quote)
    assert all(isinstance(quote[k], str) for k in ("bid", "ask", "last", "bid_size", "ask_size"))


def test_malformed_frames_rotate() -> None:
    frames = _factory()
    outs = [frames.malformed("AAPL", with_id=True) for _ in MALFORMED_KINDS]
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(outs[0].payload)
    assert outs[0].event_id is None
    numeric = orjson.loads(outs[1].payload)
    assert isinstance(numeric["bar"]["close"], float)
    assert numeric["event_id"] == outs[1].event_id is not None
    assert orjson.loads(outs[2].payload)["bar"]["symbol"] == "{AAPL}"
    assert "type" not in orjson.loads(outs[3].payload)
    assert outs[3].event_id is not None
    assert outs[4].binary
    assert outs[4].event_id is None


@pytest.mark.parametrize(
    ("width", "text"),
    [
        (0, "2025-07-13T09:15:02Z"),
        (3, "2025-07-13T09:15:02.123Z"),
        (6, "2025-07-13T09:15:02.123456Z"),
        (9, WALL),
    ],
)
def test_timestamp_widths(width: int, text: str) -> None:
    assert IsoClock().format_ns(FIXED_NS, width) == text
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", text)


def test_iso_round_trip() -> None:
    assert iso_seconds(1_704_067_200) == "2024-01-01T00:00:00Z"
    assert parse_iso_seconds("2024-01-01T00:00:00Z") == 1_704_067_200
    assert parse_iso_seconds("2024-01-01T00:00:00.5+00:00") == 1_704_067_200
