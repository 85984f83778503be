"""Graceful shutdown of the real process: drain, final acks, close 1000, exit 0; twice = now."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from connector.sim import SimConfig, Simulator
from tests.support.harness import stream_entries
from tests.support.processes import connector_process, log_lines, service_env, wait_for_log
from tests.support.redis_server import RedisServer


@contextlib.asynccontextmanager
async def service(env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    async with connector_process("run", env=env) as process:
        yield process


async def test_sigterm_mid_backtest_drains_acks_and_closes_with_1000(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    config = SimConfig(mode="backtest", symbols=("AAPL", "MSFT", "BTCUSD"), steps=100_000)
    async with Simulator(config) as sim:
        async with service(
            service_env(sim.url, redis_server.url, CONNECTOR_MODE="backtest")
        ) as proc:
            await sim.record.wait_until(lambda: len(sim.record.steps) >= 50)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
            logs = await log_lines(proc)
        await sim.record.wait_until(lambda: sim.record.connections[0].disconnected_at is not None)
    assert sim.record.connections[0].close_code == 1000
    assert logs[-1]["msg"] == "stopped"
    assert logs[-1]["reason"] == "signal SIGTERM"
    stored: set[str] = set()
    for symbol in config.symbols:
        stored |= {
            e["event_id"] for e in await stream_entries(redis_client, f"md:{{{symbol}}}:candle:1m")
        }
    for kind in ("order", "trade", "position", "account"):
        stored |= {e["event_id"] for e in await stream_entries(redis_client, f"md:{kind}")}
    # Everything read was stored and acknowledged before the close; nothing acked unstored.
    assert stored == sim.record.acked_ids()
    markers = [m["type"] for m in await stream_entries(redis_client, "md:system")]
    assert markers[-1] == "stopped"


async def test_sigint_is_the_same_as_sigterm(redis_server: RedisServer) -> None:
    config = SimConfig(mode="live", symbols=("AAPL",), rate=100.0)
    async with Simulator(config) as sim, service(service_env(sim.url, redis_server.url)) as proc:
        await wait_for_log(proc, "connected to the Trading API")
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        await sim.record.wait_until(lambda: sim.record.connections[0].disconnected_at is not None)
    assert sim.record.connections[0].close_code == 1000


async def test_shutdown_deadline_bounds_a_drain_that_cannot_finish(
    redis_server: RedisServer,
) -> None:
    config = SimConfig(mode="live", symbols=("AAPL",), rate=200.0)
    env = service_env("", redis_server.url, CONNECTOR_SHUTDOWN_TIMEOUT="1")
    async with Simulator(config) as sim:
        env["CONNECTOR_API_URL"] = sim.url
        async with service(env) as proc:
            await wait_for_log(proc, "connected to the Trading API")
            redis_server.stop()  # the buffer can no longer be stored
            await wait_for_log(proc, "Redis write failed; holding events and retrying")
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
            messages = [line["msg"] for line in await log_lines(proc)]
    assert "shutdown deadline: events not stored" in messages
    assert messages[-1] == "stopped"


async def test_a_second_signal_exits_at_once(redis_server: RedisServer) -> None:
    config = SimConfig(mode="live", symbols=("AAPL",), rate=200.0)
    env = service_env("", redis_server.url, CONNECTOR_SHUTDOWN_TIMEOUT="600")
    async with Simulator(config) as sim:
        env["CONNECTOR_API_URL"] = sim.url
        async with service(env) as proc:
            await wait_for_log(proc, "connected to the Trading API")
            redis_server.stop()
            await wait_for_log(proc, "Redis write failed; holding events and retrying")
            proc.send_signal(signal.SIGTERM)
            await wait_for_log(proc, "stopping")
            proc.send_signal(signal.SIGTERM)
            # Far below the 600 s drain deadline: the second signal did not wait for it.
            assert await asyncio.wait_for(proc.wait(), 30) == 1
            messages = [line["msg"] for line in await log_lines(proc)]
    assert messages[-1] == "second signal: exiting at once"
