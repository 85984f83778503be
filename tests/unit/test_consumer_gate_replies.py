"""The consumer gate reads group state in every shape it arrives in: the raw flat list of its own
connection (RESP2), and through redis-py on a cluster a RESP3 map with bytes keys (redis-py 8
speaks RESP3 and has no parser for a raw XINFO)."""

from __future__ import annotations

from connector.acks.consumer_gate import _REDIS_PY_OPTIONS, _fields


def test_a_group_row_as_a_flat_list_and_as_a_bytes_keyed_map_read_the_same() -> None:
    flat = [b"name", b"risk", b"consumers", 2, b"pending", 1, b"last-delivered-id", b"5-0"]
    as_map = {b"name": b"risk", b"consumers": 2, b"pending": 1, b"last-delivered-id": b"5-0"}
    parsed = {"name": b"risk", "consumers": 2, "pending": 1, "last-delivered-id": b"5-0"}
    assert _fields(flat) == _fields(as_map) == _fields(parsed) == parsed


def test_a_pending_range_is_asked_for_in_detail_through_redis_py() -> None:
    """Without parse_detail redis-py reads an XPENDING range as the summary form and fails."""
    assert _REDIS_PY_OPTIONS["XPENDING"] == {"parse_detail": True}
