"""The desk's fill rule in time: which bar fills an order, and what the fill reports."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from connector.sim.config import SimConfig
from connector.sim.desk import Desk, OrderEvent
from connector.sim.market import Bar
from connector.sim.orders import ApiError, Order
from connector.sim.record import Record
from connector.sim.timefmt import SIM_EPOCH_S, IsoClock

WALL_NS = 1_752_398_102_000_000_000  # 2025-07-13T09:15:02Z


class Flow:
    """A run stand-in: the bar clock is set by the test; events are collected."""

    def __init__(self) -> None:
        self.last_bar: int | None = None
        self.pending = True
        self.over = False
        self.events: list[OrderEvent] = []

    def order_clock(self) -> tuple[int | None, bool]:
        return self.last_bar, self.pending

    def closed_reason(self) -> str | None:
        return "over" if self.over else None

    def sim_time(self) -> str:
        return "2024-01-01T00:00:00Z"

    def order_accepted(self, order: Order, events: list[OrderEvent]) -> None:
        self.events += events

    def order_events(self, events: list[OrderEvent]) -> None:
        self.events += events


def desk(**changes: Any) -> tuple[Desk, Flow, Record]:
    record = Record()
    config = SimConfig(symbols=("AAPL", "MSFT"), **changes)
    trading = Desk(config, record, IsoClock(lambda: WALL_NS))
    flow = Flow()
    trading.attach(flow)
    return trading, flow, record


def bar(index: int, open_: str, high: str, low: str, symbol: str = "AAPL") -> Bar:
    return Bar(symbol, SIM_EPOCH_S + 60 * index, open_, high, low, open_, "1000")


def submit(trading: Desk, **fields: Any) -> str:
    body: dict[str, Any] = {"symbol": "AAPL", "side": "BUY", "quantity": "2"}
    body["order_type"] = "MARKET"
    body.update(fields)
    order_id: str = trading.submit(body)["id"]
    return order_id


def test_an_order_fills_at_the_bar_after_the_last_one_emitted() -> None:
    trading, flow, record = desk()
    flow.last_bar = 4  # bar 4 is out and waiting for its acks
    order_id = submit(trading)
    assert [e.body["event"] for e in flow.events] == ["ORDER_CREATED"]
    assert trading.fills_for_bar(4, [bar(4, "100", "101", "99")]) == []  # too early
    events = trading.fills_for_bar(5, [bar(5, "102", "103", "101")])
    assert [e.kind for e in events] == ["order", "trade", "account", "position"]
    trade = events[1].body["trade"]
    assert (trade["price"], trade["timestamp"]) == ("102", "2024-01-01T00:05:00Z")
    assert trading.fills_for_bar(6, [bar(6, "104", "105", "103")]) == []  # filled once
    (entry,) = record.orders
    assert (entry.order_id, entry.received_step, entry.fill_step) == (order_id, 4, 5)
    assert entry.fill_lag == 0
    assert entry.received_while_pending


def test_before_the_first_bar_an_order_fills_at_bar_0() -> None:
    trading, flow, record = desk()
    flow.last_bar, flow.pending = None, False
    submit(trading)
    assert trading.fills_for_bar(0, [bar(0, "100", "100", "100")])
    assert (record.orders[0].received_step, record.orders[0].fill_lag) == (None, None)


def test_a_bar_without_the_symbol_leaves_the_order_for_the_next_one() -> None:
    trading, flow, _ = desk()
    flow.last_bar = 0
    submit(trading)
    assert trading.fills_for_bar(1, [bar(1, "400", "401", "399", symbol="MSFT")]) == []
    assert trading.fills_for_bar(2, [bar(2, "100", "101", "99")])


def test_a_limit_rests_until_a_bar_reaches_it_and_ioc_expires_instead() -> None:
    trading, flow, _ = desk()
    flow.last_bar = 0
    resting = submit(trading, order_type="LIMIT", limit_price="95")
    submit(trading, order_type="LIMIT", limit_price="95", time_in_force="IOC")
    first = trading.fills_for_bar(1, [bar(1, "100", "101", "99")])
    assert [(e.body["event"], e.body["order"]["status"]) for e in first] == [
        ("ORDER_EXPIRED", "EXPIRED")
    ]
    second = trading.fills_for_bar(2, [bar(2, "98", "99", "94")])
    assert second[0].body["order"]["id"] == resting
    assert second[1].body["trade"]["price"] == "95"


def test_fills_report_positions_on_the_wall_clock_as_modified() -> None:
    trading, flow, _ = desk()
    flow.last_bar = 0
    submit(trading)
    position = trading.fills_for_bar(1, [bar(1, "100", "100", "100")])[3].body
    assert position["event"] == "POSITION_MODIFIED"
    assert position["position"]["opened_at"] == "2025-07-13T09:15:02.000000000Z"
    assert position["position"]["realized_pnl"] == "0"


def test_synthetic_fills_go_through_the_same_account() -> None:
    trading, _, record = desk()
    events = trading.synthetic_fill(bar(3, "100", "100", "100"), "SELL", 3)
    assert events[0].body["order"]["side"] == "SELL"
    assert trading.positions()[0]["side"] == "SHORT"
    assert trading.account()["balance"] == "99999.00"
    (entry,) = record.orders
    assert (entry.synthetic, entry.fill_step, entry.fill_lag) == (True, 3, 0)
    assert record.fill_lags() == []  # only orders placed over REST count


def test_cancel_and_refusals() -> None:
    trading, flow, _ = desk()
    order_id = submit(trading, order_type="STOP", stop_price="120")
    assert trading.cancel(order_id)["order"]["status"] == "CANCELLED"
    assert flow.events[-1].body["event"] == "ORDER_CANCELLED"
    with pytest.raises(ApiError) as gone:
        trading.cancel(order_id)
    assert gone.value.status == 409
    flow.over = True
    with pytest.raises(ApiError) as closed:
        submit(trading)
    assert (closed.value.status, closed.value.details) == (
        422,
        {"reject_reason": "MARKET_CLOSED"},
    )


def test_margin_is_checked_at_the_last_price() -> None:
    trading, _, _ = desk()
    trading.mark([bar(0, "100", "100", "100")])
    submit(trading, quantity="3999")  # 3999 x 100 x 25 % < 100000
    with pytest.raises(ApiError) as refused:
        submit(trading, quantity="4001")
    assert refused.value.details == {"reject_reason": "INSUFFICIENT_MARGIN"}
    assert Decimal(trading.account()["equity"]) == Decimal("100000.00")
