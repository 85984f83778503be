"""The downstream toolkit: read the connector's streams in a consumer group, process, confirm.

Usage::

    from redis.asyncio import Redis
    from connector.consumer import GroupConsumer, Message

    async def handle(batch: list[Message]) -> None:
        for message in batch:
            print(message.stream, message.fields["close"])

    consumer = GroupConsumer(Redis.from_url("redis://localhost:6379/0"), "strategy")
    await consumer.run(handle)          # until consumer.stop()

What it does for you:

* **Discovery.** With no explicit ``streams``, it follows every data stream under the prefix
  (optionally only some ``types`` or ``symbols``): existing ones from the registry
  (``{prefix}:streams``), new ones as the connector announces them.
* **Batches.** Blocking XREADGROUP reads (one per hash slot on a Redis Cluster, where a command may
  not span slots; see :meth:`GroupConsumer._shard_of` for a single node); your handler gets lists
  of messages, one batch at a time.
* **Confirmation.** After the handler returns, one round trip XACKs the batch and publishes a
  notification on ``{prefix}:confirm``; a connector in consumer-ack mode is blocked on that channel
  and releases the engine at once. If the handler raises, nothing is confirmed: the entries stay
  pending and are delivered again after ``claim_idle_ms``.
* **Dead members.** Entries left pending by a member idle for ``claim_idle_ms`` (a crashed
  process) are claimed with XAUTOCLAIM and processed here. Entries this member had read before a
  restart (same ``name``) are processed first.
* **Lost groups.** If the group disappears (deleted, Redis restarted), the connector recreates it
  just below the oldest entry it still waits for; if it has not done so within
  ``recover_after`` seconds, this consumer recreates it just after its own last confirmed entry.
* **Stop.** :meth:`GroupConsumer.stop` ends :meth:`GroupConsumer.run` once the reads in flight
  (at most ``block_ms``) are processed and confirmed: nothing read is left unconfirmed.
* ``on_confirmed``, if given, is called with each batch once its confirmation is in Redis.

The client's socket timeout must exceed ``block_ms`` (redis-py's default has none).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.crc import key_slot
from redis.exceptions import ResponseError

from connector.logs import RateLimitedLog
from connector.streams.groups import START_NEW, restart_after
from connector.streams.schema import StreamInfo, StreamKeys, parse_key
from connector.wire.client import RedisClient
from connector.wire.errors import is_busygroup
from connector.wire.pipe import Command, Pipe, transport_for
from connector.wire.resp import Arg

log = logging.getLogger(__name__)

MAX_READERS = 64  # blocking connections per consumer on a single node (see _shard_of)
# Redis from this version (and Valkey, its fork from 7.2) wakes a blocked read on several streams
# with every stream that has entries for it, not only the one whose write woke it.
WHOLE_WRITES_SINCE = (7, 2)
DEAD_LETTER_MAXLEN = 100_000


@dataclass(frozen=True, slots=True)
class Message:
    """One stream entry: where it came from, its id, and its fields as text."""

    stream: str
    id: str
    fields: dict[str, str]
    type: str
    symbol: str | None = None


Handler = Callable[[list[Message]], Awaitable[None]]


@dataclass(slots=True)
class ConsumerStats:
    """What a consumer did; read it any time (the counters only grow)."""

    processed: int = 0  # entries the handler returned for
    confirmed: int = 0  # entries XACKed after that
    claimed: int = 0  # entries taken over from an idle member (or retried after a failure)
    failed_batches: int = 0  # handler calls that raised
    recovered_groups: int = 0  # streams where this consumer recreated its lost group
    dead_lettered: int = 0  # entries moved to the group's dead-letter stream, then XACKed
    unreadable: dict[str, int] = field(default_factory=dict)  # skipped data, by reason
    by_type: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An entry this group gives up on: it goes to ``{prefix}:deadletter:{group}``, confirmed."""

    stream: str
    id: str
    reason: str  # "max_deliveries" (the handler kept failing) or "undecodable" (not UTF-8)
    error: str
    fields: dict[str, str]
    deliveries: int = 0


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class GroupConsumer:
    """A member of consumer group ``group`` on the connector's streams."""

    def __init__(
        self,
        redis: RedisClient,
        group: str,
        name: str | None = None,
        *,
        prefix: str = "md",
        streams: Sequence[str] | None = None,
        types: Collection[str] | None = None,
        symbols: Collection[str] | None = None,
        batch_size: int = 256,
        block_ms: int = 100,
        claim_idle_ms: int = 30_000,
        start_id: str = START_NEW,
        notify: bool = True,
        recover_after: float = 1.0,
        on_confirmed: Callable[[list[Message]], None] | None = None,
        fast: bool = True,
        max_deliveries: int = 5,
    ) -> None:
        if batch_size < 1 or block_ms < 1 or claim_idle_ms < 1 or max_deliveries < 1:
            raise ValueError(
                "batch_size, block_ms, claim_idle_ms and max_deliveries must be positive"
            )
        self.redis = redis
        self.group = group
        self.name = name or default_name()
        self.keys = StreamKeys(prefix)
        self.stats = ConsumerStats()
        # The hot loop (blocking reads, confirmations) runs on connections of its own where the
        # client's set-up allows (see connector.wire.pipe); fast=False keeps redis-py.
        self._transport = transport_for(redis, fast=fast)
        self._fixed = list(streams) if streams is not None else None
        self._types = set(types) if types else None
        self._symbols = set(symbols) if symbols else None
        self._batch = batch_size
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._claim_every = max(claim_idle_ms / 2000, 0.05)
        self._start_id = start_id
        self._notify = notify
        self._recover_after = recover_after
        self._on_confirmed = on_confirmed
        self._max_deliveries = max_deliveries
        self._dead_key = self.keys.group_deadletter(group)
        self._dead: list[DeadLetter] = []  # waiting to be written and confirmed
        self._group_bytes = group.encode()
        self._log = RateLimitedLog(log, interval=30.0)
        self._streams: list[str] = []
        self._shards: dict[int, list[str]] = {}  # hash slot (0 on one node) -> its streams
        self._readers: dict[int, asyncio.Task[None]] = {}
        self._whole_writes = False  # see _shard_of; learnt when run() starts
        self._reading = False  # readers start once this member's own pending entries are done
        self._limit: int | None = None  # entries to handle before stopping (run's limit)
        self._processing = asyncio.Lock()
        self._pending: list[Message] = []
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        # Set while the processor waits for entries; readers that hand it entries then wait until
        # that batch's confirmation is written (or its handler failed) to read again.
        self._idle = False
        self._turn: asyncio.Future[None] | None = None  # resolved at that point
        self._registry_cursor = "0-0"
        self._confirmed_upto: dict[str, str] = {}
        self._missing_since: dict[str, float] = {}
        self._stopping = asyncio.Event()
        self._infos: dict[str, StreamInfo] = {}
        self._pipes: dict[str, Pipe] = {}  # lane (a reader, the confirmations) -> its pipe

    # -- public --------------------------------------------------------------------------------

    @property
    def streams(self) -> list[str]:
        return list(self._streams)

    def stop(self) -> None:
        self._stopping.set()
        self._ready.set()
        self._room.set()  # readers waiting to deliver: finish, so what they read is processed
        self._end_turn()

    async def run(self, handler: Handler, limit: int | None = None) -> None:
        """Read, process and confirm until :meth:`stop` (or ``limit`` entries were handled:
        entries read beyond it stay pending for this member, handed over on its next start or
        to another member after ``claim_idle_ms``)."""
        self._limit = limit
        self._whole_writes = await self._wakes_with_whole_writes()
        if self._fixed is not None:
            await self._join(self._fixed)
        else:
            await self._discover(block_ms=None)
        # Entries this member read before a restart first, and only then new ones: a reader
        # started earlier would take entries that the drain (which reads this member's pending
        # entries) then hands to the handler a second time.
        await self._drain_own_pending(handler)
        self._reading = True
        for shard in self._shards:
            self._start_reader(shard)
        background: list[asyncio.Task[None]] = []
        if self._fixed is None:
            background.append(
                asyncio.create_task(self._follow_registry(), name="consumer-discover")
            )
        try:
            await self._process_loop(handler)
        finally:
            for task in background:
                task.cancel()
            # Readers end by themselves within block_ms once stopping; what they read is
            # processed and confirmed below: nothing read is left unconfirmed.
            readers = list(self._readers.values())
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    asyncio.gather(*readers, return_exceptions=True), self._block_ms / 1000 + 5
                )
            for task in (*background, *readers):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            while self._pending and self._room_left():
                batch = self._take()
                await self._process(batch, handler)
            for pipe in list(self._pipes.values()):
                await pipe.close()
            self._pipes.clear()

    async def _process_loop(self, handler: Handler) -> None:
        """Process what the readers deliver, one batch at a time; claim on schedule."""
        next_claim = time.monotonic() + self._claim_every
        while not self._stopping.is_set():
            if not self._pending:
                self._idle = True
                try:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.0, next_claim - time.monotonic())):
                            await self._ready.wait()
                finally:
                    self._idle = False
                self._ready.clear()
            if self._pending and not self._stopping.is_set():
                if len(self._readers) > 1:
                    # One turn of the loop first: readers woken by the same write (one per
                    # stream) add their entries, and the whole write is processed and confirmed
                    # at once. A lone reader has brought the whole write already.
                    await asyncio.sleep(0)
                try:
                    await self._process(self._take(), handler)
                finally:
                    self._end_turn()
                if not self._room_left():
                    self.stop()  # the limit is reached
            if self._dead:
                await self._bury()
            if time.monotonic() >= next_claim:
                next_claim = time.monotonic() + self._claim_every
                try:
                    await self._claim(handler)
                except Exception as exc:  # the next cycle tries again
                    self._log.warning("claim", "consumer: claiming failed", error=str(exc)[:200])

    def _end_turn(self) -> None:
        """The processor is done with a batch (or stopping): readers waiting for it read on."""
        turn, self._turn = self._turn, None
        if turn is not None and not turn.done():
            turn.set_result(None)

    async def _after_turn(self) -> None:
        """Until the processor is done with the batch it is about to take."""
        if self._turn is None:
            self._turn = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._turn)

    def _room_left(self) -> int:
        if self._limit is None:
            return self._batch
        return max(0, min(self._batch, self._limit - self.stats.processed))

    def _take(self) -> list[Message]:
        batch = self._pending[: self._room_left()]
        del self._pending[: len(batch)]
        self._room.set()
        return batch

    async def _deliver(self, messages: list[Message]) -> None:
        """Hand entries to the processor; wait while it is a batch behind (back-pressure)."""
        while len(self._pending) >= self._batch and not self._stopping.is_set():
            self._room.clear()
            await self._room.wait()
        self._pending.extend(messages)
        self._ready.set()

    # -- reading -------------------------------------------------------------------------------

    def _shard_of(self, stream: str, index: int) -> int:
        """Which reader reads ``stream`` (the ``index``-th stream joined).

        On a cluster, one per hash slot (a command may not span slots). On one node, one reader
        for everything where the server wakes it with a whole write (Redis 7.2 and later,
        Valkey): a connector's step then reaches the handler in one read, and one wake-up here
        and in Redis serves it. Redis before 7.2 wakes a blocked multi-stream read with only the
        stream that got data first, so there, with our own connections, one reader per stream
        (up to MAX_READERS) receives a whole write at once. Through redis-py, one reader.
        """
        if self._transport.slotted:
            return key_slot(stream.encode())
        if self._transport.own_connections and not self._whole_writes:
            return index % MAX_READERS
        return 0

    async def _wakes_with_whole_writes(self) -> bool:
        """Whether a blocked multi-stream read wakes with every stream a write filled (see
        WHOLE_WRITES_SINCE). HELLO without arguments names the server and its version, changes
        nothing on the connection and is refused to no ACL user. When in doubt: no (one reader
        per stream is right everywhere, only slower where a single one would do)."""
        if self._transport.slotted:
            return False
        try:
            return _whole_writes(await self.redis.execute_command("HELLO"))
        except Exception:  # an old server or a stand-in: the layout that is right everywhere
            return False

    def _assign(self, streams: Sequence[str]) -> None:
        for stream in streams:
            if stream in self._streams:
                continue
            shard = self._shard_of(stream, len(self._streams))
            self._streams.append(stream)
            self._shards.setdefault(shard, []).append(stream)
            if self._reading:
                self._start_reader(shard)

    def _start_reader(self, shard: int) -> None:
        if shard not in self._readers:
            self._readers[shard] = asyncio.create_task(
                self._read_shard(shard), name=f"consumer-read-{shard}"
            )

    async def _read_shard(self, shard: int) -> None:
        """Blocking reads of one shard's streams, delivered to the processor."""
        while not self._stopping.is_set():
            streams = self._shards[shard]
            try:
                reply = await self._xreadgroup(f"read-{shard}", streams, block=True)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    log.warning("consumer: read refused", extra={"error": str(exc)})
                    await self._pause(0.5)
                    continue
                await self._recover_groups(streams)
                continue
            except Exception as exc:  # a failed round trip must not end the loop
                log.warning("consumer: Redis unavailable; retrying", extra={"error": str(exc)})
                await self._pause(0.5)
                continue
            try:
                messages = self._messages(reply)
                if messages and len(streams) > 1 and not self._whole_writes:
                    messages += await self._sweep(shard, streams, {m.stream for m in messages})
            except Exception:  # a bug here must not stop this stream for good: say it, go on
                log.exception("consumer: cannot read a reply; reading on")
                await self._pause(0.5)
                continue
            if messages or self._dead:
                # An idle processor takes these at once: its confirmation (which a connector in
                # consumer-ack mode waits for, to release the engine) then goes out before this
                # reader's next read, rather than behind one read per stream. A busy one (a
                # batch in its handler) does not hold the reads back.
                handed_to_idle = self._idle and bool(messages)
                await self._deliver(messages)
                if handed_to_idle and not self._stopping.is_set():
                    await self._after_turn()

    async def _sweep(self, shard: int, streams: list[str], served: set[str]) -> list[Message]:
        """Redis before 7.2 answers a blocked multi-stream read with the one stream that woke
        it; what the same write put in the other streams would wait for another cycle (and, in
        consumer-ack mode, hold the engine for it). One non-blocking read collects it now."""
        rest = [stream for stream in streams if stream not in served]
        try:
            reply = await self._xreadgroup(f"read-{shard}", rest, block=False)
        except Exception:  # the next blocking read will see the same entries
            return []
        return self._messages(reply)

    async def _xreadgroup(self, lane: str, streams: list[str], *, block: bool) -> Any:
        """XREADGROUP ``>`` on ``streams``, on the lane's own pipe."""
        command: list[Arg] = ["XREADGROUP", "GROUP", self.group, self.name, "COUNT", self._batch]
        if block:
            command += ["BLOCK", self._block_ms]
        command += ["STREAMS", *streams, *([">"] * len(streams))]
        (reply,) = await self._pipe(lane).execute([Command(command)])
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def _pipe(self, lane: str) -> Pipe:
        pipe = self._pipes.get(lane)
        if pipe is None:
            # A blocked read may take block_ms: the reply timeout must outlast it.
            pipe = self._pipes[lane] = self._transport.pipe(self._block_ms / 1000 + 10)
        return pipe

    def _messages(self, reply: Any) -> list[Message]:
        """Messages from an XREADGROUP/XAUTOCLAIM reply, in redis-py's shape or the raw one.

        Any client may write into these streams: an entry whose fields are not UTF-8 text is not
        handed to the handler; it goes to the group's dead-letter stream (see :meth:`_bury`)."""
        out: list[Message] = []
        if isinstance(reply, dict):  # RESP3 shape
            reply = list(reply.items())
        for stream_raw, rows in reply or []:
            stream = _text(stream_raw)
            info = self._stream_info(stream)
            kind = info.type if info else "other"
            symbol = info.symbol if info else None
            for row in rows:
                entry_id, fields = _text(row[0]), row[1]
                if fields is None:  # trimmed while pending
                    continue
                try:
                    decoded = _decode_fields(fields)
                except (UnicodeDecodeError, ValueError, TypeError) as exc:
                    self._quarantine(stream, entry_id, fields, exc)
                    continue
                out.append(Message(stream, entry_id, decoded, kind, symbol))
        return out

    def _quarantine(self, stream: str, entry_id: str, fields: Any, exc: Exception) -> None:
        self._count_unreadable("entry")
        self._log.warning(
            "undecodable",
            "consumer: an entry is not UTF-8 text; dead-lettering it",
            stream=stream,
            id=entry_id,
            error=str(exc)[:200],
        )
        self._dead.append(DeadLetter(stream, entry_id, "undecodable", str(exc), _lenient(fields)))

    def _count_unreadable(self, reason: str) -> None:
        self.stats.unreadable[reason] = self.stats.unreadable.get(reason, 0) + 1

    def _stream_info(self, stream: str) -> StreamInfo | None:
        info = self._infos.get(stream)
        if info is None:
            info = parse_key(self.keys.prefix, stream)
            if info is not None and len(self._infos) < 65_536:
                self._infos[stream] = info
        return info

    async def _drain_own_pending(self, handler: Handler) -> None:
        """Entries delivered to this name before a restart come first."""
        for streams in list(self._shards.values()):
            while not self._stopping.is_set():
                reply = await self.redis.xreadgroup(
                    self.group, self.name, dict.fromkeys(streams, "0"), count=self._batch
                )
                messages = self._messages(reply)[: self._room_left()]
                if self._dead:
                    await self._bury()
                if not self._room_left():
                    break
                if not messages:
                    if _entry_count(reply):
                        continue  # undecodable ones only: dead-lettered, read on
                    break
                failed = self.stats.failed_batches
                await self._process(messages, handler)
                if self.stats.failed_batches > failed:
                    break  # leave failures to the claim cycle rather than spin on them

    async def _claim(self, handler: Handler) -> None:
        if not self._streams:
            return
        streams = list(self._streams)
        pipe = self.redis.pipeline(transaction=False)
        for stream in streams:
            pipe.xautoclaim(
                stream, self.group, self.name, self._claim_idle_ms, "0-0", count=self._batch
            )
        replies = await pipe.execute(raise_on_error=False)
        claimed: list[Message] = []
        for stream, reply in zip(streams, replies, strict=True):
            if isinstance(reply, Exception):
                continue  # NOGROUP and the like are handled by the readers
            claimed.extend(self._messages([(stream, reply[1])]))
        if self._dead:
            await self._bury()
        if not claimed:
            return
        self.stats.claimed += len(claimed)
        deliveries = await self._deliveries(claimed)
        spent = [m for m in claimed if deliveries.get((m.stream, m.id), 0) > self._max_deliveries]
        if spent:
            self._dead.extend(
                DeadLetter(
                    m.stream,
                    m.id,
                    "max_deliveries",
                    f"the handler failed {deliveries[(m.stream, m.id)] - 1} times",
                    m.fields,
                    deliveries[(m.stream, m.id)] - 1,
                )
                for m in spent
            )
            await self._bury()
        again = [m for m in claimed if m not in spent]
        if again:
            log.info("claimed entries from an idle member", extra={"entries": len(again)})
            await self._process(again, handler)

    async def _deliveries(self, messages: list[Message]) -> dict[tuple[str, str], int]:
        """How often each entry has been delivered (XPENDING's counter, the claim included)."""
        pipe = self.redis.pipeline(transaction=False)
        for message in messages:
            pipe.xpending_range(message.stream, self.group, message.id, message.id, 1)
        found: dict[tuple[str, str], int] = {}
        for message, rows in zip(messages, await pipe.execute(raise_on_error=False), strict=True):
            if not isinstance(rows, Exception) and rows:
                found[(message.stream, message.id)] = int(rows[0]["times_delivered"])
        return found

    async def _bury(self) -> None:
        """Write the entries this group gives up on to its dead-letter stream, then XACK them:
        they must not hold a backtest, nor be retried for ever (counted in the stats)."""
        dead, self._dead = self._dead, []
        pipe = self.redis.pipeline(transaction=False)
        for letter in dead:
            pipe.xadd(
                self._dead_key,
                {
                    "reason": letter.reason,
                    "group": self.group,
                    "consumer": self.name,
                    "stream": letter.stream,
                    "id": letter.id,
                    "deliveries": str(letter.deliveries),
                    "error": letter.error[:500],
                    "fields": orjson.dumps(letter.fields).decode(),
                },
                maxlen=DEAD_LETTER_MAXLEN,
                approximate=True,
            )
            pipe.xack(letter.stream, self.group, letter.id)
        try:
            await pipe.execute()
        except Exception as exc:  # kept for the next try: nothing is lost, nothing confirmed
            self._dead = dead + self._dead
            self._log.warning("bury", "consumer: cannot dead-letter yet", error=str(exc)[:200])
            return
        self.stats.dead_lettered += len(dead)
        log.warning(
            "consumer: dead-lettered entries",
            extra={"entries": len(dead), "stream": self._dead_key, "reason": dead[0].reason},
        )

    # -- processing ----------------------------------------------------------------------------

    async def _process(self, messages: list[Message], handler: Handler) -> None:
        async with self._processing:  # one batch at a time, whichever reader or claim has it
            await self._process_now(messages, handler)

    async def _process_now(self, messages: list[Message], handler: Handler) -> None:
        try:
            await handler(messages)
        except Exception:
            self.stats.failed_batches += 1
            if len(messages) == 1:
                log.exception(
                    "handler failed; the entry stays pending and will be retried",
                    extra={"stream": messages[0].stream, "id": messages[0].id},
                )
                return
            # One bad entry must not hold the others hostage: each alone, at once; those that
            # still fail stay pending (retried after claim_idle_ms, then dead-lettered).
            log.exception(
                "handler failed on a batch; retrying its entries one by one",
                extra={"entries": len(messages)},
            )
            for message in messages:
                await self._process_now([message], handler)
            return
        self.stats.processed += len(messages)
        for message in messages:
            self.stats.by_type[message.type] = self.stats.by_type.get(message.type, 0) + 1
        # Readers waiting for this batch read again once its confirmation is on its way: they
        # run when this task next yields, after the confirmation was written.
        self._end_turn()
        await self._confirm(messages)

    async def _confirm(self, messages: list[Message]) -> None:
        """XACK the batch and announce it: one round trip on a single node. A cluster pipeline
        cannot carry PUBLISH, so there the notification follows the XACKs (two round trips)."""
        by_stream: dict[str, list[str]] = {}
        for message in messages:
            by_stream.setdefault(message.stream, []).append(message.id)
        note = orjson.dumps({"g": self.group, "e": by_stream}) if self._notify else None
        while True:
            try:
                await self._ack_and_announce(by_stream, note)
                break
            except Exception as exc:  # a failed round trip must not end the loop
                # Unconfirmed work is redelivered anyway; retrying keeps duplicates rare.
                log.warning("consumer: confirm failed; retrying", extra={"error": str(exc)})
                if await self._pause(0.2):
                    return
        self.stats.confirmed += len(messages)
        for stream, ids in by_stream.items():
            # A batch holds each stream's entries in stream order (reads, or one claim).
            self._confirmed_upto[stream] = ids[-1]
        if self._on_confirmed is not None:
            self._on_confirmed(messages)

    async def _ack_and_announce(self, by_stream: dict[str, list[str]], note: bytes | None) -> None:
        commands = [
            Command(["XACK", stream, self.group, *ids]) for stream, ids in by_stream.items()
        ]
        if note is not None:
            commands.append(Command(["PUBLISH", self.keys.confirm_channel, note]))
        for reply in await self._pipe("confirm").execute(commands):
            if isinstance(reply, ResponseError):
                raise reply

    # -- streams and groups --------------------------------------------------------------------

    def _wanted(self, stream: str) -> bool:
        if not self.keys.is_data_stream(stream):
            return False
        info = parse_key(self.keys.prefix, stream)
        if info is None:
            return False
        if self._types is not None and info.type not in self._types:
            return False
        return self._symbols is None or info.symbol in self._symbols

    async def _follow_registry(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._discover(block_ms=self._block_ms)
            except Exception as exc:  # a failed round trip must not end the loop
                log.warning("consumer: cannot read the registry", extra={"error": str(exc)})
                await self._pause(0.5)

    async def _discover(self, block_ms: int | None) -> None:
        """Follow the registry from the cursor. The cursor moves only once what was read is
        joined, so a failed round trip reads the same entries again; an entry that names no
        stream as text (another client's garbage) is skipped, counted and logged."""
        reply: Any = await self.redis.xread(
            {self.keys.registry: self._registry_cursor}, count=10_000, block=block_ms
        )
        if isinstance(reply, dict):  # RESP3 shape
            reply = list(reply.items())
        fresh: list[str] = []
        cursor = self._registry_cursor
        for _, rows in reply or []:
            for entry_id, fields in rows:
                cursor = _text(entry_id)
                stream = self._announced(fields, cursor)
                if stream is None or stream in self._streams or stream in fresh:
                    continue
                if self._wanted(stream):
                    fresh.append(stream)
        if fresh:
            await self._join(fresh)
        self._registry_cursor = cursor

    def _announced(self, fields: Any, entry_id: str) -> str | None:
        """The stream a registry entry announces (redis-py gives bytes or text keys)."""
        raw = fields.get(b"stream", fields.get("stream")) if isinstance(fields, dict) else None
        try:
            return _text(raw) if raw else None
        except UnicodeDecodeError:
            self._count_unreadable("registry")
            self._log.warning(
                "registry", "consumer: a registry entry is not UTF-8 text; skipped", id=entry_id
            )
            return None

    async def _join(self, streams: Sequence[str]) -> None:
        """Add streams, creating the group at ``start_id`` where it does not exist yet."""
        pipe = self.redis.pipeline(transaction=False)
        for stream in streams:
            pipe.xgroup_create(stream, self.group, id=self._start_id, mkstream=True)
        results = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, Exception) and not is_busygroup(result):
                raise result
        self._assign(streams)

    async def _recover_groups(self, streams: Sequence[str]) -> None:
        """After NOGROUP: give the connector ``recover_after`` to recreate, then do it here."""
        pipe = self.redis.pipeline(transaction=False)
        for stream in streams:
            pipe.xinfo_groups(stream)
        replies = await pipe.execute(raise_on_error=False)
        now = time.monotonic()
        overdue: list[str] = []
        for stream, reply in zip(streams, replies, strict=True):
            # Compared as bytes: another group's name need not be text.
            names = set() if isinstance(reply, Exception) else {r["name"] for r in reply}
            if self._group_bytes in names or self.group in names:
                self._missing_since.pop(stream, None)
                continue
            since = self._missing_since.setdefault(stream, now)
            if now - since >= self._recover_after:
                overdue.append(stream)
        if not overdue:
            await self._pause(self._block_ms / 1000)
            return
        pipe = self.redis.pipeline(transaction=False)
        for stream in overdue:
            pipe.xgroup_create(
                stream,
                self.group,
                id=restart_after(self._confirmed_upto.get(stream)),
                mkstream=True,
            )
        await pipe.execute(raise_on_error=False)
        for stream in overdue:
            self._missing_since.pop(stream, None)
        self.stats.recovered_groups += len(overdue)
        log.warning("recreated the consumer group", extra={"streams": len(overdue)})

    async def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` unless stopping; True if stopping."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return False
        return True


def _whole_writes(hello: Any) -> bool:
    """From a HELLO reply (a map, or a flat list in RESP2): see WHOLE_WRITES_SINCE."""
    if isinstance(hello, list | tuple):
        hello = dict(zip(hello[::2], hello[1::2], strict=False))
    if not isinstance(hello, dict):
        return False
    found = {_text(key): value for key, value in hello.items() if isinstance(key, bytes | str)}
    server, version = found.get("server"), found.get("version")
    if not isinstance(server, bytes | str) or not isinstance(version, bytes | str):
        return False
    if _text(server).lower() == "valkey":
        return True
    numbers: list[int] = []
    for part in _text(version).split(".")[:2]:
        if not part.isdigit():
            return False
        numbers.append(int(part))
    return tuple(numbers) >= WHOLE_WRITES_SINCE


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode_fields(fields: Any) -> dict[str, str]:
    """An entry's fields as text: a dict (redis-py) or a flat list (the raw reply)."""
    if isinstance(fields, dict):
        return {_text(k): _text(v) for k, v in fields.items()}
    flat = [_text(item) for item in fields]
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _lenient(fields: Any) -> dict[str, str]:
    """The fields of an entry that is not text, readable for a person (bytes escaped)."""
    if isinstance(fields, dict):
        return {_escaped(k): _escaped(v) for k, v in fields.items()}
    # An odd count (malformed) keeps its last name without a value.
    pairs = zip(fields[::2], fields[1::2], strict=False)
    return {_escaped(k): _escaped(v) for k, v in pairs}


def _escaped(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def _entry_count(reply: Any) -> int:
    if isinstance(reply, dict):
        reply = list(reply.items())
    return sum(len(rows) for _, rows in reply or [])
