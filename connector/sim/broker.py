"""The upstream broker link the real gateway reports on: disconnects, staleness and recovery.

The sequence matches the server: ``connection/BROKER_DISCONNECTED``, then ``data_staleness/STALE``
for the affected symbols; later ``BROKER_RECONNECTED`` with an integer ``gap_duration_ms``, and
``data_staleness/FRESH`` for each symbol just before its first new tick. Nothing missed during
the gap is replayed (the live feed skips stale symbols while the link is down).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from connector.sim.frames import FrameFactory, Outgoing


class Broker:
    """Broker-link state shared by the control surface and the feeds."""

    def __init__(
        self,
        frames: FrameFactory,
        emit: Callable[[Outgoing], None],
        symbols: Iterable[str],
        provider: str,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._frames = frames
        self._emit = emit
        self._symbols = tuple(symbols)
        self._provider = provider
        self._monotonic = monotonic
        self.stale: set[str] = set()
        self._fresh_pending: set[str] = set()
        self._down_since: float | None = None
        self._stale_since: str | None = None
        self.resumed = asyncio.Event()  # set while at least one symbol can tick
        self.resumed.set()

    def disconnect(self, symbols: Iterable[str] | None = None) -> list[str]:
        chosen = list(symbols) if symbols is not None else list(self._symbols)
        if self._down_since is None:
            self._down_since = self._monotonic()
            self._stale_since = self._frames.clock.now()
        self._emit(
            self._frames.connection(
                "BROKER_DISCONNECTED", broker=self._provider, error="connection reset by broker"
            )
        )
        self.stale.update(chosen)
        self._fresh_pending.difference_update(chosen)
        self._emit(
            self._frames.staleness(
                "STALE", chosen, stale_since=self._stale_since, broker=self._provider
            )
        )
        if all(symbol in self.stale for symbol in self._symbols):
            self.resumed.clear()
        return chosen

    def reconnect(self) -> int:
        """Report the link back; returns the gap in whole milliseconds."""
        started = self._down_since
        gap_ms = 0 if started is None else int((self._monotonic() - started) * 1000)
        self._down_since = None
        self._stale_since = None
        self._emit(
            self._frames.connection(
                "BROKER_RECONNECTED", broker=self._provider, gap_duration_ms=gap_ms
            )
        )
        self._fresh_pending.update(self.stale)
        self.stale.clear()
        self.resumed.set()
        return gap_ms

    def connection_failed(self) -> None:
        self._emit(
            self._frames.connection(
                "BROKER_CONNECTION_FAILED",
                broker=self._provider,
                error="broker connection failed after retries",
            )
        )

    def is_stale(self, symbol: str) -> bool:
        return symbol in self.stale

    def before_tick(self, symbol: str) -> Outgoing | None:
        """The FRESH frame owed for ``symbol`` now that it ticks again, if any."""
        if symbol in self._fresh_pending:
            self._fresh_pending.discard(symbol)
            return self._frames.staleness("FRESH", [symbol], broker=self._provider)
        return None
