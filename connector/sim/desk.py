"""The simulated trading account: takes orders from the REST surface, fills them, reports them.

The desk owns the orders, the trades and the :class:`~connector.sim.portfolio.Portfolio`; it
builds every order, trade, position and account payload. *When* those events reach the clients
is the run's business, reached through :class:`OrderFlow`: the backtest engine turns them into
acknowledged steps (ORDER_CREATED in a step of its own once the current step is released, fills
in a step before the candles of the bar that fills them), the live feed sends ORDER_CREATED at
once and the fill a moment later.

Every accepted order gets an :class:`~connector.sim.record.OrderRecord`, so a benchmark can read
the bar it arrived at and the bar that filled it.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from connector.sim.config import SimConfig
from connector.sim.decimals import dec_str
from connector.sim.market import Bar
from connector.sim.orders import (
    ApiError,
    Order,
    OrderRequest,
    Status,
    fill_price,
    parse_order_request,
)
from connector.sim.orders import fill_price_at as price_fills
from connector.sim.orders import rejected as rejected_order
from connector.sim.portfolio import FillOutcome, Holding, Portfolio
from connector.sim.record import OrderRecord, Record
from connector.sim.timefmt import IsoClock, iso_seconds

#: Quantity of each synthetic fill (the ``fill_every`` option).
SYNTHETIC_QUANTITY = Decimal("10")
_SINGLE_SHOT = ("IOC", "FOK")


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """One ``order``/``trade``/``account``/``position`` frame body, not yet encoded."""

    kind: str
    body: dict[str, Any]
    symbol: str


class OrderFlow(Protocol):
    """What the desk needs from the run (backtest engine or live feed) it trades in."""

    def order_clock(self) -> tuple[int | None, bool]:
        """(last bar index emitted or None, whether a step is waiting for its acks)."""
        ...

    def closed_reason(self) -> str | None:
        """Why orders are refused right now (the backtest is over), or None."""
        ...

    def sim_time(self) -> str:
        """The run's current time, for ``created_at``/``updated_at`` stamps."""
        ...

    def order_accepted(self, order: Order, events: list[OrderEvent]) -> None:
        """A new order was accepted; ``events`` announce it (ORDER_CREATED)."""
        ...

    def order_events(self, events: list[OrderEvent]) -> None:
        """Events of an existing order to deliver (ORDER_CANCELLED)."""
        ...


