"""The simulator's HTTP front: one port for REST and WebSocket, bounded in size and time."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from connector.sim import SimConfig, Simulator, front
from tests.integration.sim_http import LIMIT, encode, read_reply, request


def idle(**changes: Any) -> SimConfig:
    base: dict[str, Any] = {"min_clients": 2, "shutdown_grace": 0.01, "close_timeout": 0.5}
    base.update(changes)
    return SimConfig(**base)


async def raw(port: int, data: bytes) -> bytes:
    """Send ``data`` and read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    async with asyncio.timeout(LIMIT):
        answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def test_keep_alive_and_pipelined_requests_on_one_connection() -> None:
    async with Simulator(idle()) as sim:
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        writer.write(
            encode("GET", "/livez", close=False) + encode("GET", "/v1/account", close=False)
        )
        first, second = await read_reply(reader), await read_reply(reader)
        assert (first.status, first.headers["connection"]) == (200, "keep-alive")
        assert second.json()["balance"] == "100000.00"
        writer.write(encode("POST", "/v1/orders", json={"symbol": "AAPL"}, close=False))
        assert (await read_reply(reader)).status == 400
        writer.write(encode("GET", "/livez"))  # Connection: close
        last = await read_reply(reader)
        assert last.headers["connection"] == "close"
        async with asyncio.timeout(LIMIT):
            assert await reader.read() == b""  # closed by the server
        writer.close()
        await writer.wait_closed()
    assert sim.record.http_requests == 4


async def test_websocket_and_rest_share_the_port() -> None:
    async with Simulator(idle()) as sim, connect(sim.url) as ws:
        assert (await request(sim.port, "GET", "/livez")).status == 200
        sim.send_json_ping()
        async with asyncio.timeout(LIMIT):
            assert orjson.loads(await ws.recv())["type"] == "ping"
        # A plain GET of the stream path is not an upgrade.
        assert (await request(sim.port, "GET", "/v1/ws")).status == 426


async def test_expect_100_continue() -> None:
    async with Simulator(idle()) as sim:
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        body = orjson.dumps(
            {"symbol": "AAPL", "side": "BUY", "quantity": "1", "order_type": "MARKET"}
        )
        head = encode(
            "POST",
            "/v1/orders",
            body=body,
            headers={"Content-Type": "application/json", "Expect": "100-continue"},
        )
        writer.write(head[: -len(body)])
        async with asyncio.timeout(LIMIT):
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        assert (await read_reply(reader)).status == 201
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /livez HTTP/2.0\r\n\r\n", 400),
        (b"GET http://elsewhere/ HTTP/1.1\r\n\r\n", 400),
        (b"GET /livez HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /livez HTTP/1.1\r\nX-Big: " + b"a" * (front.MAX_HEAD + 10) + b"\r\n\r\n", 431),
        (b"GET /livez HTTP/1.1\r\n" + b"X-A: 1\r\n" * (front.MAX_HEADERS + 1) + b"\r\n", 431),
        (b"POST /v1/orders HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"POST /v1/orders HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n", 400),
        (b"POST /v1/orders HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
    ],
)
async def test_malformed_or_oversized_requests_are_refused_and_closed(
    data: bytes, status: int
) -> None:
    async with Simulator(idle()) as sim:
        answer = await raw(sim.port, data)
        assert status_of(answer) == status
        assert b"Connection: close" in answer
        assert (await request(sim.port, "GET", "/livez")).status == 200  # still serving


async def test_a_head_without_end_is_cut_at_the_limit() -> None:
    async with Simulator(idle()) as sim:
        answer = await raw(sim.port, b"GET /livez HTTP/1.1\r\nX: " + b"a" * (front.MAX_HEAD + 1))
        assert status_of(answer) == 431


async def test_slow_and_idle_clients_time_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(front, "REQUEST_TIMEOUT", 0.05)
    monkeypatch.setattr(front, "IDLE_TIMEOUT", 0.05)
    async with Simulator(idle()) as sim:
        # Half a request: 408, then the connection is closed.
        assert status_of(await raw(sim.port, b"GET /livez HTTP/1.1\r\n")) == 408
        # An idle keep-alive connection is closed without an answer.
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        writer.write(encode("GET", "/livez", close=False))
        assert (await read_reply(reader)).status == 200
        async with asyncio.timeout(LIMIT):
            assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()


async def test_stopping_closes_idle_http_connections() -> None:
    sim = Simulator(idle())
    await sim.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    writer.write(encode("GET", "/livez", close=False))
    assert (await read_reply(reader)).status == 200
    await sim.stop()
    async with asyncio.timeout(LIMIT):
        assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()


async def test_a_handler_bug_is_a_500_not_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    async with Simulator(idle()) as sim:

        def broken(query: object, *, history: bool = False) -> object:
            raise RuntimeError("bug")

        monkeypatch.setattr(sim.desk, "orders", broken)
        reply = await request(sim.port, "GET", "/v1/orders")
        assert reply.status == 500
        assert reply.json()["code"] == "INTERNAL_ERROR"
