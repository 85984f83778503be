"""Several connectors on one Redis: separate prefixes never mix; one prefix is never shared."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from connector.sim import SimConfig, Simulator
from tests.support.harness import run_connector, stream_entries, wait_until
from tests.support.redis_server import RedisServer


async def test_two_simultaneous_backtests_with_their_own_prefixes(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    one = SimConfig(mode="backtest", symbols=("AAPL", "MSFT"), steps=150, seed=1)
    two = SimConfig(mode="backtest", symbols=("AAPL", "MSFT"), steps=100, seed=2)
    async with (
        Simulator(one) as sim1,
        Simulator(two) as sim2,
        run_connector(sim1, redis_server.url, mode="backtest", stream_prefix="bt1") as app1,
        run_connector(sim2, redis_server.url, mode="backtest", stream_prefix="bt2") as app2,
    ):
        assert await asyncio.gather(app1.exit_code(), app2.exit_code()) == [0, 0]
    for sim, prefix in ((sim1, "bt1"), (sim2, "bt2")):
        assert sim.record.outcome == "completed"
        ids = [
            e["event_id"]
            for e in await stream_entries(redis_client, f"{prefix}:{{AAPL}}:candle:1m")
        ]
        sent = [f.event_id for f in sim.record.sent if f.type == "candle" and f.symbol == "AAPL"]
        assert ids == sent  # only this session's events, each once, in order
    assert await redis_client.exists("bt1:lease", "bt2:lease") == 0  # released on exit


async def test_a_second_connector_on_the_same_prefix_waits_instead_of_mixing(
    redis_server: RedisServer,
) -> None:
    config = SimConfig(mode="live", symbols=("AAPL",), rate=100.0)
    async with (
        Simulator(config) as first_feed,
        Simulator(config) as second_feed,
        run_connector(first_feed, redis_server.url, session_id="first") as first,
    ):
        await wait_until(lambda: first.connector.session.connected)
        async with run_connector(second_feed, redis_server.url, session_id="second") as second:
            lease = second.connector.lease
            assert lease is not None
            await wait_until(lambda: lease.holder == "first")
            state = second.connector.readiness_now()
            assert not state.ready
            assert state.detail["prefix"] == "stream prefix held by first"
            assert second_feed.record.connections == []  # never opened its session
            first.connector.request_stop("make room")
            assert await first.exit_code() == 0
            await second_feed.record.wait_until(lambda: len(second_feed.record.connections) == 1)
            await wait_until(lambda: second.connector.readiness_now().ready)
