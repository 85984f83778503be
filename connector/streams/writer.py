"""Idempotent, pipelined XADD of a batch of entries.

The connector chooses every entry id itself (``<ms>-<seq>``, strictly increasing per stream) and
keeps it with the entry across retries. Redis refuses an XADD whose id is not above the stream's
last id, so re-sending a whole pipeline after a connection dropped mid-way (which redis-py's own
retry also does) cannot store anything twice: the entries that did land come back as
"equal or smaller" errors, are checked against what is stored, and count as written. The same
check tells a real clash (another writer, or a clock that went back) from our own earlier write;
a clash moves the stream's id floor above the stream's last id and writes again.

The batch goes out through a :class:`connector.wire.pipe.Pipe`, which chose its transport once
(our own connection on a single Redis, one per master on a Redis Cluster, redis-py where those do
not apply); the writer builds the commands (each XADD's fields encoded once and kept across
retries) and reads the replies, whichever carried them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson
from redis.exceptions import ResponseError

from connector.logs import RateLimitedLog
from connector.streams.schema import Entry
from connector.wire.client import RedisClient
from connector.wire.errors import is_busygroup, is_id_too_small, is_transient
from connector.wire.ids import parse_id
from connector.wire.pipe import Command, Pipe, TransactionRefused, transport_for
from connector.wire.resp import Arg, encode_command, encode_fields

log = logging.getLogger(__name__)

_MAX_ROUNDS = 5
# Commands to run before the first write to a stream (consumer groups, the registry entry).
Provision = Callable[[str], list[list[Arg]]]


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What a write did besides storing each entry where it was headed.

    ``diverted``: entries a stream refused for good, each with the entry stored in the
    dead-letter stream in its place (same event, so acknowledged the same). ``unstorable``:
    entries no stream would take, with the error (neither stored nor to be acknowledged).
    ``clashes``: how many of our next ids another client had taken (stepped over)."""

    diverted: tuple[tuple[Entry, Entry], ...] = ()
    unstorable: tuple[tuple[Entry, str], ...] = ()
    clashes: int = 0

    def as_stored(self, entries: Sequence[Entry]) -> list[Entry]:
        """``entries`` as Redis now holds them: a diverted entry as its dead-letter entry, one
        that could not be stored as nothing to write or acknowledge (the end of a run it
        carries still counts)."""
        if not self.diverted and not self.unstorable:
            return list(entries)
        # By identity: entries compare by value, and two events may look alike.
        swap = {id(original): stored for original, stored in self.diverted}
        for entry, _ in self.unstorable:
            swap[id(entry)] = replace(entry, key=None, event_id=None, entry_id=None)
        return [swap.get(id(entry), entry) for entry in entries]


class WriteError(Exception):
    """The batch is not (completely) stored; retrying the same batch is safe."""


