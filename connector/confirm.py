"""Consumer-ack mode: hold each engine ack until every required consumer group confirmed it.

An entry counts as confirmed by a group once the group has had it delivered and no longer holds it
pending (it was XACKed). Two ways bring that news, and either is enough:

* **Notification** (the project's consumer toolkit): the consumer's XACK and a PUBLISH on
  ``{prefix}:confirm`` go out in the same round trip; this gate is subscribed, so it learns of the
  confirmation about one network hop later (sub-millisecond on loopback).
* **Check** (any client that only XACKs: redis-cli, another language): every
  ``consumer_check_interval`` while entries are outstanding, one pipelined round trip reads each
  group's delivery position (XINFO GROUPS) and pending ids (XPENDING) on the streams concerned.

Acks are released per stored batch, in order, when all of the batch's id-bearing entries are
confirmed by all groups (dead letters are never gated: they are not data). A group that has gone
missing (NOGROUP: deleted, or lost in a Redis restart) is recreated just below the oldest entry it
has not confirmed, so nothing is skipped. In live mode nothing is gated: acks are informational
there; groups and the lag gauge are still maintained.

Timeouts (``consumer_ack_timeout`` > 0): a batch held longer is either kept (``hold``: counted,
logged, /readyz false until it is confirmed) or acknowledged anyway (``release``: counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.exceptions import ResponseError

from connector.acks import Acknowledger
from connector.logs import RateLimitedLog
from connector.metrics import Metrics
from connector.redis_client import RedisClient
from connector.resp import WireConnection
from connector.streams import Entry, StreamKeys

log = logging.getLogger(__name__)

StreamId = tuple[int, int]
MAX_SEQ = 2**64 - 1
LAG_INTERVAL = 1.0
EARLY_LIMIT = 100_000


def parse_id(value: bytes | str) -> StreamId:
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def id_below(value: StreamId) -> str:
    """The stream id just below ``value`` (a group created there delivers ``value`` next)."""
    ms, seq = value
    return f"{ms}-{seq - 1}" if seq > 0 else f"{max(ms - 1, 0)}-{MAX_SEQ if ms > 0 else 0}"


@dataclass(slots=True, eq=False)
class HeldBatch:
    """One stored batch whose ack waits for confirmations."""

    entries: list[Entry]
    stored_at: float
    waiting: int = 0
    overdue: bool = False
    released: bool = False


@dataclass(slots=True, eq=False)
class Waiting:
    """One gated entry and the groups that have not confirmed it yet."""

    entry: Entry
    batch: HeldBatch
    position: StreamId
    groups: set[str] = field(default_factory=set)


class ConsumerGate:
    """The ack gate of consumer-ack mode (see the module docstring)."""

    def __init__(
        self,
        redis: RedisClient,
        keys: StreamKeys,
        groups: Sequence[str],
        acknowledger: Acknowledger,
        metrics: Metrics,
        *,
        gated: bool,
        timeout: float,
        policy: str,
        check_interval: float,
        known_streams: set[str],
        clock: Callable[[], float] = time.monotonic,
        wire: Callable[[], Awaitable[WireConnection]] | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._groups = tuple(groups)
        self._acknowledger = acknowledger
        self._metrics = metrics
        self._gated = gated
        self._timeout = timeout
        self._policy = policy
        self._check_interval = check_interval
        self._known_streams = known_streams
        self._clock = clock
        self._wire = wire
        self._queue: deque[HeldBatch] = deque()
        self._streams: dict[str, dict[str, Waiting]] = {}
        self._early: OrderedDict[tuple[str, str], set[str]] = OrderedDict()
        self._last_seen: dict[tuple[str, str], str] = {}  # (stream, group) -> last delivered id
        self._outstanding = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._log = RateLimitedLog(log, interval=10.0)
        self.notifications = 0  # confirmations learnt by notification, for tests and the demo
        self.checked = 0  # confirmations learnt by checking group state

    # -- the gate ------------------------------------------------------------------------------

    async def on_stored(self, entries: list[Entry]) -> None:
        if not self._gated:
            await self._acknowledger.release(entries)
            return
        batch = HeldBatch(entries, self._clock())
        for entry in entries:
            if entry.event_id is None or entry.key is None or entry.entry_id is None:
                continue
            if not self._keys.is_data_stream(entry.key):
                continue
            waiting = Waiting(entry, batch, parse_id(entry.entry_id), set(self._groups))
            early = self._early.pop((entry.key, entry.entry_id), None)
            if early:
                waiting.groups -= early
            if not waiting.groups:
                continue
            self._streams.setdefault(entry.key, {})[entry.entry_id] = waiting
            batch.waiting += 1
        self._metrics.unconfirmed.inc(batch.waiting)
        self._queue.append(batch)
        self._empty.clear()
        if batch.waiting:
            self._outstanding.set()
        await self._release_ready()

    @property
    def unconfirmed(self) -> int:
        return sum(len(table) for table in self._streams.values())

    @property
    def overdue(self) -> bool:
        """True while a batch is held past the timeout under the ``hold`` policy."""
        return any(batch.overdue and not batch.released for batch in self._queue)

    async def wait_confirmed(self) -> None:
        """Until nothing is held (used when draining)."""
        await self._empty.wait()

    def confirm(self, group: str, stream: str, ids: Sequence[str]) -> int:
        """Record that ``group`` confirmed ``ids`` of ``stream``; returns how many were ours."""
        table = self._streams.get(stream)
        now = self._clock()
        matched = 0
        for entry_id in ids:
            waiting = table.get(entry_id) if table is not None else None
            if waiting is None:
                self._remember_early(stream, entry_id, group)
                continue
            if group not in waiting.groups:
                continue
            matched += 1
            waiting.groups.discard(group)
            if not waiting.groups:
                self._settle(stream, entry_id, waiting, now)
        return matched

    def _settle(self, stream: str, entry_id: str, waiting: Waiting, now: float) -> None:
        table = self._streams[stream]
        del table[entry_id]
        if not table:
            del self._streams[stream]
        waiting.batch.waiting -= 1
        self._metrics.unconfirmed.dec()
        self._metrics.consumer_confirm.observe(now - waiting.batch.stored_at)

    def _remember_early(self, stream: str, entry_id: str, group: str) -> None:
        """A confirmation can overtake our own pipeline's reply: keep it for a moment."""
        if not self._gated:
            return  # nothing is waited for in live mode
        key = (stream, entry_id)
        groups = self._early.get(key)
        if groups is None:
            groups = self._early[key] = set()
            if len(self._early) > EARLY_LIMIT:
                self._early.popitem(last=False)
        groups.add(group)

    async def _release_ready(self) -> None:
        while self._queue and (self._queue[0].waiting == 0 or self._queue[0].released):
            batch = self._queue.popleft()
            if batch.overdue and not batch.released:
                log.info(
                    "held batch confirmed after its timeout", extra={"events": len(batch.entries)}
                )
            await self._acknowledger.release(batch.entries)
        if not self._streams:
            self._outstanding.clear()
        if not self._queue:
            self._empty.set()

    # -- background work -----------------------------------------------------------------------

    async def run(self) -> None:
        """Listen for notifications, check group state, keep the lag gauge (until cancelled)."""
        await self.create_registry_groups()
        tasks = [
            asyncio.create_task(self._listen(), name="confirm-listen"),
            asyncio.create_task(self._check_loop(), name="confirm-check"),
            asyncio.create_task(self._lag_loop(), name="confirm-lag"),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def create_registry_groups(self) -> None:
        """Groups on the registry start at 0: a member joining late still sees every stream."""
        for group in self._groups:
            try:
                await self._redis.xgroup_create(self._keys.registry, group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    log.warning("cannot create group on the registry", extra={"error": str(exc)})
            except Exception as exc:  # a failed round trip must not end the loop
                log.warning("cannot create group on the registry", extra={"error": str(exc)})

    async def _listen(self) -> None:
        delay = 0.05
        while True:
            try:
                if self._wire is not None:
                    await self._listen_wire(self._wire)
                else:
                    await self._listen_pubsub()
            except Exception as exc:  # a lost channel must not end the loop: the check covers
                self._log.warning("confirm-listen", "confirmation channel lost", error=str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _listen_wire(self, open_wire: Callable[[], Awaitable[WireConnection]]) -> None:
        """Subscribe on a connection of our own: the replies are parsed in C, so the engine is
        released a few tens of microseconds sooner than through redis-py's pub/sub."""
        wire = await open_wire()
        try:
            await wire.subscribe(self._keys.confirm_channel)
            while True:
                for payload in await wire.messages():
                    self._apply_notification(payload)
                await self._release_ready()
        finally:
            await wire.close()

    async def _listen_pubsub(self) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._keys.confirm_channel)
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is not None:
                    self._apply_notification(message["data"])
                    await self._release_ready()
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _apply_notification(self, data: Any) -> None:
        try:
            note = orjson.loads(data)
            group = note["g"]
            streams = note["e"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if group not in self._groups or not isinstance(streams, dict):
            return
        for stream, ids in streams.items():
            if isinstance(ids, list):
                self.notifications += self.confirm(group, stream, [str(i) for i in ids])

    async def _check_loop(self) -> None:
        while True:
            await self._outstanding.wait()
            await asyncio.sleep(self._check_interval)
            # Only entries that have waited a whole interval are worth a round trip: when the
            # consumers notify, everything younger is confirmed long before that.
            if self._oldest_wait() >= self._check_interval:
                try:
                    await self.check()
                except Exception as exc:  # a failed round trip must not end the loop
                    self._log.warning(
                        "confirm-check", "cannot check consumer groups", error=str(exc)
                    )
            self._apply_timeouts()
            await self._release_ready()

    def _oldest_wait(self) -> float:
        for batch in self._queue:
            if batch.waiting and not batch.released:
                return self._clock() - batch.stored_at
        return 0.0

    async def check(self) -> None:
        """One round trip: positions and pending ids of every group on the streams we wait on."""
        streams = [(key, table) for key, table in self._streams.items() if table]
        if not streams:
            return
        pipe = self._redis.pipeline(transaction=False)
        for key, table in streams:
            pipe.xinfo_groups(key)
            low = min(w.position for w in table.values())
            high = max(w.position for w in table.values())
            for group in self._groups:
                pipe.xpending_range(
                    key, group, f"{low[0]}-{low[1]}", f"{high[0]}-{high[1]}", len(table) + 1
                )
        results = await pipe.execute(raise_on_error=False)
        now = self._clock()
        cursor = 0
        recreate: list[tuple[str, str, str]] = []
        for key, table in streams:
            info = results[cursor]
            pending_by_group = results[cursor + 1 : cursor + 1 + len(self._groups)]
            cursor += 1 + len(self._groups)
            delivered = _delivered_positions(info)
            for group, pending in zip(self._groups, pending_by_group, strict=True):
                mine = [w for w in table.values() if group in w.groups]
                if not mine:
                    continue
                if group not in delivered:
                    floor = min(w.position for w in mine)
                    recreate.append((key, group, id_below(floor)))
                    continue
                if isinstance(pending, Exception):
                    continue
                held = {parse_id(row["message_id"]) for row in pending}
                last = delivered[group]
                for waiting in mine:
                    if waiting.position <= last and waiting.position not in held:
                        waiting.groups.discard(group)
                        self.checked += 1
                        if not waiting.groups:
                            self._settle(key, waiting.entry.entry_id or "", waiting, now)
        if recreate:
            await self._recreate(recreate)

    async def _recreate(self, missing: list[tuple[str, str, str]]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for key, group, start in missing:
            pipe.xgroup_create(key, group, id=start, mkstream=True)
        results = await pipe.execute(raise_on_error=False)
        for (key, group, start), result in zip(missing, results, strict=True):
            if isinstance(result, Exception) and "BUSYGROUP" not in str(result):
                self._log.warning(
                    "recreate", "cannot recreate group", stream=key, group=group, error=str(result)
                )
            elif not isinstance(result, Exception):
                log.warning(
                    "recreated a missing consumer group",
                    extra={"stream": key, "group": group, "start": start},
                )

    def _apply_timeouts(self) -> None:
        if self._timeout <= 0:
            return
        now = self._clock()
        for batch in self._queue:
            if batch.released or batch.waiting == 0 or now - batch.stored_at < self._timeout:
                continue
            if self._policy == "release":
                self._release_unconfirmed(batch)
                self._metrics.consumer_timeouts.labels("release").inc()
                self._log.warning(
                    "timeout-release",
                    "consumer confirmation timed out; acked anyway",
                    events=len(batch.entries),
                    timeout_s=self._timeout,
                )
            elif not batch.overdue:
                batch.overdue = True
                self._metrics.consumer_timeouts.labels("hold").inc()
                self._log.warning(
                    "timeout-hold",
                    "consumer confirmation timed out; still holding",
                    events=len(batch.entries),
                    timeout_s=self._timeout,
                )

    def _release_unconfirmed(self, batch: HeldBatch) -> None:
        batch.released = True
        for stream in list(self._streams):
            table = self._streams[stream]
            for entry_id in [i for i, w in table.items() if w.batch is batch]:
                del table[entry_id]
                self._metrics.unconfirmed.dec()
            if not table:
                del self._streams[stream]
        batch.waiting = 0

    async def _lag_loop(self) -> None:
        while True:
            # One XINFO GROUPS per stream: with thousands of streams, measure less often.
            await asyncio.sleep(LAG_INTERVAL * max(1.0, len(self._known_streams) / 500))
            try:
                await self.update_lag()
            except Exception as exc:  # a failed round trip must not end the loop
                self._log.warning("confirm-lag", "cannot read consumer lag", error=str(exc))

    async def update_lag(self) -> None:
        """Per group: entries not yet delivered plus delivered but unconfirmed, on our streams."""
        streams = sorted(k for k in self._known_streams if self._keys.is_data_stream(k))
        if not streams:
            return
        pipe = self._redis.pipeline(transaction=False)
        for key in streams:
            pipe.xinfo_groups(key)
        results = await pipe.execute(raise_on_error=False)
        totals = dict.fromkeys(self._groups, 0)
        missing: list[tuple[str, str, str]] = []
        for key, info in zip(streams, results, strict=True):
            if isinstance(info, Exception):
                continue
            seen = {_text(row["name"]): row for row in info}
            for group in self._groups:
                row = seen.get(group)
                if row is None:
                    if key not in self._streams:  # streams we wait on are handled by check()
                        # Where the group had got to when last seen (or the start): entries
                        # written since are delivered again rather than skipped.
                        missing.append((key, group, self._last_seen.get((key, group), "0-0")))
                    continue
                self._last_seen[(key, group)] = _text(row["last-delivered-id"])
                totals[group] += int(row.get("lag") or 0) + int(row.get("pending") or 0)
        for group, total in totals.items():
            self._metrics.lag_by_group[group].set(total)
        if missing:
            await self._recreate(missing)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _delivered_positions(info: Any) -> dict[str, StreamId]:
    """group name -> last delivered id, from an XINFO GROUPS reply (empty on NOGROUP/no key)."""
    if isinstance(info, Exception) or not isinstance(info, list):
        return {}
    return {_text(row["name"]): parse_id(row["last-delivered-id"]) for row in info}
