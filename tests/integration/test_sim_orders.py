"""Orders over the REST API on the stream's port, and their fills in backtest and live runs."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from connector.sim import SimConfig, Simulator
from tests.integration.sim_http import LIMIT, post_order, request

BACKTEST: dict[str, Any] = {
    "fill_every": 0,
    "other_every": 0,
    "shutdown_grace": 0.01,
    "close_timeout": 0.5,
    "symbols": ("AAPL",),
}


def backtest(**changes: Any) -> SimConfig:
    return SimConfig(**(BACKTEST | changes))


def idle(**changes: Any) -> SimConfig:
    """A backtest that never starts (it waits for two clients): orders are only accepted."""
    return backtest(min_clients=2, **changes)


def ack(ids: list[str]) -> str:
    frame = {
        "type": "event_ack",
        "correlation_id": str(uuid.uuid4()),
        "events_processed": ids,
        "timestamp": int(time.time() * 1000),
    }
    return orjson.dumps(frame).decode()


async def recv(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(LIMIT):
        frame = orjson.loads(await ws.recv())
    assert isinstance(frame, dict)
    return frame


async def recv_step(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    """``count`` frames, then one ack naming all their ids."""
    frames = [await recv(ws) for _ in range(count)]
    await ws.send(ack([f["event_id"] for f in frames]))
    return frames


# The REST surface ----------------------------------------------------------------------------


async def test_an_accepted_order_is_201_and_can_be_read_back() -> None:
    async with Simulator(idle()) as sim:
        reply = await post_order(sim.port, client_order_id="c-1", time_in_force="day")
        assert reply.status == 201
        assert reply.headers["content-type"] == "application/json"
        handle = reply.json()
        assert set(handle) == {"id", "client_order_id", "correlation_id", "status"}
        assert handle["client_order_id"] == "c-1"
        assert handle["status"] == "OPEN"
        uuid.UUID(handle["correlation_id"])
        order = (await request(sim.port, "GET", f"/v1/orders/{handle['id']}")).json()
        assert order["id"] == handle["id"]
        assert (order["quantity"], order["filled_quantity"], order["remaining_quantity"]) == (
            "10",
            "0",
            "10",
        )
        assert order["time_in_force"] == "DAY"
        assert order["correlation_id"] == handle["correlation_id"]
        listed = (await request(sim.port, "GET", "/v1/orders?symbol=AAPL")).json()
        assert [o["id"] for o in listed] == [handle["id"]]
        assert (await request(sim.port, "GET", "/v1/orders?symbol=MSFT")).json() == []
    record = sim.record.order(handle["id"])
    assert record is not None
    assert (record.received_step, record.status, record.client_order_id) == (None, "OPEN", "c-1")


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"side": None}, "INVALID_REQUEST", "side"),
        ({"quantity": "0"}, "VALIDATION_ERROR", "quantity"),
        ({"quantity": "-3"}, "VALIDATION_ERROR", "quantity"),
        ({"symbol": "NOPE"}, "INVALID_VALUE", "symbol"),
        ({"side": "SIDEWAYS"}, "INVALID_REQUEST", "side"),
        ({"order_type": "SOMETIMES"}, "INVALID_REQUEST", "order_type"),
        ({"order_type": "LIMIT"}, "INVALID_REQUEST", "limit_price"),
    ],
)
async def test_bad_orders_are_400_with_a_reason(
    fields: dict[str, Any], code: str, field: str
) -> None:
    async with Simulator(idle()) as sim:
        body = {"symbol": "AAPL", "side": "BUY", "quantity": "1", "order_type": "MARKET"}
        body.update(fields)
        reply = await request(sim.port, "POST", "/v1/orders", json=body)
        assert reply.status == 400
        error = reply.json()
        assert error["code"] == code
        assert error["details"]["field"] == field
        assert error["message"]
    assert sim.record.orders == []


async def test_bad_json_and_content_type_are_400() -> None:
    async with Simulator(idle()) as sim:
        broken = await request(
            sim.port,
            "POST",
            "/v1/orders",
            body=b'{"symbol": "AAPL",',
            headers={"Content-Type": "application/json"},
        )
        assert broken.status == 400
        assert broken.json()["code"] == "INVALID_REQUEST"
        assert "Invalid JSON" in broken.json()["message"]
        wrong_type = await request(
            sim.port, "POST", "/v1/orders", body=b"symbol=AAPL", headers={"Content-Type": "text/x"}
        )
        assert wrong_type.status == 400
        assert "Content-Type" in wrong_type.json()["message"]


async def test_unknown_orders_are_404_and_other_mistakes_have_their_status() -> None:
    async with Simulator(idle()) as sim:
        for method in ("GET", "DELETE"):
            reply = await request(sim.port, method, "/v1/orders/ord-999")
            assert reply.status == 404
            assert reply.json() == {
                "code": "ORDER_NOT_FOUND",
                "message": "Order not found: ord-999",
                "details": {"resource": "order", "id": "ord-999"},
            }
        not_allowed = await request(sim.port, "PUT", "/v1/account")
        assert not_allowed.status == 405
        assert not_allowed.headers["allow"] == "GET"
        assert (await request(sim.port, "GET", "/v1/nothing")).status == 404
        unsupported = await post_order(sim.port, order_type="STOP_LIMIT")
        assert (unsupported.status, unsupported.json()["code"]) == (501, "UNSUPPORTED_OPERATION")


async def test_the_api_takes_the_streams_key_and_the_probes_need_none() -> None:
    async with Simulator(idle(api_key="s3cret")) as sim:
        missing = await post_order(sim.port)
        assert missing.status == 401
        assert missing.json() == {
            "code": "UNAUTHORIZED",
            "message": "Unauthorized: API key required",
            "details": {"code": "MISSING_API_KEY"},
        }
        wrong = await request(sim.port, "GET", "/v1/account", headers={"X-API-Key": "nope"})
        assert wrong.status == 401
        assert wrong.json()["details"] == {"code": "INVALID_API_KEY"}
        assert wrong.json()["message"] == "Unauthorized: Invalid API key"
        bearer = await post_order(sim.port, headers={"Authorization": "Bearer s3cret"})
        assert bearer.status == 201
        header = await request(sim.port, "GET", "/v1/orders", headers={"X-API-Key": "s3cret"})
        assert header.status == 200
        for probe in ("/health", "/livez", "/readyz"):
            assert (await request(sim.port, "GET", probe)).status == 200
    assert [(f.path, f.reason) for f in sim.record.auth_failures] == [
        ("/v1/orders", "missing credentials"),
        ("/v1/account", "wrong key"),
    ]


async def test_probes() -> None:
    async with Simulator(idle(symbols=("AAPL", "MSFT"))) as sim:
        assert (await request(sim.port, "GET", "/livez")).json() == {"status": "ok"}
        assert (await request(sim.port, "GET", "/readyz")).json() == {
            "ready": True,
            "providers": ["tektii"],
            "provider_count": 1,
        }
        health = (await request(sim.port, "GET", "/health")).json()
        assert health["status"] == "connected"
        assert health["providers"] == [{"platform": "tektii", "connected": True}]
        sim.broker_disconnect(["MSFT"])
        degraded = (await request(sim.port, "GET", "/health")).json()
        assert degraded["status"] == "degraded"
        assert degraded["providers"][0]["stale_instruments"] == ["MSFT"]
        assert (await request(sim.port, "POST", "/health")).status == 405


async def test_cancelling_one_and_all() -> None:
    async with Simulator(idle(symbols=("AAPL", "MSFT"))) as sim:
        first = (await post_order(sim.port, order_type="LIMIT", limit_price="100")).json()
        await post_order(sim.port, order_type="LIMIT", limit_price="90")
        await post_order(sim.port, symbol="MSFT", order_type="STOP", stop_price="500")
        cancelled = await request(sim.port, "DELETE", f"/v1/orders/{first['id']}")
        assert cancelled.status == 200
        assert cancelled.json()["success"] is True
        assert cancelled.json()["order"]["status"] == "CANCELLED"
        again = await request(sim.port, "DELETE", f"/v1/orders/{first['id']}")
        assert (again.status, again.json()["code"]) == (409, "ORDER_NOT_MODIFIABLE")
        only_aapl = await request(sim.port, "DELETE", "/v1/orders?symbol=AAPL")
        assert only_aapl.json() == {"cancelled_count": 1, "failed_count": 0}
        rest = await request(sim.port, "DELETE", "/v1/orders")
        assert rest.json() == {"cancelled_count": 1, "failed_count": 0}
        assert (await request(sim.port, "GET", "/v1/orders")).json() == []
        history = (await request(sim.port, "GET", "/v1/orders/history")).json()
        assert [o["status"] for o in history] == ["CANCELLED"] * 3
    assert [o.status for o in sim.record.orders] == ["CANCELLED"] * 3


async def test_orders_the_venue_refuses_are_422() -> None:
    async with Simulator(idle()) as sim:
        reduce_only = await post_order(sim.port, reduce_only=True)
        assert reduce_only.status == 422
        assert reduce_only.json()["code"] == "ORDER_REJECTED"
        assert reduce_only.json()["details"] == {"reject_reason": "REDUCE_ONLY_VIOLATED"}
        # 10000 x 150 x 25 % of margin is more than the 100000 of equity.
        too_big = await post_order(
            sim.port, quantity="10000", order_type="LIMIT", limit_price="150"
        )
        assert too_big.status == 422
        assert too_big.json()["details"] == {"reject_reason": "INSUFFICIENT_MARGIN"}
    assert sim.record.orders == []


async def test_an_order_after_the_end_is_refused() -> None:
    async with Simulator(backtest(steps=1)) as sim, connect(sim.url) as ws:
        await recv_step(ws, 1)
        await recv_step(ws, 1)  # backtest_complete
        async with asyncio.timeout(LIMIT):
            assert await sim.wait_finished() == "completed"
        late = await post_order(sim.port)
        assert late.status == 422
        assert late.json()["details"] == {"reject_reason": "MARKET_CLOSED"}
        assert (await request(sim.port, "GET", "/v1/account")).status == 200


# Backtest fills ------------------------------------------------------------------------------


async def test_an_order_placed_before_the_ack_fills_at_the_next_open() -> None:
    async with Simulator(backtest(steps=3)) as sim, connect(sim.url) as ws:
        bar0 = await recv(ws)
        handle = (await post_order(sim.port, client_order_id="signal-0")).json()
        await ws.send(ack([bar0["event_id"]]))
        # The order's creation: a step of its own, once bar 0 was released.
        (created,) = await recv_step(ws, 1)
        assert (created["type"], created["event"]) == ("order", "ORDER_CREATED")
        assert created["order"]["status"] == "OPEN"
        # Then the fill, as a step before bar 1's candle.
        fill = await recv_step(ws, 4)
        (bar1,) = await recv_step(ws, 1)
    assert [f["type"] for f in fill] == ["order", "trade", "account", "position"]
    order, trade, account, position = (f[f["type"]] for f in fill)
    assert fill[0]["event"] == "ORDER_FILLED"
    assert order["status"] == "FILLED"
    assert order["average_fill_price"] == trade["price"] == bar1["bar"]["open"]
    assert order["correlation_id"] == handle["correlation_id"]
    assert order["remaining_quantity"] == "0"
    assert trade["timestamp"] == bar1["bar"]["timestamp"] == "2024-01-01T00:01:00Z"
    assert (fill[1]["event"], fill[2]["event"], fill[3]["event"]) == (
        "TRADE_FILLED",
        "BALANCE_UPDATED",
        "POSITION_MODIFIED",
    )
    assert account["balance"] == "99999.00"
    assert position["quantity"] == "10"
    assert all("event_id" in f for f in fill)
    assert [s.kind for s in sim.record.steps][:4] == ["bar", "orders", "fills", "bar"]
    record = sim.record.order(handle["id"])
    assert record is not None
    assert (record.received_step, record.fill_step, record.fill_lag) == (0, 1, 0)
    assert record.received_while_pending
    assert record.fill_price == bar1["bar"]["open"]
    assert sim.record.fill_lags() == [0]


async def test_an_order_placed_after_the_ack_fills_a_bar_later() -> None:
    async with Simulator(backtest(steps=4)) as sim, connect(sim.url) as ws:
        await recv_step(ws, 1)  # bar 0, acknowledged before the strategy reacts
        await recv(ws)  # bar 1 is already out
        handle = (await post_order(sim.port, client_order_id="signal-0")).json()
    record = sim.record.order(handle["id"])
    assert record is not None
    assert record.received_step == 1  # the engine was a bar ahead of the strategy
    report = sim.report()
    (entry,) = report["orders"]
    assert entry["received_step"] == 1
    assert entry["client_order_id"] == "signal-0"
    assert report["counts"]["orders"] == 1


async def test_limit_orders_wait_for_a_bar_that_trades_through() -> None:
    async with Simulator(backtest(steps=6)) as sim, connect(sim.url) as ws:
        bar0 = await recv(ws)
        close = Decimal(bar0["bar"]["close"])
        far = await post_order(sim.port, order_type="LIMIT", limit_price=str(close / 2))
        near = await post_order(sim.port, order_type="LIMIT", limit_price=str(close * 2))
        await ws.send(ack([bar0["event_id"]]))
        created = await recv_step(ws, 2)
        assert [f["event"] for f in created] == ["ORDER_CREATED"] * 2
        fill = await recv_step(ws, 4)
        (bar1,) = await recv_step(ws, 1)
        assert fill[0]["order"]["id"] == near.json()["id"]
        # A buy limit above the market fills at the open: the better price.
        assert fill[1]["trade"]["price"] == bar1["bar"]["open"]
        cancelled = await request(sim.port, "DELETE", f"/v1/orders/{far.json()['id']}")
        assert cancelled.status == 200
        (bar2,) = await recv_step(ws, 1)
        (event,) = await recv_step(ws, 1)
        assert event["event"] == "ORDER_CANCELLED"
    assert bar2["type"] == "candle"
    far_record = sim.record.order(far.json()["id"])
    assert far_record is not None
    assert (far_record.status, far_record.fill_step) == ("CANCELLED", None)


async def test_positions_pnl_and_balance_add_up_after_fills() -> None:
    config = backtest(steps=8, symbols=("AAPL", "MSFT"))
    async with Simulator(config) as sim, connect(sim.url) as ws:
        plan = {0: ("AAPL", "BUY", "10"), 2: ("MSFT", "SELL", "4"), 4: ("AAPL", "SELL", "15")}
        step = 0
        while True:
            frame = await recv(ws)
            if frame["type"] == "backtest_complete":
                await ws.send(ack([frame["event_id"]]))
                break
            if frame["type"] == "candle" and frame["bar"]["symbol"] == "MSFT":
                if step in plan:
                    symbol, side, quantity = plan[step]
                    reply = await post_order(sim.port, symbol=symbol, side=side, quantity=quantity)
                    assert reply.status == 201
                step += 1
            await ws.send(ack([frame["event_id"]]))
        account = (await request(sim.port, "GET", "/v1/account")).json()
        positions = (await request(sim.port, "GET", "/v1/positions")).json()
        trades = (await request(sim.port, "GET", "/v1/trades")).json()
    assert len(trades) == 3
    by_symbol = {p["symbol"]: p for p in positions}
    assert (by_symbol["AAPL"]["side"], by_symbol["AAPL"]["quantity"]) == ("SHORT", "5")
    assert (by_symbol["MSFT"]["side"], by_symbol["MSFT"]["quantity"]) == ("SHORT", "4")
    buy, sell = (Decimal(t["price"]) for t in trades if t["symbol"] == "AAPL")
    realized = 10 * (sell - buy)  # the 10 long closed by the 15 sold; 5 short remain
    balance = Decimal("100000.00") + realized - 3 * Decimal("1.00")
    assert Decimal(account["balance"]) == balance
    unrealized = sum(Decimal(p["unrealized_pnl"]) for p in positions)
    assert Decimal(account["unrealized_pnl"]) == unrealized
    assert Decimal(account["equity"]) == balance + unrealized
    assert Decimal(by_symbol["AAPL"]["average_entry_price"]) == sell
    assert sim.record.fill_lags() == [0, 0, 0]
    assert set(sim.record.event_ids()) <= sim.record.acked_ids()


@pytest.mark.parametrize("position_time", ["wall", "sim"])
async def test_position_timestamps(position_time: str) -> None:
    config = backtest(steps=1, fill_every=1, position_time=position_time)
    async with Simulator(config) as sim, connect(sim.url) as ws:
        frames = await recv_step(ws, 5)
    position = frames[-1]["position"]
    assert frames[-1]["event"] == "POSITION_MODIFIED"
    year = "2024" if position_time == "sim" else time.strftime("%Y", time.gmtime())
    assert position["opened_at"].startswith(year)
    assert position["updated_at"].startswith(year)
    assert {"current_price", "unrealized_pnl", "realized_pnl"} <= set(position)


@pytest.mark.parametrize(("loss", "present"), [(0.0, True), (1.0, False)])
async def test_a_fill_can_lose_the_correlation_id(loss: float, present: bool) -> None:
    config = backtest(steps=2, fill_correlation_loss=loss)
    async with Simulator(config) as sim, connect(sim.url) as ws:
        bar0 = await recv(ws)
        await post_order(sim.port)
        await ws.send(ack([bar0["event_id"]]))
        (created,) = await recv_step(ws, 1)
        fill = await recv_step(ws, 4)
    assert "correlation_id" in created["order"]
    assert ("correlation_id" in fill[0]["order"]) is present


# Live fills ----------------------------------------------------------------------------------


def live(**changes: Any) -> SimConfig:
    base: dict[str, Any] = {"mode": "live", "symbols": ("AAPL",), "rate": 50.0}
    base.update(shutdown_grace=0.01, close_timeout=0.5, live_fill_delay=0.05)
    base.update(changes)
    return SimConfig(**base)


async def next_order_frame(ws: ClientConnection) -> dict[str, Any]:
    while (frame := await recv(ws))["type"] in ("quote", "candle"):
        pass
    return frame


async def test_live_orders_are_created_at_once_and_filled_a_moment_later() -> None:
    async with Simulator(live()) as sim, connect(sim.url) as ws:
        await recv(ws)
        handle = (await post_order(sim.port)).json()
        created = await next_order_frame(ws)
        filled = await next_order_frame(ws)
        positions = (await request(sim.port, "GET", "/v1/positions")).json()
    assert created["event"] == "ORDER_CREATED"
    assert next(iter(created)) == "type"
    assert "event_id" not in created
    assert filled["event"] == "ORDER_FILLED"
    assert filled["order"]["id"] == handle["id"]
    assert filled["order"]["correlation_id"] == handle["correlation_id"]
    # The mock gateway sends only the order frame; the position exists all the same.
    assert [p["quantity"] for p in positions] == ["10"]
    record = sim.record.order(handle["id"])
    assert record is not None
    assert record.status == "FILLED"
    assert record.fill_step is None  # no bars in live mode: only times
    assert record.filled_at is not None
    assert record.filled_at > record.received_at


async def test_live_fill_group_adds_trade_account_and_position() -> None:
    async with Simulator(live(live_fill_group=True)) as sim, connect(sim.url) as ws:
        await recv(ws)
        await post_order(sim.port, side="SELL")
        assert (await next_order_frame(ws))["event"] == "ORDER_CREATED"
        group = [await next_order_frame(ws) for _ in range(4)]
    assert [f["type"] for f in group] == ["order", "trade", "account", "position"]
    assert group[3]["event"] == "POSITION_OPENED"
    assert group[3]["position"]["side"] == "SHORT"
