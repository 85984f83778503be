"""An example strategy service: a moving-average crossover on the connector's candles.

It reads the candle streams in the consumer group ``strategy`` with the toolkit
(:class:`~connector.consumer.group.GroupConsumer`), keeps a fast and a slow simple moving average of
each symbol's closes, and trades their crossings with market orders on the Trading API's REST
surface: long about ``notional`` worth of the symbol when the fast average crosses above the
slow one, flat again when it crosses below. **A batch is confirmed only after its orders were
accepted** (the toolkit XACKs once the handler returned), so in consumer-ack mode the engine
waits for the orders and fills them at the next bar, as live trading would. An order the server
refuses (4xx: margin, market closed) is logged and the signal passed on.

Run it beside a connector in consumer-ack mode (declare the group with what it reads)::

    CONNECTOR_ACK_MODE=consumer CONNECTOR_CONSUMER_GROUPS="strategy[types=candle]" connector run
    python -m connector.examples.crossover --redis-url redis://localhost:6379/0 \\
        --api-url ws://gateway:8080/v1/ws --api-key-file /run/secrets/api-key

It stops at the end of the run (``backtest_complete``) and prints what it did as one JSON line:
its orders, and for each the *fill lag* in bars, ``fill bar - signal bar - 1``, computed from the
Trading API's own trades (a fill's timestamp is its bar's start), and the run's P&L (equity at
the end minus equity at the start). ``connector demo`` runs it; ``connector bench --scenarios
parity`` runs it in both ack modes.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from connector import loop
from connector.consumer.group import GroupConsumer, Message
from connector.trading.protocol import parse_timestamp_ms
from connector.trading.rest import TradingApiError, TradingRest

log = logging.getLogger(__name__)

GROUP = "strategy"
LOT = Decimal("0.0001")  # order quantities are rounded to this
TIMEFRAME_SECONDS = {"m": 60, "h": 3600, "d": 86_400, "w": 604_800}


class Crossover:
    """The signal, and nothing else: closes in, the side to trade (or None) out."""

    def __init__(self, fast: int, slow: int) -> None:
        if not 0 < fast < slow:
            raise ValueError("the fast average must be shorter than the slow one")
        self._fast = fast
        self._closes: deque[Decimal] = deque(maxlen=slow)
        self._above: bool | None = None  # was the fast average above the slow one?

    def update(self, close: Decimal) -> str | None:
        """``BUY`` when the fast average crosses above the slow one, ``SELL`` when below."""
        self._closes.append(close)
        if len(self._closes) < (self._closes.maxlen or 0):
            return None
        window = list(self._closes)
        fast = sum(window[-self._fast :], Decimal(0)) / self._fast
        slow = sum(window, Decimal(0)) / len(window)
        above = fast > slow
        crossed = self._above is not None and above != self._above
        self._above = above
        if not crossed:
            return None
        return "BUY" if above else "SELL"


@dataclass
class Placed:
    """An order this strategy placed, and the bar that made it."""

    order_id: str
    symbol: str
    side: str
    signal_ms: int  # the start of the bar whose close gave the signal
    timeframe_ms: int


@dataclass
class Strategy:
    """The service: candles in, orders out, one confirmation per batch once they are taken."""

    rest: TradingRest
    fast: int = 5
    slow: int = 20
    notional: Decimal = Decimal(10_000)
    signals: dict[str, Crossover] = field(default_factory=dict)
    holding: dict[str, str] = field(default_factory=dict)  # the quantity held (fills assumed)
    placed: list[Placed] = field(default_factory=list)
    rejected: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, batch: list[Message]) -> None:
        """The toolkit's handler: it XACKs the batch when this returns, so after the orders."""
        for message in batch:
            if message.type == "backtest_complete":
                self.finished.set()
            elif message.type == "candle":
                await self._on_candle(message.fields)

    async def _on_candle(self, candle: dict[str, str]) -> None:
        symbol = candle["symbol"]
        close = Decimal(candle["close"])
        side = self.signals.setdefault(symbol, Crossover(self.fast, self.slow)).update(close)
        if side is None or (side == "BUY") == (symbol in self.holding):
            return  # no crossing, or already where the crossing says to be
        quantity = self.holding.get(symbol) or str((self.notional / close).quantize(LOT))
        try:
            order = await self.rest.place_order(symbol, side, quantity)
        except TradingApiError as exc:
            if exc.status >= 500:
                raise  # the server's trouble: the batch stays pending and is retried
            self.rejected += 1  # refused (margin, market closed): this signal is passed on
            log.warning("order refused", extra={"symbol": symbol, "error": str(exc)[:200]})
            return
        if side == "BUY":
            self.holding[symbol] = quantity
        else:
            del self.holding[symbol]
        self.placed.append(
            Placed(order["id"], symbol, side, int(candle["ts"]), _timeframe_ms(candle["timeframe"]))
        )

    async def report(self, start_equity: Decimal) -> dict[str, Any]:
        """Orders, fill lags in bars (from the Trading API's trades), and the P&L."""
        fills = {trade["order_id"]: trade for trade in await self.rest.trades()}
        lags: list[int] = []
        for order in self.placed:
            trade = fills.get(order.order_id)
            if trade is not None:
                filled_ms = parse_timestamp_ms(trade["timestamp"])
                lags.append((filled_ms - order.signal_ms) // order.timeframe_ms - 1)
        equity = Decimal((await self.rest.account())["equity"])
        return {
            "orders": len(self.placed),
            "rejected": self.rejected,
            "filled": len(lags),
            "fill_lags": lags,
            "filled_next_bar": sum(1 for lag in lags if lag == 0),
            "pnl": str(equity - start_equity),
        }


def _timeframe_ms(timeframe: str) -> int:
    return int(timeframe[:-1]) * TIMEFRAME_SECONDS[timeframe[-1]] * 1000


async def run(
    redis: Redis, rest: TradingRest, *, prefix: str = "md", name: str | None = None, **options: Any
) -> dict[str, Any]:
    """Trade until the end of the run; return the report."""
    strategy = Strategy(rest, **options)
    start_equity = Decimal((await rest.account())["equity"])
    # start_id "0": a group this service creates itself (no connector declared it) reads the
    # run from its first candle; the example expects a prefix of its own per run.
    consumer = GroupConsumer(
        redis, GROUP, name, prefix=prefix, types=("candle", "backtest_complete"), start_id="0"
    )
    reading = asyncio.create_task(consumer.run(strategy.handle))
    stopping = asyncio.create_task(strategy.finished.wait())
    await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    consumer.stop()
    await reading  # what was read is handled and confirmed first
    stopping.cancel()
    return await strategy.report(start_equity)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--redis-url", default=env("CONNECTOR_REDIS_URL", "redis://localhost:6379/0")
    )
    parser.add_argument("--prefix", default=env("CONNECTOR_STREAM_PREFIX", "md"))
    parser.add_argument(
        "--api-url",
        default=env("CONNECTOR_API_URL", "ws://localhost:8080/v1/ws"),
        help="the Trading API (its WebSocket URL will do: orders go to the same host and port)",
    )
    parser.add_argument("--api-key-file", default=env("CONNECTOR_API_KEY_FILE"))
    parser.add_argument("--fast", type=int, default=5, help="bars of the fast average")
    parser.add_argument("--slow", type=int, default=20, help="bars of the slow average")
    parser.add_argument(
        "--notional", default="10000", help="value of each position, in the account currency"
    )
    parser.add_argument("--name", default=None, help="member name (default: host-pid)")


async def _main(args: argparse.Namespace, key: str | None) -> int:
    redis = Redis.from_url(args.redis_url)
    rest = TradingRest(args.api_url, key)
    task = asyncio.create_task(
        run(
            redis, rest, prefix=args.prefix, name=args.name,
            fast=args.fast, slow=args.slow, notional=Decimal(args.notional),
        )
    )  # fmt: skip
    for stop in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(stop, task.cancel)
    try:
        report = await task
    except asyncio.CancelledError:
        return 130
    finally:
        await rest.close()
        await redis.aclose()
    sys.stdout.write(orjson.dumps(report).decode() + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m connector.examples.crossover")
    configure_parser(parser)
    args = parser.parse_args(argv)
    key = Path(args.api_key_file).read_text(encoding="utf-8").strip() if args.api_key_file else None
    return loop.run(_main(args, key))


if __name__ == "__main__":
    sys.exit(main())
