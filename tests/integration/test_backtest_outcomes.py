"""A run that did not finish never looks like one that did.

Every way a backtest can end without completing (the engine halts, the server closes mid-run,
the session is lost for good, the completion is not acknowledged in time) is written as a
``run_end`` marker, logged as an error, and ends ``connector run`` with exit code 3, in both ack
modes, also while a required group has nobody reading. A clean end is exit 0.
"""

from __future__ import annotations

import os
import signal

import pytest
from redis.asyncio import Redis

from connector.sim import SimConfig, Simulator
from tests.faults.test_websocket_faults import simulator_process
from tests.support.harness import run_connector, stream_entries, wait_until
from tests.support.redis_server import RedisServer, free_port

SYMBOLS = ("AAPL", "MSFT")
# Consumer-ack mode with a required group that nobody reads: every step stays held.
UNREAD = {"ack_mode": "consumer", "consumer_groups": "nobody"}
MODES = {"immediate": {}, "consumer, group down": UNREAD}


async def run_end(redis_url: str) -> dict[str, str]:
    redis = Redis.from_url(redis_url)
    try:
        ends = [m for m in await stream_entries(redis, "md:system") if m["type"] == "run_end"]
    finally:
        await redis.aclose()
    assert len(ends) == 1, ends
    return ends[0]


async def test_a_clean_run_is_exit_0_with_a_completed_marker(redis_server: RedisServer) -> None:
    async with (
        Simulator(SimConfig(mode="backtest", symbols=SYMBOLS, steps=10)) as sim,
        run_connector(sim, redis_server.url, mode="backtest") as app,
    ):
        assert await app.exit_code() == 0
    assert (await run_end(redis_server.url))["outcome"] == "completed"


@pytest.mark.parametrize("mode", MODES)
async def test_a_server_closing_mid_run_is_an_interruption(
    redis_server: RedisServer, mode: str
) -> None:
    config = SimConfig(mode="backtest", symbols=SYMBOLS, steps=10_000, step_timeout=30.0)
    async with (
        Simulator(config) as sim,
        run_connector(sim, redis_server.url, mode="backtest", **MODES[mode]) as app,
    ):
        # Immediate: a few steps in; a group down: step 0, held for good.
        await sim.record.wait_until(lambda: len(sim.record.steps) >= (3 if not MODES[mode] else 1))
        await sim.stop()  # DISCONNECTING, then the closing handshake (1001)
        assert await app.exit_code(within=30) == 3
    assert app.connector.outcome == "interrupted"
    end = await run_end(redis_server.url)
    assert end["outcome"] == "interrupted"
    assert "closed the session" in end["detail"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_session_lost_for_good_is_an_interruption(
    redis_server: RedisServer, mode: str
) -> None:
    """The server process vanishes (no goodbye): the connector waits the reconnect window."""
    port = free_port()
    args = ("--mode", "backtest", "--symbols", ",".join(SYMBOLS), "--steps", "100000")
    async with (
        simulator_process(port, *args) as sim,
        run_connector(
            f"ws://127.0.0.1:{port}/v1/ws",
            redis_server.url,
            mode="backtest",
            backtest_reconnect_window=0.5,
            **MODES[mode],
        ) as app,
    ):
        await wait_until(lambda: app.connector.acknowledger.seen >= 2)  # the run has started
        sim.kill()
        await sim.wait()
        assert await app.exit_code(within=30) == 3
    assert app.connector.outcome == "interrupted"
    assert "not back within 0.5 s" in (await run_end(redis_server.url))["detail"]


async def test_a_completion_not_acknowledged_in_time_is_not_a_success(
    redis_server: RedisServer,
) -> None:
    """Redis does not answer: backtest_complete cannot be stored, so it is never acknowledged,
    and the engine gives up on it. The connector says so instead of claiming a finished run."""
    assert redis_server.process is not None
    pid = redis_server.process.pid
    config = SimConfig(mode="backtest", symbols=SYMBOLS, steps=0, complete_timeout=30.0)
    os.kill(pid, signal.SIGSTOP)
    try:
        async with (
            Simulator(config) as sim,
            run_connector(
                sim,
                redis_server.url,
                mode="backtest",
                prefix_lock="false",
                redis_timeout=0.5,
                complete_ack_timeout=1.0,
                shutdown_timeout=1.0,
            ) as app,
        ):
            assert await app.exit_code(within=30) == 3
        assert app.connector.outcome == "unacknowledged"
        assert sim.record.acks == []
    finally:
        os.kill(pid, signal.SIGCONT)


async def test_an_engine_that_halts_while_a_group_is_down_is_not_a_success(
    redis_server: RedisServer,
) -> None:
    """Nobody reads the required group, so nothing is acknowledged: the engine gives up and
    sends backtest_complete without an event id, leaving the socket open (as the gateway
    does). The connector leaves at once, without waiting for the held steps: exit 3. (An
    id-less end in immediate mode: test_connector_backtest.)"""
    config = SimConfig(
        mode="backtest",
        symbols=SYMBOLS,
        steps=50,
        step_timeout=0.2,
        halt_before_first_ack=2,
    )
    async with (
        Simulator(config) as sim,
        run_connector(sim, redis_server.url, mode="backtest", **UNREAD) as app,
    ):
        assert await app.exit_code(within=30) == 3
        assert sim.record.outcome == "halted"
    assert app.connector.outcome == "halted"
    end = await run_end(redis_server.url)
    assert end["outcome"] == "halted"