class Desk:
    """Orders, trades and the account of one simulator run."""

    def __init__(self, config: SimConfig, record: Record, clock: IsoClock) -> None:
        self._symbols = frozenset(config.symbols)
        self._record = record
        self._clock = clock
        self.portfolio = Portfolio(scale=config.decimal_scale)
        self._orders: dict[str, Order] = {}
        # The open ones again, so each bar looks at them only (a long run keeps thousands).
        self._open: dict[str, Order] = {}
        self._records: dict[str, OrderRecord] = {}
        self._trades: list[dict[str, Any]] = []
        self._resting: Counter[str] = Counter()  # open limit/stop orders per symbol
        self._order_ids = itertools.count(1)
        self._trade_ids = itertools.count(1)
        self._rng = random.Random(f"{config.seed}:orders")
        self._backtest = config.mode == "backtest"
        self._wall_positions = config.position_time == "wall"
        self._correlation_loss = config.fill_correlation_loss
        # The mock gateway sends only the order frame for a live fill; backtests send all four.
        self._full_groups = self._backtest or config.live_fill_group
        self._flow: OrderFlow | None = None

    def attach(self, flow: OrderFlow) -> None:
        self._flow = flow

    @property
    def flow(self) -> OrderFlow:
        if self._flow is None:
            raise ApiError(503, "PROVIDER_UNAVAILABLE", "Provider unavailable: not started")
        return self._flow

    # REST: orders --------------------------------------------------------------------------

    def submit(self, body: object) -> dict[str, Any]:
        """``POST /v1/orders``: validate, accept, announce; returns the 201 body."""
        request = parse_order_request(body, self._symbols)
        flow = self.flow
        reason = flow.closed_reason()
        if reason is not None:
            raise rejected_order("MARKET_CLOSED", reason)
        self._check_risk(request)
        now = flow.sim_time()
        order = Order(
            id=f"ord-{next(self._order_ids)}",
            request=request,
            created_at=now,
            updated_at=now,
            correlation_id=self._correlation_id(),
        )
        last_bar, pending = flow.order_clock()
        order.first_bar = 0 if last_bar is None else last_bar + 1
        self._book(order)
        self._add_record(self._new_record(order, last_bar, pending))
        self._record.changed()
        flow.order_accepted(order, [self._order_event("ORDER_CREATED", order)])
        handle: dict[str, Any] = {"id": order.id}
        if request.client_order_id is not None:
            handle["client_order_id"] = request.client_order_id
        handle.update(correlation_id=order.correlation_id, status=order.status)
        return handle

    def order(self, order_id: str) -> dict[str, Any]:
        return self._find(order_id).payload()

    def orders(self, query: Mapping[str, str], *, history: bool = False) -> list[dict[str, Any]]:
        """``GET /v1/orders`` (open orders unless ``status`` says otherwise) and its history."""
        statuses = _csv_upper(query.get("status"))
        chosen = [
            order
            for order in self._orders.values()
            if (order.status in statuses if statuses else history or order.is_open)
            and _matches(query, "symbol", order.request.symbol)
            and _matches(query, "side", order.request.side, upper=True)
            and _matches(query, "client_order_id", order.request.client_order_id)
        ]
        return [order.payload() for order in _limited(chosen, query)]

    def cancel(self, order_id: str) -> dict[str, Any]:
        """``DELETE /v1/orders/{id}``; only open orders can be cancelled (else 409)."""
        order = self._find(order_id)
        if not order.is_open:
            raise ApiError(
                409,
                "ORDER_NOT_MODIFIABLE",
                f"Order cannot be modified: it is {order.status}",
                {"order_id": order.id},
            )
        self.flow.order_events([self._cancel(order)])
        return {"success": True, "order": order.payload()}

    def cancel_all(self, symbol: str | None) -> dict[str, Any]:
        """``DELETE /v1/orders``: every open order (of ``symbol``), announced together."""
        chosen = [
            order
            for order in self._open.values()
            if symbol is None or order.request.symbol == symbol
        ]
        if chosen:
            self.flow.order_events([self._cancel(order) for order in chosen])
        return {"cancelled_count": len(chosen), "failed_count": 0}

    # REST: account -------------------------------------------------------------------------

    def positions(self, symbol: str | None = None) -> list[dict[str, Any]]:
        return [
            self._position(held)
            for held in self.portfolio.holdings()
            if symbol is None or held.symbol == symbol
        ]

    def account(self) -> dict[str, Any]:
        state = self.portfolio.account()
        return {
            "balance": dec_str(state.balance),
            "equity": dec_str(state.equity),
            "margin_used": dec_str(state.margin_used),
            "margin_available": dec_str(state.margin_available),
            "unrealized_pnl": dec_str(state.unrealized_pnl),
            "currency": state.currency,
        }

    def trades(self, query: Mapping[str, str]) -> list[dict[str, Any]]:
        chosen = [
            trade
            for trade in self._trades
            if _matches(query, "symbol", trade["symbol"])
            and _matches(query, "order_id", trade["order_id"])
        ]
        return list(_limited(chosen, query))

    # Engine side: backtest -----------------------------------------------------------------

    def mark(self, bars: Iterable[Bar]) -> None:
        """The bars just emitted: their closes are the last prices from now on."""
        for bar in bars:
            self.portfolio.mark(bar.symbol, Decimal(bar.close))

    def fills_for_bar(self, index: int, bars: Iterable[Bar]) -> list[OrderEvent]:
        """Fill (or expire) every open order bar ``index`` reaches; at most once per order."""
        by_symbol = {bar.symbol: bar for bar in bars}
        events: list[OrderEvent] = []
        for order in list(self._open.values()):
            bar = by_symbol.get(order.request.symbol)
            if order.first_bar > index or bar is None:
                continue
            price = fill_price(
                order.request, Decimal(bar.open), Decimal(bar.high), Decimal(bar.low)
            )
            if price is not None:
                events.extend(self._fill(order, price, iso_seconds(bar.start), index))
            elif order.request.time_in_force in _SINGLE_SHOT:
                events.append(self._expire(order, iso_seconds(bar.start)))
        return events

    def synthetic_fill(self, bar: Bar, side: str, step: int) -> list[OrderEvent]:
        """The ``fill_every`` option: a market order filled at the bar's close, in its step."""
        request = OrderRequest(
            symbol=bar.symbol,
            side="BUY" if side == "BUY" else "SELL",
            order_type="MARKET",
            quantity=SYNTHETIC_QUANTITY,
        )
        when = iso_seconds(bar.start)
        order = Order(
            id=f"ord-{next(self._order_ids)}", request=request, created_at=when, updated_at=when
        )
        order.first_bar = step
        self._book(order)
        # Made while building bar ``step``, i.e. after bar ``step - 1`` went out: no lag.
        record = self._new_record(order, step - 1 if step else None, True)
        record.synthetic = True
        self._add_record(record)
        return self._fill(order, Decimal(bar.close), when, step)

    # Engine side: live ---------------------------------------------------------------------

    def order_symbol(self, order_id: str) -> str | None:
        order = self._orders.get(order_id)
        return None if order is None else order.request.symbol

    def fill_market(self, order_id: str, price: Decimal) -> list[OrderEvent]:
        """Live: fill an open market order at the current price (nothing if it is gone)."""
        order = self._orders.get(order_id)
        if order is None or not order.is_open:
            return []
        return self._fill(order, price, self._clock.now(), None)

    def on_live_price(self, symbol: str, price: str) -> list[OrderEvent]:
        """Live: a new price of ``symbol``; fills the limit and stop orders it reaches.

        Cheap when the symbol has neither a position nor a resting order, which is every
        frame of a benchmark burst.
        """
        if not self._resting[symbol] and self.portfolio.holding(symbol) is None:
            return []
        return self._fills_at_price(symbol, Decimal(price))

    def _fills_at_price(self, symbol: str, price: Decimal) -> list[OrderEvent]:
        self.portfolio.mark(symbol, price)
        events: list[OrderEvent] = []
        for order in list(self._open.values()):
            request = order.request
            if request.symbol != symbol or request.order_type == "MARKET":
                continue
            fill = price_fills(request, price)
            if fill is not None:
                events.extend(self._fill(order, fill, self._clock.now(), None))
        return events

    # Internals -----------------------------------------------------------------------------

    def _find(self, order_id: str) -> Order:
        order = self._orders.get(order_id)
        if order is None:
            raise ApiError(
                404,
                "ORDER_NOT_FOUND",
                f"Order not found: {order_id}",
                {"resource": "order", "id": order_id},
            )
        return order

    def _check_risk(self, request: OrderRequest) -> None:
        """422 for what the venue refuses: reduce-only growth, not enough margin."""
        portfolio = self.portfolio
        grows = portfolio.exposure_grows(request.symbol, request.side, request.quantity)
        if request.flags.get("reduce_only") and grows:
            raise rejected_order(
                "REDUCE_ONLY_VIOLATED", "a reduce-only order would increase the position"
            )
        price = request.limit_price or request.stop_price or portfolio.last_price(request.symbol)
        if not grows or price is None:
            return
        needed = portfolio.margin_after(request.symbol, request.side, request.quantity, price)
        if needed > portfolio.account().equity:
            raise rejected_order(
                "INSUFFICIENT_MARGIN",
                f"margin needed {dec_str(needed)} exceeds equity "
                f"{dec_str(portfolio.account().equity)}",
            )

    def _correlation_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _new_record(self, order: Order, last_bar: int | None, pending: bool) -> OrderRecord:
        request = order.request
        return OrderRecord(
            order_id=order.id,
            client_order_id=request.client_order_id,
            correlation_id=order.correlation_id,
            symbol=request.symbol,
            side=request.side,
            order_type=request.order_type,
            quantity=dec_str(request.quantity),
            received_at=time.monotonic(),
            received_wall=time.time(),
            received_step=last_bar if self._backtest else None,
            received_while_pending=pending,
        )

    def _fill(self, order: Order, price: Decimal, when: str, step: int | None) -> list[OrderEvent]:
        request = order.request
        stamp = self._clock.now() if self._wall_positions else when
        outcome = self.portfolio.apply(request.symbol, request.side, request.quantity, price, stamp)
        self._leave_book(order, "FILLED")
        order.filled_quantity = request.quantity
        order.average_fill_price = price
        order.updated_at = when
        trade = self._trade(order, price, outcome, when)
        self._trades.append(trade)
        self._update_record(order, step=step, price=price)
        # The gateway adds the correlation id from what it stored after the engine's reply;
        # a fill fast enough to overtake that reply comes without it.
        keep = self._rng.random() >= self._correlation_loss
        events = [self._order_event("ORDER_FILLED", order, with_correlation=keep)]
        if self._full_groups:
            events += [
                OrderEvent("trade", {"event": "TRADE_FILLED", "trade": trade}, request.symbol),
                OrderEvent(
                    "account",
                    {"event": "BALANCE_UPDATED", "account": self.account()},
                    request.symbol,
                ),
                self._position_event(outcome),
            ]
        return events

    def _trade(
        self, order: Order, price: Decimal, outcome: FillOutcome, when: str
    ) -> dict[str, Any]:
        request = order.request
        return {
            "id": f"trd-{next(self._trade_ids)}",
            "order_id": order.id,
            "symbol": request.symbol,
            "side": request.side,
            "quantity": dec_str(request.quantity),
            "price": dec_str(price),
            "commission": dec_str(outcome.commission),
            "commission_currency": self.portfolio.currency,
            "timestamp": when,
        }

    def _position_event(self, outcome: FillOutcome) -> OrderEvent:
        # Backtests relay every engine position event as POSITION_MODIFIED.
        event = "POSITION_MODIFIED" if self._backtest else outcome.event
        body = {"event": event, "position": self._position(outcome.position, outcome.side)}
        return OrderEvent("position", body, outcome.position.symbol)

    def _position(self, held: Holding, side: str | None = None) -> dict[str, Any]:
        portfolio = self.portfolio
        last = portfolio.last_price(held.symbol) or held.average
        return {
            "id": held.id,
            "symbol": held.symbol,
            "side": side or held.side,
            "quantity": dec_str(abs(held.quantity)),
            "average_entry_price": dec_str(held.average),
            "current_price": dec_str(last),
            "unrealized_pnl": dec_str(
                portfolio.unrealized(held.symbol) if held.quantity else Decimal(0)
            ),
            "realized_pnl": dec_str(held.realized),
            "opened_at": held.opened_at,
            "updated_at": held.updated_at,
        }

    def _book(self, order: Order) -> None:
        """A new open order."""
        self._orders[order.id] = order
        self._open[order.id] = order
        if order.request.order_type != "MARKET":
            self._resting[order.request.symbol] += 1

    def _leave_book(self, order: Order, status: Status) -> None:
        """``order`` is no longer open: it stops resting on its symbol."""
        del self._open[order.id]
        if order.request.order_type != "MARKET":
            self._resting[order.request.symbol] -= 1
        order.status = status

    def _add_record(self, record: OrderRecord) -> None:
        self._records[record.order_id] = record
        self._record.orders.append(record)

    def _cancel(self, order: Order) -> OrderEvent:
        self._leave_book(order, "CANCELLED")
        order.updated_at = self.flow.sim_time()
        self._update_record(order)
        return self._order_event("ORDER_CANCELLED", order)

    def _expire(self, order: Order, when: str) -> OrderEvent:
        self._leave_book(order, "EXPIRED")
        order.updated_at = when
        self._update_record(order)
        return self._order_event("ORDER_EXPIRED", order)

    def _order_event(
        self, event: str, order: Order, *, with_correlation: bool = True
    ) -> OrderEvent:
        body = {"event": event, "order": order.payload(with_correlation=with_correlation)}
        return OrderEvent("order", body, order.request.symbol)

    def _update_record(
        self, order: Order, *, step: int | None = None, price: Decimal | None = None
    ) -> None:
        record = self._records.get(order.id)
        if record is None:
            return
        record.status = order.status
        now = time.monotonic()
        if order.status == "FILLED":
            record.fill_step = step
            record.fill_price = None if price is None else dec_str(price)
            record.filled_at = now
        elif order.status == "CANCELLED":
            record.cancelled_at = now
        self._record.changed()


def _csv_upper(value: str | None) -> set[str]:
    return {part.strip().upper() for part in (value or "").split(",") if part.strip()}


def _matches(
    query: Mapping[str, str], name: str, value: str | None, *, upper: bool = False
) -> bool:
    wanted = query.get(name)
    if wanted is None:
        return True
    return value == (wanted.upper() if upper else wanted)


def _limited(items: list[Any], query: Mapping[str, str]) -> list[Any]:
    raw = query.get("limit")
    if raw is None:
        return items
    if not raw.isdigit():
        raise ApiError(
            400,
            "INVALID_VALUE",
            "Invalid value for limit: expected a non-negative integer",
            {"field": "limit", "provided": raw},
        )
    return items[: int(raw)]
