"""Which servers the toolkit reads with one reader per node: read from a HELLO reply."""

from __future__ import annotations

from typing import Any

import pytest

from connector.consumer.group import _whole_writes


@pytest.mark.parametrize(
    ("hello", "whole"),
    [
        ({b"server": b"redis", b"version": b"7.0.15", b"proto": 2}, False),
        ({b"server": b"redis", b"version": b"6.2.14"}, False),
        ({b"server": b"redis", b"version": b"7.2.0"}, True),
        ({b"server": b"redis", b"version": b"8.2.3"}, True),
        ({b"server": b"redis", b"version": b"10.0.0"}, True),
        ({"server": "valkey", "version": "9.1.2"}, True),  # text keys (decode_responses)
        ([b"server", b"redis", b"version", b"7.4.1", b"proto", 2], True),  # RESP2: a flat list
        ([b"server", b"fakeredis", b"version", b"2.41.0"], False),
        ({b"server": b"redis", b"version": b"7.2-rc1"}, False),  # no number: the safe layout
        ({b"server": b"redis"}, False),
        ({b"version": 7}, False),
        ([b"server"], False),
        (None, False),
        (b"OK", False),
    ],
)
def test_whole_writes_from_hello(hello: Any, whole: bool) -> None:
    assert _whole_writes(hello) is whole
