"""Redis Cluster end to end: 3 masters + 3 replicas on loopback, consumer-ack backtests, a live
run, a master stopped mid-run, and two connectors side by side."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from connector.consumer.group import GroupConsumer, Message
from connector.sim import SimConfig, Simulator
from tests.support.harness import Running, expected_entry, run_connector, wait_until
from tests.support.redis_cluster import RedisClusterProcesses

SYMBOLS = ("AAPL", "MSFT", "BTCUSD", "F:EURUSD")


def cluster_client(cluster: RedisClusterProcesses) -> RedisCluster:
    return RedisCluster.from_url(cluster.url)


@contextlib.asynccontextmanager
async def consuming(
    cluster: RedisClusterProcesses, group: str, prefix: str = "md"
) -> AsyncIterator[GroupConsumer]:
    async def handle(batch: list[Message]) -> None:
        return None

    client = cluster_client(cluster)
    consumer = GroupConsumer(client, group, f"{group}-1", prefix=prefix, claim_idle_ms=500)
    task = asyncio.create_task(consumer.run(handle))
    try:
        yield consumer
    finally:
        consumer.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 15)
        await client.aclose()


async def entries(client: RedisCluster, key: str) -> list[dict[str, str]]:
    rows = await client.xrange(key)
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in rows]


async def assert_backtest_stored_once(
    client: RedisCluster, sim: Simulator, prefix: str = "md"
) -> None:
    expected: dict[str, list[dict[str, str]]] = {}
    for frame in sim.record.sent:
        if frame.type == "candle":
            key, fields = expected_entry(frame.text or "")
            expected.setdefault(prefix + key[2:], []).append(fields)
    for key, wanted in expected.items():
        assert await entries(client, key) == wanted, key


def market_published(app: Running) -> float:
    return app.sample("connector_published_total", type="quote") + app.sample(
        "connector_published_total", type="candle"
    )


async def assert_live_stored_once(cluster: RedisClusterProcesses, sim: Simulator) -> None:
    """Every candle and quote the simulator sent, in its stream, once, in order."""
    expected: dict[str, list[dict[str, str]]] = {}
    for frame in sim.record.sent:
        if frame.type in ("candle", "quote"):
            stream, fields = expected_entry(frame.text or "")
            expected.setdefault(stream, []).append(fields)
    client = cluster_client(cluster)
    try:
        for stream, wanted in expected.items():
            assert await entries(client, stream) == wanted, stream
    finally:
        await client.aclose()


async def test_consumer_ack_backtest_on_a_cluster(redis_cluster: RedisClusterProcesses) -> None:
    config = SimConfig(mode="backtest", symbols=SYMBOLS, steps=150, seed=3)
    async with (
        consuming(redis_cluster, "strategy"),
        Simulator(config) as sim,
        run_connector(
            sim,
            redis_cluster.url,
            mode="backtest",
            redis_cluster="true",
            ack_mode="consumer",
            consumer_groups="strategy",
        ) as app,
    ):
        assert await app.exit_code() == 0
    assert sim.record.outcome == "completed"
    assert sim.record.timeouts == 0
    assert set(sim.record.event_ids()) == sim.record.acked_ids()
    client = cluster_client(redis_cluster)
    try:
        await assert_backtest_stored_once(client, sim)
    finally:
        await client.aclose()


async def test_live_run_on_a_cluster(redis_cluster: RedisClusterProcesses) -> None:
    config = SimConfig(mode="live", symbols=SYMBOLS, rate=2000.0, count=800)
    async with (
        Simulator(config) as sim,
        run_connector(sim, redis_cluster.url, redis_cluster="true") as app,
    ):
        assert await sim.wait_finished() == "sent"
        await wait_until(lambda: market_published(app) == 800)
    await assert_live_stored_once(redis_cluster, sim)


async def wire_clients(cluster: RedisClusterProcesses) -> int:
    """Connections named by the connector's write path (its per-master RESP pipelines)."""
    total = 0
    for node in cluster.masters():
        client = Redis(port=node.port)
        try:
            total += sum(1 for c in await client.client_list() if c.get("name") == "connector")
        finally:
            await client.aclose()
    return total