class EntryIds:
    """Strictly increasing explicit stream ids, per stream key."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}

    def assign(self, key: str, now_ms: int) -> str:
        last = self._last.get(key)
        if last is None or now_ms > last[0]:
            ms, seq = now_ms, 0
        else:
            ms, seq = last[0], last[1] + 1
        self._last[key] = (ms, seq)
        return f"{ms}-{seq}"

    def raise_floor(self, key: str, stream_last_id: bytes | str) -> None:
        """Continue above ``stream_last_id`` on ``key`` (after a clash)."""
        floor = parse_id(stream_last_id)
        last = self._last.get(key)
        if last is None or floor > last:
            self._last[key] = floor


class StreamWriter:
    """Writes batches of entries to Redis, one pipelined round trip per attempt."""

    def __init__(
        self,
        redis: RedisClient,
        maxlen: int,
        deadletter_key: str,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        pipe: Pipe | None = None,
    ) -> None:
        """``pipe``: where batches go (see :func:`connector.wire.pipe.transport_for`); redis-py
        when not given. ``redis`` serves the rare checks after a refusal."""
        self.redis = redis
        self.maxlen = maxlen or None
        self.deadletter_key = deadletter_key
        self.ids = EntryIds()
        self._clock_ms = clock_ms
        self._pipe = pipe if pipe is not None else transport_for(redis, fast=False).pipe()
        self._maxlen_args = (
            encode_command(["MAXLEN", "~", maxlen])[len(b"*3\r\n") :] if maxlen else b""
        )
        # Commands queued ahead of the first write to a stream (consumer groups, the registry);
        # their own errors are expected (BUSYGROUP) and ignored.
        self.provision: Provision | None = None
        self.known_streams: set[str] = set()
        # (stream, id) of a refused entry -> its dead-letter entry, until its batch is stored.
        self._diversions: dict[tuple[str, str], Entry] = {}
        # Bumped by forget_streams(): a write in flight meanwhile must not mark its streams
        # provisioned again (its provisioning commands were decided before the loss).
        self._provision_epoch = 0
        self._clash_log = RateLimitedLog(log, interval=30.0)
        # MULTI/EXEC around a batch: consumers blocked on the streams wake once, with the whole
        # batch, instead of once per XADD. (A refused XADD inside EXEC does not undo the others;
        # a cluster's pipe ignores it: a transaction cannot span slots.)
        self.atomic = True

    async def write(self, entries: Sequence[Entry]) -> WriteOutcome:
        """Store every entry that has a key. Raises on failure; calling again with the same
        entries is idempotent (each keeps the id chosen for it, the one mark the writer leaves
        on an entry; a diverted entry's dead-letter entry is remembered until the batch is
        stored, so a retry writes it at the same id)."""
        todo = [entry for entry in entries if entry.key is not None]
        diverted: list[tuple[Entry, Entry]] = []
        unstorable: list[tuple[Entry, str]] = []
        clashes = 0
        for _ in range(_MAX_ROUNDS):
            if not todo:
                self._diversions.clear()
                return WriteOutcome(tuple(diverted), tuple(unstorable), clashes)
            now_ms = self._clock_ms()
            for entry in todo:
                if entry.entry_id is None:
                    entry.entry_id = self.ids.assign(_key(entry), now_ms)
            results = await self._xadd(todo)
            suspects: list[Entry] = []
            refused: list[Entry] = []
            for entry, result in zip(todo, results, strict=True):
                if not isinstance(result, Exception):
                    continue
                if is_id_too_small(result):
                    suspects.append(entry)
                elif is_transient(result) or not isinstance(result, ResponseError):
                    raise WriteError(f"{entry.key}: {result}") from result
                elif entry.key == self.deadletter_key:
                    # Even the dead-letter stream refuses it (e.g. the key holds another type):
                    # give up on this one entry rather than block everything behind it.
                    original = self._origin(entry, diverted)
                    unstorable.append((original, str(result)[:300]))
                    diverted = [pair for pair in diverted if pair[0] is not original]
                else:
                    stored = self._divert(entry, result)
                    diverted.append((entry, stored))
                    refused.append(stored)
            taken = await self._unplaced(suspects)
            clashes += len(taken)
            todo = [*taken, *refused]
        raise WriteError(f"{len(todo)} entries could not be placed after {_MAX_ROUNDS} rounds")

    @staticmethod
    def _origin(entry: Entry, diverted: list[tuple[Entry, Entry]]) -> Entry:
        """The caller's entry behind ``entry`` (itself, or the one it was diverted from)."""
        for original, stored in diverted:
            if stored is entry:
                return original
        return entry

    def _prepare(self, entries: Sequence[Entry]) -> tuple[list[list[Arg]], list[str]]:
        """Provisioning commands for streams not yet provisioned, and the stream of each."""
        new_streams = sorted(
            {e.key for e in entries if e.key is not None and e.key not in self.known_streams}
        )
        commands: list[list[Arg]] = []
        owners: list[str] = []
        if self.provision is not None:
            for key in new_streams:
                for command in self.provision(key):
                    commands.append(command)
                    owners.append(key)
        return commands, owners

    def forget_streams(self) -> None:
        """Redis lost its data: provision every stream again with its next write."""
        self.known_streams.clear()
        self._provision_epoch += 1

    async def _xadd(self, entries: Sequence[Entry]) -> list[Any]:
        prepared, owners = self._prepare(entries)
        epoch = self._provision_epoch
        maxlen_args, maxlen = self._maxlen_args, self.maxlen
        commands = [Command(command) for command in prepared]
        commands.extend(_Xadd(entry, maxlen_args, maxlen) for entry in entries)
        try:
            replies = await self._pipe.execute(commands, atomic=self.atomic)
        except TransactionRefused as exc:
            # A command refused while queued (OOM, NOPERM): nothing stored, the batch is retried.
            raise WriteError(str(exc)) from exc
        if epoch == self._provision_epoch:
            self._note_provisioned(owners, replies[: len(prepared)], entries)
        return replies[len(prepared) :]

    def _note_provisioned(
        self, owners: list[str], replies: Sequence[Any], entries: Sequence[Entry]
    ) -> None:
        """A stream counts as provisioned once every command for it succeeded (BUSYGROUP: the
        group was already there); otherwise provisioning is tried again with its next write."""
        failed = {
            owner
            for owner, reply in zip(owners, replies, strict=True)
            if isinstance(reply, Exception) and not is_busygroup(reply)
        }
        fresh = {e.key for e in entries if e.key is not None} - failed
        self.known_streams.update(fresh)

    async def close(self) -> None:
        await self._pipe.close()

    async def provision_streams(self, keys: Sequence[str]) -> None:
        """Provision streams ahead of their first entry (so consumers can join them early)."""
        if self.provision is None:
            return
        fresh = [key for key in keys if key not in self.known_streams]
        commands = [command for key in fresh for command in self.provision(key)]
        if not commands:
            return
        owners = [key for key in fresh for _ in self.provision(key)]
        epoch = self._provision_epoch
        replies = await self._pipe.execute([Command(command) for command in commands])
        if epoch != self._provision_epoch:
            return
        failed = {
            owner
            for owner, reply in zip(owners, replies, strict=True)
            if isinstance(reply, Exception) and not is_busygroup(reply)
        }
        self.known_streams.update(set(fresh) - failed)

    async def _unplaced(self, suspects: list[Entry]) -> list[Entry]:
        """Of entries refused as "id too small": those not already stored by an earlier try."""
        if not suspects:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for entry in suspects:
            key, entry_id = _placed(entry)
            pipe.xrange(key, entry_id, entry_id, count=1)
        found = await pipe.execute()
        # Compared as bytes: another client may have written anything at our ids, text or not.
        clashes = [
            entry
            for entry, rows in zip(suspects, found, strict=True)
            if not rows or rows[0][1] != _encoded(entry.fields)
        ]
        if clashes:
            self._clash_log.warning(
                "clash",
                "another client wrote at the connector's next entry ids; stepping over them",
                stream=clashes[0].key,
                entries=len(clashes),
            )
        if not clashes:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for entry in clashes:
            pipe.xinfo_stream(_key(entry))
        infos = await pipe.execute()
        for entry, info in zip(clashes, infos, strict=True):
            self.ids.raise_floor(_key(entry), info["last-generated-id"])
            entry.entry_id = None
        return clashes

    def _divert(self, entry: Entry, error: BaseException) -> Entry:
        """A permanent refusal (e.g. WRONGTYPE): the event kept, in the dead-letter stream. The
        same dead-letter entry (and id) for every retry of the batch."""
        memo = (_key(entry), entry.entry_id or "")
        stored = self._diversions.get(memo)
        if stored is None:
            stored = self._diversions[memo] = replace(
                entry,
                key=self.deadletter_key,
                fields={
                    "reason": "store_failed",
                    "detail": str(error)[:300],
                    "stream": entry.key or "",
                    "raw": orjson.dumps(entry.fields).decode(),
                },
                label="deadletter",
                entry_id=None,
                blob=None,
            )
        return stored


