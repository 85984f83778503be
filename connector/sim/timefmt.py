"""ISO-8601 UTC timestamps as the server writes them: ``Z`` suffix, 0/3/6/9 fractional digits.

Formatting a timestamp is on the live feed's hot path (every frame carries one), so the
date-and-seconds prefix is cached per second and only the fraction is formatted each time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache

NANOS = 1_000_000_000

#: Simulated time of the first backtest bar (the bar start of step 0).
SIM_EPOCH_S = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())

#: The fractional-digit widths the protocol allows, cycled through so clients' parsers see all.
FRACTION_WIDTHS = (0, 3, 6, 9)


def _prefix(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


class IsoClock:
    """Formats epoch nanoseconds; ``now()`` reads the injected wall clock."""

    __slots__ = ("_cached_prefix", "_cached_second", "_ns")

    def __init__(self, ns_clock: Callable[[], int] = time.time_ns) -> None:
        self._ns = ns_clock
        self._cached_second = -1
        self._cached_prefix = ""

    def now_ns(self) -> int:
        return self._ns()

    def now(self) -> str:
        """The wall clock with nine fractional digits: the frames' top-level ``timestamp``."""
        return self.format_ns(self._ns(), 9)

    def format_ns(self, ns: int, width: int = 9) -> str:
        seconds, fraction = divmod(ns, NANOS)
        if seconds != self._cached_second:
            self._cached_second = seconds
            self._cached_prefix = _prefix(seconds)
        if width == 0:
            return f"{self._cached_prefix}Z"
        digits = f"{fraction:09d}"[:width]
        return f"{self._cached_prefix}.{digits}Z"


@lru_cache(maxsize=4096)
def iso_seconds(seconds: int) -> str:
    """Whole-second timestamp, as used for bar starts (cached: live bars share their minute)."""
    return f"{_prefix(seconds)}Z"


def parse_iso_seconds(text: str) -> int:
    """Epoch seconds of an ISO-8601 timestamp (fractions dropped); used to read CSV data."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())
