"""The service of ``connector run``: startup -> serve -> drain -> shutdown.

The parts are built and connected by :func:`connector.wiring.build`. Startup: the ops endpoint
first (so a failing start is visible), Redis, the stream-prefix lease, then the publisher and the
session. Serve: frames flow session -> router -> publisher -> Redis -> ack gate -> session. Drain
(a signal, or the end of a backtest): stop reading, store what is buffered, send the final acks,
close the WebSocket with 1000, all within ``shutdown_timeout``; a second signal cuts it short.
Shutdown: the lease released and every connection closed, whatever happened before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from typing import Any

from connector import __version__
from connector.config import ConfigError, Settings
from connector.health import readiness
from connector.http import Readiness
from connector.launch import take_early_signals
from connector.metrics import EVENT_TYPES, Metrics
from connector.streams.groups import START_AFTER_DATA_LOSS
from connector.streams.schema import SCHEMA_VERSION
from connector.trading.run import Outcome
from connector.wire.client import RedisClient
from connector.wiring import Parts, build

log = logging.getLogger(__name__)
FORCED_STEP_S = 2.0  # releasing the lease on the way out: at most this long

EXIT_INCOMPLETE = 3  # a backtest run that did not complete (halted, interrupted, unacknowledged)


class Connector:
    """One connector service: a Trading API session feeding Redis streams."""

    def __init__(
        self,
        settings: Settings,
        *,
        redis: RedisClient | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        parts: Parts = build(settings, self, redis=redis, metrics=metrics)
        self.parts = parts
        # Handles on the parts (the demo, the tests and the readiness check look at them).
        self.metrics = parts.metrics
        self.publisher = parts.publisher
        self.session = parts.session
        self.acknowledger = parts.acknowledger
        self.consumer_gate = parts.consumer_gate
        self.lease = parts.lease
        self.ops = parts.ops
        self.run_id = parts.run_id
        self._stop_reading = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._stop_reason = ""
        self._signals = 0
        # A second stop signal: drain no longer, but still release the lease and close.
        self._force_exit = asyncio.Event()
        self._failed = False  # a reason to exit non-zero even after a clean drain
        self._config_error: ConfigError | None = None  # found after start-up (Redis refuses)
        self._phase = "starting"  # before the session: what the connector waits for
        # How the backtest run ended (see connector.trading.run).
        self.outcome: Outcome | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> int:
        """startup -> serve -> drain -> shutdown; returns the process exit code."""
        if self._stop_requested.is_set():  # a stop signal while the program was starting
            log.info("stopped before starting", extra={"reason": self._stop_reason})
            return 0
        self.metrics.set_info(self.settings.mode, self.settings.ack_mode)
        log.info("starting", extra={"version": __version__, "settings": self.settings.describe()})
        background = await self._startup()
        if background is None:  # stopped while waiting for the lease
            log.info("stopped before starting", extra={"reason": self._stop_reason})
            if self._config_error is not None:
                raise self._config_error
            return 0
        publisher = asyncio.create_task(self.publisher.run(), name="publisher")
        session = asyncio.create_task(self.session.run(self._stop_reading), name="session")
        code = 0
        try:
            if not await self._serve(publisher, session):
                code = 1
            if not await self._drain_unless_forced(publisher, session):
                code = 1
        finally:
            await self._shutdown([*background, session, publisher])
        if self._config_error is not None:
            raise self._config_error
        if self._failed:
            code = 1
        elif code == 0 and self.outcome not in (None, "completed"):
            code = EXIT_INCOMPLETE
        log.info("stopped", extra={"reason": self._stop_reason or "internal error", "code": code})
        return code

    async def _startup(self) -> list[asyncio.Task[None]] | None:
        """The ops endpoint, Redis (answering, and taking us), the lease, the per-type streams
        and the ``started`` marker; the background loops, returned. None: stopped meanwhile."""
        try:
            await self._start_ops()
            await self.parts.redis_watch.check(first=True)
        except ConfigError:
            await self._close_early()
            raise  # permanent: the command reports it in one line (exit code 2)
        # The Redis watch runs from now on: a Redis that answers late, and then refuses us, stops
        # the wait for the lease with a configuration error.
        health = asyncio.create_task(
            self.parts.redis_watch.watch(self._redis_refuses), name="redis-health"
        )
        self._phase = "waiting for the stream prefix lease"
        if self.lease is not None and not await self.lease.acquire(self._stop_requested):
            health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await health
            await self._close_early()
            return None
        self._phase = ""
        await self._provision_type_streams()
        self._marker(
            "started",
            version=__version__,
            mode=self.settings.mode,
            schema=str(SCHEMA_VERSION),
            session=self.settings.session_id,
        )
        background = [health]
        if self.consumer_gate is not None:
            background.append(asyncio.create_task(self.consumer_gate.run(), name="confirm"))
        if self.lease is not None:
            background.append(
                asyncio.create_task(self.lease.keep(self._lease_lost), name="prefix-lease")
            )
        for loop_task in background:
            loop_task.add_done_callback(_report_unexpected_end)
        return background

    async def _serve(self, publisher: asyncio.Task[None], session: asyncio.Task[None]) -> bool:
        """Until a stop is requested or a main loop ends; False when one failed."""
        stop = asyncio.create_task(self._stop_requested.wait(), name="stop-request")
        try:
            done, _ = await asyncio.wait(
                {publisher, session, stop}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stop.cancel()
        healthy = True
        for ended in done - {stop}:
            if ended.exception() is not None:
                log.error("internal task failed", exc_info=ended.exception())
                healthy = False
        return healthy

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        """Cancel what still runs, release the lease, close every connection."""
        if self.parts.backtest is not None:
            self.parts.backtest.close()
        for running in tasks:
            running.cancel()
        # Bounded after a second signal: whatever does not end in time is left behind.
        forced = self._force_exit.is_set()
        await asyncio.wait(tasks, timeout=FORCED_STEP_S if forced else None)
        for running in tasks:
            if running.done() and not running.cancelled():
                running.exception()  # retrieved (a failure was logged where it happened)
        await self.ops.stop()
        if self.lease is not None:  # bounded: a forced stop must not wait on Redis long
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.lease.release(), FORCED_STEP_S)
        await self.parts.writer.close()
        if self.parts.owns_redis:
            with contextlib.suppress(Exception):
                await self.parts.redis.aclose()

    async def _start_ops(self) -> None:
        try:
            await self.ops.start()
        except OSError as exc:
            settings = self.settings
            raise ConfigError(
                f"CONNECTOR_HTTP_PORT: cannot serve on {settings.http_host}:"
                f"{settings.http_port} ({exc.strerror or exc}); another connector there? Choose "
                "another port (0 picks a free one)"
            ) from None

    async def _close_early(self) -> None:
        """Stop before anything ran: the ops endpoint and our own Redis client."""
        await self.ops.stop()
        if self.parts.owns_redis:
            with contextlib.suppress(Exception):
                await self.parts.redis.aclose()

    async def _provision_type_streams(self) -> None:
        """Announce the per-type streams (and create required groups) before any event, so
        consumers following the registry are reading them when the first order or fill comes."""
        keys = [
            self.parts.keys.of_type(label)
            for label in EVENT_TYPES
            if label not in ("candle", "quote", "ping")
        ]
        try:
            await self.parts.writer.provision_streams(keys)
        except Exception as exc:  # Redis trouble of any kind: provisioning is retried on write
            log.warning("cannot provision streams yet", extra={"error": str(exc)[:200]})

    def request_stop(self, reason: str = "requested") -> None:
        """Begin a graceful stop (idempotent)."""
        if not self._stop_requested.is_set():
            self._stop_reason = reason
            log.info("stopping", extra={"reason": reason})
            self._stop_requested.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: graceful stop; a second one: exit at once."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        # Handlers first, then the record: a signal in between is not lost either.
        for sig in take_early_signals():  # received while the program was starting
            self._on_signal(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 2:
            # Stop draining (what is buffered and the held acks are given up), but still
            # release the stream-prefix lease and close the connections: the next connector
            # on this prefix must not wait for the lease to expire.
            log.warning("second signal: stopping without draining", extra={"signal": sig.name})
            self._force_exit.set()
        elif self._signals > 2:  # the clean-up itself hangs: the last resort
            log.warning("third signal: exiting at once", extra={"signal": sig.name})
            logging.shutdown()
            os._exit(1)
        self.request_stop(f"signal {sig.name}")

    async def _drain_unless_forced(
        self, publisher: asyncio.Task[None], session: asyncio.Task[None]
    ) -> bool:
        """The drain, cut short by a second signal; False when it was."""
        drain = asyncio.create_task(self._drain(publisher, session), name="drain")
        forced = asyncio.create_task(self._force_exit.wait(), name="force-exit")
        await asyncio.wait({drain, forced}, return_when=asyncio.FIRST_COMPLETED)
        forced.cancel()
        if drain.done():
            drain.result()
            return True
        drain.cancel()
        await asyncio.wait({drain}, timeout=FORCED_STEP_S)
        log.warning(
            "drain cut short",
            extra={"buffered": self.publisher.buffered, "unsent_acks": self.acknowledger.unsent},
        )
        return False

    async def _drain(self, publisher: asyncio.Task[None], session: asyncio.Task[None]) -> None:
        """Stop reading, store what is buffered, send the last acks, close with 1000."""
        deadline = time.monotonic() + self.settings.shutdown_timeout
        self._stop_reading.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(session, max(0.0, deadline - time.monotonic()))
        self._marker("stopped", reason=self._stop_reason)
        self.publisher.close()
        if not publisher.done():
            try:
                await asyncio.wait_for(
                    asyncio.shield(publisher), max(0.0, deadline - time.monotonic())
                )
            except TimeoutError:
                lost = self.publisher.buffered
                log.error("shutdown deadline: events not stored", extra={"events": lost})
                self.publisher.abandon()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(publisher, 1.0)
        # After a halt or an interruption nobody waits for the acks: store, do not wait.
        still_waited_for = self.outcome in (None, "completed")
        if self.consumer_gate is not None and not self.publisher.abandoned and still_waited_for:
            try:
                await asyncio.wait_for(
                    self.consumer_gate.wait_confirmed(), max(0.0, deadline - time.monotonic())
                )
            except TimeoutError:
                log.warning(
                    "shutdown deadline: acks still held for consumer groups",
                    extra={"unconfirmed": self.consumer_gate.unconfirmed},
                )
        if self.acknowledger.unsent:
            try:
                sent = await asyncio.wait_for(
                    self.acknowledger.flush(), max(0.1, deadline - time.monotonic())
                )
            except TimeoutError:
                sent = False
            if not sent:
                log.warning("final acks not sent", extra={"ids": self.acknowledger.unsent})
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.session.close(1000), max(0.1, deadline - time.monotonic()))

    def _lease_lost(self, holder: str) -> None:
        self._failed = True
        self.request_stop(f"another connector ({holder}) took over the stream prefix")

    def run_ended(self, outcome: Outcome, detail: str) -> None:
        """The backtest run is over (see connector.trading.run): say how, once, and leave."""
        self.outcome = outcome
        self._marker("run_end", outcome=outcome, detail=detail)
        if outcome == "completed":
            log.info("backtest run completed", extra={"detail": detail})
        else:
            log.error(
                "backtest run did not complete",
                extra={"outcome": outcome, "detail": detail, "exit_code": EXIT_INCOMPLETE},
            )
        if self.settings.exit_on_complete:
            self.request_stop(f"backtest run {outcome}")

    # -- health --------------------------------------------------------------------------------

    async def readiness(self) -> Readiness:
        return self.readiness_now()

    def readiness_now(self) -> Readiness:
        return readiness(
            session=self.session,
            redis=self.parts.redis_watch,
            publisher=self.publisher,
            gate=self.consumer_gate,
            lease=self.lease,
            phase=self._phase,
        )

    async def reprovision(self) -> None:
        """Redis lost its data: streams, groups and the registry again, from their start."""
        self.parts.provisioner.start_id = START_AFTER_DATA_LOSS
        self.parts.writer.forget_streams()
        await self._provision_type_streams()
        if self.consumer_gate is not None:
            await self.consumer_gate.create_registry_groups()

    def _redis_refuses(self, exc: ConfigError) -> None:
        """Redis answered at last, and refuses us for good: stop with a configuration error."""
        self._config_error = exc
        self.request_stop("configuration error")

    def _marker(self, kind: str, **fields: Any) -> None:
        self.parts.markers.write(kind, **fields)


def _report_unexpected_end(task: asyncio.Task[None]) -> None:
    """Background loops run until cancelled; one that ends otherwise is a bug worth shouting."""
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "background task failed", extra={"task": task.get_name()}, exc_info=task.exception()
        )
