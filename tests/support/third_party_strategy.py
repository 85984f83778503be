"""A strategy that knows nothing of the connector's toolkit: redis-py, urllib and the REST order
surface of the Trading API, in a process of its own (python tests/support/third_party_strategy.py
REDIS_URL REST_URL GROUP SYMBOL).

Every third candle of SYMBOL it flips between long and flat with a market order, naming the
signal bar in ``client_order_id`` (``sig-<bar start ms>``), and XACKs the candles only once the
order was accepted. It leaves at the end of the run and prints how many orders it placed.
"""

from __future__ import annotations

import json
import sys
import urllib.request

from redis import Redis
from redis.exceptions import ResponseError


def order(rest_url: str, symbol: str, side: str, signal_ms: str) -> None:
    body = {
        "symbol": symbol,
        "side": side,
        "quantity": "5",
        "order_type": "MARKET",
        "client_order_id": f"sig-{signal_ms}",
    }
    request = urllib.request.Request(
        f"{rest_url}/v1/orders",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 201, answer.status


def main(redis_url: str, rest_url: str, group: str, symbol: str) -> int:
    redis = Redis.from_url(redis_url)
    candles = f"md:{{{symbol}}}:candle:1m"
    streams = {candles: ">", "md:backtest_complete": ">"}
    for stream in streams:
        try:
            redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
    seen = placed = 0
    long = False
    while True:
        reply = redis.xreadgroup(group, "third-1", streams, count=100, block=1000)
        done = False
        for stream, entries in reply or []:
            for _, fields in entries:
                if stream.decode() != candles:
                    done = True
                    continue
                seen += 1
                if seen % 3 == 0:
                    order(rest_url, symbol, "SELL" if long else "BUY", fields[b"ts"].decode())
                    long = not long
                    placed += 1
            # Confirmed only now: after the orders these candles caused were accepted.
            redis.xack(stream, group, *[entry_id for entry_id, _ in entries])
        if done:
            print(json.dumps({"orders": placed}), flush=True)
            return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
