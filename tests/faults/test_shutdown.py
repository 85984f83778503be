"""Graceful shutdown of the real process: drain, final acks, close 1000, exit 0; a second
signal cuts the drain short but still releases the lease (exit 1)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
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


async def test_a_second_signal_cuts_the_drain_short_but_releases_the_lease(
    redis_server: RedisServer,
) -> None:
    """A drain that would wait 600 s (a step held for a consumer group nobody runs): the second
    signal ends it, and the lease is still released, so the next connector starts at once."""
    config = SimConfig(mode="backtest", symbols=("AAPL",), steps=50, step_timeout=120.0)
    env = service_env(
        "",
        redis_server.url,
        CONNECTOR_MODE="backtest",
        CONNECTOR_ACK_MODE="consumer",
        CONNECTOR_CONSUMER_GROUPS="nobody",
        CONNECTOR_SHUTDOWN_TIMEOUT="600",
    )
    redis = Redis.from_url(redis_server.url)
    try:
        async with Simulator(config) as sim:
            env["CONNECTOR_API_URL"] = sim.url
            async with service(env) as proc:
                await sim.record.wait_until(lambda: len(sim.record.sent) >= 1)
                assert await redis.exists("md:lease")
                proc.send_signal(signal.SIGTERM)
                await wait_for_log(proc, "stopping")
                proc.send_signal(signal.SIGTERM)
                # Far below the 600 s drain deadline: the second signal did not wait for it.
                assert await asyncio.wait_for(proc.wait(), 30) == 1
                messages = [line["msg"] for line in await log_lines(proc)]
        assert "second signal: stopping without draining" in messages
        assert "drain cut short" in messages
        assert messages[-1] == "stopped"
        assert await redis.exists("md:lease") == 0  # released, not left to expire
    finally:
        await redis.aclose()


async def test_a_second_signal_with_redis_gone_still_exits(redis_server: RedisServer) -> None:
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
            assert await asyncio.wait_for(proc.wait(), 30) == 1
            messages = [line["msg"] for line in await log_lines(proc)]
    assert "drain cut short" in messages
    assert messages[-1] == "stopped"


def _start_with_an_early_signal(sig: signal.Signals, *args: str) -> list[str]:
    """``connector ARGS`` as the entry point starts it, with ``sig`` arriving while the program
    is still importing (before any command has installed handlers of its own)."""
    script = (
        "import signal, sys\n"
        "from connector import launch\n"
        "launch.record_early_signals()\n"
        f"signal.raise_signal(signal.{sig.name})\n"
        "from connector.cli import main\n"
        f"sys.exit(main({list(args)!r}))\n"
    )
    return [sys.executable, "-c", script]


async def test_a_stop_signal_while_starting_is_not_lost(redis_server: RedisServer) -> None:
    """In a container the stop may come while Python still imports (as PID 1 a signal without
    a handler would be ignored): it is kept, and the service stops cleanly at once."""
    env = service_env("ws://127.0.0.1:9/v1/ws", redis_server.url)
    process = await asyncio.create_subprocess_exec(
        *_start_with_an_early_signal(signal.SIGTERM, "run"),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
    messages = [line["msg"] for line in await log_lines(process)]
    assert messages == ["stopping", "stopped before starting"], messages  # no session, no lease
    assert not await Redis.from_url(redis_server.url).exists("md:lease")


async def test_other_commands_get_an_early_signal_delivered_as_usual() -> None:
    """Only `run` handles stop signals itself; the rest behave as any Python program."""
    terminated = await asyncio.create_subprocess_exec(
        *_start_with_an_early_signal(signal.SIGTERM, "simulate", "--port", "0"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(terminated.wait(), 30) == -signal.SIGTERM
    interrupted = await asyncio.create_subprocess_exec(
        *_start_with_an_early_signal(signal.SIGINT, "simulate", "--port", "0"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(interrupted.wait(), 30) == -signal.SIGINT
