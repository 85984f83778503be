"""A Redis that refuses for a while (out of memory) is retried on both write paths, never taken
for a permanent refusal: redis-py strips the error code that the connector's own connection
keeps, and both must decide the same (see connector.wire.errors)."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from connector.streams.schema import Entry
from connector.streams.writer import StreamWriter, WriteError
from connector.wire.pipe import WirePipe
from connector.wire.resp import WireConnection
from tests.support.redis_server import RedisServer

DEADLETTER = "md:deadletter"


def entry(n: int) -> Entry:
    return Entry("md:{AAPL}:quote", {"n": str(n), "bid": "1.5"}, "quote", f"evt-{n}", 0.0, 1)


@pytest.mark.parametrize("atomic", [False, True], ids=["each XADD (cluster)", "MULTI/EXEC"])
@pytest.mark.parametrize("path", ["redis-py", "own connection"])
async def test_out_of_memory_is_retried_not_dead_lettered(
    redis_server: RedisServer, redis_client: Redis, path: str, atomic: bool
) -> None:
    """Without MULTI (a cluster's batches) each XADD gets its own OOM reply, which is where
    the two shapes differ; in a transaction Redis aborts the whole EXEC (EXECABORT)."""

    async def wire(reply_timeout: float) -> WireConnection:
        return await WireConnection.open(redis_server.url, reply_timeout=reply_timeout)

    writer = StreamWriter(
        redis_client,
        0,
        DEADLETTER,
        clock_ms=lambda: 1000,
        pipe=WirePipe(wire, 5) if path != "redis-py" else None,
    )
    writer.atomic = atomic
    await redis_client.set("ballast", b"x" * 4_000_000)
    await redis_client.config_set("maxmemory-policy", "noeviction")
    await redis_client.config_set("maxmemory", "1mb")
    batch = [entry(n) for n in range(3)]
    expected = "transaction refused" if atomic else "command not allowed"
    with pytest.raises(WriteError, match=expected):
        await writer.write(batch)
    assert await redis_client.exists(DEADLETTER) == 0  # nothing diverted
    assert all(e.key == "md:{AAPL}:quote" for e in batch)  # the batch is intact, to retry

    await redis_client.delete("ballast")  # memory freed: the same batch again, stored once
    await redis_client.config_set("maxmemory", "0")
    await writer.write(batch)
    rows = await redis_client.xrange("md:{AAPL}:quote")
    assert [fields[b"n"] for _, fields in rows] == [b"0", b"1", b"2"]
    assert await redis_client.exists(DEADLETTER) == 0
    await writer.close()
