"""Redis stream ids (``<ms>-<seq>``), parsed and written in one place."""

from __future__ import annotations

__all__ = ["MAX_SEQ", "StreamId", "id_below", "id_text", "parse_id"]

StreamId = tuple[int, int]
MAX_SEQ = 2**64 - 1


def parse_id(value: bytes | str) -> StreamId:
    """``b"1700000000000-3"`` -> (1700000000000, 3). Raises ValueError for anything else."""
    text = value.decode("ascii") if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def id_text(value: StreamId) -> str:
    return f"{value[0]}-{value[1]}"


def id_below(value: StreamId) -> str:
    """The stream id just below ``value`` (a group created there delivers ``value`` next)."""
    ms, seq = value
    return f"{ms}-{seq - 1}" if seq > 0 else f"{max(ms - 1, 0)}-{MAX_SEQ if ms > 0 else 0}"
