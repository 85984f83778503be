"""What the real gateway was seen doing, against the connector: nothing it does trips it.

Full-scale decimals, live candle timestamps at the emission instant with nanoseconds, each
engine event relayed as its own frame, a shutdown whose close frame is lost, fills without the
order's correlation id, positions stamped on the wall clock. Each is a simulator option.
"""

from __future__ import annotations

import orjson
from redis.asyncio import Redis

from connector.sim import SimConfig, Simulator
from connector.trading.protocol import parse_timestamp_ms
from tests.support.harness import expected_entry, run_connector, stream_entries, wait_until
from tests.support.redis_server import RedisServer

SYMBOLS = ("AAPL", "MSFT")


async def test_full_scale_decimals_are_stored_exactly(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    config = SimConfig(mode="backtest", symbols=SYMBOLS, steps=20, decimal_scale="full")
    async with (
        Simulator(config) as sim,
        run_connector(sim, redis_server.url, mode="backtest") as app,
    ):
        assert await app.exit_code() == 0
    candles = [frame for frame in sim.record.frames_of_type("candle") if frame.text]
    assert candles
    widest = 0
    for frame in candles:
        assert frame.text is not None
        key, fields = expected_entry(frame.text)
        stored = [e for e in await stream_entries(redis_client, key) if e["ts"] == fields["ts"]]
        assert stored == [fields]  # every digit as received
        widest = max(widest, len(fields["close"]))
    assert widest > 20  # the option is really on: 28-digit scale


async def test_live_candles_stamped_at_the_emission_instant(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    """The gateway's mock stamps `bar.timestamp` with the sending instant, nanoseconds and all:
    `ts` keeps the milliseconds (truncated, never rounded)."""
    config = SimConfig(mode="live", symbols=("AAPL",), rate=200.0, live_bar_time="emission")
    async with Simulator(config) as sim, run_connector(sim, redis_server.url) as app:
        await wait_until(lambda: app.sample("connector_published_total", type="candle") >= 20)
    frames = [f.text for f in sim.record.frames_of_type("candle") if f.text][:20]
    stored = await stream_entries(redis_client, "md:{AAPL}:candle:1m")
    for text in frames:
        stamp = orjson.loads(text)["bar"]["timestamp"]
        assert len(stamp.split(".")[1]) == 10  # nine digits and the Z
        assert str(parse_timestamp_ms(stamp)) in {entry["ts"] for entry in stored}


async def test_each_engine_event_in_its_own_frame_is_acked_completely(
    redis_server: RedisServer,
) -> None:
    """The gateway relays each engine event as its own frame, tens to hundreds of µs apart: a
    step's candles do not arrive in one read. Every id is still acknowledged, none early."""
    config = SimConfig(
        mode="backtest", symbols=("AAPL", "MSFT", "BTCUSD"), steps=40, relay_gap=0.0002
    )
    async with (
        Simulator(config) as sim,
        run_connector(sim, redis_server.url, mode="backtest") as app,
    ):
        assert await app.exit_code() == 0
    record = sim.record
    assert record.timeouts == 0
    assert set(record.event_ids()) == record.acked_ids()
    assert len(record.acks) >= len(record.steps)  # at least one frame per step, as before


async def test_a_shutdown_whose_close_frame_is_lost_is_still_a_shutdown(
    redis_server: RedisServer,
) -> None:
    """DISCONNECTING, then the TCP connection just drops (about one shutdown in six): mid-run
    that ends the backtest as interrupted, like a clean close would."""
    config = SimConfig(
        mode="backtest", symbols=SYMBOLS, steps=100_000, close_frame_loss=1.0, step_timeout=30.0
    )
    async with (
        Simulator(config) as sim,
        run_connector(sim, redis_server.url, mode="backtest") as app,
    ):
        await sim.record.wait_until(lambda: len(sim.record.steps) >= 5)
        await sim.stop()
        assert await app.exit_code(within=30) == 3
    assert app.connector.outcome == "interrupted"
    assert sim.record.connections[0].close_code in (None, 1006)  # no closing handshake


async def test_fills_without_correlation_id_and_wall_clock_positions_are_stored_as_sent(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    config = SimConfig(
        mode="backtest",
        symbols=SYMBOLS,
        steps=30,
        fill_every=3,
        fill_correlation_loss=1.0,
        position_time="wall",
    )
    async with (
        Simulator(config) as sim,
        run_connector(sim, redis_server.url, mode="backtest") as app,
    ):
        assert await app.exit_code() == 0
    sent = {f.event_id: f.text for f in sim.record.sent if f.type in ("order", "position")}
    stored = [
        *await stream_entries(redis_client, "md:order"),
        *await stream_entries(redis_client, "md:position"),
    ]
    assert len(stored) == len(sent) > 0
    for entry in stored:
        assert entry["data"] == sent[entry["event_id"]]  # kept whole, exactly
    assert app.sample("connector_invalid_messages_total", reason="missing_field") == 0
