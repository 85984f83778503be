"""The account behind the simulated orders: net positions, P&L, commission, balance and margin.

One net position per symbol (a netting account, as the backtest engine keeps): buying adds to a
long or reduces a short, selling the other way round. The arithmetic is exact ``Decimal``:

* opening or adding: the average entry price is the quantity-weighted mean of the fills;
* reducing, closing or flipping: ``realized = closed quantity x (fill price - average entry)``,
  sign-adjusted for shorts; what is left after a flip opens a new position at the fill price;
* ``unrealized = signed quantity x (last price - average entry)`` per position;
* ``balance = starting balance + realized P&L - commission`` (cash never moves on an open:
  margin, not cash, backs a position);
* ``equity = balance + unrealized``; ``margin_used = sum(|quantity| x last price x margin rate)``;
  ``margin_available = equity - margin_used``.

With the ``plain`` decimal scale only the average entry price is rounded (to 8 decimal places),
so every other figure is exact and they add up to the cent; with ``full`` every stored value is
cut to the server's 28-digit decimal, as the real engine would.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal, localcontext
from typing import Literal

from connector.sim.decimals import Scale, full_scale, wide

Side = Literal["BUY", "SELL"]
PositionEvent = Literal["POSITION_OPENED", "POSITION_MODIFIED", "POSITION_CLOSED"]

STARTING_BALANCE = Decimal("100000.00")
COMMISSION = Decimal("1.00")
MARGIN_RATE = Decimal("0.25")
_AVERAGE_QUANTUM = Decimal("1e-8")
_ZERO = Decimal(0)


@dataclass(slots=True)
class Holding:
    """One symbol's open position; ``quantity`` is signed (> 0 long, < 0 short)."""

    id: str
    symbol: str
    quantity: Decimal
    average: Decimal
    realized: Decimal
    opened_at: str
    updated_at: str

    @property
    def side(self) -> Literal["LONG", "SHORT"]:
        return "LONG" if self.quantity >= 0 else "SHORT"


@dataclass(frozen=True, slots=True)
class FillOutcome:
    """What one fill did to the account: the position after it and the P&L it realized."""

    position: Holding  # a snapshot; quantity 0 when the fill closed it
    event: PositionEvent
    realized: Decimal
    commission: Decimal
    side: Literal["LONG", "SHORT"]  # of the position reported (the closed one when flat)


@dataclass(frozen=True, slots=True)
class AccountState:
    balance: Decimal
    equity: Decimal
    margin_used: Decimal
    margin_available: Decimal
    unrealized_pnl: Decimal
    realized_pnl: Decimal
    commission: Decimal
    currency: str


