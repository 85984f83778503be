"""Redis faults on real processes: outages, lost replies, re-deliveries. Nothing lost within the
bound, nothing stored twice, nothing acknowledged that is not stored."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from connector.sim import SimConfig, Simulator
from tests.support.harness import expected_entry, run_connector, stream_entries, wait_until
from tests.support.redis_server import RedisServer
from tests.support.tcp_proxy import ReplyCuttingProxy

# Every write is on disk before Redis answers: what the connector was told is stored survives the
# kill, so the test can tell the connector's losses from Redis' own.
DURABLE = ("--appendonly", "yes", "--appendfsync", "always")


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "durable", DURABLE)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def market_frames(sim: Simulator) -> list[str]:
    return [f.text or "" for f in sim.record.sent if f.type in ("candle", "quote")]


async def stored_market(redis: Redis, frames: list[str]) -> dict[str, list[dict[str, str]]]:
    keys = {expected_entry(text)[0] for text in frames}
    return {key: await stream_entries(redis, key) for key in keys}


def expected_market(frames: list[str]) -> dict[str, list[dict[str, str]]]:
    expected: dict[str, list[dict[str, str]]] = {}
    for text in frames:
        key, fields = expected_entry(text)
        expected.setdefault(key, []).append(fields)
    return expected


async def test_live_outage_is_buffered_and_replayed_in_order_exactly_once(
    durable_redis: RedisServer,
) -> None:
    config = SimConfig(mode="live", symbols=("AAPL", "MSFT"), rate=400.0)
    async with Simulator(config) as sim, run_connector(sim, durable_redis.url) as app:
        await wait_until(lambda: app.sample("connector_published_total", type="quote") > 20)
        durable_redis.stop()
        await wait_until(lambda: app.sample("connector_publish_errors_total") >= 1)
        await wait_until(lambda: not app.connector.publisher.healthy)
        assert not (await app.connector.readiness()).ready
        sent_during = sim.record.market_frames
        await sim.record.wait_until(lambda: sim.record.market_frames >= sent_during + 40)
        assert app.sample("connector_buffered_events") > 0  # held in memory meanwhile
        durable_redis.start()
        await wait_until(lambda: app.connector.publisher.healthy)
        await wait_until(lambda: app.connector.readiness_now().ready)
        await sim.stop()  # no more input: everything received must end up stored
        await wait_until(lambda: app.sample("connector_buffered_events") == 0)
        frames = market_frames(sim)
    redis = Redis.from_url(durable_redis.url)
    try:
        assert await stored_market(redis, frames) == expected_market(frames)
    finally:
        await redis.aclose()
    assert app.sample("connector_dropped_events_total", reason="buffer_full") == 0


async def test_beyond_the_bound_the_oldest_are_dropped_and_counted(
    durable_redis: RedisServer,
) -> None:
    config = SimConfig(mode="live", symbols=("AAPL",), rate=500.0)
    async with (
        Simulator(config) as sim,
        run_connector(sim, durable_redis.url, buffer_max_events=30) as app,
    ):
        await wait_until(lambda: app.sample("connector_published_total", type="quote") > 5)
        durable_redis.stop()
        await wait_until(lambda: not app.connector.publisher.healthy)
        await wait_until(
            lambda: app.sample("connector_dropped_events_total", reason="buffer_full") >= 50
        )
        # The bound holds for what waits behind the batch in flight (see the publisher).
        in_flight = app.connector.publisher.in_flight
        assert app.sample("connector_buffered_events") <= 30 + in_flight
        durable_redis.start()
        await wait_until(lambda: app.connector.publisher.healthy)
        await sim.stop()
        await wait_until(lambda: app.sample("connector_buffered_events") == 0)
        dropped = int(app.sample("connector_dropped_events_total", reason="buffer_full"))
        frames = market_frames(sim)
    redis = Redis.from_url(durable_redis.url)
    try:
        stored = await stored_market(redis, frames)
    finally:
        await redis.aclose()
    expected = expected_market(frames)
    for key, entries in expected.items():
        # What is stored is the sent sequence with some events left out (never reordered,
        # never repeated): a subsequence.
        assert is_subsequence(stored[key], entries), key
    total_expected = sum(len(v) for v in expected.values())
    total_stored = sum(len(v) for v in stored.values())
    assert total_expected - total_stored == dropped


async def test_a_frozen_redis_is_an_outage_and_the_session_keeps_reading(
    redis_server: RedisServer,
) -> None:
    """Redis connected but silent (SIGSTOP): the write times out, the events are held, and the
    session keeps reading meanwhile, because the server drops frames for a client that stops
    (docs/protocol.md). When Redis wakes up everything is stored once, in order."""
    config = SimConfig(mode="live", symbols=("AAPL", "MSFT"), rate=800.0)
    async with (
        Simulator(config) as sim,
        run_connector(sim, redis_server.url, redis_timeout=1.0) as app,
    ):
        await wait_until(lambda: app.sample("connector_published_total", type="quote") > 50)
        assert redis_server.process is not None
        os.kill(redis_server.process.pid, signal.SIGSTOP)
        try:
            await wait_until(lambda: app.sample("connector_publish_errors_total") >= 1)
            sent_during = sim.record.market_frames
            await sim.record.wait_until(lambda: sim.record.market_frames >= sent_during + 400)
            assert app.sample("connector_buffered_events") >= 400
        finally:
            os.kill(redis_server.process.pid, signal.SIGCONT)
        await wait_until(lambda: app.connector.publisher.healthy)
        await sim.stop()
        await wait_until(lambda: app.sample("connector_buffered_events") == 0)
        frames = market_frames(sim)
    assert sim.record.total_dropped() == 0  # the server never had to drop a frame for us
    assert app.sample("connector_dropped_events_total", reason="buffer_full") == 0
    redis = Redis.from_url(redis_server.url)
    try:
        assert await stored_market(redis, frames) == expected_market(frames)
    finally:
        await redis.aclose()


def is_subsequence(part: list[dict[str, str]], whole: list[dict[str, str]]) -> bool:
    remaining = iter(whole)
    return all(any(item == candidate for candidate in remaining) for item in part)


async def test_backtest_acks_nothing_unstored_and_continues_after_an_outage(
    durable_redis: RedisServer,
) -> None:
    config = SimConfig(mode="backtest", symbols=("AAPL", "MSFT"), steps=80, step_timeout=20.0)
    async with (
        Simulator(config) as sim,
        run_connector(sim, durable_redis.url, mode="backtest") as app,
    ):
        await sim.record.wait_until(lambda: len(sim.record.steps) >= 20)
        durable_redis.stop()
        await wait_until(lambda: app.sample("connector_publish_errors_total") >= 1)
        acked_before = len(sim.record.acked_ids())
        held = len(sim.record.event_ids())
        assert not (await app.connector.readiness()).ready
        # While Redis is down the step in flight is not acknowledged: simulated time waits.
        assert len(sim.record.acked_ids()) == acked_before < held
        durable_redis.start()
        assert await app.exit_code() == 0
    assert sim.record.outcome == "completed"
    assert sim.record.timeouts == 0
    redis = Redis.from_url(durable_redis.url)
    try:
        stored_ids = [
            entry["event_id"]
            for key in ("md:{AAPL}:candle:1m", "md:{MSFT}:candle:1m")
            for entry in await stream_entries(redis, key)
        ]
    finally:
        await redis.aclose()
    candle_ids = {f.event_id for f in sim.record.sent if f.type == "candle"}
    assert sorted(stored_ids) == sorted(candle_ids)  # each once
    assert candle_ids <= sim.record.acked_ids()


async def test_a_batch_whose_reply_was_lost_is_retried_without_duplicates(
    redis_server: RedisServer,
) -> None:
    proxy = ReplyCuttingProxy(redis_server.port)
    await proxy.start()
    try:
        config = SimConfig(mode="backtest", symbols=("AAPL", "MSFT", "BTCUSD"), steps=60)
        async with Simulator(config) as sim, run_connector(sim, proxy.url, mode="backtest") as app:
            await sim.record.wait_until(lambda: len(sim.record.steps) >= 10)
            proxy.cut_reply_after(b"XADD", times=3)
            await proxy.cut_done.wait()
            assert await app.exit_code() == 0
        assert proxy.cuts >= 1
    finally:
        await proxy.stop()
    assert sim.record.outcome == "completed"
    redis = Redis.from_url(redis_server.url)
    try:
        for symbol in ("AAPL", "MSFT", "BTCUSD"):
            entries = await stream_entries(redis, f"md:{{{symbol}}}:candle:1m")
            ids = [entry["event_id"] for entry in entries]
            assert len(ids) == len(set(ids)) == 60, symbol
    finally:
        await redis.aclose()
    assert set(sim.record.event_ids()) == sim.record.acked_ids()


async def test_an_event_delivered_twice_is_stored_once_and_acked(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    config = SimConfig(mode="backtest", symbols=("AAPL", "MSFT"), steps=30, duplicate_every=3)
    async with (
        Simulator(config) as sim,
        run_connector(sim, redis_server.url, mode="backtest") as app,
    ):
        assert await app.exit_code() == 0
        assert app.sample("connector_duplicate_events_total") == 10
    assert sim.record.timeouts == 0
    ids = [e["event_id"] for e in await stream_entries(redis_client, "md:{AAPL}:candle:1m")]
    assert len(ids) == len(set(ids)) == 30
