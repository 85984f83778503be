"""The live feed: quotes and candles per symbol, with no acknowledgement to wait for.

Three pacings:

* ``rate == 0``: the real mock feed, every ``tick_interval`` (2 s) a quote and a candle per symbol;
* ``0 < rate < inf``: ``rate`` market frames per second in total, round-robin over the symbols
  (quote then candle for each);
* ``rate == inf``: burst, as fast as the simulator can; with ``backpressure`` it waits for room in
  every client's queue instead of letting frames drop (a benchmark aid, not server behaviour).

``count`` bounds the total number of market frames; the run then ends with outcome ``"sent"``.
Symbols the broker link reports stale are skipped until it reconnects (gaps are not replayed).

Orders placed over REST behave as on the gateway's mock provider: ORDER_CREATED at once, the fill
``live_fill_delay`` (0.5 s) later at the symbol's current price. Limit and stop orders fill when
a new bar's price reaches them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from decimal import Decimal

from connector.sim.broker import Broker
from connector.sim.clients import Hub
from connector.sim.config import SimConfig
from connector.sim.desk import Desk, OrderEvent
from connector.sim.frames import FrameFactory, Outgoing
from connector.sim.market import Bar, BarSource, quote_from_last
from connector.sim.orders import Order
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
        desk: Desk,
    ) -> None:
        self._config = config
        self._desk = desk
        self._fill_timers: set[asyncio.TimerHandle] = set()
        self._frames = frames
        self._hub = hub
        self._record = record
        self._source = source
        self._broker = broker
        self._with_id = config.id_field == "id"  # documentation-style servers id live frames too
        self._emission_time = config.live_bar_time == "emission"
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

    # The order flow (what the desk asks of the run) ------------------------------------------

    def order_clock(self) -> tuple[int | None, bool]:
        return None, False  # no bars to count, nothing waits for acks

    def closed_reason(self) -> str | None:
        return None

    def sim_time(self) -> str:
        return self._frames.clock.now()

    def order_accepted(self, order: Order, events: list[OrderEvent]) -> None:
        self.order_events(events)
        if order.request.order_type == "MARKET":
            loop = asyncio.get_running_loop()
            timer = loop.call_later(self._config.live_fill_delay, self._fill_market, order.id)
            self._fill_timers.add(timer)

    def order_events(self, events: list[OrderEvent]) -> None:
        live_event = self._frames.live_event
        for event in events:
            self._hub.emit(live_event(event.kind, event.body, event.symbol))

    def stop(self) -> None:
        """Forget fills not yet due (the run is over)."""
        for timer in self._fill_timers:
            timer.cancel()
        self._fill_timers.clear()

    def _fill_market(self, order_id: str) -> None:
        self._fill_timers = {timer for timer in self._fill_timers if not timer.cancelled()}
        symbol = self._desk.order_symbol(order_id)
        if symbol is not None:
            self.order_events(self._desk.fill_market(order_id, self._price(symbol)))

    def _price(self, symbol: str) -> Decimal:
        """The symbol's current price: its last bar's close, or where the source stands."""
        bar = self._bars.get(symbol)
        return Decimal(bar.close if bar is not None else self._source.current_price(symbol))

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
            now_ns = frames.clock.now_ns()
            bar = self._bars.get(symbol) or self._new_bar(symbol, now_ns)
            # The gateway's mock stamps a candle with the instant it sends it, to the nanosecond.
            bar_time = frames.clock.format_ns(now_ns, 9) if self._emission_time else None
            out = frames.candle(bar, with_id=self._with_id, sort=False, bar_time=bar_time)
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
        fills = self._desk.on_live_price(symbol, bar.close)
        if fills:
            self.order_events(fills)
        return bar

    def _quote(self, symbol: str) -> Outgoing:
        clock = self._frames.clock
        now_ns = clock.now_ns()
        bar = self._new_bar(symbol, now_ns)
        width = FRACTION_WIDTHS[self._quotes % len(FRACTION_WIDTHS)]
        self._quotes += 1
        return self._frames.quote(
            quote_from_last(symbol, bar.close, self._config.decimal_scale),
            clock.format_ns(now_ns, width),
            with_id=self._with_id,
            sort=False,
        )
