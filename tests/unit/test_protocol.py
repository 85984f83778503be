"""Frames to typed events: exact decimals, timestamps, ids, rejections; never an exception."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.trading.protocol import (
    PING,
    Candle,
    FrameError,
    Invalid,
    Other,
    Quote,
    ack_frame,
    parse_frame,
    parse_timestamp_ms,
)

LIMIT = 1 << 20

CANDLE = (
    '{"bar":{"close":"151","high":"152","low":"149","open":"150","provider":"tektii",'
    '"symbol":"AAPL","timeframe":"1m","timestamp":"2024-01-01T00:00:00Z","volume":"10000"},'
    '"event_id":"evt-5","timestamp":"2026-07-13T09:15:02.123456789Z","type":"candle"}'
)


def frame(**fields: object) -> str:
    return orjson.dumps(fields).decode()


def test_engine_candle_keeps_every_field_exactly() -> None:
    event = parse_frame(CANDLE, LIMIT)
    assert event == Candle(
        event_id="evt-5",
        symbol="AAPL",
        timeframe="1m",
        ts_ms=1704067200000,
        open="150",
        high="152",
        low="149",
        close="151",
        volume="10000",
        provider="tektii",
    )


def test_decimal_strings_are_not_normalised() -> None:
    bar = {
        "symbol": "C:BTCUSD",
        "timeframe": "1m",
        "timestamp": "2024-01-01T00:01:00Z",
        "open": "0.000012345",
        "high": "187.250",
        "low": "1E-7",
        "close": "-0.10",
        "volume": "12345678901234567890.123456789",
    }
    event = parse_frame(frame(type="candle", bar=bar), LIMIT)
    assert isinstance(event, Candle)
    assert (event.open, event.high, event.low, event.close) == (
        "0.000012345",
        "187.250",
        "1E-7",
        "-0.10",
    )
    assert event.volume == "12345678901234567890.123456789"


def test_quote_with_optional_fields_absent() -> None:
    quote = {
        "symbol": "F:EURUSD",
        "bid": "1.08001",
        "ask": "1.08012",
        "timestamp": "2025-01-15T10:30:00.123Z",
    }
    event = parse_frame(frame(type="quote", quote=quote), LIMIT)
    assert event == Quote(
        None, "F:EURUSD", 1736937000123, "1.08001", "1.08012", None, None, None, None, None
    )


def test_documentation_style_id_is_accepted_and_event_id_wins() -> None:
    docs = orjson.loads(CANDLE)
    del docs["event_id"]
    docs["id"] = "42"
    event = parse_frame(orjson.dumps(docs).decode(), LIMIT)
    assert isinstance(event, Candle)
    assert event.event_id == "42"
    docs["event_id"] = "evt-9"
    event = parse_frame(orjson.dumps(docs).decode(), LIMIT)
    assert isinstance(event, Candle)
    assert event.event_id == "evt-9"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-15T10:30:00Z", 1736937000000),
        ("2025-01-15T10:30:00.1Z", 1736937000100),
        ("2025-01-15T10:30:00.123Z", 1736937000123),
        ("2025-01-15T10:30:00.123456Z", 1736937000123),
        ("2025-01-15T10:30:00.123456789Z", 1736937000123),
        ("2025-01-15T10:30:00.999999999Z", 1736937000999),
        ("2025-01-15T12:30:00+02:00", 1736937000000),
        ("1969-12-31T23:59:59Z", -1000),
        ("2024-02-29T00:00:00Z", 1709164800000),
    ],
)
def test_timestamps_with_0_to_9_fraction_digits(text: str, expected: int) -> None:
    assert parse_timestamp_ms(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2025-01-15 10:30:00Z",
        "2025-01-15T10:30:00",
        "2025-02-30T00:00:00Z",
        "2025-01-15T24:00:00Z",
        "2025-01-15T10:30:00.1234567890Z",
        "",
        "yesterday",
        "2025-01-15T10:30:00+25:00",
    ],
)
def test_bad_timestamps_are_rejected(text: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_timestamp_ms(text)
    assert info.value.reason == "bad_timestamp"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda f: f["bar"].update(close=151.0), "bad_decimal"),
        (lambda f: f["bar"].update(close="NaN"), "bad_decimal"),
        (lambda f: f["bar"].update(close="1" * 100), "bad_decimal"),
        (lambda f: f["bar"].update(close=""), "bad_decimal"),
        (lambda f: f["bar"].pop("close"), "missing_field"),
        (lambda f: f["bar"].update(symbol="{AAPL}"), "bad_symbol"),
        (lambda f: f["bar"].update(symbol="AA PL"), "bad_symbol"),
        (lambda f: f["bar"].update(symbol="AAPL\n"), "bad_symbol"),
        (lambda f: f["bar"].update(symbol="*"), "bad_symbol"),
        (lambda f: f["bar"].update(symbol="A" * 129), "bad_symbol"),
        (lambda f: f["bar"].update(symbol=7), "bad_field"),
        (lambda f: f["bar"].update(timestamp="soon"), "bad_timestamp"),
        (lambda f: f["bar"].update(timeframe="1 m"), "bad_field"),
        (lambda f: f.update(bar="x"), "missing_field"),
        (lambda f: f.update(event_id=5), "bad_event_id"),
        (lambda f: f.pop("type"), "missing_type"),
    ],
)
def test_malformed_candles_are_rejected_with_a_reason_and_keep_their_id(mutate, reason) -> None:  # type: ignore[no-untyped-def]
    fields = orjson.loads(CANDLE)
    mutate(fields)
    event = parse_frame(orjson.dumps(fields).decode(), LIMIT)
    assert isinstance(event, Invalid)
    assert event.reason == reason
    if reason != "bad_event_id":
        assert event.event_id == "evt-5"  # still acknowledged, so the engine does not stall


def test_symbols_from_several_providers_are_valid() -> None:
    for symbol in ("AAPL", "F:EURUSD", "C:BTCUSD", "EUR_USD", "BTC/USD", "BRK.B", "ES-2025"):
        quote = {"symbol": symbol, "bid": "1", "ask": "2", "timestamp": "2025-01-15T10:30:00Z"}
        assert isinstance(parse_frame(frame(type="quote", quote=quote), LIMIT), Quote)


def test_invalid_json_is_rejected_but_its_id_is_recognised() -> None:
    event = parse_frame('{"type":"candle","event_id":"evt-7","bar":{', LIMIT)
    assert isinstance(event, Invalid)
    assert (event.reason, event.event_id) == ("invalid_json", "evt-7")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("NaN", "invalid_json"),
        ('{"type":"candle","x":Infinity}', "invalid_json"),
        ("[1,2]", "not_object"),
        ('"candle"', "not_object"),
        ("[" * 5000, "invalid_json"),
    ],
)
def test_non_objects_and_non_standard_json(payload: str, reason: str) -> None:
    event = parse_frame(payload, LIMIT)
    assert isinstance(event, Invalid)
    assert event.reason == reason


def test_binary_and_oversized_frames() -> None:
    binary = parse_frame(CANDLE.encode(), LIMIT)
    assert isinstance(binary, Invalid)
    assert (binary.reason, binary.event_id) == ("binary_frame", "evt-5")
    large = parse_frame(CANDLE[:-1] + ',"pad":"' + "x" * 2000 + '"}', 1024)
    assert isinstance(large, Invalid)
    assert (large.reason, large.event_id) == ("too_large", "evt-5")


def test_other_types_keep_the_raw_frame_and_index_fields() -> None:
    text = frame(
        type="order",
        event="ORDER_FILLED",
        event_id="evt-9",
        order={"id": "o-1", "symbol": "AAPL", "side": "BUY"},
        timestamp="2026-07-13T09:15:02Z",
    )
    event = parse_frame(text, LIMIT)
    assert event == Other("order", "order", "evt-9", "ORDER_FILLED", "AAPL", 1783934102000, text)


def test_unknown_types_are_other_and_server_frames_have_no_id() -> None:
    unknown = parse_frame(frame(type="shiny_new_thing", value=1), LIMIT)
    assert isinstance(unknown, Other)
    assert (unknown.label, unknown.type, unknown.event_id) == ("other", "shiny_new_thing", None)
    stale = parse_frame(
        frame(
            type="data_staleness", event="STALE", symbols=["AAPL"], timestamp="2026-07-13T09:15:02Z"
        ),
        LIMIT,
    )
    assert isinstance(stale, Other)
    assert (stale.label, stale.event_id, stale.event) == ("data_staleness", None, "STALE")


def test_ping_and_unknown_fields() -> None:
    assert parse_frame('{"type":"ping","timestamp":"2026-07-13T09:15:02Z"}', LIMIT) is PING
    extra = orjson.loads(CANDLE)
    extra["future_field"] = {"nested": [1, 2, 3]}
    extra["bar"]["vwap"] = "150.5"
    assert isinstance(parse_frame(orjson.dumps(extra).decode(), LIMIT), Candle)


def test_ack_frame_has_the_three_required_fields_and_an_integer_timestamp() -> None:
    ack = orjson.loads(ack_frame(["evt-5", "evt-6"], 1700000000000, "c0ffee"))
    assert ack == {
        "type": "event_ack",
        "correlation_id": "c0ffee",
        "events_processed": ["evt-5", "evt-6"],
        "timestamp": 1700000000000,
    }
    assert isinstance(ack["timestamp"], int)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.text() | st.binary())
def test_arbitrary_frames_never_raise(payload: str | bytes) -> None:
    parse_frame(payload, 4096)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["candle", "quote", "order", "ping", "backtest_complete", "x"]),
    st.dictionaries(
        st.sampled_from(["bar", "quote", "event_id", "id", "timestamp", "symbol"]),
        json_values,
        max_size=5,
    ),
)
def test_arbitrary_objects_never_raise(kind: str, fields: dict[str, object]) -> None:
    # The standard library encodes what orjson refuses (integers beyond 64 bits).
    parse_frame(json.dumps({"type": kind, **fields}), 1 << 16)


@pytest.mark.parametrize(
    "text",
    [
        "2025-01-15T10:30:60Z",
        "2025-01-15T10:30:00.Z",
        "2025-01-15T10:30:0xZ",
        "2025-01-15T10:30:00.12a4Z",
        "2025-01-15T10:30:\u0660\u0660Z",
        "2025-01-15T10:30:00.\u0661Z",
        "2025-01-15T10:30:00.1234567890Z",
    ],
)
def test_cached_minutes_do_not_let_bad_seconds_through(text: str) -> None:
    parse_timestamp_ms("2025-01-15T10:30:00Z")  # the minute is now cached
    with pytest.raises(FrameError):
        parse_timestamp_ms(text)


def test_cached_and_uncached_parses_agree() -> None:
    for text in (
        "2031-07-04T23:59:59.5Z",
        "2031-07-04T23:59:01Z",
        "2031-07-04T23:59:01.000000001Z",
    ):
        first = parse_timestamp_ms(text)
        assert parse_timestamp_ms(text) == first  # second time through the cache


@pytest.mark.parametrize(
    "value", ["\u0661\u0662\u0663", "\u0661.\u0665", "\uff11\uff12", "1.5\u0663", "\u00b2"]
)
def test_only_ascii_digits_are_decimals(value: str) -> None:
    fields = orjson.loads(CANDLE)
    fields["bar"]["close"] = value
    event = parse_frame(orjson.dumps(fields).decode(), LIMIT)
    assert isinstance(event, Invalid)
    assert event.reason == "bad_decimal"


def test_sniffed_event_id_wins_over_a_nested_id() -> None:
    broken = '{"order":{"id":"o-1","symbol":"AAPL"},"event_id":"evt-3","type":"order",'
    event = parse_frame(broken, LIMIT)
    assert isinstance(event, Invalid)
    assert event.event_id == "evt-3"
    docs_style = '{"id":"42","type":"candle","bar":{'
    assert parse_frame(docs_style, LIMIT).event_id == "42"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "symbol", ["AAPL\u200b", "AAPL\u202e", "\ufeffAAPL", "AA\u00adPL", "AAPL\u2060"]
)
def test_symbols_with_invisible_characters_are_refused(symbol: str) -> None:
    """A zero-width or bidirectional character would make a second stream that looks like
    AAPL's; dead-lettered (and acknowledged) like any symbol that cannot be part of a key."""
    fields = orjson.loads(CANDLE)
    fields["bar"]["symbol"] = symbol
    event = parse_frame(orjson.dumps(fields).decode(), LIMIT)
    assert isinstance(event, Invalid)
    assert (event.reason, event.event_id) == ("bad_symbol", "evt-5")


@pytest.mark.parametrize(("value", "valid"), [("1e9999", False), ("1e-99", True), ("2E5", True)])
def test_exponents_are_at_most_two_digits(value: str, valid: bool) -> None:
    fields = orjson.loads(CANDLE)
    fields["bar"]["close"] = value
    event = parse_frame(orjson.dumps(fields).decode(), LIMIT)
    assert isinstance(event, Invalid) is not valid
