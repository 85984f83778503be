"""Several connectors on one Redis: separate prefixes never mix; one prefix is never shared."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from redis.asyncio import Redis

from connector.metrics import Metrics
from connector.sim import SimConfig, Simulator
from connector.streams.lease import PrefixLease
from connector.streams.publisher import Publisher
from connector.streams.schema import Entry
from connector.streams.writer import WriteOutcome
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
            # Not "not connected": it says what it is really waiting for.
            assert state.detail["trading_api"] == (
                "not started: waiting for the stream prefix lease"
            )
            assert second_feed.record.connections == []  # never opened its session
            first.connector.request_stop("make room")
            assert await first.exit_code() == 0
            await second_feed.record.wait_until(lambda: len(second_feed.record.connections) == 1)
            await wait_until(lambda: second.connector.readiness_now().ready)


async def test_writes_wait_while_the_prefix_lease_is_unconfirmed(
    redis_server: RedisServer,
) -> None:
    """Renewals that do not reach Redis for nearly a TTL: another connector may take over any
    moment, so this one stops writing into the prefix until a renewal is confirmed again."""
    now = [1000.0]
    redis = Redis.from_url(redis_server.url)
    try:
        lease = PrefixLease(redis, "md:lease", "me", ttl_ms=15_000, clock=lambda: now[0])
        assert await lease.acquire(asyncio.Event())
        assert lease.confirmed()
        now[0] += 14.5  # no renewal confirmed since: within the safety margin of the TTL
        assert not lease.confirmed()
        writer_calls: list[int] = []

        class Writer:
            async def write(self, entries: Sequence[Entry]) -> WriteOutcome:
                writer_calls.append(len(entries))
                return WriteOutcome()

        async def stored(batch: list[Entry]) -> None:
            return None

        refused = asyncio.Event()
        refusals = [0]

        def may_write() -> bool:
            allowed = lease.confirmed()
            if not allowed:
                refusals[0] += 1
                if refusals[0] >= 3:
                    refused.set()
            return allowed

        publisher = Publisher(
            Writer(),
            Metrics(),
            stored,
            max_batch=10,
            max_events=100,
            max_bytes=1 << 20,
            dedupe_window=0,
            may_write=may_write,
        )
        task = asyncio.create_task(publisher.run())
        publisher.submit(Entry("md:{AAPL}:quote", {"n": "1"}, "quote", "evt-1", 0.0, 10))
        publisher.close()
        await refused.wait()  # the publisher asked three times and was told to wait each time
        assert writer_calls == []
        assert await lease.acquire(asyncio.Event())  # still ours: renewed, confirmed again
        assert lease.confirmed()
        await task
        assert writer_calls == [1]
    finally:
        await redis.aclose()
