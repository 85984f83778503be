"""The live feed end to end: no ids, pacing, slow-client drops, JSON pings, broker outages."""

from __future__ import annotations

import asyncio
import math
import re
import socket
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from connector.sim import SimConfig, Simulator

LIMIT = 5.0
DECIMAL = re.compile(r"^\d+(\.\d+)?$")


def live(**changes: Any) -> SimConfig:
    base: dict[str, Any] = {
        "mode": "live",
        "rate": math.inf,
        "backpressure": True,
        "shutdown_grace": 0.01,
        "close_timeout": 0.5,
    }
    base.update(changes)
    return SimConfig(**base)


async def recv(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(LIMIT):
        message = await ws.recv()
    frame = orjson.loads(message)
    assert isinstance(frame, dict)
    return frame


async def recv_n(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [await recv(ws) for _ in range(count)]


async def wait(sim: Simulator, predicate: Any) -> None:
    async with asyncio.timeout(LIMIT):
        await sim.wait_for(predicate)


def fraction_digits(timestamp: str) -> int:
    assert timestamp.endswith("Z")
    return len(timestamp[:-1].partition(".")[2])


async def test_live_frames_carry_no_ids_and_only_decimal_strings() -> None:
    async with Simulator(live(count=48)) as sim, connect(sim.url) as ws:
        frames = await recv_n(ws, 48)
        async with asyncio.timeout(LIMIT):
            assert await sim.wait_finished() == "sent"
    assert [f["type"] for f in frames[:6]] == ["quote", "candle"] * 3
    symbols = [(f.get("quote") or f["bar"])["symbol"] for f in frames[:6]]
    assert symbols == ["AAPL", "AAPL", "MSFT", "MSFT", "BTCUSD", "BTCUSD"]
    for frame in frames:
        assert "event_id" not in frame
        assert "id" not in frame
        assert next(iter(frame)) == "type"
        assert fraction_digits(frame["timestamp"]) == 9
        body = frame.get("quote") or frame["bar"]
        for field in ("bid", "ask", "last", "bid_size", "ask_size", "open", "high", "low", "close"):
            if field in body:
                assert isinstance(body[field], str), body
                assert DECIMAL.match(body[field]), body
        if frame["type"] == "candle":
            assert body["timeframe"] == "1m"
            assert fraction_digits(body["timestamp"]) == 0
            assert 1000 <= int(body["volume"]) <= 9999
    widths = {fraction_digits(f["quote"]["timestamp"]) for f in frames if f["type"] == "quote"}
    assert widths == {0, 3, 6, 9}
    assert sim.record.market_frames == 48


async def test_documentation_style_live_frames_carry_ids() -> None:
    async with Simulator(live(count=4, id_field="id")) as sim, connect(sim.docs_url) as ws:
        frames = await recv_n(ws, 4)
    assert [f["id"] for f in frames] == ["evt-1", "evt-2", "evt-3", "evt-4"]
    assert all("event_id" not in f for f in frames)


async def test_mock_pacing_sends_a_quote_and_a_candle_per_symbol_per_tick() -> None:
    # rate=0 is the real mock feed: its first tick goes out at once, the next 2 s later.
    async with Simulator(live(rate=0.0, count=6)) as sim, connect(sim.url) as ws:
        frames = await recv_n(ws, 6)
        async with asyncio.timeout(LIMIT):
            assert await sim.wait_finished() == "sent"
    assert [f["type"] for f in frames] == ["quote", "candle"] * 3


async def test_paced_rate_delivers_the_count() -> None:
    config = live(rate=2000.0, backpressure=False, count=30)
    async with Simulator(config) as sim, connect(sim.url) as ws:
        await recv_n(ws, 30)
        async with asyncio.timeout(LIMIT):
            assert await sim.wait_finished() == "sent"
    assert sim.record.total_dropped() == 0


async def test_burst_with_backpressure_loses_nothing() -> None:
    async with Simulator(live(count=3000, queue_size=16)) as sim, connect(sim.url) as ws:
        frames = await recv_n(ws, 3000)
        async with asyncio.timeout(LIMIT):
            assert await sim.wait_finished() == "sent"
    assert len(frames) == 3000
    assert sim.record.total_dropped() == 0


async def test_a_client_that_stops_reading_loses_frames() -> None:
    config = live(backpressure=False, queue_size=8, record_frames=False)
    async with Simulator(config) as sim:
        # A tiny receive buffer and max_queue=1: the client stops reading almost at once, the
        # socket fills, the server's writer blocks and the client's queue overflows.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", sim.port))
        async with connect(sim.url, sock=sock, max_queue=1, close_timeout=0.2):
            await wait(sim, lambda: sim.record.total_dropped() > 0)
            assert set(sim.record.dropped) == {1}
            # The feed itself never waited for the slow client.
            await wait(sim, lambda: sim.record.market_frames > sim.record.dropped[1] + 100)


async def test_json_pings_when_configured() -> None:
    config = live(rate=0.0, json_ping_interval=0.01, count=0)
    async with Simulator(config) as sim, connect(sim.url) as ws:
        frame = await recv(ws)
        assert set(frame) == {"type", "timestamp"}
        assert frame["type"] == "ping"
        await ws.send('{"type":"pong"}')
        await wait(sim, lambda: sim.record.json_pongs == 1)


async def test_no_json_pings_by_default() -> None:
    async with Simulator(live(count=20)) as sim, connect(sim.url) as ws:
        await recv_n(ws, 20)
        async with asyncio.timeout(LIMIT):
            await sim.wait_finished()
    assert sim.record.frames_of_type("ping") == []
    assert sim.config.json_ping_interval == 0


async def test_broker_outage_sequence() -> None:
    config = live(rate=1000.0, backpressure=False, symbols=("AAPL", "MSFT"))
    async with Simulator(config) as sim, connect(sim.url, max_queue=None) as ws:
        record = sim.record
        await wait(sim, lambda: record.market_frames >= 4)
        assert sim.broker_disconnect(["AAPL"]) == ["AAPL"]
        down = record.sent_count
        await wait(sim, lambda: record.market_frames >= 12)
        gap = sim.broker_reconnect()
        assert isinstance(gap, int)
        assert gap >= 0
        up = record.sent_count
        await wait(sim, lambda: any(f.symbol == "AAPL" for f in record.sent[up:]))

        disconnected, stale = record.sent[down - 2 : down]
        assert (disconnected.type, stale.type) == ("connection", "data_staleness")
        assert orjson.loads(stale.text or "")["symbols"] == ["AAPL"]
        assert orjson.loads(stale.text or "")["event"] == "STALE"
        during = record.sent[down : up - 1]
        assert during
        assert all(f.symbol == "MSFT" for f in during)
        reconnected = orjson.loads(record.sent[up - 1].text or "")
        assert reconnected["event"] == "BROKER_RECONNECTED"
        assert reconnected["gap_duration_ms"] == gap
        first_aapl = next(i for i, f in enumerate(record.sent) if i >= up and f.symbol == "AAPL")
        fresh = orjson.loads(record.sent[first_aapl - 1].text or "")
        assert (fresh["type"], fresh["event"], fresh["symbols"]) == (
            "data_staleness",
            "FRESH",
            ["AAPL"],
        )
        assert all(f.event_id is None for f in record.sent)

        # The client saw the same sequence.
        seen: list[dict[str, Any]] = []
        while len(seen) < first_aapl:
            seen.append(await recv(ws))
        events = [f.get("event") for f in seen if f["type"] in ("connection", "data_staleness")]
        assert events == ["BROKER_DISCONNECTED", "STALE", "BROKER_RECONNECTED", "FRESH"]


async def test_connection_failed_and_other_server_frames() -> None:
    async with Simulator(live(count=0)) as sim, connect(sim.url) as ws:
        await wait(sim, lambda: sim.client_count == 1)
        sim.broker_connection_failed()
        sim.rate_limit()
        sim.send_error()
        failed, warning, error = await recv_n(ws, 3)
    assert failed["event"] == "BROKER_CONNECTION_FAILED"
    assert "error" in failed
    assert warning["event"] == "RATE_LIMIT_WARNING"
    assert isinstance(warning["requests_remaining"], int)
    assert error["code"] == "POSITION_UNPROTECTED"
    assert error["message"]
    for frame in (failed, warning, error):
        assert "event_id" not in frame
        assert "id" not in frame


async def test_malformed_frames_in_live() -> None:
    async with Simulator(live(count=10, malformed_every=2)) as sim, connect(sim.url) as ws:
        messages = []
        for _ in range(15):
            async with asyncio.timeout(LIMIT):
                messages.append(await ws.recv())
    binary = [m for m in messages if isinstance(m, bytes)]
    assert len(binary) == 1
    texts = [m for m in messages if isinstance(m, str)]
    broken = 0
    for text in texts:
        try:
            orjson.loads(text)
        except orjson.JSONDecodeError:
            broken += 1
    assert broken == 1
    assert sim.record.market_frames == 10
