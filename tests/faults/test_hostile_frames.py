"""Hostile input over a real WebSocket: each frame is counted by reason, dead-lettered, and the
session carries on. Only a frame above the hard limit costs the connection (by design)."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.asyncio import Redis
from websockets.asyncio.server import ServerConnection, serve

from tests.support.harness import run_connector, stream_entries, wait_until
from tests.support.redis_server import RedisServer

GOOD = (
    '{"bar":{"close":"151","high":"152","low":"149","open":"150","symbol":"AAPL",'
    '"timeframe":"1m","timestamp":"2024-01-01T00:00:00Z","volume":"10000"},'
    '"event_id":"evt-good","timestamp":"2026-07-13T09:15:02Z","type":"candle"}'
)


def candle(event_id: str, **bar: object) -> str:
    fields: dict[str, object] = {
        "symbol": "AAPL",
        "timeframe": "1m",
        "timestamp": "2024-01-01T00:00:00Z",
        "open": "1",
        "high": "1",
        "low": "1",
        "close": "1",
    }
    fields.update(bar)
    return json.dumps({"type": "candle", "event_id": event_id, "bar": fields})


# (frame, reason it must be counted under, whether an id must still be acknowledged)
CORPUS: list[tuple[str | bytes, str, str | None]] = [
    ('{"type":"candle","event_id":"h-1","bar":{', "invalid_json", "h-1"),
    ("", "invalid_json", None),
    ("   ", "invalid_json", None),
    ("null", "not_object", None),
    ("[1,2,3]", "not_object", None),
    ('"candle"', "not_object", None),
    ('{"type":"candle","event_id":"h-2","bar":{"close":NaN}}', "invalid_json", "h-2"),
    ('{"type":"candle","event_id":"h-3","bar":{"close":Infinity}}', "invalid_json", "h-3"),
    ('{"type":"candle","x":' + "1" * 400 + "}", "invalid_json", None),
    ('{"type":"candle","x":1e400}', "invalid_json", None),
    ("[" * 20_000 + "]" * 20_000, "invalid_json", None),
    ('{"type":42}', "missing_type", None),
    ('{"event_id":"h-4"}', "missing_type", "h-4"),
    ('{"type":"candle","event_id":7,"bar":{}}', "bad_event_id", None),
    ('{"type":"candle","event_id":{"a":1},"bar":{}}', "bad_event_id", None),
    ('{"type":"candle","event_id":"' + "x" * 300 + '"}', "bad_event_id", None),
    ('{"type":"candle","event_id":"h-5","bar":[1,2]}', "missing_field", "h-5"),
    (candle("h-6", close=151.25), "bad_decimal", "h-6"),
    (candle("h-7", close="1" * 100), "bad_decimal", "h-7"),
    (candle("h-8", close="12abc"), "bad_decimal", "h-8"),
    (candle("h-9", timestamp="2024-13-01T00:00:00Z"), "bad_timestamp", "h-9"),
    (candle("h-10", timestamp="2024-01-01T00:00:60Z"), "bad_timestamp", "h-10"),
    (candle("h-11", timestamp="2024-01-01T00:00:00.1234567891Z"), "bad_timestamp", "h-11"),
    (candle("h-12", timestamp=1704067200000), "bad_field", "h-12"),
    (candle("h-13", symbol="{AAPL}"), "bad_symbol", "h-13"),
    (candle("h-14", symbol="AAPL\nMSFT"), "bad_symbol", "h-14"),
    (candle("h-15", symbol="*"), "bad_symbol", "h-15"),
    (candle("h-16", symbol="A" * 5000), "bad_symbol", "h-16"),
    (candle("h-17", symbol=""), "bad_symbol", "h-17"),
    (candle("h-18", symbol=None), "missing_field", "h-18"),
    (GOOD.encode(), "binary_frame", "evt-good"),
    ('{"type":"candle","event_id":"h-19","pad":"' + "y" * 70_000 + '"}', "too_large", "h-19"),
]


@pytest.fixture
async def hostile_server() -> asyncio.Server:  # type: ignore[misc]
    received: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        for frame, _, _ in CORPUS:
            await ws.send(frame)
        await ws.send('{"type":"brand_new_type","event_id":"h-new"}')  # unknown: kept, not bad
        await ws.send(GOOD.replace("evt-good", "evt-after"))  # still reading afterwards
        async for message in ws:
            received.append(str(message))

    async with serve(handler, "127.0.0.1", 0, max_size=None) as server:
        server.received = received  # type: ignore[attr-defined]
        yield server


async def test_hostile_corpus_is_counted_dead_lettered_and_survived(
    hostile_server: asyncio.Server, redis_server: RedisServer, redis_client: Redis
) -> None:
    port = hostile_server.sockets[0].getsockname()[1]
    url = f"ws://127.0.0.1:{port}/v1/ws"
    async with run_connector(url, redis_server.url, mode="backtest", max_frame_bytes=65_536) as app:
        await wait_until(lambda: app.sample("connector_published_total", type="candle") == 1)
        await wait_until(
            lambda: app.sample("connector_published_total", type="deadletter") == len(CORPUS)
        )
        await wait_until(lambda: app.sample("connector_pending_acks") == 0)
        expected: dict[str, int] = {}
        for _, reason, _ in CORPUS:
            expected[reason] = expected.get(reason, 0) + 1
        for reason, count in expected.items():
            assert app.sample("connector_invalid_messages_total", reason=reason) == count, reason
        assert app.connector.session.connections == 1  # the session carried on
    dead = await stream_entries(redis_client, "md:deadletter")
    assert [d["reason"] for d in dead] == [reason for _, reason, _ in CORPUS]
    assert all(len(d["raw"].encode()) <= 8192 * 4 for d in dead)
    acked: set[str] = set()
    for message in hostile_server.received:  # type: ignore[attr-defined]
        frame = json.loads(message)
        if frame.get("type") == "event_ack":
            acked.update(frame["events_processed"])
    must_ack = {eid for _, _, eid in CORPUS if eid is not None}
    assert must_ack | {"evt-after", "h-new"} == acked
    other = await stream_entries(redis_client, "md:other")
    assert other[0]["type"] == "brand_new_type"


async def test_a_frame_above_the_hard_limit_costs_only_the_connection(
    redis_server: RedisServer,
) -> None:
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            await ws.send('{"type":"x","pad":"' + "z" * 20_000 + '"}')  # > 8 x 2048
        await ws.send(GOOD)
        async for _ in ws:
            pass

    async with serve(handler, "127.0.0.1", 0, max_size=None) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/ws"
        async with run_connector(url, redis_server.url, max_frame_bytes=2048) as app:
            await wait_until(lambda: app.sample("connector_published_total", type="candle") == 1)
            assert app.sample("connector_reconnects_total") == 1
