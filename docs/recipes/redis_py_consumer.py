"""A plain redis-py consumer in a required consumer group: read, handle, XACK. No toolkit.

Declare the group to the connector with what it reads, e.g.

    CONNECTOR_ACK_MODE=consumer CONNECTOR_CONSUMER_GROUPS="risk[types=candle,order]" connector run

and run (one process per replica; the member name must differ between replicas):

    REDIS_URL=redis://localhost:6379/0 GROUP=risk \\
    STREAMS='md:{AAPL}:candle:1m,md:order' python docs/recipes/redis_py_consumer.py

Two things make it fast in consumer-ack mode, and neither needs the project's toolkit:

* the XACK of what was just handled and the next XREADGROUP go out in one round trip;
* one XREADGROUP names every stream: Redis 7.0 answers a *blocked* read with the first stream that
  got data, and the very next read (not blocked: the data is there) with the rest of the write.

The connector notices the XACKs by checking the group's state soon after each store.

The project's tests and ``connector bench`` (its plain-XACK consumer-ack scenario) run this file.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

Handler = Callable[[str, str, dict[str, str]], None]  # stream, entry id, fields


async def consume(
    redis: Redis,
    group: str,
    member: str,
    streams: Sequence[str],
    handle: Handler,
    stop: asyncio.Event,
    *,
    count: int = 256,
    block_ms: int = 500,
) -> int:
    """Read ``streams`` in ``group`` until ``stop`` is set; returns how many entries were handled.

    The client must decode nothing (``decode_responses=False``, the default) and must have a
    socket timeout above ``block_ms`` (redis-py's default has none)."""
    for stream in streams:
        # "$": from now on; the connector creates the group the same way before its first entry.
        try:
            await redis.xgroup_create(stream, group, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
    wanted = dict.fromkeys(streams, ">")
    handled = 0
    done: dict[str, list[bytes]] = {}
    while not stop.is_set():
        pipe = redis.pipeline(transaction=False)
        for stream, ids in done.items():
            pipe.xack(stream, group, *ids)  # confirmed only after handle() returned
        pipe.xreadgroup(group, member, wanted, count=count, block=block_ms)
        replies = await pipe.execute()
        done = {}
        for stream, entries in _streams_of(replies[-1]):
            name = stream.decode()
            for entry_id, fields in entries:
                handle(name, entry_id.decode(), {k.decode(): v.decode() for k, v in fields.items()})
                handled += 1
            done[name] = [entry_id for entry_id, _ in entries]
    for stream, ids in done.items():
        await redis.xack(stream, group, *ids)
    return handled


def _streams_of(reply: Any) -> list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]:
    """XREADGROUP's reply as (stream, entries) pairs, whichever protocol (RESP2 or RESP3)."""
    if not reply:
        return []
    return list(reply.items()) if isinstance(reply, dict) else list(reply)


def _print(stream: str, entry_id: str, fields: dict[str, str]) -> None:
    print(stream, entry_id, fields.get("close", fields.get("event", "")), flush=True)


async def main() -> None:
    redis = Redis.from_url(os.environ.get("REDIS_URL", "redis://localhost:6379/0"))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    member = os.environ.get("CONSUMER", f"{socket.gethostname()}-{os.getpid()}")
    streams = os.environ["STREAMS"].split(",")
    try:
        await consume(redis, os.environ["GROUP"], member, streams, _print, stop)
    finally:
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