async def test_a_slot_moved_mid_run_ask_and_moved_lose_and_duplicate_nothing(
    redis_cluster: RedisClusterProcesses,
) -> None:
    config = SimConfig(mode="live", symbols=SYMBOLS, rate=1000.0, count=3000)
    key = "md:{AAPL}:quote"
    async with (
        Simulator(config) as sim,
        run_connector(sim, redis_cluster.url, redis_cluster="true") as app,
    ):
        await wait_until(lambda: app.sample("connector_published_total", type="quote") > 300)
        assert await wire_clients(redis_cluster) >= 1  # the steady state: one pipeline per master
        move = await asyncio.to_thread(redis_cluster.begin_slot_move, key)
        # The old master now answers ASK for the moved streams: writes go on meanwhile.
        stored = app.sample("connector_published_total", type="quote")
        await wait_until(
            lambda: app.sample("connector_published_total", type="quote") > stored + 100
        )
        await asyncio.to_thread(redis_cluster.finish_slot_move, move)  # now MOVED
        assert await sim.wait_finished() == "sent"
        await wait_until(lambda: market_published(app) == 3000)
    assert redis_cluster.master_of(key).port == move.target.port != move.source.port
    await assert_live_stored_once(redis_cluster, sim)


async def test_a_master_stopped_mid_run_loses_and_duplicates_nothing(
    redis_cluster: RedisClusterProcesses,
) -> None:
    config = SimConfig(mode="backtest", symbols=SYMBOLS, steps=300, seed=4, step_timeout=30.0)
    victim = redis_cluster.master_of("md:{AAPL}:candle:1m")
    async with (
        consuming(redis_cluster, "strategy"),
        Simulator(config) as sim,
        run_connector(
            sim,
            redis_cluster.url,
            mode="backtest",
            redis_cluster="true",
            ack_mode="consumer",
            consumer_groups="strategy",
        ) as app,
    ):
        await sim.record.wait_until(lambda: len(sim.record.steps) >= 60)
        await asyncio.to_thread(redis_cluster.stop_gracefully, victim)
        # The replica is promoted after the node timeout; the run goes on through it.
        await asyncio.to_thread(redis_cluster.wait_healthy)
        assert await app.exit_code(within=120) == 0
    assert redis_cluster.master_of("md:{AAPL}:candle:1m").port != victim.port
    assert sim.record.outcome == "completed"
    assert set(sim.record.event_ids()) == sim.record.acked_ids()
    client = cluster_client(redis_cluster)
    try:
        await assert_backtest_stored_once(client, sim)
    finally:
        await client.aclose()


async def test_two_backtests_side_by_side_do_not_mix(redis_cluster: RedisClusterProcesses) -> None:
    one = SimConfig(mode="backtest", symbols=("AAPL", "MSFT"), steps=120, seed=1)
    two = SimConfig(mode="backtest", symbols=("AAPL", "BTCUSD"), steps=90, seed=2)
    async with (
        consuming(redis_cluster, "strategy", prefix="bt1"),
        consuming(redis_cluster, "strategy", prefix="bt2"),
        Simulator(one) as sim1,
        Simulator(two) as sim2,
        run_connector(
            sim1,
            redis_cluster.url,
            mode="backtest",
            redis_cluster="true",
            stream_prefix="bt1",
            ack_mode="consumer",
            consumer_groups="strategy",
        ) as app1,
        run_connector(
            sim2,
            redis_cluster.url,
            mode="backtest",
            redis_cluster="true",
            stream_prefix="bt2",
            ack_mode="consumer",
            consumer_groups="strategy",
        ) as app2,
    ):
        codes = await asyncio.gather(app1.exit_code(), app2.exit_code())
        assert codes == [0, 0]
    for sim in (sim1, sim2):
        assert sim.record.outcome == "completed"
        assert set(sim.record.event_ids()) == sim.record.acked_ids()
    client = cluster_client(redis_cluster)
    try:
        await assert_backtest_stored_once(client, sim1, prefix="bt1")
        await assert_backtest_stored_once(client, sim2, prefix="bt2")
        assert await client.exists("bt1:{BTCUSD}:candle:1m") == 0
        assert await client.exists("bt2:{MSFT}:candle:1m") == 0
    finally:
        await client.aclose()
