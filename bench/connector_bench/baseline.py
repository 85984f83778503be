"""The baseline: the Trading API documentation's "Hello World" client loop, plus Redis.

``python -m connector_bench.baseline WS_URL REDIS_URL [--quiet]``

This is the loop of the documentation's Python example (``json.loads`` of every frame, a JSON
``pong`` for a JSON ``ping``, one ``event_ack`` per event with a fresh uuid and an integer
millisecond timestamp), with the one thing a user would add to reach Redis: **one awaited
``XADD`` per event** (redis.asyncio, ``*`` ids, one stream per symbol, ``hello:{SYMBOL}``) before
the ack. What differs from the page, and why:

* It acknowledges ``event["event_id"]`` (falling back to the documentation's ``id``). The docs'
  ``event.get("id", "unknown")`` never finds an id on the real server (the id is in
  ``event_id``), so it acknowledges ``"unknown"`` and the backtest engine stalls on every step
  (5 s timeout each, halted after 5): it could not be measured at all.
* It retries the initial connect (the harness starts it before the simulator listens) and exits
  quietly when the server closes the connection; the docs' loop would die with a traceback.
* ``--quiet`` drops the ``print`` calls (the benchmark uses it: printing only slows the baseline
  down, which would flatter the connector).
* It prints ``ready`` on stdout once Redis answers, so the harness knows it is up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from datetime import datetime
from typing import Any

import websockets
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection

CONNECT_TIMEOUT = 60.0


async def connect_with_retry(uri: str) -> ClientConnection:
    """``websockets.connect(uri)`` with the library defaults, retried while nothing listens."""
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        try:
            return await websockets.connect(uri)
        except OSError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.02)


def stream_for(event_type: str | None, event: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """One stream per symbol (``hello:{AAPL}``): the bar or quote fields as they came, plus type.

    Other frames go to ``hello:{type}`` with the whole frame in ``data``.
    """
    if event_type == "candle":
        bar = event.get("bar", {})
        return f"hello:{{{bar.get('symbol')}}}", {"type": "candle", **bar}
    if event_type == "quote":
        quote = event.get("quote", {})
        return f"hello:{{{quote.get('symbol')}}}", {"type": "quote", **quote}
    return f"hello:{event_type}", {"type": str(event_type), "data": json.dumps(event)}


async def main(uri: str, redis_url: str, quiet: bool) -> int:
    say = (lambda *_: None) if quiet else print
    redis = Redis.from_url(redis_url)
    await redis.ping()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        async with await connect_with_retry(uri) as ws:
            say("Connected to Trading API")
            while True:
                message = await ws.recv()
                event = json.loads(message)

                # Handle ping/pong heartbeat
                if event.get("type") == "ping":
                    await ws.send(json.dumps({"type": "pong"}))
                    continue

                # Process market events
                event_type = event.get("type")
                say(f"Received event: {event_type}")
                if event_type == "candle":
                    bar = event.get("bar", {})
                    say(f"  {bar.get('symbol')} - Close: {bar.get('close')}")
                elif event_type == "quote":
                    quote = event.get("quote", {})
                    bid, ask = quote.get("bid"), quote.get("ask")
                    say(f"  {quote.get('symbol')} - Bid: {bid} Ask: {ask}")

                # Store it: one awaited XADD per event, before the ack (the baseline's addition)
                stream, fields = stream_for(event_type, event)
                await redis.xadd(stream, fields)  # type: ignore[arg-type]

                # Acknowledge the event (event_id: where the real server puts it)
                ack = {
                    "type": "event_ack",
                    "correlation_id": str(uuid.uuid4()),
                    "events_processed": [event.get("event_id", event.get("id", "unknown"))],
                    "timestamp": int(datetime.now().timestamp() * 1000),
                }
                await ws.send(json.dumps(ack))
    except websockets.ConnectionClosed:
        return 0
    finally:
        await redis.aclose()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m connector_bench.baseline",
        description="The documentation's Hello World loop with one awaited XADD per event.",
    )
    parser.add_argument("url", help="Trading API WebSocket URL")
    parser.add_argument("redis_url", help="redis:// URL")
    parser.add_argument("--quiet", action="store_true", help="no per-event prints")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    raise SystemExit(asyncio.run(main(arguments.url, arguments.redis_url, arguments.quiet)))
