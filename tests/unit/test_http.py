"""The ops endpoint serves exactly /metrics, /healthz and /readyz."""

from __future__ import annotations

import asyncio
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
