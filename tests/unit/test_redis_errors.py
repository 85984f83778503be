"""Both shapes of a Redis error reply are read the same: hiredis keeps the code in the text,
redis-py moves it into the exception's type (and ``status_code``)."""

from __future__ import annotations

import pytest
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from connector.wire.errors import (
    error_code,
    is_busygroup,
    is_id_too_small,
    is_redirect,
    is_transient,
    needs_reconnect,
)

REPLIES = [
    ("OOM command not allowed when used memory > 'maxmemory'.", "OOM", True, False),
    ("READONLY You can't write against a read only replica.", "READONLY", True, True),
    ("NOPERM User app has no permissions to run the 'xadd' command", "NOPERM", True, False),
    ("TRYAGAIN Multiple keys request during rehashing of slot", "TRYAGAIN", True, False),
    ("MASTERDOWN Link with MASTER is down", "MASTERDOWN", True, True),
    ("LOADING Redis is loading the dataset in memory", "LOADING", True, True),
    ("CLUSTERDOWN The cluster is down", "CLUSTERDOWN", True, False),
    ("MOVED 3999 127.0.0.1:6381", "MOVED", True, False),
    ("ASK 3999 127.0.0.1:6381", "ASK", True, False),
    ("WRONGPASS invalid username-password pair or user is disabled.", "WRONGPASS", True, True),
    ("NOAUTH Authentication required.", "NOAUTH", True, True),
    ("EXECABORT Transaction discarded because of previous errors.", "EXECABORT", False, True),
    ("BUSYGROUP Consumer Group name already exists", "BUSYGROUP", False, False),
    (
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "WRONGTYPE",
        False,
        False,
    ),
    (
        "ERR The ID specified in XADD is equal or smaller than the target stream top item",
        "ERR",
        False,
        False,
    ),
]


@pytest.mark.parametrize(("text", "code", "transient", "reconnect"), REPLIES)
@pytest.mark.parametrize("shape", ["own connection (hiredis)", "redis-py"])
def test_both_shapes_give_the_same_reading(
    shape: str, text: str, code: str, transient: bool, reconnect: bool
) -> None:
    reply = ResponseError(text) if shape.startswith("own") else BaseParser.parse_error(text)
    assert error_code(reply) == code
    assert is_transient(reply) is transient
    assert needs_reconnect(reply) is reconnect
    assert is_redirect(reply) is (code in ("MOVED", "ASK"))
    assert is_busygroup(reply) is (code == "BUSYGROUP")
    assert is_id_too_small(reply) is ("equal or smaller" in text)


def test_what_is_not_an_error_reply_has_no_code() -> None:
    assert error_code(RedisConnectionError("Connection reset by peer")) is None
    assert error_code(TimeoutError()) is None
    assert error_code(b"OK") is None
    assert not is_transient(None)
