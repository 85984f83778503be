"""Backtests end to end: the simulator's engine, the connector, a private real Redis."""

from __future__ import annotations

from collections import Counter

import orjson
from redis.asyncio import Redis

from connector.sim import SimConfig, Simulator
from tests.support.harness import expected_entry, run_connector, stream_entries
from tests.support.redis_server import RedisServer

SYMBOLS = ("AAPL", "F:EURUSD", "BTC/USD")


async def test_backtest_3_symbols_500_steps_every_event_once_exact_and_acked(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    config = SimConfig(mode="backtest", symbols=SYMBOLS, steps=500, seed=11, backtest_quotes=True)
    async with (
        Simulator(config) as sim,
        run_connector(sim, redis_server.url, mode="backtest") as app,
    ):
        assert await app.exit_code() == 0
        assert await sim.wait_finished() == "completed"
    record = sim.record

    # The engine never timed out, and every id it emitted was acknowledged.
    assert record.timeouts == 0
    assert not any(step.timed_out for step in record.steps)
    assert len(record.steps) == 500
    assert set(record.event_ids()) == record.acked_ids()
    assert record.complete_acked

    # Every candle and quote is in its symbol's stream exactly once, fields exactly as sent.
    expected: dict[str, list[dict[str, str]]] = {}
    for frame in record.sent:
        if frame.type in ("candle", "quote"):
            assert frame.text is not None
            key, fields = expected_entry(frame.text)
            expected.setdefault(key, []).append(fields)
    assert len(expected) == 2 * len(SYMBOLS)
    for key, entries in expected.items():
        assert await stream_entries(redis_client, key) == entries

    # Every other engine event is in its type's stream, whole, exactly once.
    for kind in ("order", "trade", "position", "account", "financing", "backtest_complete"):
        sent = [f.text for f in record.sent if f.type == kind]
        stored = await stream_entries(redis_client, f"md:{kind}")
        assert [entry["data"] for entry in stored] == sent, kind
        assert all(entry["type"] == kind for entry in stored)
    ids_in_redis = Counter[str]()
    async for key in redis_client.scan_iter("md:*", _type="stream"):
        for entry in await stream_entries(redis_client, key.decode()):
            if "event_id" in entry:
                ids_in_redis[entry["event_id"]] += 1
    assert set(ids_in_redis) == set(record.event_ids())
    assert max(ids_in_redis.values()) == 1

    assert app.sample("connector_events_total", type="candle") == 500 * len(SYMBOLS)
    assert app.sample("connector_ack_latency_seconds_count") == len(record.event_ids())
    assert app.sample("connector_pending_acks") == 0


async def test_events_of_a_step_are_acknowledged_in_one_frame(redis_server: RedisServer) -> None:
    config = SimConfig(mode="backtest", symbols=("AAPL", "MSFT", "BTCUSD", "EURUSD"), steps=40)
    async with (
        Simulator(config) as sim,
        run_connector(sim, redis_server.url, mode="backtest") as app,
    ):
        assert await app.exit_code() == 0
    record = sim.record
    step_of = {event_id: step.index for step in record.steps for event_id in step.ids}
    for ack in record.acks:
        # No ack mixes steps (the engine waits), and all ids are valid strings.
        assert len({step_of.get(event_id) for event_id in ack.ids}) == 1
        assert isinstance(ack.timestamp, int)
    # Most steps (4 candles each) go out as a single ack frame.
    frames_per_step = Counter(step_of[ack.ids[0]] for ack in record.acks if ack.ids[0] in step_of)
    assert sum(1 for count in frames_per_step.values() if count == 1) >= len(record.steps) // 2


async def test_documentation_style_server_with_id_field(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    config = SimConfig(mode="backtest", symbols=("AAPL", "MSFT"), steps=30, id_field="id")
    async with Simulator(config) as sim:
        async with run_connector(
            sim, redis_server.url, mode="backtest", api_url=sim.docs_url
        ) as app:
            assert await app.exit_code() == 0
        assert await sim.wait_finished() == "completed"
    assert sim.record.timeouts == 0
    assert set(sim.record.event_ids()) == sim.record.acked_ids()
    candles = await stream_entries(redis_client, "md:{AAPL}:candle:1m")
    assert [c["event_id"] for c in candles] == [
        orjson.loads(f.text or "")["id"]
        for f in sim.record.sent
        if f.type == "candle" and f.symbol == "AAPL"
    ]


async def test_malformed_frames_are_survived_dead_lettered_and_acked(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    config = SimConfig(mode="backtest", symbols=("AAPL", "MSFT"), steps=60, malformed_every=4)
    async with (
        Simulator(config) as sim,
        run_connector(sim, redis_server.url, mode="backtest") as app,
    ):
        assert await app.exit_code() == 0
        invalid = sum(
            app.sample("connector_invalid_messages_total", reason=reason)
            for reason in (
                "invalid_json",
                "bad_decimal",
                "bad_symbol",
                "missing_type",
                "binary_frame",
            )
        )
    record = sim.record
    assert record.outcome == "completed"
    assert record.timeouts == 0
    assert set(record.event_ids()) == record.acked_ids()  # malformed ones with ids too
    dead = await stream_entries(redis_client, "md:deadletter")
    assert len(dead) == 60 // 4 == invalid  # one malformed frame every fourth step
    assert {d["reason"] for d in dead} >= {"invalid_json", "bad_decimal", "bad_symbol"}
    assert app.connector.session.connections == 1  # never dropped the session


async def test_an_id_less_end_after_id_bearing_events_is_not_a_success(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    """The gateway's halt (and an engine that just closed) looks like this: not a clean end."""
    config = SimConfig(mode="backtest", symbols=("AAPL",), steps=5, complete_with_id=False)
    async with (
        Simulator(config) as sim,
        run_connector(sim, redis_server.url, mode="backtest") as app,
    ):
        assert await app.exit_code() == 3
    assert app.connector.outcome == "halted"
    assert "unknown" not in sim.record.acked_ids()
    assert all(event_id is not None for ack in sim.record.acks for event_id in ack.ids)
    markers = await stream_entries(redis_client, "md:system")
    (end,) = [marker for marker in markers if marker["type"] == "run_end"]
    assert end["outcome"] == "halted"
    assert "without an event id after 5 id-bearing events" in end["detail"]
    assert len(await stream_entries(redis_client, "md:backtest_complete")) == 1  # stored


async def test_server_shutdown_is_followed_by_reconnect_and_gap_markers(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    config = SimConfig(mode="live", symbols=("AAPL",), rate=200.0)
    first = Simulator(config)
    await first.start()
    port = first.port
    async with run_connector(first, redis_server.url, mode="live") as app:
        await first.record.wait_until(lambda: first.record.market_frames > 5)
        await first.stop()  # DISCONNECTING, close 1001
        second = Simulator(SimConfig(mode="live", symbols=("AAPL",), rate=200.0, port=port))
        await second.start()
        try:
            await second.record.wait_until(lambda: second.record.market_frames > 5)
        finally:
            await second.stop()
        assert app.sample("connector_reconnects_total") >= 1
    markers = [m["type"] for m in await stream_entries(redis_client, "md:system")]
    assert markers[0] == "started"
    assert "disconnected" in markers
    reconnected = [
        m for m in await stream_entries(redis_client, "md:system") if m["type"] == "reconnected"
    ]
    assert reconnected
    assert int(reconnected[0]["gap_end"]) >= int(reconnected[0]["gap_start"])
    connection_events = [e["event"] for e in await stream_entries(redis_client, "md:connection")]
    assert "DISCONNECTING" in connection_events
