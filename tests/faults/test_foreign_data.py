"""Bytes another Redis client wrote are data, never a crash (the consumer toolkit and the
connector), and entries that cannot be handled end instead of looping for ever.

Every place that reads what another client could have written: stream entries, the registry,
consumer group names, the stream-prefix lease, and the entries at the connector's own next ids.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from connector.consumer.group import GroupConsumer, Message
from connector.sim import SimConfig, Simulator
from tests.support.harness import run_connector, stream_entries, wait_until
from tests.support.redis_server import RedisServer

KEY = "md:{AAPL}:candle:1m"


@contextlib.asynccontextmanager
async def consuming(url: str, handler: object, **options: object) -> AsyncIterator[GroupConsumer]:
    consumer = GroupConsumer(Redis.from_url(url), "g", "m1", **options)  # type: ignore[arg-type]
    task = asyncio.create_task(consumer.run(handler))  # type: ignore[arg-type]
    try:
        yield consumer
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 10)
        await consumer.redis.aclose()


@pytest.mark.parametrize("fast", [True, False], ids=["own connections", "redis-py"])
async def test_an_entry_that_is_not_text_is_dead_lettered_and_reading_goes_on(
    redis_client: Redis, redis_server: RedisServer, fast: bool
) -> None:
    await redis_client.xgroup_create(KEY, "g", id="$", mkstream=True)
    seen: list[str] = []

    async def handle(batch: list[Message]) -> None:
        seen.extend(message.fields["n"] for message in batch)

    async with consuming(redis_server.url, handle, streams=[KEY], fast=fast) as consumer:
        await redis_client.xadd(KEY, {"n": "before"})
        await wait_until(lambda: seen == ["before"])
        bad = await redis_client.xadd(KEY, {"n": b"\xff\xfe-not-utf8"})  # another client
        for n in range(3):
            await redis_client.xadd(KEY, {"n": f"after-{n}"})
        await wait_until(lambda: len(seen) == 4 and consumer.stats.dead_lettered == 1)
    assert seen == ["before", "after-0", "after-1", "after-2"]
    assert consumer.stats.unreadable == {"entry": 1}
    (dead,) = await stream_entries(redis_client, "md:deadletter:g")
    assert dead["reason"] == "undecodable"
    assert dead["id"] == bad.decode()
    assert dead["stream"] == KEY
    assert orjson.loads(dead["fields"]) == {"n": "\\xff\\xfe-not-utf8"}  # readable, escaped
    assert (await redis_client.xpending(KEY, "g"))["pending"] == 0  # confirmed, not stuck


async def test_registry_garbage_is_skipped_and_the_streams_around_it_are_followed(
    redis_client: Redis, redis_server: RedisServer
) -> None:
    pipe = redis_client.pipeline(transaction=True)
    pipe.xadd("md:streams", {"stream": "md:{MSFT}:quote", "type": "quote"})
    pipe.xadd("md:streams", {"stream": b"md:{\xff}:quote", "type": "quote"})
    pipe.xadd("md:streams", {"type": "quote"})  # names no stream at all
    pipe.xadd("md:streams", {"stream": "md:{AAPL}:quote", "type": "quote"})
    await pipe.execute()

    async def handle(batch: list[Message]) -> None:
        return None

    # A consumer started after the garbage starts, and follows both valid streams.
    async with consuming(redis_server.url, handle) as consumer:
        await wait_until(lambda: set(consumer.streams) == {"md:{MSFT}:quote", "md:{AAPL}:quote"})
    assert consumer.stats.unreadable == {"registry": 1}


async def test_a_poison_entry_ends_in_the_dead_letter_stream_and_its_batch_is_confirmed(
    redis_client: Redis, redis_server: RedisServer
) -> None:
    await redis_client.xgroup_create(KEY, "g", id="$", mkstream=True)
    calls: list[list[str]] = []

    async def handle(batch: list[Message]) -> None:
        calls.append([message.fields["n"] for message in batch])
        if any("poison" in message.fields for message in batch):
            raise ValueError("cannot handle this entry")

    options = {"streams": [KEY], "claim_idle_ms": 100, "max_deliveries": 3}
    async with consuming(redis_server.url, handle, **options) as consumer:
        pipe = redis_client.pipeline(transaction=True)  # one write: one batch for the handler
        for n in range(3):
            pipe.xadd(KEY, {"n": f"good-{n}"})
        pipe.xadd(KEY, {"n": "bad", "poison": "1"})
        for n in range(3, 6):
            pipe.xadd(KEY, {"n": f"good-{n}"})
        await pipe.execute()
        await wait_until(lambda: consumer.stats.dead_lettered == 1)
    # The good entries of the failed batch were confirmed at once, one by one...
    assert consumer.stats.confirmed == 6
    assert calls[0] == [f"good-{n}" for n in range(3)] + ["bad"] + [f"good-{n}" for n in (3, 4, 5)]
    # ...and the bad one was tried max_deliveries times in all, then given up on.
    assert [call for call in calls if call == ["bad"]] == [["bad"]] * 3
    (dead,) = await stream_entries(redis_client, "md:deadletter:g")
    assert dead["reason"] == "max_deliveries"
    assert dead["deliveries"] == "3"
    assert "poison" in dead["fields"]
    assert (await redis_client.xpending(KEY, "g"))["pending"] == 0


async def test_garbage_at_the_connectors_next_ids_is_stepped_over(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    """Entries another client wrote at the ids the connector is about to use, and not text:
    the connector steps over them on that stream, and nothing stops on the others."""
    config = SimConfig(mode="live", symbols=("AAPL", "MSFT"), rate=400.0)
    async with Simulator(config) as sim, run_connector(sim, redis_server.url) as app:
        await wait_until(lambda: app.sample("connector_published_total", type="quote") > 20)
        quote = "md:{AAPL}:quote"
        top = (await redis_client.xinfo_stream(quote))["last-generated-id"]
        start = int(top.split(b"-")[0]) + 1
        # In one round trip: the connector's next ids taken, every millisecond of the next 3 s.
        # The connector may still store an entry or two first: the garbage ids at or below it
        # are refused (not an error here), the rest land above it.
        pipe = redis_client.pipeline(transaction=False)
        for ms in range(start, start + 3000):
            pipe.xadd(quote, {"x": b"\xff"}, id=f"{ms}-0")
        placed = await pipe.execute(raise_on_error=False)
        assert sum(not isinstance(reply, Exception) for reply in placed) > 2900
        published = app.sample("connector_published_total", type="quote")
        await wait_until(
            lambda: app.sample("connector_published_total", type="quote") > published + 200
        )
        assert app.sample("connector_foreign_data_total", reason="clash") >= 1
        assert app.connector.publisher.healthy
    rows = await redis_client.xrange(quote)
    ours = [row for row in rows if b"x" not in row[1]]
    assert ours[-1][0] > f"{start + 2999}-0".encode()  # ours continue above the garbage


async def test_a_lease_key_no_connector_wrote_is_taken_over(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    await redis_client.set("md:lease", b"\xff evil <script>")  # and no expiry
    config = SimConfig(mode="backtest", symbols=("AAPL",), steps=5)
    async with (
        Simulator(config) as sim,
        run_connector(sim, redis_server.url, mode="backtest") as app,
    ):
        assert await app.exit_code() == 0
        assert app.sample("connector_foreign_data_total", reason="lease") == 1
    assert sim.record.outcome == "completed"


# -- everything at once, at random ------------------------------------------------------------

GARBAGE = st.binary(min_size=1, max_size=40).filter(lambda raw: not _is_text(raw))


def _is_text(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(entry=GARBAGE, registry=GARBAGE, group=GARBAGE, lease=GARBAGE)
async def test_random_bytes_everywhere_do_not_stop_a_consumer_ack_backtest(
    redis_server: RedisServer, entry: bytes, registry: bytes, group: bytes, lease: bytes
) -> None:
    """Bytes that are not text, written by another client into the data streams, the registry,
    a group name and the lease while a consumer-ack backtest runs: the run completes, and every
    entry the connector wrote is stored and confirmed by the toolkit consumer."""
    url = redis_server.url
    admin = Redis.from_url(url)
    await admin.flushall()
    handled: set[str] = set()

    async def handle(batch: list[Message]) -> None:
        handled.update(m.fields["event_id"] for m in batch if "event_id" in m.fields)

    config = SimConfig(mode="backtest", symbols=("AAPL", "MSFT"), steps=30, step_timeout=20.0)
    try:
        async with (
            consuming(url, handle) as consumer,
            Simulator(config) as sim,
            run_connector(
                sim, url, mode="backtest", ack_mode="consumer", consumer_groups="g"
            ) as app,
        ):
            await sim.record.wait_until(lambda: len(sim.record.steps) >= 5)
            pipe = admin.pipeline(transaction=False)
            pipe.xadd(KEY, {b"field": entry, entry: b"value"})
            pipe.xadd("md:streams", {"stream": registry, "type": "quote"})
            pipe.xgroup_create("md:{MSFT}:candle:1m", group, id="$")
            pipe.set("md:lease", lease)
            await pipe.execute()
            assert await app.exit_code() == 0
        assert sim.record.outcome == "completed"
        assert sim.record.timeouts == 0
        engine_ids = set(sim.record.event_ids())
        assert engine_ids == sim.record.acked_ids()
        assert engine_ids - {sim.record.frames_of_type("backtest_complete")[0].event_id} <= handled
        assert consumer.stats.dead_lettered == 1  # the foreign entry, and only it
    finally:
        await admin.aclose()
