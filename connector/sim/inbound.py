"""Classify what a client sends, with the real server's strictness about ``event_ack``.

The server silently drops an ack that misses ``correlation_id``, ``events_processed`` or
``timestamp``, or whose timestamp is not an integer (a float, a bool, a string). Reproducing that
strictness is the point: a client that sends such acks stalls a backtest, and tests must see it.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass(frozen=True, slots=True)
class Pong:
    """A JSON ``{"type":"pong"}`` answering a JSON ping."""


@dataclass(frozen=True, slots=True)
class Ack:
    correlation_id: str
    ids: list[str]
    timestamp: int


@dataclass(frozen=True, slots=True)
class RejectedAckFrame:
    """An ``event_ack`` the server drops; ``reason`` says why."""

    reason: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """Anything else: only logged by the server, never answered."""

    reason: str


ClientFrame = Pong | Ack | RejectedAckFrame | Ignored


def parse_client_frame(message: str | bytes) -> ClientFrame:
    if isinstance(message, bytes):
        return Ignored("binary frame")
    try:
        frame = orjson.loads(message)
    except orjson.JSONDecodeError:
        return Ignored("invalid JSON")
    if not isinstance(frame, dict):
        return Ignored("not a JSON object")
    frame_type = frame.get("type")
    if frame_type == "pong":
        return Pong()
    if frame_type == "event_ack":
        return _parse_ack(frame)
    return Ignored(f"unknown type {frame_type!r}")


def _parse_ack(frame: dict[str, object]) -> Ack | RejectedAckFrame:
    missing = [
        name for name in ("correlation_id", "events_processed", "timestamp") if name not in frame
    ]
    if missing:
        return RejectedAckFrame(f"missing {', '.join(missing)}")
    correlation_id = frame["correlation_id"]
    ids = frame["events_processed"]
    timestamp = frame["timestamp"]
    if not isinstance(correlation_id, str):
        return RejectedAckFrame("correlation_id is not a string")
    if not isinstance(ids, list) or not all(isinstance(item, str) for item in ids):
        return RejectedAckFrame("events_processed is not a list of strings")
    # bool is an int subclass in Python, but `true` is not an integer on the wire.
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        return RejectedAckFrame(f"timestamp is not an integer ({type(timestamp).__name__})")
    return Ack(correlation_id, ids, timestamp)
