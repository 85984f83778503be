"""The transport's pipes: errors come back as values, in order, whichever transport carried them;
the choice is made by transport_for() alone."""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from connector.wire.pipe import Command, RedisPyPipe, transport_for


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = fakeredis.FakeAsyncRedis()
    yield client
    await client.aclose()


async def test_replies_come_back_in_order_with_errors_as_values(redis: Redis) -> None:
    pipe = RedisPyPipe(redis)
    replies = await pipe.execute(
        [Command(["SET", "a", "1"]), Command(["LPUSH", "a", "x"]), Command(["INCR", "a"])]
    )
    assert replies[0] is True
    assert isinstance(replies[1], ResponseError)
    assert "WRONGTYPE" in str(replies[1])
    assert replies[2] == 2


async def test_a_single_refused_command_is_a_value_too(redis: Redis) -> None:
    await redis.set("a", "1")
    (reply,) = await RedisPyPipe(redis).execute([Command(["LPUSH", "a", "x"])])
    assert isinstance(reply, ResponseError)


async def test_an_atomic_batch_runs_as_one_transaction(redis: Redis) -> None:
    replies = await RedisPyPipe(redis).execute(
        [Command(["RPUSH", "l", "a"]), Command(["RPUSH", "l", "b"])], atomic=True
    )
    assert replies == [1, 2]
    assert await redis.lrange("l", 0, -1) == [b"a", b"b"]


def test_a_command_is_encoded_once_as_resp() -> None:
    command = Command(["XACK", "s", "g", "1-0"])
    assert command.packed() == b"*4\r\n$4\r\nXACK\r\n$1\r\ns\r\n$1\r\ng\r\n$3\r\n1-0\r\n"
    assert command.packed() is command.packed()
    assert command.name() == "XACK"


def test_redis_py_alone_when_asked_or_when_no_connection_of_our_own_fits(redis: Redis) -> None:
    assert not transport_for(redis, fast=False).own_connections
    assert isinstance(transport_for(redis, fast=False).pipe(), RedisPyPipe)
    resp3 = Redis(protocol=3)  # a set-up our own connection does not reproduce
    assert not transport_for(resp3).own_connections
    assert transport_for(Redis()).own_connections
