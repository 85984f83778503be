"""Consumer-ack backtests gated by the downstream services users really run.

A FastStream service, a plain redis-py loop and a redis-cli loop in a shell: none of them knows
anything of the connector (no notification), each reads only some of the streams, and each is
declared with what it reads. For each: no step is acknowledged to the engine before every reading
group confirmed (XACKed, as Redis itself saw it) every entry of it, the engine never times out,
the run completes and the connector exits 0 by itself. The recipes run here are the ones in
docs/recipes/.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest
from redis.asyncio import Redis

from connector.consumer.group import GroupConsumer, Message
from connector.sim import SimConfig, Simulator
from tests.support.harness import run_connector
from tests.support.monitor import XackLog, first_ack_wall, stored_entries, xacks
from tests.support.redis_server import RedisServer

RECIPES = Path(__file__).resolve().parents[2] / "docs" / "recipes"
SYMBOLS = ("AAPL", "MSFT", "BTCUSD")


def recipe(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def backtest(steps: int, **overrides: object) -> SimConfig:
    # Fills (order, trade, position, account) every 7th step and financing every 11th: streams
    # that a candle-only group does not read, and whose entries must not wait for it.
    return SimConfig(mode="backtest", symbols=SYMBOLS, steps=steps, seed=3, **overrides)  # type: ignore[arg-type]


async def assert_gated_by(
    sim: Simulator, redis: Redis, log: XackLog, group: str, reads: set[str]
) -> None:
    """Every engine event on a stream of type in ``reads`` was XACKed by ``group`` before the
    engine received its ack; events on other streams were acked without it."""
    record = sim.record
    assert record.outcome == "completed"
    assert record.timeouts == 0
    assert set(record.event_ids()) == record.acked_ids()
    stored = await stored_entries(redis)
    acked_at = first_ack_wall(sim)
    waited = 0
    for frame in record.sent:
        if frame.event_id is None or frame.type == "backtest_complete":
            continue
        stream, entry_id = stored[frame.event_id]
        confirmed = log.times.get((stream, group, entry_id))
        if frame.type in reads:
            assert confirmed is not None, (frame.event_id, stream)
            assert confirmed < acked_at[frame.event_id], (frame.event_id, stream)
            waited += 1
        else:
            assert confirmed is None, (frame.event_id, stream)  # not a stream it reads
    assert waited > 0
    # Groups exist only where the group reads.
    for stream in {stream for stream, _ in stored.values()}:
        names = {row["name"].decode() for row in await redis.xinfo_groups(stream)}
        kind = stream.rsplit(":", 2)[-2] if stream.count(":") > 2 else stream.split(":", 1)[1]
        assert (group in names) == (kind in reads), stream


@contextlib.asynccontextmanager
async def monitored(url: str) -> AsyncIterator[tuple[Redis, XackLog]]:
    redis = Redis.from_url(url)
    try:
        async with xacks(url) as log:
            yield redis, log
    finally:
        await redis.aclose()


async def test_a_faststream_service_reading_only_candles_gates_the_backtest(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    service = recipe("faststream_signals")
    handled: list[str] = []
    app = service.build(
        url, SYMBOLS, consumer="fs-1", on_candle=lambda c: handled.append(c["event_id"])
    )
    async with monitored(url) as (redis, log), app:
        async with (
            Simulator(backtest(60)) as sim,
            run_connector(
                sim,
                url,
                mode="backtest",
                ack_mode="consumer",
                consumer_groups="signals[types=candle]",
            ) as running,
        ):
            assert await running.exit_code() == 0
        await assert_gated_by(sim, redis, log, "signals", {"candle"})
    assert len(handled) == 60 * len(SYMBOLS)
    assert running.connector.outcome == "completed"
    gate = running.connector.consumer_gate
    assert gate is not None
    assert gate.notifications == 0  # FastStream only XACKs: every confirmation was checked
    assert gate.checked >= 60 * len(SYMBOLS)


async def test_a_plain_redis_py_consumer_gates_the_backtest(redis_server: RedisServer) -> None:
    url = redis_server.url
    consumer = recipe("redis_py_consumer")
    streams = [f"md:{{{symbol}}}:candle:1m" for symbol in SYMBOLS] + ["md:order", "md:trade"]
    stop = asyncio.Event()
    client = Redis.from_url(url)
    reading = asyncio.create_task(
        consumer.consume(client, "risk", "py-1", streams, lambda *entry: None, stop)
    )
    try:
        async with monitored(url) as (redis, log):
            async with (
                Simulator(backtest(50)) as sim,
                run_connector(
                    sim,
                    url,
                    mode="backtest",
                    ack_mode="consumer",
                    consumer_groups="risk[types=candle,order,trade]",
                ) as running,
            ):
                assert await running.exit_code() == 0
            await assert_gated_by(sim, redis, log, "risk", {"candle", "order", "trade"})
    finally:
        stop.set()
        handled = await asyncio.wait_for(reading, 10)
        await client.aclose()
    assert handled == 50 * len(SYMBOLS) + len(sim.record.frames_of_type("order")) * 2


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")
async def test_a_redis_cli_loop_in_a_shell_gates_the_backtest(redis_server: RedisServer) -> None:
    """Not Python at all: the consumer is bash and redis-cli (docs/recipes)."""
    url = redis_server.url
    streams = " ".join(f"md:{{{symbol}}}:candle:1m" for symbol in SYMBOLS[:2])
    shell = await asyncio.create_subprocess_exec(
        "bash",
        str(RECIPES / "redis-cli-consumer.sh"),
        env={**os.environ, "REDIS_URL": url, "GROUP": "shell", "STREAMS": streams},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    declared = "shell[types=candle; symbols=AAPL,MSFT]"
    try:
        async with monitored(url) as (redis, log):
            # The script creates its groups first (so the connector meets them, BUSYGROUP).
            while await redis.exists("md:{MSFT}:candle:1m") == 0:  # noqa: ASYNC110 - polled
                await asyncio.sleep(0.01)
            async with (
                Simulator(backtest(20)) as sim,
                run_connector(
                    sim, url, mode="backtest", ack_mode="consumer", consumer_groups=declared
                ) as running,
            ):
                assert await running.exit_code() == 0
            record = sim.record
            assert record.outcome == "completed"
            assert record.timeouts == 0
            stored = await stored_entries(redis)
            acked_at = first_ack_wall(sim)
            for frame in record.frames_of_type("candle"):
                assert frame.event_id is not None
                stream, entry_id = stored[frame.event_id]
                confirmed = log.times.get((stream, "shell", entry_id))
                if frame.symbol in ("AAPL", "MSFT"):
                    assert confirmed is not None
                    assert confirmed < acked_at[frame.event_id]
                else:
                    assert confirmed is None  # BTCUSD: not read, not waited for
    finally:
        shell.terminate()
        await shell.wait()


async def test_a_declared_group_that_crashes_mid_run_is_taken_over(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    crash = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "connector", "consume", "--group", "signals", "--types", "candle",
        "--name", "doomed", "--redis-url", url, "--crash-after", "40", "--log-level", "ERROR",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with (
            Simulator(backtest(60)) as sim,
            run_connector(
                sim,
                url,
                mode="backtest",
                ack_mode="consumer",
                consumer_groups="signals[types=candle]",
            ) as running,
        ):
            assert await asyncio.wait_for(crash.wait(), 30) == 3  # died mid-backtest
            assert sum(1 for step in sim.record.steps if step.completed_at) < 60
            rescuer = GroupConsumer(
                Redis.from_url(url), "signals", "rescuer", types=["candle"], claim_idle_ms=200
            )
            task = asyncio.create_task(rescuer.run(_ignore))
            try:
                assert await running.exit_code() == 0
            finally:
                rescuer.stop()
                await task
                await rescuer.redis.aclose()
            assert rescuer.stats.claimed > 0  # what the dead member held was taken over
        assert sim.record.outcome == "completed"
        assert set(sim.record.event_ids()) == sim.record.acked_ids()
    finally:
        if crash.returncode is None:
            crash.kill()
            await crash.wait()


async def test_a_declared_group_whose_streams_never_get_data_holds_nothing(
    redis_server: RedisServer,
) -> None:
    """`quotes` reads quotes, and a gateway backtest has none: the run must not wait for it."""
    url = redis_server.url
    redis = Redis.from_url(url)
    seen: list[str] = []
    consumer = GroupConsumer(Redis.from_url(url), "risk", "r1")
    task = asyncio.create_task(consumer.run(lambda batch: _note(seen, batch)))
    try:
        async with (
            Simulator(backtest(30)) as sim,
            run_connector(
                sim,
                url,
                mode="backtest",
                ack_mode="consumer",
                consumer_groups="risk, quotes[types=quote]",
            ) as running,
        ):
            assert await running.exit_code() == 0
        assert sim.record.timeouts == 0
        assert sim.record.outcome == "completed"
        # No stream it does not read got the group (and no quote stream was ever written).
        async for key in redis.scan_iter("md:*", _type="stream"):
            names = {row["name"] for row in await redis.xinfo_groups(key)}
            assert b"quotes" not in names or key == b"md:streams", key
    finally:
        consumer.stop()
        await task
        await consumer.redis.aclose()
        await redis.aclose()
    assert seen


async def test_the_toolkit_hands_each_entry_to_the_handler_once_at_start_up(
    redis_server: RedisServer,
) -> None:
    """A member restarts with entries of its own still pending and new ones waiting: its own are
    handled first, then the new ones, each once. (Readers that started before the drain took the
    new ones, which the drain, reading this member's pending entries, then handed over again.)"""
    url = redis_server.url
    redis = Redis.from_url(url)
    stream = "md:{AAPL}:candle:1m"
    try:
        await redis.xgroup_create(stream, "g", id="0", mkstream=True)
        for n in range(5):
            await redis.xadd(stream, {"n": str(n)})
        await redis.xreadgroup("g", "m1", {stream: ">"}, count=5)  # pending for m1: a crash
        for n in range(5, 10):
            await redis.xadd(stream, {"n": str(n)})  # not delivered to anyone yet
        handled: list[str] = []

        async def handle(batch: list[Message]) -> None:
            handled.extend(message.fields["n"] for message in batch)
            await asyncio.sleep(0.05)  # slow enough for readers to race the drain

        consumer = GroupConsumer(Redis.from_url(url), "g", "m1", streams=[stream])
        task = asyncio.create_task(consumer.run(handle))
        async with asyncio.timeout(30):
            while len(handled) < 10:  # noqa: ASYNC110 - the handler's own list: polled
                await asyncio.sleep(0.01)
        consumer.stop()  # returns once everything read was handled: a duplicate would show
        await task
        await consumer.redis.aclose()
    finally:
        await redis.aclose()
    assert handled == [str(n) for n in range(10)]


async def _ignore(batch: list[Message]) -> None:
    return None


async def _note(seen: list[str], batch: list[Message]) -> None:
    seen.extend(message.id for message in batch)
