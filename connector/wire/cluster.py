"""The write path's own connections to a Redis Cluster: one per master, one pipeline each.

redis-py's cluster pipeline packs and encodes every command in Python and looks up each key's
command metadata, which cost a cluster connector three times the CPU per event of a single node.
Here the batch's XADDs (already encoded, see :mod:`connector.streams.writer`) are grouped by the
master that owns their slot, per redis-py's own slot map, and each group goes to its master as one
pipeline on a :class:`~connector.wire.resp.WireConnection`, all masters at once.

Only the steady state takes this path. Anything unusual (a redirection, a node that cannot be
reached, a slot map that does not cover a key yet) marks the map *stale*: the writer then sends
its next attempt through redis-py, which follows MOVED/ASK and refreshes the slot map, and comes
back here once an attempt went through. The explicit entry ids make every re-send idempotent, so
the switch can happen in the middle of anything.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from connector.wire.errors import is_redirect
from connector.wire.resp import Endpoint, WireConnection

Address = tuple[str, int]


def misdirected(reply: Any) -> bool:
    """A reply that says "not here" (MOVED/ASK), or none at all (the master failed): the entry
    goes through redis-py, which follows redirections and refreshes the slot map."""
    if isinstance(reply, ResponseError):
        return is_redirect(reply)
    return isinstance(reply, BaseException)


class ClusterWire:
    """Sends (key, encoded command) pairs to the masters that own the keys."""

    def __init__(self, cluster: RedisCluster, reply_timeout: float) -> None:
        self._cluster = cluster
        self._reply_timeout = reply_timeout
        self._wires: dict[Address, WireConnection] = {}
        self._owner: dict[str, Address] = {}  # key -> its master, valid until the map changes
        self.stale = False

    @classmethod
    def for_cluster(cls, cluster: RedisCluster, reply_timeout: float) -> ClusterWire | None:
        """None when the cluster's connection settings are ones a WireConnection does not
        reproduce (a credential provider, RESP3, client certificates): redis-py then writes."""
        nodes = list(cluster.nodes_manager.startup_nodes.values())
        if (
            not nodes
            or Endpoint.of_connection(nodes[0].connection_kwargs, nodes[0].connection_class) is None
        ):
            return None
        return cls(cluster, reply_timeout)

    def usable(self) -> bool:
        """False when the next attempt should go through redis-py (see the module's note)."""
        return not self.stale and bool(self._cluster.nodes_manager.slots_cache)

    async def settled(self) -> None:
        """An attempt through redis-py went through: its slot map is current again. Connections
        to nodes that are no longer masters (a failover, a node removed) are closed."""
        self.stale = False
        self._owner.clear()
        masters = {(node.host, int(node.port)) for node in self._cluster.get_primaries()}
        for address in [address for address in self._wires if address not in masters]:
            wire = self._wires.pop(address)
            with contextlib.suppress(Exception):
                await wire.close()

    async def execute(self, commands: Sequence[tuple[str, bytes]]) -> list[Any]:
        """One reply per command, in order. A master that failed (connection, timeout) has its
        commands' replies replaced by the exception; redirections come back as replies."""
        groups: dict[Address, list[int]] = {}
        try:
            for index, (key, _) in enumerate(commands):
                groups.setdefault(self._address(key), []).append(index)
        except (RedisError, RedisClusterException):  # a slot not covered (yet): redis-py's turn
            self.stale = True
            raise
        sent = [
            self._send(address, [commands[index][1] for index in indices])
            for address, indices in groups.items()
        ]
        outcomes = await asyncio.gather(*sent, return_exceptions=True)
        results: list[Any] = [None] * len(commands)
        for (_, indices), outcome in zip(groups.items(), outcomes, strict=True):
            if isinstance(outcome, asyncio.CancelledError):
                raise outcome
            if isinstance(outcome, BaseException):
                self.stale = True
                for index in indices:
                    results[index] = outcome
                continue
            for index, reply in zip(indices, outcome, strict=True):
                if misdirected(reply):
                    self.stale = True
                results[index] = reply
        return results

    def _address(self, key: str) -> Address:
        address = self._owner.get(key)
        if address is None:
            node = self._cluster.get_node_from_key(key)
            if node is None:  # only for replica=True; kept for the type checker
                raise RedisError(f"no node for {key!r}")
            address = self._owner[key] = (node.host, int(node.port))
        return address

    async def _send(self, address: Address, parts: list[bytes]) -> list[Any]:
        wire = self._wires.get(address)
        if wire is None:
            try:
                wire = self._wires[address] = await self._connect(address)
            except ResponseError as exc:
                # Refused at AUTH/SELECT: a problem of this connection, not of the entries
                # (which must not be taken for refused XADDs): try again through redis-py.
                raise RedisConnectionError(f"{address[0]}:{address[1]}: {exc}") from exc
        try:
            return await wire.execute(b"".join(parts), len(parts))
        except BaseException:
            # Whatever was in flight leaves the connection in an unknown state: never reuse it.
            self._wires.pop(address, None)
            await wire.close()
            raise

    async def _connect(self, address: Address) -> WireConnection:
        node = self._cluster.get_node(host=address[0], port=address[1])
        endpoint = (
            Endpoint.of_connection(node.connection_kwargs, node.connection_class)
            if node is not None
            else None
        )
        if endpoint is None:  # a node that left the map meanwhile
            raise RedisError(f"unknown cluster node {address[0]}:{address[1]}")
        return await WireConnection.connect(endpoint, reply_timeout=self._reply_timeout)

    async def close(self) -> None:
        wires, self._wires = list(self._wires.values()), {}
        for wire in wires:
            with contextlib.suppress(Exception):
                await wire.close()
