"""A toy portfolio that turns "a fill happened" into the engine's four related payloads.

A real backtest engine emits order + trade + account + position after a fill, all in one step.
The numbers only need to be plausible and consistent (decimal strings, growing positions, a
balance that pays commission), so downstream code sees realistic shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from connector.sim.market import dec_str

_QUANTITY = Decimal("10")
_COMMISSION = Decimal("1.00")
_START_BALANCE = Decimal("100000.00")
_MARGIN_RATE = Decimal("0.25")
_CENTS = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class FillPayloads:
    """Payload dicts (without ``type``/ids/top-level timestamp) of one fill group."""

    order_event: str
    order: dict[str, Any]
    trade: dict[str, Any]
    account: dict[str, Any]
    position_event: str
    position: dict[str, Any]


@dataclass(slots=True)
class _Position:
    quantity: Decimal
    average: Decimal


class Portfolio:
    """Buys ``10`` of a symbol per fill; tracks positions, balance and margin."""

    def __init__(self, currency: str = "USD") -> None:
        self._currency = currency
        self._balance = _START_BALANCE
        self._positions: dict[str, _Position] = {}
        self._marks: dict[str, Decimal] = {}
        self._fills = 0

    def fill(self, symbol: str, price: str, sim_time: str) -> FillPayloads:
        self._fills += 1
        n = self._fills
        fill_price = Decimal(price)
        order_id, trade_id = f"ord-{n}", f"trd-{n}"
        held = self._positions.get(symbol)
        if held is None:
            held = _Position(_QUANTITY, fill_price)
            self._positions[symbol] = held
            position_event = "POSITION_OPENED"
        else:
            total = held.quantity + _QUANTITY
            held.average = (held.average * held.quantity + fill_price * _QUANTITY) / total
            held.average = held.average.quantize(Decimal(1).scaleb(-6)).normalize()
            held.quantity = total
            position_event = "POSITION_MODIFIED"
        self._marks[symbol] = fill_price
        self._balance -= _COMMISSION
        order = {
            "id": order_id,
            "symbol": symbol,
            "side": "BUY",
            "order_type": "MARKET",
            "quantity": dec_str(_QUANTITY),
            "filled_quantity": dec_str(_QUANTITY),
            "average_fill_price": price,
            "status": "FILLED",
            "time_in_force": "GTC",
            "created_at": sim_time,
        }
        trade = {
            "id": trade_id,
            "order_id": order_id,
            "symbol": symbol,
            "side": "BUY",
            "quantity": dec_str(_QUANTITY),
            "price": price,
            "commission": dec_str(_COMMISSION),
            "commission_currency": self._currency,
            "timestamp": sim_time,
        }
        position = {
            "id": f"pos-{symbol}",
            "symbol": symbol,
            "side": "LONG",
            "quantity": dec_str(held.quantity),
            "average_entry_price": dec_str(held.average),
            "current_price": price,
            "unrealized_pnl": dec_str(self._pnl(symbol)),
        }
        return FillPayloads("ORDER_FILLED", order, trade, self._account(), position_event, position)

    def _pnl(self, symbol: str) -> Decimal:
        held = self._positions[symbol]
        return ((self._marks[symbol] - held.average) * held.quantity).quantize(_CENTS)

    def _account(self) -> dict[str, Any]:
        unrealized = sum((self._pnl(symbol) for symbol in self._positions), Decimal(0))
        margin_used = sum(
            (p.quantity * self._marks[s] * _MARGIN_RATE for s, p in self._positions.items()),
            Decimal(0),
        ).quantize(_CENTS)
        equity = self._balance + unrealized
        return {
            "balance": dec_str(self._balance),
            "equity": dec_str(equity),
            "margin_used": dec_str(margin_used),
            "margin_available": dec_str(equity - margin_used),
            "unrealized_pnl": dec_str(unrealized),
            "currency": self._currency,
        }