class _Xadd(Command):
    """``XADD key [MAXLEN ~ n] id field value ...`` of one entry: RESP built from the fields'
    bytes encoded once (kept on the entry across retries); the argument list only for redis-py."""

    __slots__ = ("_entry", "_maxlen", "_maxlen_args")

    def __init__(self, entry: Entry, maxlen_args: bytes, maxlen: int | None) -> None:
        super().__init__((), key=entry.key)
        self._entry = entry
        self._maxlen_args = maxlen_args
        self._maxlen = maxlen

    def args(self) -> Sequence[Arg]:
        key, entry_id = _placed(self._entry)
        bound: list[Arg] = ["MAXLEN", "~", self._maxlen] if self._maxlen else []
        flat = [part for pair in self._entry.fields.items() for part in pair]
        return ["XADD", key, *bound, entry_id, *flat]

    def name(self) -> str:
        return "XADD"

    def packed(self) -> bytes:
        entry = self._entry
        if entry.blob is None:
            entry.blob = encode_fields(entry.fields)
        maxlen = self._maxlen_args
        fixed_args = 4 if maxlen else 1  # MAXLEN ~ n, then the id
        # Per entry on the hot path: narrowed here, without a call (write() assigned the id).
        if entry.key is None or entry.entry_id is None:
            raise ValueError("an entry without a stream or an id reached the write path")
        key, entry_id = entry.key.encode(), entry.entry_id.encode()
        return b"*%d\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n%s$%d\r\n%s\r\n%s" % (
            2 + fixed_args + 2 * len(entry.fields),
            len(key),
            key,
            maxlen,
            len(entry_id),
            entry_id,
            entry.blob,
        )


def _encoded(fields: dict[str, str]) -> dict[bytes, bytes]:
    return {key.encode(): value.encode() for key, value in fields.items()}


def _key(entry: Entry) -> str:
    """The stream of an entry the writer places (entries without one never get this far)."""
    if entry.key is None:
        raise ValueError("an entry without a stream reached the write path")
    return entry.key


def _placed(entry: Entry) -> tuple[str, str]:
    """Stream and id of an entry about to be written (ids are assigned before any write)."""
    if entry.entry_id is None:
        raise ValueError("an entry without an id reached the write path")
    return _key(entry), entry.entry_id
