"""Batching between the read loop and Redis: group commit, bounded buffer, retries, de-duplication.

The read loop calls :meth:`Publisher.submit` (synchronous, constant work per event). One writer
task takes everything that has accumulated and stores it in one pipelined round trip; while that
round trip is in flight the next batch accumulates. So at low rates each event is written at once
(low latency) and at high rates batches grow by themselves (high throughput), with no timer.

When Redis is unavailable the batch is retried with capped backoff, in order, with the same entry
ids (so nothing is stored twice); new events wait in a buffer bounded by count and bytes, and beyond
the bound the oldest are dropped and counted. Entries are handed to the ack gate only once stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from connector.logs import RateLimitedLog
from connector.metrics import Metrics
from connector.streams.schema import Entry
from connector.streams.writer import WriteOutcome

log = logging.getLogger(__name__)

LEASE_POLL_S = 0.1

OnStored = Callable[[list[Entry]], Awaitable[None]]


class Writer(Protocol):
    """Stores a batch (idempotently: a failed batch is written again as it is)."""

    async def write(self, entries: Sequence[Entry]) -> WriteOutcome: ...


class RecentIds:
    """The last ``capacity`` event ids seen, to store a re-delivered event only once."""

    __slots__ = ("_capacity", "_seen")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()

    def check_and_add(self, event_id: str) -> bool:
        """True if ``event_id`` was already seen; remembers it otherwise."""
        if self._capacity == 0:
            return False
        if event_id in self._seen:
            return True
        self._seen[event_id] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return False

    def discard(self, event_id: str) -> None:
        """Forget ``event_id`` (its event was dropped: a re-delivery must be stored)."""
        self._seen.pop(event_id, None)

    def clear(self) -> None:
        self._seen.clear()


class Publisher:
    """Accepts entries from the read loop and stores them in Redis in order, in batches."""

    def __init__(
        self,
        writer: Writer,
        metrics: Metrics,
        on_stored: OnStored,
        *,
        max_batch: int,
        max_events: int,
        max_bytes: int,
        dedupe_window: int,
        retry_max_delay: float = 2.0,
        on_dropped: Callable[[int], None] = lambda ids: None,
        may_write: Callable[[], bool] = lambda: True,
    ) -> None:
        self._writer = writer
        self._metrics = metrics
        self._on_stored = on_stored
        self._on_dropped = on_dropped  # told how many id-bearing events were dropped
        self._may_write = may_write  # false while the stream prefix lease is not confirmed
        self._max_batch = max_batch
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._retry_max_delay = retry_max_delay
        self._recent = RecentIds(dedupe_window)
        # Re-deliveries waiting in the buffer (marked: write nothing), by id: if the original is
        # dropped before it is stored, its re-delivery is written instead.
        self._queued_duplicates: dict[str, Entry] = {}
        self._pending: deque[Entry] = deque()
        self._pending_bytes = 0
        self._inflight: list[Entry] = []
        self._inflight_bytes = 0
        self._wake = asyncio.Event()
        self._give_up = asyncio.Event()
        self._closing = False
        self._abandon = False
        self._healthy = True
        self._outage_started = 0.0
        self._failed_attempts = 0
        self._drop_log = RateLimitedLog(log, interval=10.0)
        self.last_error = ""  # of the last failed write, for /readyz
        self._published = metrics.published_by_type
        metrics.buffered_events.read = lambda: self.buffered
        metrics.buffered_bytes.read = lambda: self._pending_bytes + self._inflight_bytes

    # -- read-loop side (synchronous, constant work) -------------------------------------------

    def submit(self, entry: Entry) -> None:
        """Queue ``entry`` for storage. Never blocks; enforces the buffer bound."""
        if entry.event_id is not None:
            if self._recent.check_and_add(entry.event_id):
                # Stored (or about to be) already: acknowledge again, write nothing.
                self._metrics.duplicates.inc()
                entry.key = None
                self._queued_duplicates[entry.event_id] = entry
            if entry.final:
                # A finished run's ids may be reused by the next one.
                self._recent.clear()
        self._pending.append(entry)
        self._pending_bytes += entry.size
        if len(self._pending) > self._max_events or self._held_bytes > self._max_bytes:
            self._drop_oldest()
        self._wake.set()

    def _drop_oldest(self) -> None:
        dropped: list[Entry] = []
        while self._pending and (
            len(self._pending) > self._max_events or self._held_bytes > self._max_bytes
        ):
            entry = self._pending.popleft()
            self._pending_bytes -= entry.size
            dropped.append(entry)
        self._dropped(dropped, "buffer_full")
        self._drop_log.warning(
            "buffer_full",
            "buffer full: dropped the oldest events",
            dropped=len(dropped),
            max_events=self._max_events,
            max_bytes=self._max_bytes,
        )

    def _dropped(self, entries: Iterable[Entry], reason: str) -> None:
        """Count dropped events; their ids will not be acknowledged, nor be duplicates."""
        count = ids = 0
        duplicates = self._queued_duplicates
        for entry in entries:
            count += 1
            event_id = entry.event_id
            if event_id is None:
                continue
            ids += 1
            if entry.key is None:  # a re-delivery marked to write nothing
                duplicates.pop(event_id, None)
                continue
            revived = duplicates.pop(event_id, None) if duplicates else None
            if revived is not None and reason == "buffer_full":
                # The original is lost, its re-delivery still waits: that one is stored now.
                revived.key = entry.key
                revived.label = entry.label
            else:
                self._recent.discard(event_id)
        self._metrics.dropped.labels(reason).inc(count)
        if ids:
            self._on_dropped(ids)

    def forget_ids(self) -> None:
        """A new connection: the server never re-sends what it sent before (docs/protocol.md), so
        ids seen on earlier connections say nothing about the new one's (a restarted engine may
        number its events from the start again). Re-deliveries still queued from the last
        connection are no longer matched to an id of the new one."""
        self._recent.clear()
        self._queued_duplicates.clear()

    @property
    def _held_bytes(self) -> int:
        """Everything in memory, the batch being written included: the byte bound is about
        what the process holds (the count bound stays about what waits behind the batch)."""
        return self._pending_bytes + self._inflight_bytes

    # -- writer task ---------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        return len(self._pending) + len(self._inflight)

    @property
    def in_flight(self) -> int:
        """Events of the batch being written (not counted against the buffer bound)."""
        return len(self._inflight)

    @property
    def abandoned(self) -> bool:
        return self._abandon

    @property
    def healthy(self) -> bool:
        """False from a failed write until the next successful one."""
        return self._healthy

    async def run(self) -> None:
        """Store batches until :meth:`close` and the buffer is empty (or abandoned)."""
        try:
            await self._run()
        except asyncio.CancelledError:
            # Shutdown gave up on a write that did not even fail (a Redis that stopped
            # answering): what was held is lost all the same, and must be counted.
            if self._abandon:
                self._drop_everything()
            raise

    def _drop_everything(self) -> None:
        self._dropped([*self._inflight, *self._pending], "shutdown")
        self._inflight = []
        self._inflight_bytes = 0
        self._pending.clear()
        self._pending_bytes = 0

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                # One more turn of the event loop: frames that reached the socket together with
                # the one that woke us (the rest of an engine step) join this batch, instead of
                # costing a second round trip (and, in consumer-ack mode, a second consumer cycle).
                await asyncio.sleep(0)
                continue
            batch = [
                self._pending.popleft() for _ in range(min(self._max_batch, len(self._pending)))
            ]
            if self._queued_duplicates:
                for entry in batch:
                    if entry.key is None and entry.event_id is not None:
                        self._queued_duplicates.pop(entry.event_id, None)
            # The count bound counts what waits behind the batch in flight (which is at most
            # max_batch events), so a large batch never makes the newest events the ones dropped;
            # the byte bound counts the batch too (memory is memory).
            self._inflight = batch
            self._inflight_bytes = sum(entry.size for entry in batch)
            self._pending_bytes -= self._inflight_bytes
            outcome = await self._store(batch)
            if outcome is None:
                return
            self._inflight = []
            self._inflight_bytes = 0
            stored = outcome.as_stored(batch)
            self._count_published(stored)
            if outcome.clashes:
                self._metrics.foreign_data.counts["clash"] += outcome.clashes
            if outcome.unstorable:
                self._unstorable(outcome.unstorable)
            await self._on_stored(stored)

    def _unstorable(self, failures: Sequence[tuple[Entry, str]]) -> None:
        self._metrics.dropped.labels("unstorable").inc(len(failures))
        ids = sum(1 for entry, _ in failures if entry.event_id is not None)
        if ids:
            self._on_dropped(ids)
        log.error(
            "events could not be stored anywhere (the dead-letter stream refused them too)",
            extra={"events": len(failures), "error": failures[0][1]},
        )

    async def _store(self, batch: list[Entry]) -> WriteOutcome | None:
        """Until stored (the writer's outcome), or None when the publisher gave up."""
        delay = 0.05
        while True:
            if not await self._wait_until_writable():
                return None
            started = time.perf_counter()
            try:
                outcome = await self._writer.write(batch)
            # Any failure (redis-py may also trip over a connection torn down by a concurrent
            # command on a cluster) means: not stored yet. Retrying the batch is safe.
            except Exception as exc:
                self._write_failed(exc, len(batch))
                if self._abandon:
                    self._drop_everything()
                    return None
                await self._sleep(delay)
                delay = min(delay * 2, self._retry_max_delay)
                continue
            self._metrics.publish_seconds.observe(time.perf_counter() - started)
            self._metrics.batch_size.observe(len(batch))
            if not self._healthy:
                self._healthy = True
                self._metrics.redis_up.set(1)
                log.info(
                    "Redis writes resumed",
                    extra={
                        "outage_s": round(time.monotonic() - self._outage_started, 3),
                        "failed_attempts": self._failed_attempts,
                        "buffered": self.buffered,
                    },
                )
            return outcome

    async def _wait_until_writable(self) -> bool:
        """Until writing is allowed (the prefix lease confirmed); False if abandoned meanwhile."""
        if self._may_write():
            return True
        log.warning("writes wait until the stream prefix lease is confirmed again")
        while not self._may_write():
            if self._abandon:
                self._drop_everything()
                return False
            await self._sleep(LEASE_POLL_S)
        log.info("the stream prefix lease is confirmed: writes resume")
        return True

    def _write_failed(self, exc: BaseException, events: int) -> None:
        """Count every failure; log the first of an incident, and its end (in ``_store``)."""
        self.last_error = _describe(exc)
        self._metrics.publish_errors.inc()
        self._metrics.redis_up.set(0)
        self._failed_attempts += 1
        if self._healthy:
            self._healthy = False
            self._outage_started = time.monotonic()
            self._failed_attempts = 1
            log.warning(
                "Redis write failed; holding events and retrying",
                extra={"error": _describe(exc), "events": events, "buffered": self.buffered},
            )
        else:
            log.debug("Redis write failed again", extra={"error": _describe(exc)})

    async def _sleep(self, delay: float) -> None:
        # Wakes early when shutdown gives up on the buffer (new events must not: retry storm).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._give_up.wait(), delay)

    def _count_published(self, batch: list[Entry]) -> None:
        counts: dict[str, int] = {}
        for entry in batch:
            if entry.key is not None:
                counts[entry.label] = counts.get(entry.label, 0) + 1
        for label, count in counts.items():
            self._published[label].inc(count)
        if "candle" in counts or "quote" in counts:
            self._metrics.last_event.set(time.time())

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """No more input: :meth:`run` returns once everything buffered is stored."""
        self._closing = True
        self._wake.set()

    def abandon(self) -> None:
        """Give up on what cannot be stored (shutdown deadline): :meth:`run` returns soon."""
        self._abandon = True
        self._closing = True
        self._give_up.set()
        self._wake.set()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]
