"""The ops endpoint serves exactly /metrics, /healthz and /readyz."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from connector.http import OpsServer, Readiness


class State:
    ready = False


@pytest.fixture
async def server() -> AsyncIterator[tuple[OpsServer, State]]:
    registry = CollectorRegistry()
    Counter("connector_demo", "demo counter", registry=registry).inc(3)
    state = State()

    async def readiness() -> Readiness:
        checks = {"trading_api": state.ready, "redis": True}
        return Readiness(state.ready, checks, {} if state.ready else {"trading_api": "down"})

    ops = OpsServer("127.0.0.1", 0, registry, readiness)
    await ops.start()
    yield ops, state
    await ops.stop()


async def request(port: int, raw: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


async def test_metrics_healthz_readyz(server: tuple[OpsServer, State]) -> None:
    ops, state = server
    status, body = await request(ops.port, get("/metrics"))
    assert status == 200
    assert b"connector_demo_total 3.0" in body
    assert await request(ops.port, get("/healthz")) == (200, b'{"status":"ok"}\n')
    status, body = await request(ops.port, get("/readyz"))
    assert status == 503
    assert b'"trading_api":false' in body
    state.ready = True
    status, _ = await request(ops.port, get("/readyz?verbose=1"))
    assert status == 200


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (get("/"), 404),
        (get("/admin"), 404),
        (get("/metrics/../etc/passwd"), 404),
        (get("/metrics", "POST"), 405),
        (get("/healthz", "DELETE"), 405),
        (b"garbage\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 10000 + b"\r\n\r\n", 400),
    ],
)
async def test_everything_else_is_refused(
    server: tuple[OpsServer, State], raw: bytes, status: int
) -> None:
    ops, _ = server
    assert (await request(ops.port, raw))[0] == status


async def test_head_has_no_body(server: tuple[OpsServer, State]) -> None:
    ops, _ = server
    status, body = await request(ops.port, get("/healthz", "HEAD"))
    assert (status, body) == (200, b"")


async def test_slow_clients_cannot_keep_the_probes_out(
    server: tuple[OpsServer, State], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood of connections that never finish their request (slowloris) stays within the
    cap, and each new request takes the place of the oldest of them: /healthz is answered."""
    ops, _ = server
    monkeypatch.setattr("connector.http.MAX_CONNECTIONS", 3)
    idle = [await asyncio.open_connection("127.0.0.1", ops.port) for _ in range(6)]
    try:
        for _, writer in idle:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never the blank line
        while ops._serving < 3:  # noqa: ASYNC110 - the server's own count: polled
            await asyncio.sleep(0.01)
        for _ in range(5):
            assert await request(ops.port, get("/healthz")) == (200, b'{"status":"ok"}\n')
        assert ops._serving <= 3
        dropped = 0
        for reader, _ in idle:  # the oldest were dropped (reset) to make room
            try:
                dropped += await reader.read() == b""
            except ConnectionResetError:
                dropped += 1
        assert dropped >= 4  # three to let the later idle ones in, one for the first probe
    finally:
        for _, writer in idle:
            writer.close()


async def test_beyond_the_cap_of_requests_being_answered_a_503_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When every slot is answering (here: a readiness check that waits), a new connection gets
    503 straight away; once they are answered, requests are served again."""
    monkeypatch.setattr("connector.http.MAX_CONNECTIONS", 2)
    release = asyncio.Event()

    async def readiness() -> Readiness:
        await release.wait()
        return Readiness(True, {}, {})

    ops = OpsServer("127.0.0.1", 0, CollectorRegistry(), readiness)
    await ops.start()
    try:
        waiting = [asyncio.create_task(request(ops.port, get("/readyz"))) for _ in range(2)]
        while ops._serving < 2 or ops._heads:  # noqa: ASYNC110 - the server's own state
            await asyncio.sleep(0.01)
        assert await request(ops.port, get("/healthz")) == (503, b"busy\n")
        release.set()
        assert [status for status, _ in await asyncio.gather(*waiting)] == [200, 200]
        assert (await request(ops.port, get("/healthz")))[0] == 200
    finally:
        await ops.stop()


async def test_a_client_that_never_reads_cannot_hold_its_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A large /metrics to a client that reads nothing fills the socket buffers: writing gives
    up after the request deadline and the connection is dropped."""
    monkeypatch.setattr("connector.http.REQUEST_TIMEOUT", 0.3)
    registry = CollectorRegistry()
    series = Counter("connector_wide", "many series", ["n"], registry=registry)
    for n in range(30_000):
        series.labels(str(n)).inc()

    async def readiness() -> Readiness:
        return Readiness(True, {}, {})

    ops = OpsServer("127.0.0.1", 0, registry, readiness)
    await ops.start()
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", ops.port, limit=1024)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        writer.write(get("/metrics"))
        await writer.drain()
        async with asyncio.timeout(10):
            while ops._serving:  # noqa: ASYNC110 - the server's own count: polled
                await asyncio.sleep(0.02)
        writer.close()
    finally:
        await ops.stop()


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /healthz HTTP/1.9\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n",
    ],
)
async def test_requests_a_proxy_could_read_differently_are_refused(
    server: tuple[OpsServer, State], raw: bytes
) -> None:
    ops, _ = server
    assert (await request(ops.port, raw))[0] == 400


async def test_a_plain_http_1_0_request_is_served(server: tuple[OpsServer, State]) -> None:
    ops, _ = server
    assert (await request(ops.port, b"GET /healthz HTTP/1.0\r\n\r\n"))[0] == 200
    zero = b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    assert (await request(ops.port, zero))[0] == 200
