"""Market data for the simulator: a deterministic random walk, or bars replayed from a CSV file.

Everything here is plain data and exact ``Decimal`` arithmetic, so the same seed always yields
the same prices (the wall-clock ``timestamp`` of a frame is the only thing that varies), and no
float ever gets near a price.
"""

from __future__ import annotations

import csv
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Protocol

from connector.sim.decimals import Scale, dec_str, full_scale
from connector.sim.timefmt import parse_iso_seconds

#: Seed prices of the real server's mock feed; any other symbol starts at 100.
SEED_PRICES: dict[str, Decimal] = {
    "AAPL": Decimal("150"),
    "MSFT": Decimal("400"),
    "BTCUSD": Decimal("50000"),
    "EURUSD": Decimal("1.08"),
}
DEFAULT_SEED_PRICE = Decimal("100")

_MIN_SPREAD = Decimal("0.01")
_SPREAD_RATIO = Decimal("0.0001")
_STEP_SCALE = 1_000_000  # the walk moves k / 1e6 per step with |k| <= 1000, i.e. at most 0.1 %
_MAX_STEP = 1000
_TWO = Decimal(2)

CSV_COLUMNS = ("symbol", "timestamp", "open", "high", "low", "close", "volume")

#: A bundled replay file: 120 one-minute bars each of AAPL, MSFT and BTCUSD.
SAMPLE_DATA = Path(__file__).resolve().parent / "data" / "sample_bars.csv"


@dataclass(frozen=True, slots=True)
class Bar:
    """One OHLCV bar; prices and volume are the exact decimal strings that go on the wire."""

    symbol: str
    start: int  # bar start, epoch seconds
    open: str
    high: str
    low: str
    close: str
    volume: str


@dataclass(frozen=True, slots=True)
class Quote:
    """Top of book derived from a last price with the mock feed's spread."""

    symbol: str
    bid: str
    ask: str
    last: str
    size: str = "100"


def canonical_symbol(symbol: str) -> str:
    """``F:EURUSD``, ``EUR_USD`` and ``BTC/USD`` all name the same instrument for seed prices."""
    base = symbol.rsplit(":", 1)[-1]
    return "".join(ch for ch in base.upper() if ch.isalnum())


def seed_price(symbol: str) -> Decimal:
    return SEED_PRICES.get(canonical_symbol(symbol), DEFAULT_SEED_PRICE)


def quote_from_last(symbol: str, last: Decimal | str, scale: Scale = "plain") -> Quote:
    """Bid/ask around ``last`` with spread max(0.01 %, 0.01), as the real mock feed does.

    ``plain`` rounds the half-spread to two digits more than the price has; ``full`` leaves it
    at the server's 28-digit scale.
    """
    price = Decimal(last)
    spread = max(price * _SPREAD_RATIO, _MIN_SPREAD)
    if scale == "full":
        half = full_scale(spread / _TWO)
        return Quote(
            symbol=symbol,
            bid=dec_str(full_scale(price - half)),
            ask=dec_str(full_scale(price + half)),
            last=dec_str(price),
        )
    places = max(-_exponent(price), 2) + 2
    half = (spread / _TWO).quantize(Decimal(1).scaleb(-places))
    return Quote(
        symbol=symbol,
        bid=dec_str(price - half),
        ask=dec_str(price + half),
        last=dec_str(price),
    )


