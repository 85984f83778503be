"""The live feed: quotes and candles per symbol, with no acknowledgement to wait for.

Three pacings:

* ``rate == 0``: the real mock feed, every ``tick_interval`` (2 s) a quote and a candle per symbol;
* ``0 < rate < inf``: ``rate`` market frames per second in total, round-robin over the symbols
  (quote then candle for each);
* ``rate == inf``: burst, as fast as the simulator can; with ``backpressure`` it waits for room in
  every client's queue instead of letting frames drop (a benchmark aid, not server behaviour).

``count`` bounds the total number of market frames; the run then ends with outcome ``"sent"``.
Symbols the broker link reports stale are skipped until it reconnects (gaps are not replayed).
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from connector.sim.broker import Broker
from connector.sim.clients import Hub
from connector.sim.config import SimConfig
from connector.sim.frames import FrameFactory, Outgoing
from connector.sim.market import Bar, BarSource, quote_from_last
from connector.sim.record import Outcome, Record
from connector.sim.timefmt import FRACTION_WIDTHS, NANOS

log = logging.getLogger(__name__)

#: Frames emitted between yields to the event loop (so writers and readers get to run).
_CHUNK = 256


class LiveFeed:
    """Emits market frames until ``count`` is reached (or forever)."""

    def __init__(
        self,
        config: SimConfig,
        frames: FrameFactory,
        hub: Hub,
        record: Record,
        source: BarSource,
        broker: Broker,
    ) -> None:
        self._config = config
        self._frames = frames
        self._hub = hub
        self._record = record
        self._source = source
        self._broker = broker
        self._with_id = config.id_field == "id"  # documentation-style servers id live frames too
        self._timeframe_s = config.timeframe_seconds
        self._bars: dict[str, Bar] = {}
        self._emitted = 0
        self._quotes = 0
        self._limit = config.count
        self._slots = itertools.cycle(
            [(symbol, kind) for symbol in config.symbols for kind in ("quote", "candle")]
        )
        self._slot_count = 2 * len(config.symbols)

    @property
    def done(self) -> bool:
        return self._limit is not None and self._emitted >= self._limit

    async def run(self) -> Outcome:
        config = self._config
        if config.wait_for_client:
            await self._hub.wait_clients(config.min_clients)
        log.info(
            "live feed starting: rate=%s count=%s symbols=%s",
            config.rate,
            config.count,
            config.symbols,
        )
        if config.rate == 0:
            await self._mock_pacing()
        elif config.burst:
            await self._burst()
        else:
            await self._paced(config.rate)
        return "sent"

    # Pacings -------------------------------------------------------------------------------

    async def _mock_pacing(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self._config.tick_interval
        next_tick = loop.time()
        while True:
            for symbol in self._config.symbols:
                if self.done:
                    return
                if not self._broker.is_stale(symbol):
                    self._emit(symbol, "quote")
                    if not self.done:
                        self._emit(symbol, "candle")
            if self.done:
                return
            next_tick += interval
            await asyncio.sleep(max(0.0, next_tick - loop.time()))

    async def _paced(self, rate: float) -> None:
        loop = asyncio.get_running_loop()
        started, sent = loop.time(), 0
        while not self.done:
            due = int((loop.time() - started) * rate) + 1 - sent
            if due <= 0:
                await asyncio.sleep(max(0.0, started + sent / rate - loop.time()))
                continue
            for _ in range(min(due, _CHUNK)):
                if self.done:
                    break
                if not self._emit_next():
                    # Every symbol is stale: wait for the broker, then restart the schedule
                    # rather than catching up (the gap is not replayed).
                    await self._broker.resumed.wait()
                    started, sent = loop.time(), 0
                    break
                sent += 1
            await asyncio.sleep(0)

    async def _burst(self) -> None:
        chunk = min(_CHUNK, self._config.queue_size)
        backpressure = self._config.backpressure
        while not self.done:
            if backpressure:
                await self._hub.wait_for_space(chunk)
            for _ in range(chunk):
                if self.done:
                    break
                if not self._emit_next():
                    await self._broker.resumed.wait()
                    break
            await asyncio.sleep(0)

    # Frames --------------------------------------------------------------------------------

    def _emit_next(self) -> bool:
        """Emit the next frame of the round-robin; False when every symbol is stale."""
        for _ in range(self._slot_count):
            symbol, kind = next(self._slots)
            if not self._broker.is_stale(symbol):
                self._emit(symbol, kind)
                return True
        return False

    def _emit(self, symbol: str, kind: str) -> None:
        hub, frames = self._hub, self._frames
        fresh = self._broker.before_tick(symbol)
        if fresh is not None:
            hub.emit(fresh)
        if kind == "quote":
            out = self._quote(symbol)
        else:
            bar = self._bars.get(symbol) or self._new_bar(symbol, frames.clock.now_ns())
            out = frames.candle(bar, with_id=self._with_id, sort=False)
        hub.emit(out)
        self._emitted += 1
        self._record.market_frames = self._emitted
        every = self._config.malformed_every
        if every and self._emitted % every == 0:
            hub.emit(frames.malformed(symbol, with_id=self._with_id))

    def _new_bar(self, symbol: str, now_ns: int) -> Bar:
        """The symbol's next bar: a quote moves the walk, the candle that follows reports it."""
        span = self._timeframe_s
        bar = self._source.next_bar(symbol, now_ns // NANOS // span * span)
        self._bars[symbol] = bar
        return bar

    def _quote(self, symbol: str) -> Outgoing:
        clock = self._frames.clock
        now_ns = clock.now_ns()
        bar = self._new_bar(symbol, now_ns)
        width = FRACTION_WIDTHS[self._quotes % len(FRACTION_WIDTHS)]
        self._quotes += 1
        return self._frames.quote(
            quote_from_last(symbol, bar.close),
            clock.format_ns(now_ns, width),
            with_id=self._with_id,
            sort=False,
        )
