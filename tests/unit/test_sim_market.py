"""Market data: deterministic for a seed, decimal strings only, the mock feed's walk and spread."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.sim.market import (
    SAMPLE_DATA,
    CsvBars,
    GeneratedBars,
    PriceWalk,
    canonical_symbol,
    load_source,
    quote_from_last,
    read_csv_bars,
    seed_price,
)

DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")


def _series(seed: int, symbols: tuple[str, ...], steps: int) -> list[tuple[str, ...]]:
    source = GeneratedBars(symbols, seed)
    out: list[tuple[str, ...]] = []
    for index in range(steps):
        bars = source.step(index, index * 60)
        assert bars is not None
        out.extend((b.symbol, b.open, b.high, b.low, b.close, b.volume) for b in bars)
    return out


def test_same_seed_same_data() -> None:
    symbols = ("AAPL", "MSFT", "BTCUSD")
    assert _series(7, symbols, 50) == _series(7, symbols, 50)


def test_other_seed_other_data() -> None:
    symbols = ("AAPL",)
    assert _series(1, symbols, 20) != _series(2, symbols, 20)


def test_a_symbols_series_ignores_the_other_symbols() -> None:
    alone = list(_series(3, ("MSFT",), 20))
    together = [row for row in _series(3, ("AAPL", "MSFT"), 20) if row[0] == "MSFT"]
    assert alone == together


@pytest.mark.parametrize(
    ("symbol", "price"),
    [
        ("AAPL", "150"),
        ("MSFT", "400"),
        ("BTCUSD", "50000"),
        ("C:BTCUSD", "50000"),
        ("BTC/USD", "50000"),
        ("EURUSD", "1.08"),
        ("F:EURUSD", "1.08"),
        ("EUR_USD", "1.08"),
        ("TSLA", "100"),
    ],
)
def test_seed_prices(symbol: str, price: str) -> None:
    assert seed_price(symbol) == Decimal(price)


def test_canonical_symbol_strips_prefix_and_separators() -> None:
    assert canonical_symbol("F:EUR_USD") == "EURUSD"
    assert canonical_symbol("btc/usd") == "BTCUSD"


def test_bars_keep_the_symbol_exactly_and_use_decimal_strings() -> None:
    source = GeneratedBars(("F:EURUSD", "BTC/USD", "EUR_USD"), 1)
    bars = source.step(0, 0)
    assert bars is not None
    assert [bar.symbol for bar in bars] == ["F:EURUSD", "BTC/USD", "EUR_USD"]
    for bar in bars:
        for value in (bar.open, bar.high, bar.low, bar.close, bar.volume):
            assert isinstance(value, str)
            assert DECIMAL.match(value), value
            assert "E" not in value


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32), symbol=st.sampled_from(["AAPL", "EURUSD"]))
def test_walk_moves_at_most_a_tenth_of_a_percent(seed: int, symbol: str) -> None:
    walk = PriceWalk(symbol, seed)
    quantum = Decimal("0.00001") if symbol == "EURUSD" else Decimal("0.01")
    for step in range(30):
        bar = walk.next_bar(step * 60)
        open_, close = Decimal(bar.open), Decimal(bar.close)
        assert abs(close - open_) <= open_ * Decimal("0.001") + quantum
        assert Decimal(bar.high) >= max(open_, close)
        assert Decimal(bar.low) <= min(open_, close)
        assert 1000 <= int(bar.volume) <= 9999


def test_quote_spread_is_the_larger_of_a_basis_point_and_a_cent() -> None:
    cheap = quote_from_last("EURUSD", "1.08000")
    assert Decimal(cheap.ask) - Decimal(cheap.bid) == Decimal("0.01")
    dear = quote_from_last("BTCUSD", "50000.00")
    assert Decimal(dear.ask) - Decimal(dear.bid) == Decimal("5.00")
    assert dear.last == "50000.00"
    assert dear.size == "100"
    for value in (cheap.bid, cheap.ask, dear.bid, dear.ask):
        assert DECIMAL.match(value)


def _write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("symbol,timestamp,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    return path


def test_csv_replay_groups_bars_by_timestamp(tmp_path: Path) -> None:
    data = _write_csv(
        tmp_path / "bars.csv",
        [
            "AAPL,2024-03-01T14:30:00Z,187.25,187.5,187.0,187.40,1200",
            "MSFT,2024-03-01T14:30:00Z,410.1,410.2,410.0,410.15,800",
            "AAPL,2024-03-01T14:31:00Z,187.40,187.9,187.3,187.80,900",
            "TSLA,2024-03-01T14:31:00Z,200,201,199,200.5,10",
            "MSFT,1709303460000,410.15,410.3,410.1,410.20,700",
        ],
    )
    source = load_source(("MSFT", "AAPL"), 1, data)
    assert isinstance(source, CsvBars)
    assert len(source) == 2
    first = source.step(0, 0)
    assert first is not None
    assert [(b.symbol, b.close) for b in first] == [("MSFT", "410.15"), ("AAPL", "187.40")]
    second = source.step(1, 0)
    assert second is not None
    assert [(b.symbol, b.close) for b in second] == [("MSFT", "410.20"), ("AAPL", "187.80")]
    assert source.step(2, 0) is None
    # The live feed cycles through a symbol's rows.
    closes = [source.next_bar("AAPL", 0).close for _ in range(3)]
    assert closes == ["187.40", "187.80", "187.40"]


def test_the_bundled_sample_replays() -> None:
    source = load_source(("AAPL", "MSFT", "BTCUSD"), 1, SAMPLE_DATA)
    assert isinstance(source, CsvBars)
    assert len(source) == 120
    first = source.step(0, 0)
    assert first is not None
    assert [bar.symbol for bar in first] == ["AAPL", "MSFT", "BTCUSD"]


def test_csv_errors_name_the_line(tmp_path: Path) -> None:
    data = _write_csv(tmp_path / "bad.csv", ["AAPL,2024-03-01T14:30:00Z,1,2,0.5,abc,10"])
    with pytest.raises(ValueError, match=r"bad\.csv:2"):
        read_csv_bars(data)


def test_csv_needs_the_header(tmp_path: Path) -> None:
    data = tmp_path / "nohead.csv"
    data.write_text("AAPL,2024-03-01T14:30:00Z,1,2,0.5,1,10\n")
    with pytest.raises(ValueError, match="header"):
        read_csv_bars(data)


def test_csv_without_a_configured_symbol_is_refused(tmp_path: Path) -> None:
    data = _write_csv(tmp_path / "bars.csv", ["AAPL,2024-03-01T14:30:00Z,1,2,0.5,1,10"])
    with pytest.raises(ValueError, match="MSFT"):
        load_source(("AAPL", "MSFT"), 1, data)
