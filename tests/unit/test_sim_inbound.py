"""Client frames are classified with the real server's strictness about event_ack."""

from __future__ import annotations

import pytest

from connector.sim.inbound import Ack, Ignored, Pong, RejectedAckFrame, parse_client_frame
from connector.sim.record import AckRecord, Record


def test_pong() -> None:
    assert parse_client_frame('{"type":"pong"}') == Pong()


def test_valid_ack() -> None:
    frame = parse_client_frame(
        '{"type":"event_ack","correlation_id":"c-1","events_processed":["evt-5","evt-6"],'
        '"timestamp":1700000000000}'
    )
    assert frame == Ack("c-1", ["evt-5", "evt-6"], 1_700_000_000_000)


def test_empty_ack_is_valid_and_changes_nothing() -> None:
    frame = parse_client_frame(
        '{"type":"event_ack","correlation_id":"c","events_processed":[],"timestamp":1}'
    )
    assert frame == Ack("c", [], 1)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"type":"event_ack","events_processed":["e"],"timestamp":1}', "correlation_id"),
        ('{"type":"event_ack","correlation_id":"c","timestamp":1}', "events_processed"),
        ('{"type":"event_ack","correlation_id":"c","events_processed":["e"]}', "timestamp"),
        (
            '{"type":"event_ack","correlation_id":"c","events_processed":["e"],"timestamp":1.5}',
            "float",
        ),
        (
            '{"type":"event_ack","correlation_id":"c","events_processed":["e"],"timestamp":true}',
            "bool",
        ),
        (
            '{"type":"event_ack","correlation_id":"c","events_processed":["e"],"timestamp":"1"}',
            "str",
        ),
        ('{"type":"event_ack","correlation_id":"c","events_processed":"e","timestamp":1}', "list"),
        ('{"type":"event_ack","correlation_id":"c","events_processed":[5],"timestamp":1}', "list"),
        (
            '{"type":"event_ack","correlation_id":7,"events_processed":["e"],"timestamp":1}',
            "correlation_id",
        ),
    ],
)
def test_bad_acks_are_rejected_with_a_reason(text: str, reason: str) -> None:
    frame = parse_client_frame(text)
    assert isinstance(frame, RejectedAckFrame)
    assert reason in frame.reason


@pytest.mark.parametrize(
    "message", ["not json", "[1,2]", '{"type":"subscribe"}', '{"no":"type"}', b"\x00\x01"]
)
def test_anything_else_is_ignored(message: str | bytes) -> None:
    assert isinstance(parse_client_frame(message), Ignored)


def test_record_queries() -> None:
    record = Record()
    record.acks.append(AckRecord(1.0, 1.0, 1, "a", ["evt-1", "evt-2"], 1))
    record.acks.append(AckRecord(2.0, 2.0, 2, "b", ["evt-2", "evt-3"], 2))
    assert record.acked_ids() == {"evt-1", "evt-2", "evt-3"}
    assert record.first_ack_time("evt-2") == 1.0
    assert record.first_ack_time("evt-9") is None
    summary = record.to_dict()
    assert summary["counts"]["acks"] == 2
    assert summary["counts"]["acked_ids"] == 3
