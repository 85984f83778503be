"""The backtest engine: one simulation step at a time, advanced only by acknowledgements.

Rules reproduced from the real engine: a step is released when every one of its ids has been
acknowledged (over any number of ack frames, in any order, from any client); each step waits
``step_timeout`` and then moves on; ``halt_after_timeouts`` consecutive timeouts halt the run
(``halt_before_first_ack`` until the first good ack). Frames emitted while nobody listens are
never re-sent. The run ends with ``backtest_complete``, whose ack is awaited too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal

from connector.sim.broker import Broker
from connector.sim.clients import Hub
from connector.sim.config import SimConfig
from connector.sim.fills import Portfolio
from connector.sim.frames import FrameFactory, Outgoing
from connector.sim.market import Bar, BarSource, quote_from_last
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
    ) -> None:
        self._config = config
        self._frames = frames
        self._hub = hub
        self._record = record
        self._source = source
        self._broker = broker
        self._portfolio = Portfolio()
        self._pending: set[str] = set()
        self._released = asyncio.Event()
        self._good_ack_seen = False
        self._consecutive_timeouts = 0
        self._quotes_sent = 0

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

    async def run(self) -> Outcome:
        config = self._config
        if config.wait_for_client:
            await self._hub.wait_clients(config.min_clients)
        log.info("backtest starting: %d steps of %s", config.steps, config.symbols)
        for index in range(config.steps):
            bars = self._source.step(index, SIM_EPOCH_S + index * config.timeframe_seconds)
            if bars is None:
                log.info("data file exhausted after %d steps", index)
                break
            if not await self._run_step(index, self._build_step(index, bars)):
                self._record.halted = True
                log.warning(
                    "backtest halted at step %d after %d consecutive timeouts",
                    index,
                    self._consecutive_timeouts,
                )
                return "halted"
        await self._complete()
        return "completed"

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
            fill = self._portfolio.fill(bar.symbol, bar.close, iso_seconds(bar.start))
            step.extend(frames.fill_group(fill, bar.symbol))
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

    def _quote(self, bar: Bar) -> Outgoing:
        width = FRACTION_WIDTHS[self._quotes_sent % len(FRACTION_WIDTHS)]
        self._quotes_sent += 1
        seconds = bar.start + self._config.timeframe_seconds - 1
        market_time = self._frames.clock.format_ns(seconds * NANOS + _QUOTE_FRACTION_NS, width)
        return self._frames.quote(
            quote_from_last(bar.symbol, bar.close), market_time, volume=bar.volume
        )

    async def _run_step(self, index: int, frames: list[Outgoing]) -> bool:
        """Emit one step and wait for its release; False means the run must halt."""
        ids = [out.event_id for out in frames if out.event_id is not None]
        step = StepRecord(index=index, ids=ids, emitted_at=time.monotonic())
        self._record.steps.append(step)
        self._arm_and_emit(frames, ids, index)
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
