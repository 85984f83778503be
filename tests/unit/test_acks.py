"""Ack frames: one per stored batch, integer timestamps, kept while disconnected, end of run."""

from __future__ import annotations

import orjson

from connector.acks.acknowledger import Acknowledger, ImmediateGate
from connector.metrics import Metrics
from connector.streams.schema import Entry


class Link:
    def __init__(self) -> None:
        self.up = True
        self.frames: list[dict[str, object]] = []

    async def send(self, frame: bytes) -> bool:
        if not self.up:
            return False
        self.frames.append(orjson.loads(frame))
        return True


def entry(event_id: str | None, *, final: bool = False) -> Entry:
    return Entry("k", {}, "candle", event_id, 0.0, 1, final)


async def test_one_frame_names_every_id_of_a_batch() -> None:
    link, finals = Link(), []
    metrics = Metrics()
    acks = Acknowledger(link.send, metrics, enabled=True, on_final=lambda: finals.append(1))
    acks.expect(3)
    await ImmediateGate(acks).on_stored(
        [entry("evt-1"), entry(None), entry("evt-2"), entry("evt-3")]
    )
    assert len(link.frames) == 1
    frame = link.frames[0]
    assert frame["type"] == "event_ack"
    assert frame["events_processed"] == ["evt-1", "evt-2", "evt-3"]
    assert isinstance(frame["timestamp"], int)
    assert len(str(frame["correlation_id"])) == 36
    assert metrics.registry.get_sample_value("connector_pending_acks") == 0
    assert metrics.registry.get_sample_value("connector_ack_latency_seconds_count") == 3
    assert finals == []


async def test_batches_without_ids_send_nothing() -> None:
    link = Link()
    acks = Acknowledger(link.send, Metrics(), enabled=True, on_final=lambda: None)
    await acks.release([entry(None), entry(None)])
    assert link.frames == []


async def test_unsent_acks_wait_for_the_session_and_go_out_first() -> None:
    link = Link()
    link.up = False
    acks = Acknowledger(link.send, Metrics(), enabled=True, on_final=lambda: None)
    await acks.release([entry("evt-1")])
    await acks.release([entry("evt-2")])
    assert acks.unsent == 2
    link.up = True
    await acks.release([entry("evt-3")])
    assert [f["events_processed"] for f in link.frames] == [["evt-1", "evt-2", "evt-3"]]
    assert acks.unsent == 0


async def test_end_of_run_is_signalled_after_its_ack_is_sent() -> None:
    link, finals = Link(), []
    link.up = False
    acks = Acknowledger(link.send, Metrics(), enabled=True, on_final=lambda: finals.append(1))
    await acks.release([entry("evt-9", final=True)])
    assert finals == []
    link.up = True
    await acks.flush()
    assert finals == [1]
    assert link.frames[0]["events_processed"] == ["evt-9"]


async def test_disabled_acks_send_nothing_but_still_see_the_end() -> None:
    link, finals = Link(), []
    acks = Acknowledger(link.send, Metrics(), enabled=False, on_final=lambda: finals.append(1))
    await acks.release([entry("evt-1"), entry(None, final=True)])
    assert link.frames == []
    assert finals == [1]
