"""Consumer-ack mode: hold each engine ack until the groups that read its entries confirmed them.

The bookkeeping (what waits for whom, release in stored order, timeouts) is the sans-I/O
:class:`~connector.acks.ledger.Ledger`; this module feeds it from Redis. An entry counts as
confirmed by a group once the group has had it delivered and no longer holds it pending (it was
XACKed). Two ways bring that news, and either is enough:

* **Notification** (the project's consumer toolkit): the consumer's XACK and a PUBLISH on
  ``{prefix}:confirm`` go out in the same round trip; this gate is subscribed, so it learns of the
  confirmation about one network hop later.
* **Check** (any client that only XACKs: FastStream, redis-cli, go-redis, ...): one pipelined
  round trip reads each group's delivery position (XINFO GROUPS) and pending ids (XPENDING) on the
  streams concerned. Redis announces an XACK to nobody (no keyspace event, no client-tracking
  invalidation), so the gate asks: for a group that has not notified, soon after each store and
  then less and less often (``FIRST_POLL_S`` growing to ``consumer_check_interval``); for a
  notifying group, only for entries that have waited a whole interval (a lost notification). A
  check looks at the newest streams first (``SAMPLE_STREAMS``) and at all of them only once
  those are confirmed, so its cost follows the streams that wait, never the idle ones.

A group that has gone missing (NOGROUP: deleted, or lost in a Redis restart) is recreated, only on
streams it reads, just below the oldest entry it has not confirmed, so nothing is skipped. In live
mode nothing is gated: acks are informational there; groups and the lag gauge are maintained.

Timeouts (``consumer_ack_timeout`` > 0): a batch held longer is either kept (``hold``: counted,
logged, /readyz false until it is confirmed) or acknowledged anyway (``release``: counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from redis.exceptions import ResponseError

from connector.acks.acknowledger import Acknowledger
from connector.acks.ledger import Confirmed, Ledger, Span, StreamId, id_text, parse_id
from connector.logs import RateLimitedLog
from connector.metrics import Metrics
from connector.streams.groups import START_REGISTRY, Readers, restart_below
from connector.streams.schema import Entry, StreamKeys
from connector.wire.client import RedisClient
from connector.wire.errors import is_busygroup
from connector.wire.pipe import Command, Transport, transport_for
from connector.wire.resp import Arg

log = logging.getLogger(__name__)

LAG_INTERVAL = 1.0
# For groups that do not notify: the first check after a store comes at this share of the time
# the group usually takes to confirm; checks then follow one another (each a round trip) up to
# CHASE_FACTOR times that time (at least CHASE_MIN_S), then back off to the check interval.
# That time is learnt from the checks themselves (store -> the reply that saw the confirmation),
# so it includes a check's round trip: when the first check usually finds the store confirmed
# already, the estimate settles near round trip / (1 - share) whatever the group's real delay.
# A low share keeps the first check early (the chase then finds the confirmation within a round
# trip of it): 0.3 against 0.6 is 1.35x the lock-step rate with a plain-XACK consumer, for about
# 1.25x the Redis CPU per step and more checks from the connector.
FIRST_CHECK_SHARE = 0.3
CHASE_FACTOR = 3.0
CHASE_MIN_S = 0.005
FIRST_BACKOFF_S = 0.001
SAMPLE_STREAMS = 8  # streams a check looks at before it looks at all of them
SWEEP_CHUNK = 512  # streams per pipelined round trip in a full check
FOREIGN_GROUPS_LIMIT = 1024
# Through redis-py (a cluster), a reply is parsed by its command's name: XPENDING as the summary
# form unless it is told the reply is a range (what a check sends), which it cannot parse.
_REDIS_PY_OPTIONS: dict[str, dict[str, Any]] = {"XPENDING": {"parse_detail": True}}


class ConsumerGate:
    """The ack gate of consumer-ack mode (see the module docstring)."""

    def __init__(
        self,
        redis: RedisClient,
        keys: StreamKeys,
        readers: Readers,
        acknowledger: Acknowledger,
        metrics: Metrics,
        *,
        gated: bool,
        timeout: float,
        policy: str,
        check_interval: float,
        known_streams: set[str],
        stall_after: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        transport: Transport | None = None,
    ) -> None:
        """``transport``: where checks and notifications go (see connector.wire.pipe); redis-py
        when not given."""
        self._redis = redis
        self._keys = keys
        self._readers = readers
        self._groups = readers.names
        self._group_bytes = {name.encode(): name for name in readers.names}
        self._acknowledger = acknowledger
        self._metrics = metrics
        self._gated = gated
        self._timeout = timeout
        self._policy = policy
        self._check_interval = check_interval
        self._stall_after = stall_after
        self._known_streams = known_streams
        # What the last checks saw of each group: consumers, pending, lag (None: unknown).
        self._seen: dict[str, tuple[int, int, int | None]] = {}
        self._clock = clock
        self._transport = transport if transport is not None else transport_for(redis, fast=False)
        self._ledger = Ledger(readers.of)
        self._notifying: set[str] = set()  # groups seen confirming by notification
        self._confirm_delay: dict[str, float] = {}  # group -> how long it takes to confirm
        self._next_check = 0.0  # when the check loop looks next (clock time)
        self._chase_until = 0.0  # until then, a check follows the last at once
        self._backoff = FIRST_BACKOFF_S
        self._check_pipe = self._transport.pipe()
        self._poke = asyncio.Event()  # the next check moved: a store a check may soon confirm
        self._outstanding = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._last_seen: dict[tuple[str, str], str] = {}  # (stream, group) -> last delivered id
        self._foreign_groups: set[bytes] = set()
        self._log = RateLimitedLog(log, interval=10.0)
        self.notifications = 0  # confirmations learnt by notification, for tests and the demo
        self.checked = 0  # confirmations learnt by checking group state

    # -- the gate ------------------------------------------------------------------------------

    async def on_stored(self, entries: list[Entry]) -> None:
        if not self._gated:
            await self._acknowledger.release(entries)
            return
        batch = self._ledger.add(entries, self._clock())
        self._empty.clear()
        if batch.waiting:
            self._metrics.unconfirmed.inc(batch.waiting)
            self._outstanding.set()
            if self._polled_groups():
                self._schedule_first_check(batch.stored_at)
        await self._release_ready()

    @property
    def unconfirmed(self) -> int:
        return self._ledger.unconfirmed

    @property
    def overdue(self) -> bool:
        """True while a batch is held past the timeout under the ``hold`` policy."""
        return self._ledger.overdue

    def stall(self) -> str | None:
        """Why the engine waits, when a stored batch has waited ``stall_after`` or longer for
        confirmations (``None`` otherwise): the groups, and what their state says."""
        waited = self._ledger.oldest_wait(self._clock())
        if waited < self._stall_after:
            return None
        reasons = "; ".join(self._describe(group) for group in sorted(self._ledger.blocking()))
        return f"a stored step has waited {waited:.1f} s for its consumer groups: {reasons}"

    def _describe(self, group: str) -> str:
        seen = self._seen.get(group)
        if seen is None:
            return f"group {group} (not checked yet)"
        consumers, pending, lag = seen
        if consumers == 0:
            return f"no consumer has joined group {group}"
        waiting = "" if lag is None else f", {lag} not delivered yet"
        return (
            f"group {group}: {consumers} consumer{'s' if consumers != 1 else ''}, {pending} "
            f"delivered and not confirmed{waiting}"
        )

    async def wait_confirmed(self) -> None:
        """Until nothing is held (used when draining)."""
        await self._empty.wait()

    def confirm(self, group: str, stream: str, ids: Iterable[str]) -> int:
        """Record that ``group`` confirmed ``ids`` of ``stream``; returns how many were ours."""
        return self._count(self._ledger.confirm(group, stream, ids))

    def _count(self, confirmed: Confirmed) -> int:
        if confirmed.settled:
            now = self._clock()
            self._metrics.unconfirmed.dec(len(confirmed.settled))
            observe = self._metrics.consumer_confirm.observe
            for stored_at in confirmed.settled:
                observe(now - stored_at)
        return confirmed.matched

    async def _release_ready(self) -> None:
        for batch in self._ledger.ready():
            if batch.overdue and not batch.released:
                log.info(
                    "held batch confirmed after its timeout", extra={"events": len(batch.entries)}
                )
            await self._acknowledger.release(batch.entries)
        if not self._ledger.unconfirmed:
            self._outstanding.clear()
        if self._ledger.empty:
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
            await self._check_pipe.close()

    async def create_registry_groups(self) -> None:
        """Groups on the registry start at 0: a member joining late still sees every stream."""
        for group in self._groups:
            try:
                await self._redis.xgroup_create(
                    self._keys.registry, group, id=START_REGISTRY, mkstream=True
                )
            except ResponseError as exc:
                if not is_busygroup(exc):
                    log.warning("cannot create group on the registry", extra={"error": str(exc)})
            except Exception as exc:  # a failed round trip must not end the loop
                log.warning("cannot create group on the registry", extra={"error": str(exc)})

    # -- notifications -------------------------------------------------------------------------

    async def _listen(self) -> None:
        delay = 0.05
        while True:
            try:
                channel = self._transport.messages(self._keys.confirm_channel)
                async with contextlib.aclosing(channel):
                    async for payloads in channel:
                        for payload in payloads:
                            self._apply_notification(payload)
                        await self._release_ready()
            except Exception as exc:  # a lost channel must not end the loop: the check covers
                self._log.warning("confirm-listen", "confirmation channel lost", error=str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _apply_notification(self, data: Any) -> None:
        """``{"g": group, "e": {stream: [id, ...]}}``; anything else (another client's noise on
        the channel, a group we do not wait for) is ignored."""
        try:
            note = orjson.loads(data)
            group = note["g"]
            streams = note["e"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if group not in self._groups or not isinstance(streams, dict):
            return
        self._notifying.add(group)
        for stream, ids in streams.items():
            if isinstance(stream, str) and isinstance(ids, list):
                self.notifications += self.confirm(group, stream, [str(i) for i in ids])

    # -- checks --------------------------------------------------------------------------------

    async def _check_loop(self) -> None:
        while True:
            await self._outstanding.wait()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, self._next_check - self._clock())):
                    await self._poke.wait()
            self._poke.clear()
            now = self._clock()
            if now < self._next_check:
                continue  # a fresh store moved the next check: wait for that one
            # Entries that waited a whole interval are checked for every group (a notification
            # may have been lost); younger ones only for the groups that never notify.
            late = self._ledger.oldest_wait(now) >= self._check_interval
            groups = set(self._groups) if late else self._polled_groups()
            if groups:
                try:
                    await self.check(groups)
                except Exception as exc:  # a failed round trip must not end the loop
                    await self._check_pipe.close()  # a fresh connection next time
                    self._log.warning(
                        "confirm-check", "cannot check consumer groups", error=str(exc)
                    )
            self._schedule_after_check()
            self._apply_timeouts()
            await self._release_ready()
            stall = self.stall()
            if stall is not None:
                self._log.warning("stall", stall)

    def _polled_groups(self) -> set[str]:
        return set(self._groups) - self._notifying

    def _schedule_first_check(self, stored_at: float) -> None:
        """A store that a group which never notifies must confirm: check just before it usually
        does (it learns how long that is), then chase it, one check per round trip."""
        expected = min(self._confirm_delay.get(g, 0.0) for g in self._polled_groups())
        self._next_check = stored_at + FIRST_CHECK_SHARE * expected
        self._chase_until = stored_at + max(CHASE_FACTOR * expected, CHASE_MIN_S)
        self._backoff = FIRST_BACKOFF_S
        self._poke.set()

    def _schedule_after_check(self) -> None:
        now = self._clock()
        if not self._ledger.unconfirmed:
            return
        if self._polled_groups() and now < self._chase_until:
            self._next_check = now  # still chasing: at once (the round trip is the pace)
            return
        self._backoff = min(self._backoff * 2, self._check_interval)
        self._next_check = now + self._backoff

    def _learn(self, group: str, stored_at: float, now: float) -> None:
        """How long ``group`` takes to confirm a store (an average that follows changes)."""
        sample = now - stored_at
        known = self._confirm_delay.get(group)
        self._confirm_delay[group] = sample if known is None else known + 0.2 * (sample - known)

    async def check(self, groups: set[str] | None = None) -> None:
        """Read the state of ``groups`` (all by default) on the streams with waiting entries:
        the newest ones first, and all of them once those are confirmed."""
        wanted = set(self._groups) if groups is None else groups
        sample = self._ledger.newest_streams(SAMPLE_STREAMS)
        spans = self._ledger.spans()
        await self._check_streams(sample, spans, wanted)
        spans = self._ledger.spans()
        rest = [stream for stream in spans if stream not in sample]
        if any(stream in spans and wanted & set(spans[stream]) for stream in sample):
            return  # the newest are not confirmed yet: the others can wait for the next check
        for start in range(0, len(rest), SWEEP_CHUNK):
            await self._check_streams(rest[start : start + SWEEP_CHUNK], spans, wanted)

    async def _check_streams(
        self, streams: list[str], spans: dict[str, dict[str, Span]], wanted: set[str]
    ) -> None:
        plan = [
            (stream, [(group, span) for group, span in spans[stream].items() if group in wanted])
            for stream in streams
            if stream in spans
        ]
        plan = [(stream, pairs) for stream, pairs in plan if pairs]
        if not plan:
            return
        commands: list[list[Arg]] = []
        for stream, pairs in plan:
            commands.append(["XINFO", "GROUPS", stream])
            for group, span in pairs:
                low, high = id_text(span.low), id_text(span.high)
                commands.append(["XPENDING", stream, group, low, high, span.count])
        results = iter(await self._query(commands))
        missing: list[tuple[str, str, str]] = []
        now = self._clock()
        seen: dict[str, tuple[int, int, int | None]] = {}
        for stream, pairs in plan:
            info = next(results)
            self._note_state(info, seen)
            delivered = self._delivered_positions(info)
            for group, span in pairs:
                pending = next(results)
                position = delivered.get(group)
                if position is None:
                    missing.append((stream, group, restart_below(span.low)))
                elif not isinstance(pending, Exception):
                    confirmed = self._ledger.apply_group_state(
                        stream, group, position, _pending_ids(pending)
                    )
                    for stored_at in confirmed.settled:
                        self._learn(group, stored_at, now)
                    self.checked += self._count(confirmed)
        self._seen.update(seen)
        if missing:
            await self._recreate(missing)

    def _note_state(self, info: Any, seen: dict[str, tuple[int, int, int | None]]) -> None:
        """Add one stream's XINFO GROUPS to ``seen``: consumers (the most on any stream),
        pending and lag (summed over the streams)."""
        if isinstance(info, Exception) or not isinstance(info, list):
            return
        for row in info:
            fields = _fields(row)
            group = self._group_bytes.get(fields.get("name", b""))
            if group is None:
                continue
            consumers, pending, lag = seen.get(group, (0, 0, 0))
            row_lag = fields.get("lag")
            seen[group] = (
                max(consumers, int(fields.get("consumers") or 0)),
                pending + int(fields.get("pending") or 0),
                None if lag is None or row_lag is None else lag + int(row_lag),
            )

    async def _query(self, commands: list[list[Arg]]) -> list[Any]:
        """One round trip, errors as values (on our own connection where there is one: a check
        then costs the connector a fraction of redis-py's pipeline)."""
        return await self._check_pipe.execute(
            [
                Command(command, options=_REDIS_PY_OPTIONS.get(str(command[0])))
                for command in commands
            ]
        )

    def _delivered_positions(self, info: Any) -> dict[str, StreamId]:
        """Our group -> its last delivered id, from an XINFO GROUPS reply (empty on NOGROUP or
        no key). Group names are compared as bytes: another client's group with a name that is
        not UTF-8 is simply not ours."""
        if isinstance(info, Exception) or not isinstance(info, list):
            return {}
        positions: dict[str, StreamId] = {}
        for row in info:
            fields = _fields(row)
            raw = fields.get("name", b"")
            name = self._group_bytes.get(raw)
            if name is None:
                self._note_foreign_group(raw)
                continue
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                positions[name] = parse_id(fields["last-delivered-id"])
        return positions

    def _note_foreign_group(self, raw: Any) -> None:
        """Other groups are none of our business, but one whose name is not text is another
        client's garbage on our streams: counted and said once per name."""
        if not isinstance(raw, bytes) or raw in self._foreign_groups:
            return
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            if len(self._foreign_groups) < FOREIGN_GROUPS_LIMIT:
                self._foreign_groups.add(raw)
            self._metrics.foreign_data.counts["group_name"] += 1
            log.warning(
                "a consumer group on the connector's streams has a name that is not text "
                "(another client's?); ignored",
                extra={"group": repr(raw)[:80]},
            )

    async def _recreate(self, missing: list[tuple[str, str, str]]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for key, group, start in missing:
            pipe.xgroup_create(key, group, id=start, mkstream=True)
        results = await pipe.execute(raise_on_error=False)
        for (key, group, start), result in zip(missing, results, strict=True):
            if isinstance(result, Exception) and not is_busygroup(result):
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
        release = self._policy == "release"
        expired = self._ledger.expire(self._clock(), self._timeout, release)
        if not expired:
            return
        policy = "release" if release else "hold"
        self._metrics.consumer_timeouts.labels(policy).inc(len(expired))
        if release:
            self._metrics.unconfirmed.set(self._ledger.unconfirmed)
        self._log.warning(
            f"timeout-{policy}",
            "consumer confirmation timed out; acked anyway"
            if release
            else "consumer confirmation timed out; still holding",
            events=sum(len(batch.entries) for batch in expired),
            timeout_s=self._timeout,
        )

    # -- the lag gauge -------------------------------------------------------------------------

    async def _lag_loop(self) -> None:
        while True:
            # One XINFO GROUPS per stream: with thousands of streams, measure less often.
            await asyncio.sleep(LAG_INTERVAL * max(1.0, len(self._known_streams) / 500))
            try:
                await self.update_lag()
            except Exception as exc:  # a failed round trip must not end the loop
                self._log.warning("confirm-lag", "cannot read consumer lag", error=str(exc))

    async def update_lag(self) -> None:
        """Per group: entries not yet delivered plus delivered but unconfirmed, on the streams
        it reads."""
        streams = sorted(k for k in self._known_streams if self._readers.of(k))
        if not streams:
            return
        pipe = self._redis.pipeline(transaction=False)
        for key in streams:
            pipe.xinfo_groups(key)
        results = await pipe.execute(raise_on_error=False)
        totals = dict.fromkeys(self._groups, 0)
        waiting = self._ledger.spans()
        missing: list[tuple[str, str, str]] = []
        for key, info in zip(streams, results, strict=True):
            if isinstance(info, Exception):
                continue
            rows = {self._group_bytes.get(row.get("name")): row for row in info}
            for row in info:
                if row.get("name") not in self._group_bytes:
                    self._note_foreign_group(row.get("name"))
            for group in self._readers.of(key):
                row = rows.get(group)
                if row is None:
                    if group not in waiting.get(key, {}):  # waited-for streams: see check()
                        # Where the group had got to when last seen (or the start): entries
                        # written since are delivered again rather than skipped.
                        missing.append((key, group, self._last_seen.get((key, group), "0-0")))
                    continue
                with contextlib.suppress(UnicodeDecodeError, AttributeError):
                    self._last_seen[(key, group)] = row["last-delivered-id"].decode("ascii")
                totals[group] += int(row.get("lag") or 0) + int(row.get("pending") or 0)
        for group, total in totals.items():
            self._metrics.lag_by_group[group].set(total)
        if missing:
            await self._recreate(missing)


def _fields(row: Any) -> dict[str, Any]:
    """One group of an XINFO GROUPS reply: a map (RESP3, redis-py's default since 8.0; bytes
    keys unless redis-py parsed it) or the raw flat list (RESP2, our own connections)."""
    pairs: Iterable[tuple[Any, Any]] = (
        row.items() if isinstance(row, dict) else zip(row[::2], row[1::2], strict=False)
    )
    return {_text_key(key): value for key, value in pairs}


def _text_key(key: Any) -> Any:
    return key.decode("ascii", "replace") if isinstance(key, bytes) else key


def _pending_ids(reply: Any) -> set[StreamId]:
    """The ids of an XPENDING range reply: redis-py's dicts, or raw [id, consumer, ...] rows."""
    return {parse_id(row["message_id"] if isinstance(row, dict) else row[0]) for row in reply or []}
