"""WebSocket faults against real processes: the server vanishes, goes silent, or refuses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from connector.config import load_settings
from connector.metrics import Metrics
from connector.sim import SimConfig, Simulator
from connector.trading.session import Backoff, ConnectFailed, Session
from tests.support.harness import connector_settings, run_connector, stream_entries, wait_until
from tests.support.processes import clean_env, connector_process
from tests.support.redis_server import RedisServer, free_port


@contextlib.asynccontextmanager
async def simulator_process(port: int, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``connector simulate`` as its own process on ``port`` (killed, not stopped, at the end)."""
    async with connector_process("simulate", "--port", str(port), *args, env=clean_env()) as sim:
        assert sim.stderr is not None
        first = await sim.stderr.readline()  # printed once it listens
        assert re.search(rb"ws://\S+/v1/ws", first), first
        yield sim


async def test_vanished_server_is_detected_logged_once_and_reconnected(
    redis_server: RedisServer, redis_client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    live = ("--mode", "live", "--symbols", "AAPL", "--rate", "200")
    caplog.set_level(logging.WARNING, logger="connector.trading.session")
    async with (
        simulator_process(port, *live) as first,
        run_connector(f"ws://127.0.0.1:{port}/v1/ws", redis_server.url) as app,
    ):
        await wait_until(lambda: app.sample("connector_published_total", type="quote") > 5)
        first.kill()  # no closing handshake, no DISCONNECTING: the process is just gone
        await first.wait()
        await wait_until(
            lambda: app.sample("connector_connect_failures_total", reason="refused") >= 3
        )
        assert app.sample("connector_connected") == 0
        async with simulator_process(port, *live):
            await wait_until(lambda: app.sample("connector_reconnects_total") == 1)
            await wait_until(lambda: app.sample("connector_connected") == 1)
    warnings = [r for r in caplog.records if r.getMessage().startswith("cannot connect")]
    assert len(warnings) == 1  # one incident, one line (the repeats are debug)
    markers = await stream_entries(redis_client, "md:system")
    kinds = [m["type"] for m in markers]
    assert kinds.index("disconnected") < kinds.index("reconnected")
    gap = next(m for m in markers if m["type"] == "reconnected")
    assert int(gap["gap_end"]) >= int(gap["gap_start"])
    assert int(gap["gap_ms"]) >= 0


async def test_silent_peer_is_dropped_after_the_configured_misses(
    redis_server: RedisServer,
) -> None:
    config = SimConfig(mode="live", symbols=("AAPL",), rate=50.0, answer_pings=False)
    async with (
        Simulator(config) as sim,
        run_connector(
            sim, redis_server.url, ping_interval=0.05, ping_timeout=0.05, max_missed_pongs=1
        ) as app,
    ):
        await sim.record.wait_until(lambda: len(sim.record.connections) >= 3)
        await wait_until(lambda: app.sample("connector_reconnects_total") >= 2)
        assert app.sample("connector_missed_pongs_total") >= 2
        # Every drop was one miss (max_missed_pongs=1), and the TCP connection was aborted.
        closed = [c for c in sim.record.connections if c.disconnected_at is not None]
        assert closed
        assert all(c.close_code in (None, 1006) for c in closed)


async def test_refused_upgrade_is_counted_and_retried_with_backoff(
    redis_server: RedisServer,
) -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with run_connector(f"ws://127.0.0.1:{port}/v1/ws", redis_server.url) as app:
            await wait_until(
                lambda: app.sample("connector_connect_failures_total", reason="protocol") >= 3
            )
            assert app.sample("connector_connected") == 0
            assert not app.connector.readiness_now().ready
    finally:
        server.close()


def test_backoff_is_capped_exponential_with_full_jitter_and_resets() -> None:
    top = Backoff(0.1, 2.0, rng=lambda: 1.0)
    assert [round(top.next(), 3) for _ in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    bottom = Backoff(0.1, 2.0, rng=lambda: 0.0)
    assert bottom.next() == 0.0  # full jitter reaches down to zero
    top.reset()
    assert top.next() == 0.1


def test_refused_credentials_wait_the_maximum_backoff() -> None:
    settings = load_settings(
        connector_settings("ws://127.0.0.1:1/v1/ws", "redis://127.0.0.1:1", reconnect_max_delay=17)
    )

    class Handler:
        def on_frame(self, frame: str | bytes, received: float) -> bytes | None:
            return None

        async def on_connected(self, gap_started: float | None) -> None:
            return None

        def on_disconnected(self, reason: str) -> None:
            return None

    session = Session(settings, Metrics(), Handler(), rng=lambda: 0.5)
    assert session._connect_failed(ConnectFailed("auth", "HTTP 401", 401)) == 17
    assert session._connect_failed(ConnectFailed("auth", "HTTP 401", 401)) == 17
    assert session._connect_failed(ConnectFailed("refused", "refused")) < 17


async def test_a_missing_key_file_is_retried_not_fatal(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("right-key")
    config = SimConfig(mode="live", symbols=("AAPL",), rate=50.0, api_key="right-key")
    async with (
        Simulator(config) as sim,
        run_connector(
            sim, redis_server.url, api_key_file=key_file, reconnect_max_delay=0.05
        ) as app,
    ):
        await wait_until(lambda: app.connector.session.connected)
        key_file.unlink()  # a rotation in progress: the file is gone for a moment
        sim.drop_clients()
        await wait_until(lambda: app.sample("connector_connect_failures_total", reason="auth") >= 1)
        assert not app.task.done()  # the service lives on
        key_file.write_text("right-key")
        await wait_until(lambda: app.sample("connector_reconnects_total") >= 1)
        await wait_until(lambda: app.connector.session.connected)
