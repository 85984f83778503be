"""Group commit, order, bounded buffer, retries and de-duplication in the publisher."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from connector.metrics import Metrics
from connector.streams.publisher import Publisher, RecentIds
from connector.streams.schema import Entry
from connector.streams.writer import WriteOutcome


class FakeWriter:
    """Records batches; can be told to fail, and lets a test hold a write in flight."""

    def __init__(self) -> None:
        self.batches: list[list[str | None]] = []
        self.failures = 0
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def write(self, entries: Sequence[Entry]) -> WriteOutcome:
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise RedisConnectionError("redis went away")
        self.batches.append([e.event_id for e in entries if e.key is not None])
        return WriteOutcome()


def entry(n: int, *, size: int = 10, event_id: str | None = "auto") -> Entry:
    eid = f"evt-{n}" if event_id == "auto" else event_id
    return Entry("k", {"n": str(n)}, "candle", eid, 0.0, size)


def make(writer: FakeWriter, metrics: Metrics, stored: list[list[Entry]], **overrides: int):  # type: ignore[no-untyped-def]
    async def on_stored(entries: list[Entry]) -> None:
        stored.append(entries)

    options = {"max_batch": 100, "max_events": 1000, "max_bytes": 1 << 20, "dedupe_window": 100}
    options.update(overrides)
    return Publisher(
        writer,
        metrics,
        on_stored,
        retry_max_delay=0.01,
        on_dropped=lambda ids: forgotten.append(ids),
        **options,  # type: ignore[arg-type]
    )


forgotten: list[int] = []


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_events_that_arrive_together_are_written_together(metrics: Metrics) -> None:
    writer, stored = FakeWriter(), []
    publisher = make(writer, metrics, stored)
    for n in range(5):
        publisher.submit(entry(n))
    publisher.close()
    await publisher.run()
    assert writer.batches == [[f"evt-{n}" for n in range(5)]]
    assert [[e.event_id for e in batch] for batch in stored] == writer.batches
    assert sample(metrics, "connector_published_total", type="candle") == 5


async def test_events_arriving_during_a_write_form_the_next_batch(metrics: Metrics) -> None:
    writer, stored = FakeWriter(), []
    writer.gate = asyncio.Event()
    publisher = make(writer, metrics, stored)
    task = asyncio.create_task(publisher.run())
    publisher.submit(entry(0))
    await writer.started.wait()
    for n in range(1, 4):
        publisher.submit(entry(n))
    writer.gate.set()
    publisher.close()
    await task
    assert writer.batches == [["evt-0"], ["evt-1", "evt-2", "evt-3"]]


async def test_batches_are_capped(metrics: Metrics) -> None:
    writer, stored = FakeWriter(), []
    publisher = make(writer, metrics, stored, max_batch=2)
    for n in range(5):
        publisher.submit(entry(n))
    publisher.close()
    await publisher.run()
    assert writer.batches == [["evt-0", "evt-1"], ["evt-2", "evt-3"], ["evt-4"]]


async def test_failed_writes_are_retried_in_order_and_acked_only_after(metrics: Metrics) -> None:
    writer, stored = FakeWriter(), []
    writer.failures = 3
    publisher = make(writer, metrics, stored, max_batch=2)
    for n in range(4):
        publisher.submit(entry(n))
    publisher.close()
    await publisher.run()
    assert writer.batches == [["evt-0", "evt-1"], ["evt-2", "evt-3"]]
    assert len(stored) == 2
    assert sample(metrics, "connector_publish_errors_total") == 3
    assert publisher.healthy


async def test_buffer_bound_drops_the_oldest_and_counts_them(metrics: Metrics) -> None:
    writer, stored = FakeWriter(), []
    publisher = make(writer, metrics, stored, max_events=3)
    for n in range(5):
        publisher.submit(entry(n))
    publisher.close()
    await publisher.run()
    assert writer.batches == [["evt-2", "evt-3", "evt-4"]]
    assert sample(metrics, "connector_dropped_events_total", reason="buffer_full") == 2


async def test_byte_bound_applies_too(metrics: Metrics) -> None:
    writer, stored = FakeWriter(), []
    publisher = make(writer, metrics, stored, max_bytes=250)
    for n in range(5):
        publisher.submit(entry(n, size=100))
    publisher.close()
    await publisher.run()
    assert writer.batches == [["evt-3", "evt-4"]]


async def test_the_batch_in_flight_counts_for_bytes_but_not_for_events(metrics: Metrics) -> None:
    """Memory is memory: the batch being written is held too. The event bound is about what waits
    behind it (so a large batch never makes the newest events the ones dropped)."""
    writer, stored = FakeWriter(), []
    writer.gate = asyncio.Event()
    publisher = make(writer, metrics, stored, max_bytes=250, max_events=1)
    task = asyncio.create_task(publisher.run())
    publisher.submit(entry(0, size=200))  # in flight
    await writer.started.wait()
    publisher.submit(entry(1, size=40))  # 240 held: fits
    publisher.submit(entry(2, size=40))  # 280 bytes and 2 waiting: evt-1, the oldest, goes
    assert publisher.buffered == 2
    writer.gate.set()
    publisher.close()
    await task
    assert writer.batches == [["evt-0"], ["evt-2"]]
    assert (
        metrics.registry.get_sample_value(
            "connector_dropped_events_total", {"reason": "buffer_full"}
        )
        == 1
    )


async def test_dropped_ids_are_forgotten_so_a_redelivery_is_stored(metrics: Metrics) -> None:
    writer, stored = FakeWriter(), []
    forgotten.clear()
    publisher = make(writer, metrics, stored, max_events=2)
    for n in range(3):
        publisher.submit(entry(n))  # evt-0 is dropped
    publisher.submit(entry(0))  # delivered again: it is not a duplicate any more
    publisher.close()
    await publisher.run()
    assert writer.batches == [["evt-2", "evt-0"]]
    assert forgotten == [1, 1]  # the pending-acks bookkeeping hears of both drops


async def test_redelivered_id_is_stored_once_but_acknowledged_again(metrics: Metrics) -> None:
    writer, stored = FakeWriter(), []
    publisher = make(writer, metrics, stored)
    publisher.submit(entry(1))
    publisher.submit(entry(1))
    publisher.submit(entry(2, event_id=None))
    publisher.submit(entry(3, event_id=None))
    publisher.close()
    await publisher.run()
    assert writer.batches == [["evt-1", None, None]]
    assert [e.event_id for batch in stored for e in batch] == ["evt-1", "evt-1", None, None]
    assert sample(metrics, "connector_duplicate_events_total") == 1


async def test_a_finished_run_forgets_its_ids(metrics: Metrics) -> None:
    writer, stored = FakeWriter(), []
    publisher = make(writer, metrics, stored)
    publisher.submit(entry(1))
    final = entry(2)
    final.final = True
    publisher.submit(final)
    publisher.submit(entry(1))  # the next run reuses evt-1: a new event
    publisher.close()
    await publisher.run()
    assert writer.batches == [["evt-1", "evt-2", "evt-1"]]


async def test_a_new_connection_forgets_the_ids_of_the_last(metrics: Metrics) -> None:
    writer, stored = FakeWriter(), []
    publisher = make(writer, metrics, stored)
    publisher.submit(entry(1))
    publisher.forget_ids()  # reconnected: a restarted engine numbers its events from 1 again
    publisher.submit(entry(1))
    publisher.close()
    await publisher.run()
    assert writer.batches == [["evt-1", "evt-1"]]
    assert sample(metrics, "connector_duplicate_events_total") == 0


async def test_a_dropped_original_lets_its_queued_redelivery_be_stored(metrics: Metrics) -> None:
    writer, stored = FakeWriter(), []
    forgotten.clear()
    publisher = make(writer, metrics, stored, max_events=3)
    publisher.submit(entry(0))
    publisher.submit(entry(1))
    publisher.submit(entry(0))  # a re-delivery, marked to write nothing
    publisher.submit(entry(2))  # over the bound: the original evt-0 is dropped
    publisher.close()
    await publisher.run()
    assert writer.batches == [["evt-1", "evt-0", "evt-2"]]  # evt-0 stored once, not lost
    assert forgotten == [1]  # the original's ack is forgotten; the re-delivery is acked
    assert [e.event_id for batch in stored for e in batch] == ["evt-1", "evt-0", "evt-2"]


async def test_abandon_ends_a_retry_loop(metrics: Metrics) -> None:
    writer, stored = FakeWriter(), []
    writer.failures = 10**9
    publisher = make(writer, metrics, stored)
    task = asyncio.create_task(publisher.run())
    publisher.submit(entry(1))
    await writer.started.wait()
    publisher.abandon()
    await task
    assert stored == []
    assert sample(metrics, "connector_dropped_events_total", reason="shutdown") == 1


async def test_a_write_that_hangs_past_the_deadline_is_counted_when_cancelled(
    metrics: Metrics,
) -> None:
    writer, stored = FakeWriter(), []
    writer.gate = asyncio.Event()  # never set: Redis takes the request and never answers
    publisher = make(writer, metrics, stored)
    task = asyncio.create_task(publisher.run())
    publisher.submit(entry(1))
    await writer.started.wait()
    publisher.submit(entry(2))
    publisher.abandon()
    task.cancel()  # what the shutdown drain does once its last second is over
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stored == []
    assert sample(metrics, "connector_dropped_events_total", reason="shutdown") == 2
    assert publisher.buffered == 0


def test_recent_ids_window() -> None:
    recent = RecentIds(2)
    assert not recent.check_and_add("a")
    assert recent.check_and_add("a")
    recent.check_and_add("b")
    recent.check_and_add("c")  # evicts "a"
    assert not recent.check_and_add("a")
    assert not RecentIds(0).check_and_add("x")


async def test_a_new_connection_does_not_match_old_redeliveries(metrics: Metrics) -> None:
    writer, stored = FakeWriter(), []
    publisher = make(writer, metrics, stored, max_events=3)
    publisher.submit(entry(0))
    publisher.submit(entry(0))  # a re-delivery on the old connection
    publisher.forget_ids()  # reconnected; the new engine run numbers from evt-0 again
    publisher.submit(entry(1))
    publisher.submit(entry(2))  # over the bound: the old evt-0 original is dropped
    publisher.close()
    await publisher.run()
    # The old re-delivery is not revived on behalf of the new connection's ids: the new
    # connection's events are stored as they came, the old evt-0 is lost (and counted).
    assert writer.batches == [["evt-1", "evt-2"]]
    assert sample(metrics, "connector_dropped_events_total", reason="buffer_full") == 1
