"""Frame builders: ids where the server puts them, sorted engine frames, exact timestamps."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from connector.sim.config import SimConfig
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


def test_engine_events_get_ids_and_sorted_keys() -> None:
    frames = _factory()
    body = {"event": "TRADE_FILLED", "trade": {"symbol": "AAPL", "price": "151.00", "id": "t"}}
    out = frames.engine_event("trade", body, "AAPL")
    decoded = orjson.loads(out.payload)
    assert (out.type, out.event_id, out.symbol) == ("trade", "evt-1", "AAPL")
    assert decoded["event_id"] == "evt-1"
    assert _keys_sorted_everywhere(decoded)
    assert decoded["trade"]["price"] == "151.00"


def test_live_events_have_no_id_and_type_first() -> None:
    body = {"event": "ORDER_CREATED", "order": {"id": "ord-1"}}
    out = _factory().live_event("order", body, "AAPL")
    decoded = orjson.loads(out.payload)
    assert next(iter(decoded)) == "type"
    assert out.event_id is None
    assert "event_id" not in decoded
    documented = orjson.loads(_factory(id_field="id").live_event("order", body, "AAPL").payload)
    assert documented["id"] == "evt-1"  # documentation-style servers id live frames too


def test_live_candle_can_carry_its_emission_time() -> None:
    out = _factory().candle(BAR, with_id=False, sort=False, bar_time=WALL)
    assert orjson.loads(out.payload)["bar"]["timestamp"] == WALL


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


def test_backtest_complete_names_the_broker() -> None:
    out = _factory().backtest_complete(with_id=False)
    assert out.payload == (
        b'{"type":"backtest_complete","broker":"tektii","timestamp":"' + WALL.encode() + b'"}'
    )
    assert out.event_id is None
    with_id = _factory().backtest_complete(with_id=True)
    assert with_id.payload == (
        b'{"broker":"tektii","event_id":"evt-1","timestamp":"' + WALL.encode() + b'",'
        b'"type":"backtest_complete"}'
    )


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
