"""The strategy round trip: a strategy reacts to bar t with an order, and consumer-ack mode gets
it filled at bar t+1, as live trading would (fill lag 0), because the engine waits for it.

Fill lag = fill bar - signal bar - 1, on the simulator's own record (which bar an order filled
on) and the strategy's signal bar. The example strategy of the toolkit, and one that knows
nothing of the toolkit, run through `connector run`'s in-process twin against the simulator.
"""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from connector.examples import crossover
from connector.sim import SimConfig, Simulator
from connector.sim.portfolio import STARTING_BALANCE
from connector.sim.timefmt import SIM_EPOCH_S
from connector.trading.rest import TradingApiError, TradingRest
from tests.support.harness import run_connector
from tests.support.redis_server import RedisServer

SYMBOLS = ("AAPL", "MSFT", "BTCUSD")
THIRD_PARTY = Path(__file__).resolve().parents[1] / "support" / "third_party_strategy.py"


def backtest(steps: int) -> SimConfig:
    # The engine's own synthetic fills off: every order is the strategy's.
    return SimConfig(
        mode="backtest", symbols=SYMBOLS, steps=steps, seed=7, fill_every=0, other_every=0
    )


async def trade(sim: Simulator, url: str, ack_mode: str) -> tuple[dict[str, Any], int]:
    """The example strategy through a connector in ``ack_mode``: its report, the exit code."""
    groups = {"consumer_groups": "strategy[types=candle]"} if ack_mode == "consumer" else {}
    redis = Redis.from_url(url)
    rest = TradingRest(sim.url)
    try:
        strategy = asyncio.create_task(crossover.run(redis, rest, fast=3, slow=8))
        async with run_connector(sim, url, mode="backtest", ack_mode=ack_mode, **groups) as app:
            code = await app.exit_code(within=120)
        return await asyncio.wait_for(strategy, 30), code
    finally:
        await rest.close()
        await redis.aclose()


async def test_the_example_strategy_fills_on_the_bar_after_its_signal_in_consumer_mode(
    redis_server: RedisServer,
) -> None:
    async with Simulator(backtest(120)) as sim:
        report, code = await trade(sim, redis_server.url, "consumer")
    assert code == 0
    assert sim.record.outcome == "completed"
    assert sim.record.timeouts == 0
    assert report["orders"] >= 5
    assert report["fill_lags"] == [0] * report["filled"]  # every fill: on the next bar
    assert report["filled_next_bar"] == report["filled"]
    # The simulator agrees: each REST order arrived while its signal bar was outstanding, and
    # only an order signalled by the last bar (no bar left to fill it) went unfilled.
    orders = [order for order in sim.record.orders if not order.synthetic]
    assert len(orders) == report["orders"]
    assert all(order.received_while_pending for order in orders)
    for order in orders:
        assert order.received_step is not None
        if order.fill_step is None:
            assert order.received_step == 119
        else:
            assert order.fill_step == order.received_step + 1
    # The P&L is the account's: equity moved by exactly it.
    equity = Decimal(sim.desk.account()["equity"])
    assert Decimal(report["pnl"]) == equity - STARTING_BALANCE


async def test_immediate_mode_is_measured_the_same_way(redis_server: RedisServer) -> None:
    """Same data, same strategy: the engine does not wait, so the orders arrive after it has
    moved on. Whatever the lags are, they are reported (connector bench compares the modes)."""
    async with Simulator(backtest(120)) as sim:
        report, code = await trade(sim, redis_server.url, "immediate")
    assert code == 0
    assert report["orders"] == len(report["fill_lags"]) + (report["orders"] - report["filled"])
    assert all(lag >= 0 for lag in report["fill_lags"])


async def test_a_strategy_that_knows_nothing_of_the_toolkit_gets_lag_0(
    redis_server: RedisServer,
) -> None:
    """redis-py, urllib and the REST surface, in a process of its own; declared as reading the
    AAPL candles only."""
    url = redis_server.url
    async with Simulator(backtest(60)) as sim:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(THIRD_PARTY), url, sim.http_url, "third", "AAPL",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            async with run_connector(
                sim,
                url,
                mode="backtest",
                ack_mode="consumer",
                consumer_groups="third[types=candle; symbols=AAPL]",
            ) as app:
                assert await app.exit_code(within=120) == 0
            out, _ = await asyncio.wait_for(process.communicate(), 30)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert process.returncode == 0
    placed = int(out.decode().split('"orders": ')[1].rstrip("}\n"))
    orders = [order for order in sim.record.orders if not order.synthetic]
    assert len(orders) == placed >= 10
    assert sim.record.timeouts == 0
    for order in orders:
        assert order.client_order_id is not None
        signal_bar = (int(order.client_order_id.removeprefix("sig-")) // 1000 - SIM_EPOCH_S) // 60
        if signal_bar < 59:  # the last bar's order has no bar left to fill it
            assert order.fill_step == signal_bar + 1, order  # lag 0


async def test_the_rest_client_reports_the_servers_errors(redis_server: RedisServer) -> None:
    async with Simulator(backtest(5)) as sim:
        rest = TradingRest(sim.url)
        try:
            with pytest.raises(TradingApiError) as refused:
                await rest.place_order("TSLA", "BUY", "1")
            assert refused.value.status == 400
            assert refused.value.code == "INVALID_VALUE"
            assert refused.value.details["field"] == "symbol"
            assert (await rest.account())["currency"]
        finally:
            await rest.close()
