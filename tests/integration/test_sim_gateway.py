"""The real gateway's habits, reproduced on demand: long decimals, emission-time live candles,
one write per relayed frame, lost close frames."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame
from websockets.uri import parse_uri

from connector.sim import SimConfig, Simulator

LIMIT = 5.0


def sim_config(**changes: Any) -> SimConfig:
    base: dict[str, Any] = {
        "fill_every": 0,
        "other_every": 0,
        "shutdown_grace": 0.01,
        "close_timeout": 0.5,
    }
    base.update(changes)
    return SimConfig(**base)


async def recv(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(LIMIT):
        frame = orjson.loads(await ws.recv())
    assert isinstance(frame, dict)
    return frame


def ack(ids: list[str]) -> str:
    frame = {
        "type": "event_ack",
        "correlation_id": str(uuid.uuid4()),
        "events_processed": ids,
        "timestamp": int(time.time() * 1000),
    }
    return orjson.dumps(frame).decode()


def fraction(text: str) -> str:
    return text.partition(".")[2]


async def test_full_scale_decimals_like_the_gateways_mock() -> None:
    config = sim_config(steps=6, symbols=("AAPL",), decimal_scale="full", backtest_quotes=True)
    async with Simulator(config) as sim, connect(sim.url) as ws:
        frames = []
        for _ in range(6):
            step = [await recv(ws), await recv(ws)]
            frames += step
            await ws.send(ack([f["event_id"] for f in step]))
    closes = [f["bar"]["close"] for f in frames if f["type"] == "candle"]
    assert max(len(fraction(close)) for close in closes) >= 20  # the walk is never rounded
    assert all(len(close.replace(".", "")) <= 29 for close in closes)  # a 96-bit decimal
    quote = next(f["quote"] for f in frames if f["type"] == "quote")
    assert len(fraction(quote["bid"])) > 8
    assert frames[0]["bar"]["volume"].isdigit()  # volumes stay whole numbers


async def test_live_candles_can_carry_their_emission_instant() -> None:
    config = sim_config(mode="live", rate=200.0, symbols=("AAPL",), live_bar_time="emission")
    async with Simulator(config) as sim, connect(sim.url) as ws:
        candle = await recv(ws)
        while candle["type"] != "candle":
            candle = await recv(ws)
    stamp = candle["bar"]["timestamp"]
    assert len(fraction(stamp)) == 10  # nine digits and the Z
    assert not stamp.endswith(":00Z")


async def test_live_candles_are_minute_aligned_by_default() -> None:
    async with Simulator(sim_config(mode="live", rate=200.0)) as sim, connect(sim.url) as ws:
        candle = await recv(ws)
        while candle["type"] != "candle":
            candle = await recv(ws)
    assert candle["bar"]["timestamp"].endswith(":00Z")


async def read_frames_per_read(port: int, path: str, frames_wanted: int) -> list[int]:
    """Frames decoded from each socket read of a raw WebSocket client, until enough came."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}{path}"))
    protocol.send_request(protocol.connect())
    writer.write(b"".join(protocol.data_to_send()))
    per_read: list[int] = []
    try:
        while sum(per_read) < frames_wanted:
            async with asyncio.timeout(LIMIT):
                data = await reader.read(65536)
            assert data, "the server closed the connection"
            protocol.receive_data(data)
            frames = [e for e in protocol.events_received() if isinstance(e, Frame)]
            if frames:
                per_read.append(len(frames))
    finally:
        writer.close()
        await writer.wait_closed()
    return per_read


async def test_the_gateway_relay_sends_each_frame_on_its_own() -> None:
    # A gap far longer than a loopback read, so one read cannot hold two frames.
    config = sim_config(steps=1, symbols=("AAPL", "MSFT", "BTCUSD"), relay_gap=0.3)
    async with Simulator(config) as sim:
        assert await read_frames_per_read(sim.port, "/v1/ws", 3) == [1, 1, 1]


@pytest.mark.parametrize(("loss", "code"), [(0.0, 1001), (1.0, 1006)])
async def test_a_shutdown_may_lose_its_close_frame(loss: float, code: int) -> None:
    sim = Simulator(sim_config(min_clients=2, close_frame_loss=loss))
    await sim.start()
    async with connect(sim.url) as ws:
        await sim.wait_for(lambda: sim.client_count == 1)
        stopping = asyncio.create_task(sim.stop())
        assert (await recv(ws))["event"] == "DISCONNECTING"
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        await stopping
    assert ws.close_code == code
    if code == 1001:
        assert ws.close_reason == "Gateway shutting down"


async def test_close_frame_loss_is_a_probability_per_client() -> None:
    sim = Simulator(sim_config(min_clients=9, close_frame_loss=0.5, seed=4))
    await sim.start()
    clients = [await connect(sim.url) for _ in range(8)]
    await sim.wait_for(lambda: sim.client_count == 8)
    await sim.stop()
    for ws in clients:
        await ws.wait_closed()
    codes = sorted(ws.close_code or 0 for ws in clients)
    assert set(codes) == {1001, 1006}  # some closed cleanly, some just dropped
