"""When each consumer group confirmed each entry, as Redis itself saw it (MONITOR).

For a consumer the test does not control (FastStream, a shell loop), the moment of its XACK is
known only to Redis. MONITOR reports every command with the server's clock (the same clock as
``time.time()`` here), so "the engine received the ack of a step after every reading group's
XACK of its entries" can be checked exactly, for any client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from redis.asyncio import Redis

from connector.sim import Simulator

XackKey = tuple[str, str, str]  # (stream, group, entry id)


@dataclass
class XackLog:
    """(stream, group, entry id) -> server time of the first XACK naming it."""

    times: dict[XackKey, float] = field(default_factory=dict)

    def record(self, command: str, when: float) -> None:
        parts = command.split(" ")
        if len(parts) >= 4 and parts[0].upper() == "XACK":
            stream, group = parts[1], parts[2]
            for entry_id in parts[3:]:
                self.times.setdefault((stream, group, entry_id), when)


@contextlib.asynccontextmanager
async def xacks(url: str) -> AsyncIterator[XackLog]:
    """Follow MONITOR for the duration of the block."""
    redis = Redis.from_url(url)
    log = XackLog()
    async with redis.monitor() as monitor:

        async def follow() -> None:
            async for info in monitor.listen():
                log.record(info["command"], info["time"])

        task = asyncio.create_task(follow())
        try:
            yield log
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    await redis.aclose()


async def stored_entries(redis: Redis, prefix: str = "md") -> dict[str, tuple[str, str]]:
    """event id -> (stream, entry id) of every id-bearing entry the connector stored."""
    found: dict[str, tuple[str, str]] = {}
    async for raw in redis.scan_iter(f"{prefix}:*", _type="stream"):
        key = raw.decode()
        if key in (f"{prefix}:system", f"{prefix}:deadletter", f"{prefix}:streams"):
            continue
        for entry_id, fields in await redis.xrange(key):
            event_id = fields.get(b"event_id")
            if event_id is not None:
                found[event_id.decode()] = (key, entry_id.decode())
    return found


def first_ack_wall(sim: Simulator) -> dict[str, float]:
    """event id -> wall-clock time at which the engine first received an ack naming it."""
    first: dict[str, float] = {}
    for ack in sim.record.acks:
        for event_id in ack.ids:
            first.setdefault(event_id, ack.wall)
    return first
