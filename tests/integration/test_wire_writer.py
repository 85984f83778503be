"""The write path's own Redis connection against a real redis-server: encoding, replies,
authentication, databases, unix sockets, and the writer's idempotence on top of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from connector.streams.schema import Entry
from connector.streams.writer import StreamWriter, WriteError
from connector.wire.pipe import WirePipe
from connector.wire.resp import WireConnection, encode_command, encode_fields
from tests.support.redis_server import RedisServer


def entry(key: str, n: int, **extra: str) -> Entry:
    return Entry(
        key, {"n": str(n), "sym": "F:EURUSD", "px": "1.08012", **extra}, "quote", None, 0.0, 1
    )


def writer_for(
    server: RedisServer, redis: Redis, clock: int = 1000, maxlen: int = 0
) -> StreamWriter:
    async def wire(reply_timeout: float) -> WireConnection:
        return await WireConnection.open(server.url, reply_timeout=reply_timeout)

    return StreamWriter(redis, maxlen, "dl", clock_ms=lambda: clock, pipe=WirePipe(wire, 5))


async def read(redis: Redis, key: str) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in await redis.xrange(key)]


def test_encoding_matches_the_protocol() -> None:
    assert encode_command(["XADD", "k", 5]) == b"*3\r\n$4\r\nXADD\r\n$1\r\nk\r\n$1\r\n5\r\n"
    assert encode_fields({"sym": "\u00e9"}) == b"$3\r\nsym\r\n$2\r\n\xc3\xa9\r\n"


async def test_batches_land_exactly_with_unicode_and_empty_values(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    writer = writer_for(redis_server, redis_client)
    batch = [entry("md:{\u00e9t\u00e9}:quote", n, note="\u2603", empty="") for n in range(50)]
    await writer.write(batch)
    stored = await read(redis_client, "md:{\u00e9t\u00e9}:quote")
    assert stored == [e.fields for e in batch]
    await writer.close()


async def test_a_retried_batch_is_stored_once_and_clashes_move_up(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    await redis_client.xadd("other", {"n": "foreign"}, id="9000-0")
    writer = writer_for(redis_server, redis_client)
    batch = [entry("s", n) for n in range(3)] + [entry("other", 7)]
    await writer.write(batch[:2])
    await writer.write(batch)  # sent again whole, as after a lost reply
    assert [e["n"] for e in await read(redis_client, "s")] == ["0", "1", "2"]
    assert [e["n"] for e in await read(redis_client, "other")] == ["foreign", "7"]
    assert batch[3].entry_id == "9000-1"
    await writer.close()


async def test_maxlen_and_permanent_refusals(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    await redis_client.set("wrong", "a string")
    writer = writer_for(redis_server, redis_client, maxlen=10)
    await writer.write([entry("wrong", 1)] + [entry("s", n) for n in range(400)])
    assert 10 <= await redis_client.xlen("s") < 400
    dead = await read(redis_client, "dl")
    assert dead[0]["reason"] == "store_failed"
    assert dead[0]["stream"] == "wrong"
    await writer.close()


async def test_a_dead_connection_is_reported_and_replaced(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    writer = writer_for(redis_server, redis_client)
    await writer.write([entry("s", 1)])
    await redis_client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    with pytest.raises((RedisConnectionError, OSError)):
        await writer.write([entry("s", 2)])
    await writer.write([entry("s", 2)])  # a new connection, same entry: stored once
    assert [e["n"] for e in await read(redis_client, "s")] == ["1", "2"]
    await writer.close()


@pytest.fixture
def acl_unix_redis(tmp_path: Path) -> Iterator[RedisServer]:
    socket_path = tmp_path / "redis.sock"
    server = RedisServer(
        tmp_path / "r",
        [
            "--unixsocket",
            str(socket_path),
            "--user",
            "default",
            "off",
            "--user",
            "app",
            "on",
            ">s3cret",
            "~*",
            "&*",
            "+@all",
        ],
    )
    server.start()
    server.socket_path = socket_path  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()


async def test_acl_auth_database_and_unix_socket(acl_unix_redis: RedisServer) -> None:
    path = acl_unix_redis.socket_path  # type: ignore[attr-defined]
    wire = await WireConnection.open(
        f"unix://{path}?db=3", reply_timeout=5, username="app", password="s3cret"
    )
    replies = await wire.execute(encode_command(["XADD", "s", "*", "a", "1"]), 1)
    assert isinstance(replies[0], bytes)
    await wire.close()
    check = Redis(unix_socket_path=str(path), db=3, username="app", password="s3cret")
    try:
        assert await check.xlen("s") == 1
    finally:
        await check.aclose()
    with pytest.raises(ResponseError):
        await WireConnection.open(
            f"unix://{path}", reply_timeout=5, username="app", password="wrong"
        )


async def test_a_primary_turned_replica_makes_the_writer_reconnect(
    tmp_path: Path, redis_server: RedisServer, redis_client: Redis
) -> None:
    """A failover behind a stable address: the connection the writer holds now reaches a
    replica (READONLY). The next attempt must open a new connection, which reaches the primary."""
    old = RedisServer(tmp_path / "old")
    old.start()
    try:
        targets = iter([old.url, redis_server.url])

        async def wire(reply_timeout: float) -> WireConnection:
            return await WireConnection.open(next(targets), reply_timeout=reply_timeout)

        writer = StreamWriter(redis_client, 0, "dl", clock_ms=lambda: 1000, pipe=WirePipe(wire, 5))
        demoted = Redis.from_url(old.url)
        try:
            await demoted.execute_command("REPLICAOF", "127.0.0.1", str(redis_server.port))
        finally:
            await demoted.aclose()
        with pytest.raises(WriteError):
            await writer.write([entry("s", 1)])
        await writer.write([entry("s", 1)])  # a new connection: the (new) primary
        assert [e["n"] for e in await read(redis_client, "s")] == ["1"]
        await writer.close()
    finally:
        old.stop()


async def test_a_user_without_the_client_command_can_still_write(
    tmp_path: Path,
) -> None:
    server = RedisServer(
        tmp_path / "r",
        ["--user", "default", "off", "--user", "app", "on", ">pw", "~*", "+@all", "-client"],
    )
    server.start()
    try:
        wire = await WireConnection.open(server.url, reply_timeout=5, username="app", password="pw")
        replies = await wire.execute(encode_command(["XADD", "s", "*", "a", "1"]), 1)
        assert isinstance(replies[0], bytes)
        await wire.close()
    finally:
        server.stop()