def _exponent(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return exponent if isinstance(exponent, int) else 0


class PriceWalk:
    """One symbol's random walk of at most ±0.1 % per step, seeded by (seed, symbol).

    Seeding per symbol keeps a symbol's series the same whatever other symbols are configured.
    The ``plain`` scale rounds prices to cents (5 places below 10); ``full`` keeps every digit
    the server's decimal type would, as the real mock feed does. Both draw the same numbers.
    """

    __slots__ = ("_quantum", "_rng", "price", "symbol")

    def __init__(self, symbol: str, seed: int, scale: Scale = "plain") -> None:
        self.symbol = symbol
        self._rng = random.Random(f"{seed}:{symbol}")
        start = seed_price(symbol)
        places = 2 if start >= 10 else 5
        self._quantum: Decimal | None = None if scale == "full" else Decimal(1).scaleb(-places)
        self.price = self._round(start)

    def _round(self, value: Decimal) -> Decimal:
        quantum = self._quantum
        return full_scale(value) if quantum is None else value.quantize(quantum)

    def _draw(self, low: int, high: int) -> int:
        # random() is several times cheaper than randint() and just as deterministic.
        return low + int(self._rng.random() * (high - low + 1))

    def next_bar(self, start: int) -> Bar:
        """Advance one step: open is the previous close, high/low wiggle a little beyond both."""
        rounded = self._round
        open_ = self.price
        close = rounded(open_ + open_ * self._draw(-_MAX_STEP, _MAX_STEP) / _STEP_SCALE)
        top, bottom = (open_, close) if open_ >= close else (close, open_)
        high = rounded(top + top * self._draw(0, _MAX_STEP // 2) / _STEP_SCALE)
        low = rounded(bottom - bottom * self._draw(0, _MAX_STEP // 2) / _STEP_SCALE)
        volume = self._draw(1000, 9999)
        self.price = close
        return Bar(
            symbol=self.symbol,
            start=start,
            open=dec_str(open_),
            high=dec_str(high),
            low=dec_str(low),
            close=dec_str(close),
            volume=str(volume),
        )


class BarSource(Protocol):
    """Where bars come from: the generated walk or a CSV replay."""

    def step(self, index: int, start: int) -> list[Bar] | None:
        """Bars of backtest step ``index`` (one per symbol), or None when the data ran out."""
        ...

    def next_bar(self, symbol: str, start: int) -> Bar:
        """The symbol's next bar for the live feed; replays cycle when they reach the end."""
        ...

    def current_price(self, symbol: str) -> str:
        """The price the symbol trades at now (live fills): where its next bar opens."""
        ...


class GeneratedBars:
    """Deterministic random walks for every symbol; never runs out."""

    def __init__(self, symbols: Sequence[str], seed: int, scale: Scale = "plain") -> None:
        self._walks = {symbol: PriceWalk(symbol, seed, scale) for symbol in symbols}

    def step(self, index: int, start: int) -> list[Bar] | None:
        return [walk.next_bar(start) for walk in self._walks.values()]

    def next_bar(self, symbol: str, start: int) -> Bar:
        return self._walks[symbol].next_bar(start)

    def current_price(self, symbol: str) -> str:
        return dec_str(self._walks[symbol].price)


class CsvBars:
    """Bars read from ``symbol,timestamp,open,high,low,close,volume``; one step per timestamp."""

    def __init__(self, bars: Iterable[Bar], symbols: Sequence[str]) -> None:
        wanted = set(symbols)
        by_start: dict[int, list[Bar]] = defaultdict(list)
        self._per_symbol: dict[str, list[Bar]] = defaultdict(list)
        for bar in bars:
            if bar.symbol in wanted:
                by_start[bar.start].append(bar)
                self._per_symbol[bar.symbol].append(bar)
        order = {symbol: i for i, symbol in enumerate(symbols)}
        self._steps = [
            sorted(by_start[start], key=lambda bar: order[bar.symbol]) for start in sorted(by_start)
        ]
        self._cursor: dict[str, int] = defaultdict(int)
        missing = [symbol for symbol in symbols if symbol not in self._per_symbol]
        if missing:
            raise ValueError(f"data file has no rows for symbol(s): {', '.join(missing)}")

    def __len__(self) -> int:
        return len(self._steps)

    def step(self, index: int, start: int) -> list[Bar] | None:
        return self._steps[index] if index < len(self._steps) else None

    def next_bar(self, symbol: str, start: int) -> Bar:
        rows = self._per_symbol[symbol]
        position = self._cursor[symbol]
        self._cursor[symbol] = (position + 1) % len(rows)
        bar = rows[position]
        return Bar(symbol, start, bar.open, bar.high, bar.low, bar.close, bar.volume)

    def current_price(self, symbol: str) -> str:
        return self._per_symbol[symbol][self._cursor[symbol]].open


def read_csv_bars(path: Path) -> list[Bar]:
    """Parse and validate a bar file, naming the line of the first bad value."""
    bars: list[Bar] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = tuple(name.strip() for name in reader.fieldnames or ())
        if not set(CSV_COLUMNS) <= set(columns):
            raise ValueError(
                f"{path}: header must contain {','.join(CSV_COLUMNS)}, found {','.join(columns)}"
            )
        for line, row in enumerate(reader, start=2):
            cells = {key.strip(): (value or "").strip() for key, value in row.items() if key}
            try:
                bars.append(_bar_from_row(cells))
            except (ValueError, InvalidOperation) as exc:
                raise ValueError(f"{path}:{line}: {exc}") from None
    return bars


def _bar_from_row(cells: dict[str, str]) -> Bar:
    symbol = cells["symbol"]
    if not symbol:
        raise ValueError("empty symbol")
    raw_time = cells["timestamp"]
    start = int(raw_time) // 1000 if raw_time.isdigit() else parse_iso_seconds(raw_time)
    prices = {}
    for column in ("open", "high", "low", "close", "volume"):
        value = Decimal(cells[column])
        if not value.is_finite() or value < 0:
            raise ValueError(
                f"{column} must be a finite non-negative number, not {cells[column]!r}"
            )
        prices[column] = cells[column]
    return Bar(symbol, start, **prices)


def load_source(
    symbols: Sequence[str], seed: int, data_file: Path | None, scale: Scale = "plain"
) -> BarSource:
    """The configured source: the CSV replay when a file is given, else the generated walk.

    ``scale`` only shapes the generated walk: replayed prices are kept exactly as written.
    """
    if data_file is None:
        return GeneratedBars(symbols, seed, scale)
    return CsvBars(read_csv_bars(data_file), symbols)
