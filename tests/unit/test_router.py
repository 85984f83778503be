"""Routing frames to stream entries: keys, fields, dead letters, pongs, metrics."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.metrics import Metrics
from connector.streams.schema import Entry, StreamKeys
from connector.trading.protocol import PONG
from connector.trading.router import Router

CANDLE = (
    '{"bar":{"close":"151","high":"152","low":"149","open":"150","provider":"tektii",'
    '"symbol":"AAPL","timeframe":"1m","timestamp":"2024-01-01T00:00:00Z","volume":"10000"},'
    '"event_id":"evt-5","timestamp":"2026-07-13T09:15:02.123456789Z","type":"candle"}'
)


class Harness:
    def __init__(self, max_frame_bytes: int = 4096, max_streams: int = 10_000) -> None:
        self.metrics = Metrics()
        self.entries: list[Entry] = []
        self.expected = 0
        self.router = Router(
            StreamKeys("md"),
            self.entries.append,
            self.metrics,
            max_frame_bytes=max_frame_bytes,
            expect_ack=self._expect,
            max_streams=max_streams,
        )

    def _expect(self, count: int) -> None:
        self.expected += count

    def count(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def harness() -> Harness:
    return Harness()


def test_candle_goes_to_its_symbol_and_timeframe_stream(harness: Harness) -> None:
    assert harness.router.route(CANDLE, 1.0) is None
    (entry,) = harness.entries
    assert entry.key == "md:{AAPL}:candle:1m"
    assert entry.fields == {
        "symbol": "AAPL",
        "timeframe": "1m",
        "ts": "1704067200000",
        "open": "150",
        "high": "152",
        "low": "149",
        "close": "151",
        "volume": "10000",
        "provider": "tektii",
        "event_id": "evt-5",
    }
    assert (entry.event_id, entry.received, entry.label) == ("evt-5", 1.0, "candle")
    assert harness.expected == 1
    assert harness.count("connector_events_total", type="candle") == 1


def test_quote_stream_and_fields(harness: Harness) -> None:
    quote = {
        "type": "quote",
        "quote": {
            "symbol": "F:EURUSD",
            "bid": "1.0800",
            "ask": "1.0801",
            "last": "1.08005",
            "bid_size": "100",
            "timestamp": "2025-01-15T10:30:00.5Z",
        },
    }
    harness.router.route(orjson.dumps(quote).decode(), 2.0)
    (entry,) = harness.entries
    assert entry.key == "md:{F:EURUSD}:quote"
    assert entry.fields == {
        "symbol": "F:EURUSD",
        "ts": "1736937000500",
        "bid": "1.0800",
        "ask": "1.0801",
        "last": "1.08005",
        "bid_size": "100",
    }
    assert entry.event_id is None
    assert harness.expected == 0


@pytest.mark.parametrize(
    ("frame", "stream"),
    [
        ({"type": "order", "event": "ORDER_FILLED", "order": {"symbol": "AAPL"}}, "md:order"),
        ({"type": "trade", "trade": {"symbol": "AAPL"}}, "md:trade"),
        ({"type": "position", "position": {"symbol": "AAPL"}}, "md:position"),
        ({"type": "account", "account": {"balance": "1"}}, "md:account"),
        ({"type": "financing", "symbol": "AAPL", "amount": "-0.5"}, "md:financing"),
        ({"type": "connection", "event": "BROKER_DISCONNECTED"}, "md:connection"),
        ({"type": "data_staleness", "event": "STALE", "symbols": ["A"]}, "md:data_staleness"),
        ({"type": "rate_limit", "event": "RATE_LIMIT_HIT"}, "md:rate_limit"),
        ({"type": "error", "code": "LIQUIDATION", "message": "m"}, "md:error"),
        ({"type": "backtest_complete", "event_id": "evt-99"}, "md:backtest_complete"),
        ({"type": "brand_new"}, "md:other"),
    ],
)
def test_every_other_type_has_a_plain_stream(harness: Harness, frame: dict, stream: str) -> None:  # type: ignore[type-arg]
    text = orjson.dumps(frame).decode()
    harness.router.route(text, 0.0)
    (entry,) = harness.entries
    assert entry.key == stream
    assert entry.fields["type"] == frame["type"]
    assert entry.fields["data"] == text
    assert entry.final == (frame["type"] == "backtest_complete")


def test_json_ping_is_answered_and_not_published(harness: Harness) -> None:
    assert harness.router.route('{"type":"ping","timestamp":"2026-01-01T00:00:00Z"}', 0) == PONG
    assert harness.entries == []
    assert harness.count("connector_json_pongs_total") == 1


def test_malformed_frames_are_dead_lettered_counted_and_acked(harness: Harness) -> None:
    bad = CANDLE.replace('"close":"151"', '"close":151')
    harness.router.route(bad, 0.0)
    harness.router.route("garbage", 0.0)
    first, second = harness.entries
    assert first.key == second.key == "md:deadletter"
    assert first.fields["reason"] == "bad_decimal"
    assert first.fields["raw"] == bad
    assert first.event_id == "evt-5"  # acknowledged once stored, so the engine moves on
    assert second.event_id is None
    assert harness.count("connector_invalid_messages_total", reason="bad_decimal") == 1
    assert harness.count("connector_invalid_messages_total", reason="invalid_json") == 1


def test_dead_letter_raw_frame_is_truncated() -> None:
    harness = Harness(max_frame_bytes=1 << 20)
    huge = '{"type":5,"event_id":"evt-1","pad":"' + "y" * 20000 + '"}'
    harness.router.route(huge, 0.0)
    (entry,) = harness.entries
    assert entry.fields["reason"] == "missing_type"
    assert len(entry.fields["raw"]) == 8192
    assert entry.fields["truncated"] == "1"
    assert entry.fields["size"] == str(len(huge))
    assert entry.event_id == "evt-1"


json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["1.5", "2024-01-01T00:00:00Z", "AAPL", "{x}", "evt-1", "NaN"])
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=15,
)
frame_object = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["candle", "quote", "order", "ping", "backtest_complete", "zzz"])
        | json_leaf,
        "event_id": json_leaf,
        "id": json_leaf,
        "bar": st.dictionaries(
            st.sampled_from(["symbol", "timeframe", "timestamp", "open", "high", "low", "close"]),
            json_leaf,
        ),
        "quote": st.dictionaries(st.sampled_from(["symbol", "timestamp", "bid", "ask"]), json_leaf),
        "timestamp": json_leaf,
        "extra": json_value,
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(frame_object.map(lambda o: json.dumps(o, allow_nan=True)), st.text(), st.binary()))
def test_router_never_raises_and_every_frame_becomes_one_entry_or_a_pong(
    frame: str | bytes,
) -> None:
    harness = Harness()
    reply = harness.router.route(frame, 0.0)
    if reply is None:
        assert len(harness.entries) == 1
        (entry,) = harness.entries
        assert entry.key is not None
        assert "{" not in entry.key[3:] or entry.key.startswith("md:{")
        assert all(isinstance(v, str) for v in entry.fields.values())
    else:
        assert reply == PONG
        assert harness.entries == []


def test_streams_beyond_the_limit_are_dead_lettered() -> None:
    harness = Harness(max_streams=2)
    for symbol in ("A", "B", "C", "A"):
        quote = {"symbol": symbol, "bid": "1", "ask": "2", "timestamp": "2025-01-15T10:30:00Z"}
        harness.router.route(orjson.dumps({"type": "quote", "quote": quote}).decode(), 0.0)
    assert [e.key for e in harness.entries] == [
        "md:{A}:quote",
        "md:{B}:quote",
        "md:deadletter",
        "md:{A}:quote",
    ]
    assert harness.entries[2].fields["reason"] == "too_many_streams"
