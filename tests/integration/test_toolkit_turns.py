"""The toolkit's confirmation goes out before its next read when the processor was idle: in
consumer-ack mode the engine waits for that confirmation, so it must not queue behind a read."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from connector.consumer import GroupConsumer, Message
from connector.wire.pipe import Command, Pipe
from tests.support.harness import wait_until
from tests.support.redis_server import RedisServer

STREAM = "md:{AAPL}:candle"


class Recording:
    """A pipe that notes the first command of each round trip as it is sent."""

    def __init__(self, pipe: Pipe, sent: list[str]) -> None:
        self._pipe = pipe
        self._sent = sent

    async def execute(self, commands: Sequence[Command], *, atomic: bool = False) -> list[Any]:
        self._sent.append(commands[0].name())
        return await self._pipe.execute(commands, atomic=atomic)

    async def close(self) -> None:
        await self._pipe.close()


async def test_an_idle_consumer_confirms_before_it_reads_again(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    handled: list[str] = []

    async def handle(batch: list[Message]) -> None:
        handled.extend(message.id for message in batch)

    consumer = GroupConsumer(
        # A read that blocks longer than the test takes: no read ends by its timeout meanwhile.
        Redis.from_url(redis_server.url),
        "risk",
        "m1",
        streams=[STREAM],
        block_ms=2_000,
    )
    sent: list[str] = []
    # The round trips, as the consumer sends them (a private seam: the order is the point).
    transport = consumer._transport
    make_pipe = transport.pipe
    transport.pipe = lambda *a, **k: Recording(make_pipe(*a, **k), sent)  # type: ignore[method-assign]
    task = asyncio.create_task(consumer.run(handle))
    try:
        await wait_until(lambda: sent == ["XREADGROUP"])  # the reader waits for entries
        stored = (await redis_client.xadd(STREAM, {"n": "1"})).decode()
        await wait_until(lambda: handled == [stored] and len(sent) >= 3)
        assert sent[:3] == ["XREADGROUP", "XACK", "XREADGROUP"]
    finally:
        consumer.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await consumer.redis.aclose()
