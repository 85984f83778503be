"""The consumer-ack ledger: which stored batch waits for which group on which entry (sans I/O).

A stored batch (usually one engine step) is acknowledged once every group that reads one of its
id-bearing entries has confirmed that entry, and batches are acknowledged in the order they were
stored: the engine must never see step *t+1* acknowledged before step *t*. Dead letters, markers
and ``backtest_complete`` wait for nobody (the end of a run must not wait for a group: see
:mod:`connector.trading.run`), but still leave in order behind everything stored before them.

Nothing here does I/O or reads a clock. The driver (:mod:`connector.acks.consumer_gate`) feeds the
ledger what was stored, what the groups confirmed (notifications, or group state it read from Redis)
and the time; it acts on what the ledger returns. That keeps the rule the product is sold on in one
place, testable without Redis (tests/unit/test_ledger.py).

A confirmation may arrive before the store it confirms is known here (the consumer read the entry
before Redis' reply to our own pipeline came back): it is kept, bounded, and applied on ``add``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from connector.streams.schema import Entry
from connector.wire.ids import StreamId, id_below, id_text, parse_id

__all__ = [
    "Confirmed",
    "HeldBatch",
    "Ledger",
    "Span",
    "StreamId",
    "id_below",
    "id_text",
    "parse_id",
]

EARLY_LIMIT = 100_000


@dataclass(slots=True, eq=False)
class HeldBatch:
    """One stored batch whose ack waits for confirmations."""

    entries: Sequence[Entry]
    stored_at: float
    waiting: int = 0  # gated entries not yet confirmed by every group that reads them
    overdue: bool = False  # held past the timeout (policy hold)
    released: bool = False  # acknowledged without every confirmation (policy release)


@dataclass(slots=True, eq=False)
class Waiting:
    """One gated entry and the groups that have not confirmed it yet."""

    batch: HeldBatch
    position: StreamId
    groups: set[str] = field(default_factory=set)


@dataclass(slots=True)
class Confirmed:
    """What one confirmation (or one reading of group state) changed."""

    matched: int = 0  # (entry, group) confirmations that were waited for
    settled: list[float] = field(default_factory=list)  # stored_at of entries now fully confirmed


@dataclass(frozen=True, slots=True)
class Span:
    """The entries one group still has to confirm on one stream."""

    low: StreamId
    high: StreamId
    count: int


class Ledger:
    """Batches in stored order, and the (stream, entry) -> groups each still waits for."""

    def __init__(
        self, readers: Callable[[str], Sequence[str]], early_limit: int = EARLY_LIMIT
    ) -> None:
        self._readers = readers
        self._early_limit = early_limit
        self._queue: deque[HeldBatch] = deque()
        self._streams: dict[str, dict[str, Waiting]] = {}
        self._early: OrderedDict[tuple[str, str], set[str]] = OrderedDict()
        # Per stream, the id of the last entry added: ids are increasing per stream, so a
        # confirmation at or below it is never early (a repeat, or not ours).
        self._last_added: dict[str, StreamId] = {}

    # -- what happens -------------------------------------------------------------------------

    def add(self, entries: Sequence[Entry], now: float) -> HeldBatch:
        """A batch Redis has stored: note what its entries wait for."""
        batch = HeldBatch(entries, now)
        for entry in entries:
            key, entry_id = entry.key, entry.entry_id
            if key is None or entry_id is None:
                continue
            position = parse_id(entry_id)
            self._last_added[key] = position
            if entry.event_id is None or entry.final:
                continue
            groups = set(self._readers(key))
            if not groups:
                continue
            early = self._early.pop((key, entry_id), None) if self._early else None
            if early:
                groups -= early
            if not groups:
                continue
            waiting = Waiting(batch, position, groups)
            self._streams.setdefault(key, {})[entry_id] = waiting
            batch.waiting += 1
        self._queue.append(batch)
        return batch

    def confirm(self, group: str, stream: str, ids: Iterable[str]) -> Confirmed:
        """``group`` confirmed (XACKed) ``ids`` of ``stream``."""
        result = Confirmed()
        table = self._streams.get(stream)
        for entry_id in ids:
            waiting = table.get(entry_id) if table is not None else None
            if waiting is None:
                self._remember_early(group, stream, entry_id)
                continue
            if group not in waiting.groups:
                continue
            result.matched += 1
            waiting.groups.discard(group)
            if not waiting.groups:
                self._settle(stream, entry_id, waiting, result)
        return result

    def apply_group_state(
        self, stream: str, group: str, delivered: StreamId, pending: set[StreamId]
    ) -> Confirmed:
        """What Redis says of ``group`` on ``stream``: it has delivered everything up to
        ``delivered``, and of those still holds ``pending`` (not XACKed). Every waited-for entry
        delivered and not pending is confirmed."""
        result = Confirmed()
        table = self._streams.get(stream)
        if table is None:
            return result
        for entry_id, waiting in list(table.items()):
            if group not in waiting.groups:
                continue
            if waiting.position <= delivered and waiting.position not in pending:
                result.matched += 1
                waiting.groups.discard(group)
                if not waiting.groups:
                    self._settle(stream, entry_id, waiting, result)
        return result

    def ready(self) -> list[HeldBatch]:
        """Batches that may be acknowledged now, in stored order (each returned once)."""
        out: list[HeldBatch] = []
        queue = self._queue
        while queue and (queue[0].waiting == 0 or queue[0].released):
            out.append(queue.popleft())
        return out

    def expire(self, now: float, timeout: float, release: bool) -> list[HeldBatch]:
        """Batches held ``timeout`` or longer that are newly past it: with ``release`` they stop
        waiting (and come out of :meth:`ready`), otherwise they are marked overdue."""
        expired: list[HeldBatch] = []
        for batch in self._queue:
            if batch.released or batch.waiting == 0 or now - batch.stored_at < timeout:
                continue
            if release:
                self._release_unconfirmed(batch)
                expired.append(batch)
            elif not batch.overdue:
                batch.overdue = True
                expired.append(batch)
        return expired

    # -- what it knows ------------------------------------------------------------------------

    @property
    def empty(self) -> bool:
        """Nothing held (every stored batch acknowledged or handed out by :meth:`ready`)."""
        return not self._queue

    @property
    def unconfirmed(self) -> int:
        return sum(len(table) for table in self._streams.values())

    @property
    def overdue(self) -> bool:
        return any(batch.overdue and not batch.released for batch in self._queue)

    def oldest_wait(self, now: float) -> float:
        """How long the oldest batch still waiting for a confirmation has waited (0: none)."""
        for batch in self._queue:
            if batch.waiting and not batch.released:
                return now - batch.stored_at
        return 0.0

    def blocking(self) -> dict[str, int]:
        """Groups the oldest waiting batch waits for, with how many of its entries each."""
        for batch in self._queue:
            if batch.waiting and not batch.released:
                counts: dict[str, int] = {}
                for table in self._streams.values():
                    for waiting in table.values():
                        if waiting.batch is batch:
                            for group in waiting.groups:
                                counts[group] = counts.get(group, 0) + 1
                return counts
        return {}

    def spans(self) -> dict[str, dict[str, Span]]:
        """stream -> group -> the span of entries that group has yet to confirm there."""
        out: dict[str, dict[str, Span]] = {}
        for stream, table in self._streams.items():
            per_group: dict[str, Span] = {}
            for waiting in table.values():
                for group in waiting.groups:
                    span = per_group.get(group)
                    position = waiting.position
                    if span is None:
                        per_group[group] = Span(position, position, 1)
                    else:
                        per_group[group] = Span(
                            min(span.low, position), max(span.high, position), span.count + 1
                        )
            if per_group:
                out[stream] = per_group
        return out

    def newest_streams(self, limit: int) -> list[str]:
        """Up to ``limit`` streams with waiting entries, those of the newest batches first (the
        entries a consumer confirms last, usually): where a cheap check looks first."""
        seen: dict[str, None] = {}
        for batch in reversed(self._queue):
            if not batch.waiting or batch.released:
                continue
            for entry in reversed(batch.entries):
                key, entry_id = entry.key, entry.entry_id
                if key is None or entry_id is None or key in seen:
                    continue
                if entry_id in self._streams.get(key, {}):
                    seen[key] = None
                    if len(seen) >= limit:
                        return list(seen)
        return list(seen)

    # -- inside -------------------------------------------------------------------------------

    def _settle(self, stream: str, entry_id: str, waiting: Waiting, result: Confirmed) -> None:
        table = self._streams[stream]
        del table[entry_id]
        if not table:
            del self._streams[stream]
        waiting.batch.waiting -= 1
        result.settled.append(waiting.batch.stored_at)

    def _remember_early(self, group: str, stream: str, entry_id: str) -> None:
        """A confirmation can overtake our own pipeline's reply: keep it for a moment (only
        from a group that reads the stream; anything else could never matter)."""
        if group not in self._readers(stream):
            return
        try:
            position = parse_id(entry_id)
        except ValueError:
            return
        last = self._last_added.get(stream)
        if last is not None and position <= last:
            return
        key = (stream, entry_id)
        groups = self._early.get(key)
        if groups is None:
            groups = self._early[key] = set()
            if len(self._early) > self._early_limit:
                self._early.popitem(last=False)
        groups.add(group)

    def _release_unconfirmed(self, batch: HeldBatch) -> None:
        batch.released = True
        for stream in list(self._streams):
            table = self._streams[stream]
            for entry_id in [i for i, w in table.items() if w.batch is batch]:
                del table[entry_id]
            if not table:
                del self._streams[stream]
        batch.waiting = 0
