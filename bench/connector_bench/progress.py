"""How far a client got in storing events: Redis' own count of entries added to the streams.

``XINFO STREAM`` reports ``entries-added`` (every entry ever added, trimming or not: Redis >= 7)
and ``last-generated-id``, whose millisecond part is when the last entry was stored (the
connector assigns ids from its clock at write time; ``*`` ids come from Redis' clock). Polling
costs one pipelined round trip per interval, nothing on the client being measured.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis import Redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisError

from connector_bench.procs import BenchError


def id_millis(entry_id: bytes | str | None) -> int | None:
    """The millisecond part of a stream id (``b"1700000000123-4"`` -> 1700000000123)."""
    if entry_id is None:
        return None
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    head = text.partition("-")[0]
    return int(head) if head.isdigit() and int(head) > 0 else None


@dataclass(frozen=True, slots=True)
class Stored:
    """Entries added over the watched streams, and the time of the newest one (wall, s)."""

    added: int
    last_wall: float | None


def summarize_infos(infos: Sequence[Any]) -> Stored:
    """Fold the XINFO STREAM answers of a pipeline (errors = the stream does not exist yet)."""
    added = 0
    last_ms: int | None = None
    for info in infos:
        if not isinstance(info, dict):
            continue
        added += int(info.get("entries-added") or 0)
        millis = id_millis(info.get("last-generated-id"))
        if millis is not None and (last_ms is None or millis > last_ms):
            last_ms = millis
    return Stored(added, None if last_ms is None else last_ms / 1000.0)


class StreamProgress:
    """Reads the progress of a set of stream keys (on a single node, or a cluster: one
    non-transactional pipeline either way; redis-py splits a cluster's per node)."""

    def __init__(self, redis_url: str, keys: Sequence[str], *, cluster: bool = False) -> None:
        self._redis: Redis | RedisCluster = (
            RedisCluster.from_url(redis_url, socket_timeout=10)
            if cluster
            else Redis.from_url(redis_url, socket_timeout=10)
        )
        self._keys = list(keys)

    def infos(self, keys: Sequence[str]) -> list[Any]:
        """``XINFO STREAM`` of each key (an exception in place of a missing stream)."""
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.xinfo_stream(key)
        return list(pipe.execute(raise_on_error=False))

    def read(self) -> Stored:
        return summarize_infos(self.infos(self._keys))

    def memory_usage(self, key: str) -> int | None:
        """``MEMORY USAGE key SAMPLES 0`` (every element counted), None if unavailable."""
        try:
            value = self._redis.memory_usage(key, samples=0)
        except RedisError:
            return None
        return int(value) if isinstance(value, int) else None

    def close(self) -> None:
        self._redis.close()


class GroupedProgress:
    """Progress of several groups of keys (one per connector prefix), read in one pipeline.

    ``read`` gives the total (for :func:`wait_stored`) and keeps each group's figure in
    ``groups``.
    """

    def __init__(self, progress: StreamProgress, groups: Mapping[str, Sequence[str]]) -> None:
        self._progress = progress
        self._groups = {name: list(keys) for name, keys in groups.items()}
        self.groups: dict[str, Stored] = {}

    def read(self) -> Stored:
        keys = [key for group in self._groups.values() for key in group]
        infos = self._progress.infos(keys)
        at = 0
        for name, group in self._groups.items():
            self.groups[name] = summarize_infos(infos[at : at + len(group)])
            at += len(group)
        return total_stored(self.groups.values())


def total_stored(parts: Iterable[Stored]) -> Stored:
    """Entries added over every part; the newest entry time of all."""
    added = 0
    last: float | None = None
    for part in parts:
        added += part.added
        if part.last_wall is not None and (last is None or part.last_wall > last):
            last = part.last_wall
    return Stored(added, last)


class Progress(Protocol):
    def read(self) -> Stored: ...


@dataclass(frozen=True, slots=True)
class WaitOutcome:
    stored: Stored
    complete: bool
    reason: str


def wait_stored(
    progress: Progress,
    expected: int,
    *,
    first_timeout: float,
    stall_timeout: float,
    interval: float = 0.02,
    alive: Callable[[], bool] = lambda: True,
    on_poll: Callable[[Stored], None] | None = None,
) -> WaitOutcome:
    """Poll until ``expected`` entries are stored, progress stalls, or the client dies.

    Raises BenchError when nothing at all arrives within ``first_timeout``.
    """
    started = last_change = time.monotonic()
    previous = -1
    while True:
        try:
            stored = progress.read()
        except RedisError as exc:
            raise BenchError(f"cannot read progress from Redis: {exc}") from None
        if on_poll is not None:
            on_poll(stored)
        now = time.monotonic()
        if stored.added >= expected:
            return WaitOutcome(stored, True, "all stored")
        if stored.added != previous:
            previous, last_change = stored.added, now
        if stored.added == 0 and now - started > first_timeout:
            raise BenchError(f"nothing was stored within {first_timeout:g} s")
        if stored.added > 0 and now - last_change > stall_timeout:
            return WaitOutcome(stored, False, f"no progress for {stall_timeout:g} s")
        if not alive():
            # One last look: the final batch may have landed just before the exit.
            stored = progress.read()
            return WaitOutcome(stored, stored.added >= expected, "the client exited")
        time.sleep(interval)