class Portfolio:
    """Net positions per symbol and the cash account they settle into."""

    def __init__(
        self,
        *,
        scale: Scale = "plain",
        starting_balance: Decimal = STARTING_BALANCE,
        commission: Decimal = COMMISSION,
        margin_rate: Decimal = MARGIN_RATE,
        currency: str = "USD",
    ) -> None:
        self.currency = currency
        self.starting_balance = starting_balance
        self.commission = commission
        self.margin_rate = margin_rate
        self._fit: Callable[[Decimal], Decimal] = full_scale if scale == "full" else _exact
        self._average: Callable[[Decimal], Decimal] = (
            full_scale if scale == "full" else _plain_average
        )
        self._balance = starting_balance
        self._realized = _ZERO
        self._commission_paid = _ZERO
        self._holdings: dict[str, Holding] = {}
        self._marks: dict[str, Decimal] = {}
        self._ids = itertools.count(1)

    # Fills ---------------------------------------------------------------------------------

    def apply(
        self, symbol: str, side: Side, quantity: Decimal, price: Decimal, when: str
    ) -> FillOutcome:
        """Book a fill of ``quantity`` (> 0) at ``price``; ``when`` stamps the position."""
        if quantity <= 0 or price <= 0:
            raise ValueError("a fill needs a positive quantity and price")
        signed = quantity if side == "BUY" else -quantity
        self._marks[symbol] = price
        with localcontext(wide()):
            held = self._holdings.get(symbol)
            if held is None:
                outcome = self._open(symbol, signed, price, when, "POSITION_OPENED")
            elif (held.quantity > 0) == (signed > 0):
                outcome = self._add(held, signed, price, when)
            else:
                outcome = self._reduce(held, signed, price, when)
            self._settle(outcome.realized)
        return outcome

    def _open(
        self, symbol: str, signed: Decimal, price: Decimal, when: str, event: PositionEvent
    ) -> FillOutcome:
        held = Holding(f"pos-{next(self._ids)}", symbol, signed, price, _ZERO, when, when)
        self._holdings[symbol] = held
        return FillOutcome(replace(held), event, _ZERO, self.commission, held.side)

    def _add(self, held: Holding, signed: Decimal, price: Decimal, when: str) -> FillOutcome:
        total = held.quantity + signed
        held.average = self._average((held.average * held.quantity + price * signed) / total)
        held.quantity = total
        held.updated_at = when
        return FillOutcome(replace(held), "POSITION_MODIFIED", _ZERO, self.commission, held.side)

    def _reduce(self, held: Holding, signed: Decimal, price: Decimal, when: str) -> FillOutcome:
        closing = min(abs(held.quantity), abs(signed))
        direction = 1 if held.quantity > 0 else -1
        realized = self._fit(closing * (price - held.average) * direction)
        held.realized = self._fit(held.realized + realized)
        held.quantity += signed
        held.updated_at = when
        side: Literal["LONG", "SHORT"] = "LONG" if direction > 0 else "SHORT"
        if held.quantity == 0:
            del self._holdings[held.symbol]
            return FillOutcome(replace(held), "POSITION_CLOSED", realized, self.commission, side)
        if (held.quantity > 0) != (direction > 0):
            # Flipped: the old position is closed, the rest opens a new one at the fill price.
            del self._holdings[held.symbol]
            opened = self._open(held.symbol, held.quantity, price, when, "POSITION_OPENED")
            return replace(opened, realized=realized)
        return FillOutcome(replace(held), "POSITION_MODIFIED", realized, self.commission, side)

    def _settle(self, realized: Decimal) -> None:
        self._realized = self._fit(self._realized + realized)
        self._commission_paid += self.commission
        self._balance = self._fit(self._balance + realized - self.commission)

    # Prices --------------------------------------------------------------------------------

    def mark(self, symbol: str, price: Decimal) -> None:
        """The last price of ``symbol``, which unrealized P&L and margin are measured at."""
        self._marks[symbol] = price

    def last_price(self, symbol: str) -> Decimal | None:
        return self._marks.get(symbol)

    # Figures -------------------------------------------------------------------------------

    def holding(self, symbol: str) -> Holding | None:
        held = self._holdings.get(symbol)
        return None if held is None else replace(held)

    def holdings(self) -> list[Holding]:
        return [replace(held) for held in self._holdings.values()]

    def unrealized(self, symbol: str) -> Decimal:
        held = self._holdings.get(symbol)
        if held is None:
            return _ZERO
        mark = self._marks.get(symbol, held.average)
        with localcontext(wide()):
            return self._fit(held.quantity * (mark - held.average))

    def margin_for(self, symbol: str, quantity: Decimal) -> Decimal:
        """Margin a position of signed ``quantity`` in ``symbol`` takes at its last price."""
        mark = self._marks.get(symbol, _ZERO)
        with localcontext(wide()):
            return self._fit(abs(quantity) * mark * self.margin_rate)

    def account(self) -> AccountState:
        with localcontext(wide()):
            unrealized = self._fit(sum((self.unrealized(s) for s in self._holdings), _ZERO))
            margin_used = self._fit(
                sum((self.margin_for(s, h.quantity) for s, h in self._holdings.items()), _ZERO)
            )
            equity = self._fit(self._balance + unrealized)
            return AccountState(
                balance=self._balance,
                equity=equity,
                margin_used=margin_used,
                margin_available=self._fit(equity - margin_used),
                unrealized_pnl=unrealized,
                realized_pnl=self._realized,
                commission=self._commission_paid,
                currency=self.currency,
            )

    def margin_after(self, symbol: str, side: Side, quantity: Decimal, price: Decimal) -> Decimal:
        """Total margin used if ``quantity`` of ``symbol`` were filled at ``price`` now."""
        held = self._holdings.get(symbol)
        current = held.quantity if held is not None else _ZERO
        signed = quantity if side == "BUY" else -quantity
        with localcontext(wide()):
            others = sum(
                (self.margin_for(s, h.quantity) for s, h in self._holdings.items() if s != symbol),
                _ZERO,
            )
            return others + abs(current + signed) * price * self.margin_rate

    def exposure_grows(self, symbol: str, side: Side, quantity: Decimal) -> bool:
        """Whether the order would leave a larger position than now (or open one)."""
        held = self._holdings.get(symbol)
        current = held.quantity if held is not None else _ZERO
        signed = quantity if side == "BUY" else -quantity
        return abs(current + signed) > abs(current)


def _exact(value: Decimal) -> Decimal:
    return value


def _plain_average(value: Decimal) -> Decimal:
    return value.quantize(_AVERAGE_QUANTUM).normalize()
