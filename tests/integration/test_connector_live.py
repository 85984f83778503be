"""Live feed end to end: publishing, heartbeats, dead peers, auth, broker events."""

from __future__ import annotations

from redis.asyncio import Redis

from connector.sim import SimConfig, Simulator
from tests.support.harness import expected_entry, run_connector, stream_entries, wait_until
from tests.support.redis_server import RedisServer


async def test_live_feed_lands_exactly_and_is_not_acknowledged(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    config = SimConfig(mode="live", symbols=("AAPL", "MSFT", "C:BTCUSD"), rate=3000.0, count=600)
    async with Simulator(config) as sim, run_connector(sim, redis_server.url, mode="live") as app:
        assert await sim.wait_finished() == "sent"
        market = [f for f in sim.record.sent if f.type in ("candle", "quote")]
        assert len(market) == 600
        await wait_until(
            lambda: (
                app.sample("connector_published_total", type="candle")
                + app.sample("connector_published_total", type="quote")
                == 600
            )
        )
    expected: dict[str, list[dict[str, str]]] = {}
    for frame in market:
        key, fields = expected_entry(frame.text or "")
        expected.setdefault(key, []).append(fields)
    for key, entries in expected.items():
        assert await stream_entries(redis_client, key) == entries
    assert sim.record.acks == []  # live frames carry no id: nothing to acknowledge
    assert sim.record.total_dropped() == 0


async def test_json_pings_are_answered_at_once(redis_server: RedisServer) -> None:
    config = SimConfig(mode="live", symbols=("AAPL",), rate=5.0, json_ping_interval=0.05)
    async with Simulator(config) as sim, run_connector(sim, redis_server.url) as app:
        await sim.record.wait_until(lambda: sim.record.json_pongs >= 3)
        assert app.sample("connector_json_pongs_total") >= 3


async def test_peer_that_stops_answering_pings_is_detected_and_replaced(
    redis_server: RedisServer,
) -> None:
    config = SimConfig(mode="live", symbols=("AAPL",), rate=20.0)
    async with (
        Simulator(config) as sim,
        run_connector(
            sim, redis_server.url, ping_interval=0.05, ping_timeout=0.05, max_missed_pongs=2
        ) as app,
    ):
        await sim.record.wait_until(lambda: len(sim.record.connections) == 1)
        sim.set_answer_pings(False)
        await sim.record.wait_until(lambda: len(sim.record.connections) >= 2)
        assert app.sample("connector_missed_pongs_total") >= 2
        sim.set_answer_pings(True)
        await wait_until(lambda: app.sample("connector_reconnects_total") >= 1)
        await wait_until(lambda: app.connector.session.connected)
        # Pongs flow again on the new connection.
        await wait_until(lambda: app.sample("connector_ping_rtt_seconds_count") >= 1)


async def test_documentation_style_live_ids_are_acked_unless_turned_off(
    redis_server: RedisServer,
) -> None:
    config = SimConfig(mode="live", symbols=("AAPL",), rate=500.0, count=50, id_field="id")
    async with Simulator(config) as sim, run_connector(sim, redis_server.url) as app:
        await sim.wait_finished()
        await sim.record.wait_until(lambda: len(sim.record.acked_ids()) == 50)
        assert app.sample("connector_pending_acks") == 0
    async with (
        Simulator(config) as quiet,
        run_connector(quiet, redis_server.url, ack_live="false") as app,
    ):
        await quiet.wait_finished()
        await wait_until(
            lambda: (
                app.sample("connector_published_total", type="quote")
                + app.sample("connector_published_total", type="candle")
                == 50
            )
        )
        assert quiet.record.acks == []


async def test_broker_outage_frames_are_published(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    config = SimConfig(mode="live", symbols=("AAPL", "MSFT"), rate=200.0)
    async with Simulator(config) as sim, run_connector(sim, redis_server.url) as app:
        await sim.record.wait_until(lambda: sim.record.market_frames > 4)
        sim.broker_disconnect(["AAPL"])
        sim.broker_reconnect()
        sim.rate_limit()
        sim.send_error("LIQUIDATION")
        await wait_until(lambda: app.sample("connector_published_total", type="error") == 1)
        await wait_until(
            lambda: app.sample("connector_published_total", type="data_staleness") >= 2
        )
    connection = [e["event"] for e in await stream_entries(redis_client, "md:connection")]
    assert connection[:2] == ["BROKER_DISCONNECTED", "BROKER_RECONNECTED"]
    staleness = await stream_entries(redis_client, "md:data_staleness")
    assert [e["event"] for e in staleness][:2] == ["STALE", "FRESH"]
    assert (await stream_entries(redis_client, "md:rate_limit"))[0]["event"] == "RATE_LIMIT_WARNING"
    assert '"LIQUIDATION"' in (await stream_entries(redis_client, "md:error"))[0]["data"]


async def test_api_key_is_sent_and_a_wrong_key_is_refused(redis_server: RedisServer) -> None:
    config = SimConfig(mode="live", symbols=("AAPL",), rate=50.0, api_key="right-key")
    async with Simulator(config) as sim:
        async with run_connector(sim, redis_server.url, api_key="right-key") as app:
            await sim.record.wait_until(lambda: sim.record.market_frames > 2)
            await wait_until(lambda: app.connector.session.connected)
        async with run_connector(
            sim, redis_server.url, api_key="wrong-key", api_key_header="x-api-key"
        ) as app:
            await sim.record.wait_until(lambda: len(sim.record.auth_failures) >= 1)
            await wait_until(
                lambda: app.sample("connector_connect_failures_total", reason="auth") >= 1
            )
            assert not app.connector.session.connected
            status = await app.connector.readiness()
            assert not status.ready
