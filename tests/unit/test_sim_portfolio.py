"""The simulator's account arithmetic: positions, P&L, commission, balance, equity, margin."""

from __future__ import annotations

from decimal import Context, localcontext
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.sim.decimals import dec_str, full_scale
from connector.sim.portfolio import COMMISSION, STARTING_BALANCE, Portfolio

T0 = "2024-01-01T00:00:00Z"
T1 = "2024-01-01T00:01:00Z"


def test_opening_a_long_costs_only_the_commission() -> None:
    book = Portfolio()
    outcome = book.apply("AAPL", "BUY", D("10"), D("150.00"), T0)
    assert outcome.event == "POSITION_OPENED"
    assert outcome.realized == 0
    held = book.holding("AAPL")
    assert held is not None
    assert (held.side, held.quantity, held.average) == ("LONG", D("10"), D("150.00"))
    assert held.opened_at == held.updated_at == T0
    account = book.account()
    assert account.balance == STARTING_BALANCE - COMMISSION == D("99999.00")
    assert account.unrealized_pnl == 0
    assert account.equity == D("99999.00")
    assert account.margin_used == D("375.0000")  # 10 x 150 x 25 %
    assert account.margin_available == D("99624.0000")


def test_adding_averages_the_entry_price() -> None:
    book = Portfolio()
    book.apply("AAPL", "BUY", D("10"), D("150"), T0)
    outcome = book.apply("AAPL", "BUY", D("30"), D("154"), T1)
    assert outcome.event == "POSITION_MODIFIED"
    held = book.holding("AAPL")
    assert held is not None
    assert (held.quantity, held.average) == (D("40"), D("153"))  # (1500 + 4620) / 40
    assert (held.opened_at, held.updated_at) == (T0, T1)


def test_marking_moves_unrealized_pnl_and_equity_not_the_balance() -> None:
    book = Portfolio()
    book.apply("AAPL", "BUY", D("10"), D("150"), T0)
    book.mark("AAPL", D("152.50"))
    account = book.account()
    assert book.unrealized("AAPL") == D("25.00")
    assert account.balance == D("99999.00")
    assert account.equity == D("100024.00")
    assert account.margin_used == D("381.2500")


def test_reducing_realizes_pnl_on_the_closed_part_only() -> None:
    book = Portfolio()
    book.apply("AAPL", "BUY", D("10"), D("150"), T0)
    outcome = book.apply("AAPL", "SELL", D("4"), D("155"), T1)
    assert outcome.event == "POSITION_MODIFIED"
    assert outcome.realized == D("20")  # 4 x (155 - 150)
    held = book.holding("AAPL")
    assert held is not None
    assert (held.quantity, held.average, held.realized) == (D("6"), D("150"), D("20"))
    account = book.account()
    assert account.balance == STARTING_BALANCE + D("20") - 2 * COMMISSION
    assert account.unrealized_pnl == D("30")  # 6 x (155 - 150), marked at the fill
    assert account.realized_pnl == D("20")


def test_closing_removes_the_position() -> None:
    book = Portfolio()
    book.apply("AAPL", "BUY", D("10"), D("150"), T0)
    outcome = book.apply("AAPL", "SELL", D("10"), D("149"), T1)
    assert outcome.event == "POSITION_CLOSED"
    assert outcome.position.quantity == 0
    assert outcome.side == "LONG"
    assert outcome.realized == D("-10")
    assert book.holding("AAPL") is None
    account = book.account()
    assert account.balance == STARTING_BALANCE - 10 - 2 * COMMISSION
    assert account.equity == account.balance
    assert account.margin_used == 0


def test_shorts_gain_when_the_price_falls() -> None:
    book = Portfolio()
    book.apply("MSFT", "SELL", D("5"), D("400"), T0)
    held = book.holding("MSFT")
    assert held is not None
    assert (held.side, held.quantity) == ("SHORT", D("-5"))
    book.mark("MSFT", D("390"))
    assert book.unrealized("MSFT") == D("50")
    outcome = book.apply("MSFT", "BUY", D("5"), D("390"), T1)
    assert outcome.realized == D("50")
    assert outcome.side == "SHORT"
    assert book.account().balance == STARTING_BALANCE + 50 - 2 * COMMISSION


