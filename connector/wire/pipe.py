"""Where commands go: the one place that chooses between the transports.

The same commands can travel three ways:

* a connection of our own (:class:`~connector.wire.resp.WireConnection`: encoded by hand, replies
  parsed in C; measured at three times redis-py's rate on the write path);
* its cluster form (:class:`~connector.wire.cluster.ClusterWire`: one such connection per master),
  with redis-py's cluster pipeline, which follows redirections, for what it cannot route;
* redis-py alone: a client whose set-up a WireConnection does not reproduce (RESP3, client
  certificates), a toolkit member made with ``fast=False``, or fakeredis in unit tests.

:func:`transport_for` picks one per client, once. The writer, the ack gate and the consumer
toolkit ask the :class:`Transport` for pipes and subscriptions and never look at which it picked.

Replies come back with errors as values (``ResponseError``), in the shape of the transport that
carried them: raw RESP from our own connections, redis-py's parsed forms from redis-py. The callers
read both (they did before this module existed): the shapes are a property of the reply, not a
reason to branch on the transport.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from connector.wire.client import RedisClient
from connector.wire.cluster import ClusterWire, misdirected
from connector.wire.errors import needs_reconnect
from connector.wire.resp import EXEC, MULTI, Arg, Endpoint, WireConnection, encode_command

__all__ = [
    "Command",
    "Opener",
    "Pipe",
    "TransactionRefused",
    "Transport",
    "transport_for",
]

#: Opens a connection of our own with the given reply timeout (in seconds).
Opener = Callable[[float], Awaitable[WireConnection]]

# redis-py's cluster pipeline routes by key; a command without one goes on its own.
_KEYLESS = frozenset({"PUBLISH"})
# Shared by every command without parser options (most of them, every XADD among them): no empty
# dict per command on the write path.
_NO_OPTIONS: Mapping[str, Any] = MappingProxyType({})


class TransactionRefused(ResponseError):
    """MULTI/EXEC refused as a whole (a command refused while queued: OOM, NOPERM, a malformed
    command): nothing of it ran."""


class Command:
    """One command: its arguments, the key a cluster routes it by (None: redis-py finds the keys
    itself), options for redis-py's reply parser, and its RESP bytes, encoded once."""

    __slots__ = ("_args", "_packed", "key", "options")

    def __init__(
        self,
        args: Sequence[Arg],
        *,
        key: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self._args = args
        self._packed: bytes | None = None
        self.key = key
        self.options = options or _NO_OPTIONS

    def args(self) -> Sequence[Arg]:
        return self._args

    def packed(self) -> bytes:
        if self._packed is None:
            self._packed = encode_command(self._args)
        return self._packed

    def name(self) -> str:
        first = self.args()[0]
        return (first.decode() if isinstance(first, bytes) else str(first)).upper()


class Pipe(Protocol):
    """Commands out in one round trip, one reply each back (errors as values)."""

    async def execute(self, commands: Sequence[Command], *, atomic: bool = False) -> list[Any]:
        """``atomic``: inside MULTI/EXEC where the transport can (not on a cluster, where a
        transaction cannot span slots); raises :class:`TransactionRefused` if refused as a
        whole. Raises on a lost connection or a timeout: then nothing is known of the replies."""
        ...

    async def close(self) -> None: ...


class WirePipe:
    """Our own connection, opened on first use and dropped whenever its state is unknown."""

    def __init__(self, opener: Opener, reply_timeout: float) -> None:
        self._opener = opener
        self._reply_timeout = reply_timeout
        self._wire: WireConnection | None = None

    async def execute(self, commands: Sequence[Command], *, atomic: bool = False) -> list[Any]:
        parts = [command.packed() for command in commands]
        if atomic:
            parts = [MULTI, *parts, EXEC]
        if self._wire is None:
            self._wire = await self._opener(self._reply_timeout)
        try:
            replies = await self._wire.execute(b"".join(parts), len(parts))
        except BaseException:
            # Whatever was in flight leaves the connection in an unknown state: never reuse it.
            await self.close()
            raise
        if any(isinstance(reply, ResponseError) and needs_reconnect(reply) for reply in replies):
            await self.close()  # the replies still count: the next call reconnects
        if not atomic:
            return replies
        executed = replies[-1]
        if not isinstance(executed, list):  # EXECABORT
            raise TransactionRefused(f"transaction refused: {executed}")
        return executed

    async def close(self) -> None:
        if self._wire is not None:
            wire, self._wire = self._wire, None
            await wire.close()


class RedisPyPipe:
    """redis-py's pipeline (or, for a single command, its plain call)."""

    def __init__(self, client: RedisClient) -> None:
        self._client = client
        self._cluster = isinstance(client, RedisCluster)

    async def execute(self, commands: Sequence[Command], *, atomic: bool = False) -> list[Any]:
        atomic = atomic and not self._cluster
        if len(commands) == 1 and not atomic:
            return [await self._call(commands[0])]
        pipe = self._client.pipeline(transaction=atomic)
        alone: list[int] = []
        for index, command in enumerate(commands):
            if self._cluster and command.name() in _KEYLESS:
                alone.append(index)
                continue
            pipe.execute_command(*command.args(), **command.options)
        try:
            replies = list(await pipe.execute(raise_on_error=False))
        except ResponseError as exc:
            if atomic:  # redis-py raises the refused command's error in place of EXECABORT
                raise TransactionRefused(f"transaction refused: {exc}") from exc
            raise
        for index in alone:
            replies.insert(index, await self._call(commands[index]))
        return replies

    async def _call(self, command: Command) -> Any:
        try:
            return await self._client.execute_command(*command.args(), **command.options)
        except ResponseError as exc:
            return exc

    async def close(self) -> None:
        """redis-py's connections belong to its pool: nothing of ours to close."""


class ClusterPipe:
    """Keyed commands over one connection of our own per master; a batch holding a command
    without a routing key, and the attempt after a redirection or a node failure, through
    redis-py's cluster pipeline (which follows redirections and refreshes the slot map)."""

    def __init__(self, wire: ClusterWire, fallback: RedisPyPipe) -> None:
        self._wire = wire
        self._fallback = fallback

    async def execute(self, commands: Sequence[Command], *, atomic: bool = False) -> list[Any]:
        wire = self._wire
        if not (wire.usable() and all(command.key is not None for command in commands)):
            replies = await self._fallback.execute(commands)
            await wire.settled()
            return replies
        replies = await wire.execute(
            [(command.key or "", command.packed()) for command in commands]
        )
        # Redirected (or a master failed): those commands again at once through redis-py.
        again = [index for index, reply in enumerate(replies) if misdirected(reply)]
        if again:
            retried = await self._fallback.execute([commands[index] for index in again])
            await wire.settled()
            for index, reply in zip(again, retried, strict=True):
                replies[index] = reply
        return replies

    async def close(self) -> None:
        await self._wire.close()


class Transport:
    """Pipes and subscriptions of one Redis client, on the transport :func:`transport_for` chose.

    ``slotted``: a command may not span hash slots (a cluster). ``own_connections``: a pipe is a
    connection of our own, cheap to have several of (readers can each have one)."""

    def __init__(
        self,
        client: RedisClient,
        opener: Opener | None,
        *,
        cluster_wires: bool,
        reply_timeout: float,
    ) -> None:
        self._client = client
        self._opener = opener
        self._cluster_wires = cluster_wires
        self._reply_timeout = reply_timeout
        self.slotted = isinstance(client, RedisCluster)
        self.own_connections = opener is not None

    def pipe(self, reply_timeout: float | None = None, *, keyed: bool = False) -> Pipe:
        """A pipe of its own (a connection of our own is not shared between callers).
        ``keyed``: the caller's commands carry their routing keys, so that on a cluster they can
        go over connections of our own to each master (the write path)."""
        timeout = self._reply_timeout if reply_timeout is None else reply_timeout
        if self._opener is not None:
            return WirePipe(self._opener, timeout)
        if isinstance(self._client, RedisCluster) and self._cluster_wires and keyed:
            cluster_wire = ClusterWire.for_cluster(self._client, timeout)
            if cluster_wire is not None:
                return ClusterPipe(cluster_wire, RedisPyPipe(self._client))
        return RedisPyPipe(self._client)

    def messages(self, channel: str) -> AsyncGenerator[list[bytes], None]:
        """The payloads published on ``channel``, a batch at a time, until the connection fails
        (then the iteration raises). Close it (``contextlib.aclosing``) to end the subscription
        at once rather than when the generator is collected."""
        if self._opener is not None:
            return _wire_messages(self._opener, self._reply_timeout, channel)
        return _pubsub_messages(self._client, channel)


async def _wire_messages(
    opener: Opener, reply_timeout: float, channel: str
) -> AsyncGenerator[list[bytes], None]:
    wire = await opener(reply_timeout)
    try:
        await wire.subscribe(channel)
        while True:
            yield await wire.messages()
    finally:
        await wire.close()


async def _pubsub_messages(client: RedisClient, channel: str) -> AsyncGenerator[list[bytes], None]:
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(channel)
        while True:
            message = await pubsub.get_message(timeout=None)
            if message is not None:
                yield [message["data"]]
    finally:
        with contextlib.suppress(Exception):
            await pubsub.aclose()  # type: ignore[no-untyped-call]


def transport_for(
    client: RedisClient,
    *,
    opener: Opener | None = None,
    fast: bool = True,
    reply_timeout: float = 5.0,
) -> Transport:
    """The transport for ``client``: connections of our own where they reproduce its set-up
    (``opener`` when the caller knows better, e.g. the service's rotating password file), else
    redis-py. ``fast=False``: redis-py alone."""
    if not fast:
        return Transport(client, None, cluster_wires=False, reply_timeout=reply_timeout)
    if isinstance(client, RedisCluster):
        return Transport(client, None, cluster_wires=True, reply_timeout=reply_timeout)
    if opener is None:
        endpoint = Endpoint.of_client(client)
        if endpoint is not None:
            opener = _endpoint_opener(endpoint)
    return Transport(client, opener, cluster_wires=False, reply_timeout=reply_timeout)


def _endpoint_opener(endpoint: Endpoint) -> Opener:
    async def open_wire(reply_timeout: float) -> WireConnection:
        return await WireConnection.connect(endpoint, reply_timeout=reply_timeout)

    return open_wire
