"""A FastStream service in a required consumer group: it reads candles, and only candles.

Declare the group to the connector with what it reads, so the backtest waits for it only there:

    CONNECTOR_ACK_MODE=consumer CONNECTOR_CONSUMER_GROUPS="signals[types=candle]" connector run

and run the service (one process per replica; the consumer name must differ between replicas):

    REDIS_URL=redis://localhost:6379/0 SYMBOLS=AAPL,MSFT python docs/recipes/faststream_signals.py

FastStream reads each stream with its own blocking XREADGROUP and XACKs an entry once its handler
returned (its default ack policy). Nothing else is needed: the connector notices the XACKs by
checking the group's state a fraction of a millisecond after each store. A handler that raises
leaves its entry pending, and FastStream never delivers it again by itself; in a backtest the
engine then waits for it (see CONNECTOR_CONSUMER_ACK_TIMEOUT).

The project's tests run this file (tests/integration/test_consumer_ack_services.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Sequence

from faststream import FastStream
from faststream.redis import RedisBroker, StreamSub

GROUP = "signals"


def candle_stream(symbol: str, timeframe: str = "1m", prefix: str = "md") -> str:
    """The connector's candle stream of ``symbol`` (the symbol is a Redis Cluster hash tag)."""
    return f"{prefix}:{{{symbol}}}:candle:{timeframe}"


def build(
    redis_url: str,
    symbols: Sequence[str],
    *,
    consumer: str | None = None,
    on_candle: Callable[[dict[str, str]], None] = lambda fields: None,
) -> FastStream:
    """The service: one subscriber per candle stream, all in the consumer group ``signals``."""
    # FastStream logs every message at INFO; a service at full speed wants warnings only.
    broker = RedisBroker(redis_url, log_level=logging.WARNING)
    member = consumer or f"{socket.gethostname()}-{os.getpid()}"

    async def handle(candle: dict[str, str]) -> None:
        # The entry's fields, as the connector wrote them: symbol, timeframe, ts (bar start,
        # epoch ms), open, high, low, close, volume, event_id... all strings (exact decimals).
        on_candle(candle)

    for symbol in symbols:
        broker.subscriber(stream=StreamSub(candle_stream(symbol), group=GROUP, consumer=member))(
            handle
        )
    return FastStream(broker)


def print_close(candle: dict[str, str]) -> None:
    print(candle["symbol"], candle["ts"], candle["close"], flush=True)


if __name__ == "__main__":
    symbols = os.environ.get("SYMBOLS", "AAPL,MSFT,BTCUSD").split(",")
    app = build(
        os.environ.get("REDIS_URL", "redis://localhost:6379/0"), symbols, on_candle=print_close
    )
    asyncio.run(app.run())
