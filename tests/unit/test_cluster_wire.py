"""The per-master write path's bookkeeping, without a cluster: grouping by master, and which
failures send the entries through redis-py instead (see tests/integration for the real thing)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from connector.wire.cluster import ClusterWire, misdirected


class FakeCluster:
    """Keys starting with "a" live on master 1, the rest on master 2."""

    def __init__(self) -> None:
        self.nodes_manager = SimpleNamespace(slots_cache={0: ["covered"]})

    def get_node_from_key(self, key: str) -> Any:
        return SimpleNamespace(host="10.0.0.1" if key.startswith("a") else "10.0.0.2", port=6379)

    def get_primaries(self) -> list[Any]:
        return [SimpleNamespace(host="10.0.0.2", port=6379)]


class FakeWire:
    def __init__(self, replies: list[Any]) -> None:
        self.replies = replies
        self.sent: list[bytes] = []
        self.closed = False

    async def execute(self, payload: bytes, count: int) -> list[Any]:
        self.sent.append(payload)
        return self.replies[:count]

    async def close(self) -> None:
        self.closed = True


async def test_each_master_gets_its_entries_in_order_and_replies_come_back_in_place() -> None:
    wire = ClusterWire(FakeCluster(), reply_timeout=1)  # type: ignore[arg-type]
    one, two = FakeWire([b"1-0", b"1-1"]), FakeWire([b"2-0"])

    async def connect(address: tuple[str, int]) -> Any:
        return one if address[0] == "10.0.0.1" else two

    wire._connect = connect  # type: ignore[method-assign]
    replies = await wire.execute([("a1", b"A1"), ("b1", b"B1"), ("a2", b"A2")])
    assert replies == [b"1-0", b"2-0", b"1-1"]
    assert one.sent == [b"A1A2"]
    assert two.sent == [b"B1"]
    assert not wire.stale


async def test_a_master_refusing_the_connection_setup_is_a_connection_failure() -> None:
    """AUTH/SELECT refused on one master must not read as XADDs refused (those would be
    dead-lettered): the entries go through redis-py instead, the others stand."""
    wire = ClusterWire(FakeCluster(), reply_timeout=1)  # type: ignore[arg-type]
    healthy = FakeWire([b"2-0"])

    async def connect(address: tuple[str, int]) -> Any:
        if address[0] == "10.0.0.1":
            raise ResponseError("ERR invalid password")
        return healthy

    wire._connect = connect  # type: ignore[method-assign]
    replies = await wire.execute([("a1", b"A1"), ("b1", b"B1")])
    assert isinstance(replies[0], RedisConnectionError)
    assert replies[1] == b"2-0"
    assert wire.stale
    assert [misdirected(reply) for reply in replies] == [True, False]


async def test_redirections_mark_the_map_stale_and_settling_drops_old_masters() -> None:
    wire = ClusterWire(FakeCluster(), reply_timeout=1)  # type: ignore[arg-type]
    old = FakeWire([ResponseError("MOVED 12 10.0.0.2:6379")])
    new = FakeWire([b"2-0"])

    async def connect(address: tuple[str, int]) -> Any:
        return old if address[0] == "10.0.0.1" else new

    wire._connect = connect  # type: ignore[method-assign]
    replies = await wire.execute([("a1", b"A1"), ("b1", b"B1")])
    assert misdirected(replies[0])
    assert not misdirected(replies[1])
    assert wire.stale
    assert not wire.usable()
    await wire.settled()  # redis-py took the attempt: its map is current; 10.0.0.1 is gone
    assert not wire.stale
    assert old.closed
    assert not new.closed
