"""Consumer-ack mode: simulated time waits for the slowest required consumer group."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from connector.consumer.group import GroupConsumer, Message
from connector.sim import SimConfig, Simulator
from tests.support.harness import run_connector, wait_until
from tests.support.redis_server import RedisServer

SYMBOLS = ("AAPL", "MSFT", "BTCUSD")


@contextlib.asynccontextmanager
async def consuming(
    url: str, group: str, name: str, delay: float = 0.0, **options: object
) -> AsyncIterator[tuple[GroupConsumer, dict[str, float]]]:
    """A toolkit consumer in a task; yields it and {event_id: time its processing finished}.

    The toolkit confirms (XACK) only after the handler returns, so an engine ack that comes after
    this time is one that waited for the consumer to finish with the event.
    """
    processed: dict[str, float] = {}

    async def handle(batch: list[Message]) -> None:
        if delay:
            await asyncio.sleep(delay)
        now = time.monotonic()
        for message in batch:
            if "event_id" in message.fields:
                processed[message.fields["event_id"]] = now

    redis = Redis.from_url(url)
    consumer = GroupConsumer(redis, group, name, **options)  # type: ignore[arg-type]
    task = asyncio.create_task(consumer.run(handle))
    try:
        yield consumer, processed
    finally:
        consumer.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await redis.aclose()


def backtest(steps: int, **overrides: object) -> SimConfig:
    return SimConfig(mode="backtest", symbols=SYMBOLS, steps=steps, seed=5, **overrides)  # type: ignore[arg-type]


async def test_no_step_is_acknowledged_before_both_groups_confirmed_it(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    async with (
        consuming(url, "fast", "f1") as (fast, fast_done),
        consuming(url, "slow", "s1", delay=0.002) as (slow, slow_done),
        Simulator(backtest(80)) as sim,
        run_connector(
            sim, url, mode="backtest", ack_mode="consumer", consumer_groups="fast,slow"
        ) as app,
    ):
        assert await app.exit_code() == 0
        assert await sim.wait_finished() == "completed"
    record = sim.record
    assert record.timeouts == 0
    assert set(record.event_ids()) == record.acked_ids()
    for step in record.steps:
        assert step.completed_at is not None
        for event_id in step.ids:
            ack_time = record.first_ack_time(event_id)
            assert ack_time is not None
            # Released only after both groups had processed (then confirmed) this entry...
            assert ack_time >= fast_done[event_id], event_id
            assert ack_time >= slow_done[event_id], event_id
        # ...so the step completed only after every entry of it was processed by both.
        last_confirmation = max(max(fast_done[i], slow_done[i]) for i in step.ids)
        assert step.completed_at >= last_confirmation
    gate = app.connector.consumer_gate
    assert gate is not None
    assert gate.notifications > 0
    # Every engine event was confirmed, except the end of the run, which waits for nobody.
    assert app.sample("connector_consumer_confirm_seconds_count") == len(record.event_ids()) - 1
    assert app.sample("connector_unconfirmed_events") == 0
    assert fast.stats.processed == slow.stats.processed >= len(record.event_ids())


async def test_plain_xack_consumer_is_noticed_by_checking(redis_server: RedisServer) -> None:
    """A consumer that knows nothing of the toolkit: XREADGROUP + XACK, no notification."""
    url = redis_server.url
    stop = asyncio.Event()

    async def plain_consumer() -> int:
        redis = Redis.from_url(url)
        acked = 0
        try:
            while not stop.is_set():
                keys = [k.decode() async for k in redis.scan_iter("md:*", _type="stream")]
                keys = [k for k in keys if k not in ("md:system", "md:deadletter", "md:streams")]
                if not keys:
                    await asyncio.sleep(0.01)
                    continue
                for key in keys:
                    with contextlib.suppress(Exception):
                        await redis.xgroup_create(key, "plain", id="0", mkstream=True)
                reply = await redis.xreadgroup("plain", "p1", dict.fromkeys(keys, ">"), block=20)
                for stream, rows in reply or []:
                    if rows:
                        acked += await redis.xack(stream, "plain", *[row[0] for row in rows])
        finally:
            await redis.aclose()
        return acked

    task = asyncio.create_task(plain_consumer())
    async with (
        Simulator(backtest(30)) as sim,
        run_connector(
            sim,
            url,
            mode="backtest",
            ack_mode="consumer",
            consumer_groups="plain",
            consumer_check_interval=0.01,
        ) as app,
    ):
        assert await app.exit_code() == 0
    stop.set()
    assert await task >= len(sim.record.event_ids())
    assert sim.record.outcome == "completed"
    assert sim.record.timeouts == 0
    gate = app.connector.consumer_gate
    assert gate is not None
    assert gate.notifications == 0
    assert gate.checked >= len(sim.record.event_ids()) - 1  # all but backtest_complete


async def test_crashed_consumer_entries_are_claimed_and_the_run_completes(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    crash = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "connector",
        "consume",
        "--group",
        "strategy",
        "--name",
        "doomed",
        "--redis-url",
        url,
        "--crash-after",
        "40",
        "--log-level",
        "ERROR",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with (
            Simulator(backtest(60)) as sim,
            run_connector(
                sim, url, mode="backtest", ack_mode="consumer", consumer_groups="strategy"
            ) as app,
        ):
            assert await asyncio.wait_for(crash.wait(), 30) == 3  # died mid-backtest
            steps_done = sum(1 for s in sim.record.steps if s.completed_at is not None)
            assert steps_done < 60
            async with consuming(url, "strategy", "rescuer", claim_idle_ms=200) as (rescuer, _):
                assert await app.exit_code() == 0
                assert rescuer.stats.claimed > 0
        assert sim.record.outcome == "completed"
        assert set(sim.record.event_ids()) == sim.record.acked_ids()
    finally:
        if crash.returncode is None:
            crash.kill()
            await crash.wait()


async def test_groups_deleted_mid_run_are_recovered(redis_server: RedisServer) -> None:
    url = redis_server.url
    admin = Redis.from_url(url)
    try:
        async with (
            consuming(url, "strategy", "c1", recover_after=5.0),
            Simulator(backtest(120, step_timeout=10.0)) as sim,
            run_connector(
                sim, url, mode="backtest", ack_mode="consumer", consumer_groups="strategy"
            ) as app,
        ):
            await sim.record.wait_until(lambda: len(sim.record.steps) >= 30)
            destroyed = 0
            async for key in admin.scan_iter("md:*", _type="stream"):
                destroyed += await admin.xgroup_destroy(key, "strategy")
            assert destroyed > 3
            assert await app.exit_code() == 0
        assert sim.record.outcome == "completed"
        assert sim.record.timeouts == 0
        assert set(sim.record.event_ids()) == sim.record.acked_ids()
    finally:
        await admin.aclose()


async def test_timeout_policy_hold_keeps_waiting_and_is_visible(redis_server: RedisServer) -> None:
    url = redis_server.url
    async with (
        Simulator(backtest(10, step_timeout=30.0)) as sim,
        run_connector(
            sim,
            url,
            mode="backtest",
            ack_mode="consumer",
            consumer_groups="late",
            consumer_ack_timeout=0.1,
            consumer_timeout_policy="hold",
        ) as app,
    ):
        await wait_until(
            lambda: app.sample("connector_consumer_timeouts_total", policy="hold") >= 1
        )
        assert sim.record.acks == []  # still held: simulated time has not moved
        status = await app.connector.readiness()
        assert not status.ready
        assert status.checks["consumers"] is False
        async with consuming(url, "late", "l1", start_id="0"):
            assert await app.exit_code() == 0
    assert sim.record.outcome == "completed"
    assert set(sim.record.event_ids()) == sim.record.acked_ids()


async def test_timeout_policy_release_acks_anyway_and_counts(redis_server: RedisServer) -> None:
    url = redis_server.url
    async with (
        Simulator(backtest(5, step_timeout=30.0)) as sim,
        run_connector(
            sim,
            url,
            mode="backtest",
            ack_mode="consumer",
            consumer_groups="absent",
            consumer_ack_timeout=0.05,
            consumer_timeout_policy="release",
        ) as app,
    ):
        assert await app.exit_code() == 0
        assert app.sample("connector_consumer_timeouts_total", policy="release") >= 5
    assert sim.record.outcome == "completed"
    assert sim.record.timeouts == 0


async def test_live_mode_is_not_gated_but_lag_is_measured(redis_server: RedisServer) -> None:
    url = redis_server.url
    config = SimConfig(mode="live", symbols=("AAPL",), rate=400.0, id_field="id")
    async with (
        Simulator(config) as sim,
        run_connector(sim, url, mode="live", ack_mode="consumer", consumer_groups="dash") as app,
    ):
        # Acks flow without any consumer (live acks are informational)...
        await sim.record.wait_until(lambda: len(sim.record.acked_ids()) >= 20)
        # ...while the lag of the group that reads nothing grows.
        await wait_until(lambda: app.sample("connector_consumer_lag", group="dash") >= 20)
        async with consuming(url, "dash", "d1", start_id="0"):
            await wait_until(lambda: app.sample("connector_consumer_lag", group="dash") < 20)


@pytest.mark.parametrize("ack_mode", ["immediate", "consumer"])
async def test_redis_losing_its_data_gets_streams_groups_and_registry_again(
    redis_server: RedisServer, ack_mode: str
) -> None:
    """A Redis restarted without persistence looks like FLUSHALL: the connector notices the
    registry is gone and provisions everything again. The groups start at the streams' first
    entries: what was written after the loss but before the connector noticed it is delivered too.
    (In consumer-ack mode the gate, which also recreates a lost group, adds the registry's.)"""
    url = redis_server.url
    config = SimConfig(mode="live", symbols=("AAPL",), rate=400.0, id_field="id")
    stream = "md:{AAPL}:quote"
    registry_groups = {b"dash"} if ack_mode == "consumer" else set()
    redis = Redis.from_url(url)

    async def provisioned() -> bool:
        if await redis.exists("md:streams", stream) != 2:
            return False
        groups = {g["name"] for g in await redis.xinfo_groups(stream)}
        registry = {g["name"] for g in await redis.xinfo_groups("md:streams")}
        # The registry may exist before the stream is announced again (the per-type streams
        # are, and in consumer mode the gate recreates its group there): wait for the entry.
        announced = {fields[b"stream"] for _, fields in await redis.xrange("md:streams")}
        return groups == {b"dash"} and registry == registry_groups and stream.encode() in announced

    try:
        async with (
            Simulator(config) as sim,
            run_connector(sim, url, mode="live", ack_mode=ack_mode, consumer_groups="dash") as app,
        ):
            await wait_until(lambda: app.sample("connector_published_total", type="quote") >= 20)
            await redis.flushall()
            async with asyncio.timeout(30):
                while not await provisioned():  # noqa: ASYNC110 - Redis state: polled
                    await asyncio.sleep(0.05)
            registered = await redis.xrange("md:streams")
            assert stream.encode() in {fields[b"stream"] for _, fields in registered}
            first_id = (await redis.xrange(stream, count=1))[0][0]
            delivered = await redis.xreadgroup("dash", "probe", {stream: ">"}, count=1)
            assert delivered[0][1][0][0] == first_id
    finally:
        await redis.aclose()


async def test_a_step_held_by_a_group_nobody_joined_is_loud(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The likeliest first mistake: consumer-ack mode with the group's service not started.
    With the default settings a warning names the group and why within seconds, and /readyz
    says the same; once the consumer starts, the run completes and readiness returns."""
    url = redis_server.url
    caplog.set_level("WARNING", logger="connector.acks.consumer_gate")
    async with (
        Simulator(backtest(10, step_timeout=60.0)) as sim,
        run_connector(
            sim, url, mode="backtest", ack_mode="consumer", consumer_groups="risk"
        ) as app,
    ):

        def warned() -> bool:
            return any(
                "no consumer has joined group risk" in r.getMessage() for r in caplog.records
            )

        await wait_until(warned)
        status = await app.connector.readiness()
        assert not status.ready
        assert status.checks["consumers"] is False
        assert "no consumer has joined group risk" in status.detail["consumers"]
        assert sim.record.acks == []
        async with consuming(url, "risk", "r1", start_id="0"):
            assert await app.exit_code() == 0
    assert sim.record.outcome == "completed"