def test_flipping_closes_then_opens_at_the_fill_price() -> None:
    book = Portfolio()
    first = book.apply("AAPL", "BUY", D("10"), D("150"), T0)
    outcome = book.apply("AAPL", "SELL", D("15"), D("160"), T1)
    assert outcome.realized == D("100")  # the 10 long closed at +10 each
    held = book.holding("AAPL")
    assert held is not None
    assert (held.side, held.quantity, held.average) == ("SHORT", D("-5"), D("160"))
    assert held.id != first.position.id  # a new position
    assert held.realized == 0
    assert held.opened_at == T1


def test_average_entry_is_rounded_to_8_places_in_plain_scale() -> None:
    book = Portfolio()
    book.apply("AAPL", "BUY", D("1"), D("100"), T0)
    book.apply("AAPL", "BUY", D("2"), D("100.01"), T0)
    held = book.holding("AAPL")
    assert held is not None
    assert held.average == D("100.00666667")


def test_full_scale_keeps_the_servers_28_digit_decimals() -> None:
    book = Portfolio(scale="full")
    book.apply("AAPL", "BUY", D("1"), D("100"), T0)
    book.apply("AAPL", "BUY", D("2"), D("100.01"), T0)
    held = book.holding("AAPL")
    assert held is not None
    assert dec_str(held.average) == "100.00666666666666666666666667"
    with localcontext(Context(prec=60)):
        exact = D("300.02") / 3
    assert held.average == full_scale(exact)  # 29 digits: the mantissa still fits 96 bits


def test_margin_after_an_order_and_exposure() -> None:
    book = Portfolio()
    book.apply("AAPL", "BUY", D("10"), D("100"), T0)
    assert book.exposure_grows("AAPL", "BUY", D("1"))
    assert not book.exposure_grows("AAPL", "SELL", D("20"))  # -10 is no larger than 10
    assert book.exposure_grows("AAPL", "SELL", D("21"))
    assert book.margin_after("AAPL", "SELL", D("30"), D("100")) == D("500.00")  # |-20| x 25


def test_bad_fills_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        Portfolio().apply("AAPL", "BUY", D("0"), D("1"), T0)


FILLS = st.lists(
    st.tuples(
        st.sampled_from(["AAPL", "MSFT"]),
        st.sampled_from(["BUY", "SELL"]),
        st.integers(min_value=1, max_value=50),
        st.integers(min_value=9000, max_value=11000),  # price in cents
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(FILLS)
def test_the_books_always_balance(fills: list[tuple[str, str, int, int]]) -> None:
    """Whatever the fills: balance = start + realized - commission, equity = balance +
    unrealized, and positions carry exactly the net traded quantity."""
    book = Portfolio()
    net: dict[str, D] = {}
    realized = D(0)
    for symbol, side, quantity, cents in fills:
        outcome = book.apply(symbol, side, D(quantity), D(cents) / 100, T0)  # type: ignore[arg-type]
        realized += outcome.realized
        net[symbol] = net.get(symbol, D(0)) + (quantity if side == "BUY" else -quantity)
    account = book.account()
    assert account.realized_pnl == realized
    assert account.commission == COMMISSION * len(fills)
    assert account.balance == STARTING_BALANCE + realized - COMMISSION * len(fills)
    unrealized = sum((book.unrealized(h.symbol) for h in book.holdings()), D(0))
    assert account.unrealized_pnl == unrealized
    assert account.equity == account.balance + unrealized
    assert account.margin_available == account.equity - account.margin_used
    assert {h.symbol: h.quantity for h in book.holdings()} == {
        s: q for s, q in net.items() if q != 0
    }
