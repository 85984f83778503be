"""Idempotent pipelined writes: retried batches and clashes never duplicate or lose entries."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import fakeredis
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from connector.streams.schema import Entry
from connector.streams.writer import EntryIds, StreamWriter
from connector.wire.pipe import Command, RedisPyPipe


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = fakeredis.FakeAsyncRedis()
    yield client
    await client.aclose()


def entry(key: str, n: int) -> Entry:
    return Entry(key, {"n": str(n)}, "candle", f"evt-{n}", 0.0, 10)


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


async def values(redis: Redis, key: str) -> list[str]:
    return [fields[b"n"].decode() for _, fields in await redis.xrange(key)]


def test_entry_ids_increase_within_a_millisecond_and_across_a_clock_step_back() -> None:
    ids = EntryIds()
    assert [ids.assign("k", 100) for _ in range(3)] == ["100-0", "100-1", "100-2"]
    assert ids.assign("k", 99) == "100-3"  # the clock went back: keep increasing
    assert ids.assign("k", 101) == "101-0"
    assert ids.assign("other", 5) == "5-0"


async def test_batch_lands_in_order_with_one_pipeline(redis: Redis) -> None:
    writer = StreamWriter(redis, 0, "dl", clock_ms=Clock(1000))
    batch = [entry("a", n) for n in range(5)] + [entry("b", 9)]
    await writer.write(batch)
    assert await values(redis, "a") == ["0", "1", "2", "3", "4"]
    assert await values(redis, "b") == ["9"]
    assert [e.entry_id for e in batch[:2]] == ["1000-0", "1000-1"]


async def test_retrying_a_stored_batch_stores_nothing_twice(redis: Redis) -> None:
    writer = StreamWriter(redis, 0, "dl", clock_ms=Clock(1000))
    batch = [entry("a", n) for n in range(4)]
    await writer.write(batch[:2])  # as if the connection dropped after two commands
    await writer.write(batch)  # the whole batch is sent again
    await writer.write(batch)
    assert await values(redis, "a") == ["0", "1", "2", "3"]


async def test_clash_with_another_writer_moves_above_the_stream_top(redis: Redis) -> None:
    await redis.xadd("a", {"n": "foreign"}, id="5000-7")
    writer = StreamWriter(redis, 0, "dl", clock_ms=Clock(1000))
    batch = [entry("a", 1), entry("a", 2)]
    await writer.write(batch)
    assert await values(redis, "a") == ["foreign", "1", "2"]
    assert batch[0].entry_id == "5000-8"


async def test_permanent_refusal_goes_to_the_dead_letter_stream(redis: Redis) -> None:
    await redis.set("a", "not a stream")
    writer = StreamWriter(redis, 0, "dl", clock_ms=Clock(1000))
    batch = [entry("a", 1)]
    outcome = await writer.write(batch)
    rows = await redis.xrange("dl")
    assert len(rows) == 1
    fields = rows[0][1]
    assert fields[b"reason"] == b"store_failed"
    assert fields[b"stream"] == b"a"
    assert b"WRONGTYPE" in fields[b"detail"]
    ((original, stored),) = outcome.diverted
    assert original is batch[0]
    assert batch[0].key == "a"
    assert (stored.key, stored.label, stored.event_id) == ("dl", "deadletter", "evt-1")
    assert outcome.as_stored(batch) == [stored]  # acknowledged as what Redis holds


async def test_approximate_maxlen_bounds_the_stream(redis: Redis) -> None:
    writer = StreamWriter(redis, 10, "dl", clock_ms=Clock(1000))
    for start in range(0, 300, 50):
        await writer.write([entry("a", n) for n in range(start, start + 50)])
    length = await redis.xlen("a")
    assert 10 <= length < 300


async def test_entries_without_a_key_are_not_written(redis: Redis) -> None:
    writer = StreamWriter(redis, 0, "dl", clock_ms=Clock(1000))
    duplicate = Entry(None, {}, "candle", "evt-1", 0.0, 0)
    await writer.write([duplicate])
    assert await redis.keys("*") == []


async def test_a_refusing_dead_letter_stream_gives_up_instead_of_growing(redis: Redis) -> None:
    await redis.set("a", "not a stream")
    await redis.set("dl", "not a stream either")
    writer = StreamWriter(redis, 0, "dl", clock_ms=Clock(1000))
    batch = [entry("a", 1), entry("b", 2)]
    outcome = await writer.write(batch)
    assert await values(redis, "b") == ["2"]  # the rest of the batch is stored
    assert [(e.event_id, "WRONGTYPE" in error) for e, error in outcome.unstorable] == [
        ("evt-1", True)
    ]
    assert outcome.diverted == ()
    given_up = outcome.as_stored(batch)[0]
    assert given_up.key is None
    assert given_up.event_id is None
    assert batch[0].key == "a"  # the caller's entry untouched


class LosesOneReply:
    """redis-py's pipe, except that the ``lose``-th round trip runs and its reply is lost."""

    def __init__(self, redis: Redis, lose: int) -> None:
        self._pipe = RedisPyPipe(redis)
        self._calls = 0
        self._lose = lose

    async def execute(self, commands: Sequence[Command], *, atomic: bool = False) -> list[Any]:
        self._calls += 1
        replies = await self._pipe.execute(commands, atomic=atomic)
        if self._calls == self._lose:
            raise RedisConnectionError("the reply was lost")
        return replies

    async def close(self) -> None:
        await self._pipe.close()


async def test_a_retried_diversion_is_stored_once(redis: Redis) -> None:
    """The dead-letter write ran but its reply was lost: the retry writes the same entry at the
    same id, which Redis recognises, instead of a second copy."""
    await redis.set("a", "not a stream")
    writer = StreamWriter(redis, 0, "dl", clock_ms=Clock(1000), pipe=LosesOneReply(redis, 2))
    batch = [entry("a", 1)]
    with pytest.raises(RedisConnectionError):
        await writer.write(batch)
    outcome = await writer.write(batch)
    assert await redis.xlen("dl") == 1
    assert [stored.key for _, stored in outcome.diverted] == ["dl"]


async def test_a_stream_counts_as_provisioned_only_when_provisioning_worked(redis: Redis) -> None:
    writer = StreamWriter(redis, 0, "dl", clock_ms=Clock(1000))
    calls: list[str] = []

    def provision(key: str) -> list[list[str | int | bytes]]:
        calls.append(key)
        if key == "bad":
            return [["XGROUP", "CREATE", key, "g", "not-an-id", "MKSTREAM"]]
        return [["XGROUP", "CREATE", key, "g", "$", "MKSTREAM"]]

    writer.provision = provision
    await writer.write([entry("good", 1), entry("bad", 2)])
    assert writer.known_streams == {"good"}
    await writer.write([entry("good", 3), entry("bad", 4)])
    assert calls == ["bad", "good", "bad"]  # tried again for the stream that failed
