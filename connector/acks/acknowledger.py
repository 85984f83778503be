"""The ack gate: when, and in which frames, events are acknowledged to the Trading API.

Nothing is acknowledged before Redis has stored it. The immediate policy acknowledges a batch as
soon as it is stored, in one ``event_ack`` naming all of its ids (a backtest step published
together is released together). The consumer policy (:mod:`connector.acks.consumer_gate`) holds
the ids until every required consumer group has confirmed them.

Acks that cannot be sent (the session is down) stay in the outbox and go out first after the
reconnect: the engine ignores ids it no longer waits for, and may still be waiting for these.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from connector.metrics import Metrics
from connector.streams.schema import Entry
from connector.trading.protocol import ack_frame

SendFrame = Callable[[bytes], Awaitable[bool]]


class AckGate(Protocol):
    """Receives batches once Redis has stored them."""

    async def on_stored(self, entries: list[Entry]) -> None: ...


class Acknowledger:
    """Builds and sends ``event_ack`` frames; keeps unsent ids until the session is back."""

    def __init__(
        self,
        send: SendFrame,
        metrics: Metrics,
        *,
        enabled: bool,
        on_final: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._metrics = metrics
        self._enabled = enabled
        self._on_final = on_final
        self._clock = clock
        self._outbox_ids: list[str] = []
        self._outbox_received: list[float] = []
        self._final_pending = False
        self.pending = 0  # id-bearing events received and not yet acknowledged
        self.seen = 0  # id-bearing events received in all
        metrics.pending_acks.read = lambda: self.pending

    def expect(self, count: int) -> None:
        """``count`` id-bearing events entered the pipeline (for the pending-acks gauge)."""
        self.seen += count
        if self._enabled:
            self.pending += count

    def forget(self, count: int) -> None:
        """``count`` id-bearing events left the pipeline without an ack (dropped)."""
        if self._enabled:
            self.pending -= count

    async def release(self, entries: Sequence[Entry]) -> None:
        """Acknowledge every id in ``entries`` (one frame), and notice the end of a run."""
        final = False
        for entry in entries:
            if entry.final:
                final = True
            if entry.event_id is not None and self._enabled:
                self._outbox_ids.append(entry.event_id)
                self._outbox_received.append(entry.received)
        if final:
            self._final_pending = True
        await self.flush()

    async def flush(self) -> bool:
        """Send what is in the outbox. False when the session is down (kept for later)."""
        if self._outbox_ids:
            # Take the outbox before awaiting: releases may add to a fresh one meanwhile.
            ids, received = self._outbox_ids, self._outbox_received
            self._outbox_ids, self._outbox_received = [], []
            frame = ack_frame(ids, time.time_ns() // 1_000_000, _correlation_id())
            if not await self._send(frame):
                self._outbox_ids = ids + self._outbox_ids
                self._outbox_received = received + self._outbox_received
                return False
            now = self._clock()
            observe = self._metrics.ack_latency.observe
            for stamp in received:
                observe(now - stamp)
            self._metrics.acks_sent.inc()
            self._metrics.acked_events.inc(len(ids))
            self.pending -= len(ids)
        if self._final_pending:
            self._final_pending = False
            self._on_final()
        return True

    @property
    def unsent(self) -> int:
        return len(self._outbox_ids)


def _correlation_id() -> str:
    """A random (version 4) UUID. Correlation ids need uniqueness, not secrecy: Python's PRNG
    spares the system call that ``uuid.uuid4()`` makes for every ack."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


class ImmediateGate:
    """Acknowledge as soon as Redis has stored the batch."""

    def __init__(self, acknowledger: Acknowledger) -> None:
        self._acknowledger = acknowledger

    async def on_stored(self, entries: list[Entry]) -> None:
        await self._acknowledger.release(entries)
