"""The backtest engine: one simulation step at a time, advanced only by acknowledgements.

Rules reproduced from the real engine: a step is released when every one of its ids has been
acknowledged (over any number of ack frames, in any order, from any client); each step waits
``step_timeout`` and then moves on; ``halt_after_timeouts`` consecutive timeouts halt the run
(``halt_before_first_ack`` until the first good ack). Frames emitted while nobody listens are
never re-sent. A run that ends cleanly sends ``backtest_complete`` with an id and waits for its
ack; a halted run sends one without an id, as the gateway does when its engine gives up. Either
way the sockets stay open: clients leave by themselves.

Orders placed over REST are stepped in between the bars, never into a step already waiting:

* their ORDER_CREATED (and any ORDER_CANCELLED) frames form an ``orders`` step of their own, sent
  as soon as the step in flight is released (the engine emits one step at a time, and a step's
  ids are fixed when it is emitted);
* an order fills at the open of bar *last emitted bar + 1* (so an order placed while bar *t* is
  waiting for acks fills at bar *t + 1*); the fills of a bar form a ``fills`` step (order, trade,
  account, position per fill) sent before that bar's candles, stamped with its start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from decimal import Decimal

from connector.sim.broker import Broker
from connector.sim.clients import Hub
from connector.sim.config import SimConfig
from connector.sim.desk import Desk, OrderEvent
from connector.sim.frames import FrameFactory, Outgoing
from connector.sim.market import Bar, BarSource, quote_from_last
from connector.sim.orders import Order
from connector.sim.record import Outcome, Record, StepRecord
from connector.sim.timefmt import FRACTION_WIDTHS, NANOS, SIM_EPOCH_S, iso_seconds

log = logging.getLogger(__name__)

#: Fraction of a second added to simulated quote times, cut to 0/3/6/9 digits in rotation.
_QUOTE_FRACTION_NS = 123_456_789


class Backtest:
    """Runs the configured number of steps against whoever is connected."""

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
        self._frames = frames
        self._hub = hub
        self._record = record
        self._source = source
        self._broker = broker
        self._desk = desk
        self._pending: set[str] = set()
        self._released = asyncio.Event()
        self._good_ack_seen = False
        self._consecutive_timeouts = 0
        self._quotes_sent = 0
        self._synthetic_fills = 0
        self._queued: list[OrderEvent] = []  # order events waiting for the step in flight
        self._last_bar: int | None = None
        self._last_bar_start = SIM_EPOCH_S
        self._over = False

    @property
    def pending_ids(self) -> frozenset[str]:
        """Ids the engine still waits for before it releases the current step."""
        return frozenset(self._pending)

    # Acknowledgements ----------------------------------------------------------------------

    def on_ack(self, ids: list[str]) -> None:
        """Release ids of the current step; unknown, stale and duplicate ids change nothing."""
        pending = self._pending
        if not pending:
            return
        hit = False
        for event_id in ids:
            if event_id in pending:
                pending.discard(event_id)
                hit = True
        if hit:
            self._good_ack_seen = True
            if not pending:
                self._released.set()

    # The run -------------------------------------------------------------------------------

    # The order flow (what the desk asks of the run) ------------------------------------------

    def order_clock(self) -> tuple[int | None, bool]:
        return self._last_bar, bool(self._pending)

    def closed_reason(self) -> str | None:
        return "the backtest is over" if self._over else None

    def sim_time(self) -> str:
        return iso_seconds(self._last_bar_start)

    def order_accepted(self, order: Order, events: list[OrderEvent]) -> None:
        self.order_events(events)

    def order_events(self, events: list[OrderEvent]) -> None:
        # Never into the step in flight: its ids were fixed when it was emitted.
        self._queued.extend(events)

    # The run -------------------------------------------------------------------------------

    async def run(self) -> Outcome:
        config = self._config
        if config.wait_for_client:
            await self._hub.wait_clients(config.min_clients)
        log.info("backtest starting: %d steps of %s", config.steps, config.symbols)
        replayed = await self._replay()
        self._over = True
        after_last = 0 if self._last_bar is None else self._last_bar + 1
        # Orders placed during the last bar are announced, but no bar is left to fill them.
        if not replayed or not await self._orders_step(after_last):
            self._halt()
            return "halted"
        await self._complete()
        return "completed"

    async def _replay(self) -> bool:
        """Every bar with the order and fill steps before it; False when the run halted."""
        config = self._config
        for index in range(config.steps):
            bars = self._source.step(index, SIM_EPOCH_S + index * config.timeframe_seconds)
            if bars is None:
                log.info("data file exhausted after %d steps", index)
                break
            if not await self._before_bar(index, bars):
                return False
            step = self._begin_step(index, self._build_step(index, bars), "bar")
            self._bar_emitted(index, bars)
            if not await self._finish_step(step):
                return False
        return True

    async def _before_bar(self, index: int, bars: Sequence[Bar]) -> bool:
        """Announce queued order events, then fill what bar ``index`` fills, until neither is left.

        Loops because orders keep arriving while these steps wait for their acks: an order
        placed now still fills at this bar, whose candles are not out yet.
        """
        while True:
            if not await self._orders_step(index):
                return False
            events = self._desk.fills_for_bar(index, bars)
            if not events:
                return True
            if not await self._finish_step(self._begin_step(index, self._encode(events), "fills")):
                return False

    async def _orders_step(self, index: int) -> bool:
        """Queued order events as steps of their own; False when the run must halt."""
        while self._queued:
            events, self._queued = self._queued, []
            if not await self._finish_step(self._begin_step(index, self._encode(events), "orders")):
                return False
        return True

    def _bar_emitted(self, index: int, bars: Sequence[Bar]) -> None:
        # From now on new orders fill at the next bar, and P&L is measured at these closes.
        self._last_bar = index
        self._last_bar_start = bars[0].start
        self._desk.mark(bars)

    def _encode(self, events: list[OrderEvent]) -> list[Outgoing]:
        engine_event = self._frames.engine_event
        return [engine_event(event.kind, event.body, event.symbol) for event in events]

    def _halt(self) -> None:
        """Give up like the gateway: an id-less ``backtest_complete``; the sockets stay open."""
        self._record.halted = True
        self._queued = []
        log.warning("backtest halted after %d consecutive timeouts", self._consecutive_timeouts)
        self._hub.emit(self._frames.backtest_complete(with_id=False))
        self._record.changed()

    def _build_step(self, index: int, bars: list[Bar]) -> list[Outgoing]:
        config = self._config
        frames = self._frames
        step: list[Outgoing] = []
        for bar in bars:
            fresh = self._broker.before_tick(bar.symbol)
            if fresh is not None:
                step.append(fresh)
            step.append(frames.candle(bar))
        if config.backtest_quotes:
            step.extend(self._quote(bar) for bar in bars)
        self._record.market_frames += len(bars) * (2 if config.backtest_quotes else 1)
        nth = index + 1
        if config.fill_every and nth % config.fill_every == 0:
            bar = bars[(nth // config.fill_every - 1) % len(bars)]
            step.extend(self._encode(self._synthetic_fill(bar, index)))
        if config.other_every and nth % config.other_every == 0:
            bar = bars[(nth // config.other_every - 1) % len(bars)]
            amount = -(Decimal(nth % 97 + 1) / 100)
            step.append(frames.financing(bar.symbol, format(amount, "f")))
        if config.malformed_every and nth % config.malformed_every == 0:
            step.append(frames.malformed(bars[0].symbol, with_id=True))
        if config.duplicate_every and nth % config.duplicate_every == 0:
            # At-least-once re-delivery: the step's first frame again, same id and content.
            step.append(step[0])
        return step

    def _synthetic_fill(self, bar: Bar, index: int) -> list[OrderEvent]:
        """The ``fill_every`` option: buys and sells in turn, so positions open and close."""
        self._synthetic_fills += 1
        side = "BUY" if self._synthetic_fills % 2 else "SELL"
        return self._desk.synthetic_fill(bar, side, index)

    def _quote(self, bar: Bar) -> Outgoing:
        width = FRACTION_WIDTHS[self._quotes_sent % len(FRACTION_WIDTHS)]
        self._quotes_sent += 1
        seconds = bar.start + self._config.timeframe_seconds - 1
        market_time = self._frames.clock.format_ns(seconds * NANOS + _QUOTE_FRACTION_NS, width)
        quote = quote_from_last(bar.symbol, bar.close, self._config.decimal_scale)
        return self._frames.quote(quote, market_time, volume=bar.volume)

    def _begin_step(self, index: int, frames: list[Outgoing], kind: str) -> StepRecord:
        """Record and emit one step; the engine now waits for its ids."""
        ids = [out.event_id for out in frames if out.event_id is not None]
        step = StepRecord(index=index, ids=ids, emitted_at=time.monotonic(), kind=kind)
        self._record.steps.append(step)
        self._arm_and_emit(frames, ids, index)
        return step

    async def _finish_step(self, step: StepRecord) -> bool:
        """Wait for the step's release; False means the run must halt."""
        index = step.index
        if not await self._released_in_time(self._config.step_timeout):
            step.timed_out = True
            self._record.timeouts += 1
            self._consecutive_timeouts += 1
            limit = (
                self._config.halt_after_timeouts
                if self._good_ack_seen
                else self._config.halt_before_first_ack
            )
            log.warning(
                "step %d timed out (%d consecutive, halt at %d)",
                index,
                self._consecutive_timeouts,
                limit,
            )
            self._record.changed()
            return self._consecutive_timeouts < limit
        step.completed_at = time.monotonic()
        self._consecutive_timeouts = 0
        self._record.changed()
        return True

    def _arm_and_emit(self, frames: list[Outgoing], ids: list[str], step: int | None) -> None:
        # Arm before emitting: an ack can only arrive after emit() returns, as emit never awaits.
        self._pending = set(ids)
        self._released.clear()
        if not self._pending:
            self._released.set()
        for out in frames:
            self._hub.emit(out, step)

    async def _released_in_time(self, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                await self._released.wait()
        except TimeoutError:
            self._pending = set()
            return False
        return True

    async def _complete(self) -> None:
        with_id = self._config.complete_with_id
        out = self._frames.backtest_complete(with_id=with_id)
        self._record.completed = True
        if not with_id:
            self._hub.emit(out)
            return
        ids = [out.event_id] if out.event_id is not None else []
        self._arm_and_emit([out], ids, None)
        acked = await self._released_in_time(self._config.complete_timeout)
        self._record.complete_acked = acked
        if not acked:
            log.warning(
                "backtest_complete was not acknowledged within %g s",
                self._config.complete_timeout,
            )
        self._record.changed()
