"""Wiring and lifecycle of ``connector run``: start, run, drain, stop.

Startup: metrics and the ops endpoint first (so a failing start is visible), then the publisher,
then the session. Steady state: frames flow session -> router -> publisher -> Redis -> ack gate ->
session. Stop (a signal, or the end of a backtest): stop reading, store what is buffered, send the
final acks, close the WebSocket with 1000, exit 0, all within ``shutdown_timeout``; a second signal
exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import time
from typing import Any

from redis.asyncio.cluster import RedisCluster

from connector import __version__
from connector.acks.acknowledger import AckGate, Acknowledger, ImmediateGate
from connector.acks.consumer_gate import ConsumerGate
from connector.config import ConfigError, Settings
from connector.health import RedisWatch, readiness
from connector.http import OpsServer, Readiness
from connector.launch import take_early_signals
from connector.metrics import EVENT_TYPES, Metrics
from connector.streams.groups import Readers
from connector.streams.lease import PrefixLease
from connector.streams.publisher import Publisher
from connector.streams.registry import StreamProvisioner
from connector.streams.schema import SCHEMA_VERSION, Entry, StreamKeys
from connector.streams.writer import StreamWriter
from connector.trading.router import Router
from connector.trading.run import BacktestRun, Outcome
from connector.trading.session import Session
from connector.wire.client import RedisClient, make_redis
from connector.wire.cluster import ClusterWire
from connector.wire.resp import WireConnection

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
        self.metrics = metrics or Metrics(settings.group_names, settings.metrics_symbol_labels)
        self.redis = redis if redis is not None else make_redis(settings)
        self._owns_redis = redis is None
        self.keys = StreamKeys(settings.stream_prefix)
        acks_on = settings.mode == "backtest" or settings.ack_live
        self.acknowledger = Acknowledger(
            self._send_frame, self.metrics, enabled=acks_on, on_final=self._on_final
        )
        self.readers = Readers(self.keys, settings.consumer_groups)
        self.backtest = (
            BacktestRun(
                self._run_ended,
                lambda: self.acknowledger.seen,
                reconnect_window=settings.backtest_reconnect_window,
                complete_timeout=settings.complete_ack_timeout,
            )
            if settings.mode == "backtest"
            else None
        )
        self.writer = StreamWriter(
            self.redis,
            settings.stream_maxlen,
            self.keys.deadletter,
            wire=None if isinstance(self.redis, RedisCluster) else self._open_wire,
            cluster_wire=(
                ClusterWire.for_cluster(self.redis, settings.redis_timeout)
                if isinstance(self.redis, RedisCluster)
                else None
            ),
        )
        # Names this run in its markers and registry entries: two backtests in a row on one
        # prefix are told apart (and `connector streams --clear` empties a prefix between them).
        self.run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)
        self.provisioner = StreamProvisioner(self.keys, self.readers, self.run_id)
        self.writer.provision = self.provisioner
        self.consumer_gate: ConsumerGate | None = None
        self.gate: AckGate = self._make_gate()
        self.publisher = Publisher(
            self.writer,
            self.metrics,
            self.gate.on_stored,
            max_batch=settings.batch_max_events,
            max_events=settings.buffer_max_events,
            max_bytes=settings.buffer_max_bytes,
            dedupe_window=settings.dedupe_window,
            on_dropped=self.acknowledger.forget,
            may_write=self._may_write,
        )
        self.router = Router(
            self.keys,
            self.publisher.submit,
            self.metrics,
            max_frame_bytes=settings.max_frame_bytes,
            expect_ack=self.acknowledger.expect,
            max_streams=settings.max_streams,
            on_terminal=self.backtest.on_terminal if self.backtest else lambda event_id: None,
            on_goodbye=self.backtest.on_goodbye if self.backtest else lambda: None,
        )
        self.session = Session(settings, self.metrics, self)
        self.ops = OpsServer(
            settings.http_host, settings.http_port, self.metrics.registry, self.readiness
        )
        self.lease = (
            PrefixLease(
                self.redis,
                self.keys.lease,
                settings.session_id,
                write_timeout=settings.redis_timeout,
                on_foreign=self._foreign_lease,
            )
            if settings.prefix_lock
            else None
        )
        self.redis_watch = RedisWatch(
            self.redis,
            settings.redis_url,
            settings.redis_timeout,
            self.metrics,
            registry_key=self.keys.registry,
            has_streams=lambda: bool(self.writer.known_streams),
            on_data_lost=self._reprovision,
        )
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

    async def _open_wire(self) -> WireConnection:
        """The write path's own connection (see :mod:`connector.wire.resp`)."""
        settings = self.settings
        return await WireConnection.open(
            settings.redis_url,
            reply_timeout=settings.redis_timeout,
            username=settings.redis_username,
            password=settings.resolved_redis_password(),
            ca_file=str(settings.redis_ca_file) if settings.redis_ca_file else None,
        )

    def _may_write(self) -> bool:
        """Only while the prefix is surely ours (see :meth:`PrefixLease.confirmed`)."""
        return self.lease is None or self.lease.confirmed()

    def _make_gate(self) -> AckGate:
        settings = self.settings
        if settings.ack_mode != "consumer":
            return ImmediateGate(self.acknowledger)
        self.consumer_gate = ConsumerGate(
            self.redis,
            self.keys,
            self.readers,
            self.acknowledger,
            self.metrics,
            # Live acks are informational: gating them would only slow the feed down.
            gated=settings.mode == "backtest",
            timeout=settings.consumer_ack_timeout,
            policy=settings.consumer_timeout_policy,
            check_interval=settings.consumer_check_interval,
            stall_after=settings.consumer_stall_warning,
            known_streams=self.writer.known_streams,
            wire=None if isinstance(self.redis, RedisCluster) else self._open_wire,
        )
        return self.consumer_gate

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        if self._stop_requested.is_set():  # a stop signal while the program was starting
            log.info("stopped before starting", extra={"reason": self._stop_reason})
            return 0
        self.metrics.set_info(self.settings.mode, self.settings.ack_mode)
        log.info("starting", extra={"version": __version__, "settings": self.settings.describe()})
        try:
            await self._start_ops()
            await self.redis_watch.check(first=True)
        except ConfigError:
            await self._close_early()
            raise  # permanent: the command reports it in one line (exit code 2)
        # The Redis watch runs from now on: a Redis that answers late, and then refuses us, stops
        # the wait for the lease with a configuration error.
        health = asyncio.create_task(
            self.redis_watch.watch(self._redis_refuses), name="redis-health"
        )
        self._phase = "waiting for the stream prefix lease"
        if self.lease is not None and not await self.lease.acquire(self._stop_requested):
            health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await health
            await self._close_early()
            log.info("stopped before starting", extra={"reason": self._stop_reason})
            if self._config_error is not None:
                raise self._config_error
            return 0
        self._phase = ""
        await self._provision_type_streams()
        self._marker(
            "started",
            version=__version__,
            mode=self.settings.mode,
            schema=str(SCHEMA_VERSION),
            session=self.settings.session_id,
        )
        publisher = asyncio.create_task(self.publisher.run(), name="publisher")
        session = asyncio.create_task(self.session.run(self._stop_reading), name="session")
        stop = asyncio.create_task(self._stop_requested.wait(), name="stop-request")
        background = [health]
        if self.consumer_gate is not None:
            background.append(asyncio.create_task(self.consumer_gate.run(), name="confirm"))
        if self.lease is not None:
            background.append(
                asyncio.create_task(self.lease.keep(self._lease_lost), name="prefix-lease")
            )
        for loop_task in background:
            loop_task.add_done_callback(_report_unexpected_end)
        code = 0
        try:
            done, _ = await asyncio.wait(
                {publisher, session, stop}, return_when=asyncio.FIRST_COMPLETED
            )
            for ended in done - {stop}:
                if ended.exception() is not None:
                    log.error("internal task failed", exc_info=ended.exception())
                    code = 1
            if not await self._drain_unless_forced(publisher, session):
                code = 1
        finally:
            if self.backtest is not None:
                self.backtest.close()
            everything: list[asyncio.Task[Any]] = [*background, stop, session, publisher]
            for running in everything:
                running.cancel()
            # Bounded after a second signal: whatever does not end in time is left behind.
            forced = self._force_exit.is_set()
            await asyncio.wait(everything, timeout=FORCED_STEP_S if forced else None)
            for running in everything:
                if running.done() and not running.cancelled():
                    running.exception()  # retrieved (a failure was logged where it happened)
            await self.ops.stop()
            if self.lease is not None:  # bounded: a forced stop must not wait on Redis long
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.lease.release(), FORCED_STEP_S)
            await self.writer.close()
            if self._owns_redis:
                with contextlib.suppress(Exception):
                    await self.redis.aclose()
        if self._config_error is not None:
            raise self._config_error
        if self._failed:
            code = 1
        elif code == 0 and self.outcome not in (None, "completed"):
            code = EXIT_INCOMPLETE
        log.info("stopped", extra={"reason": self._stop_reason or "internal error", "code": code})
        return code

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
        if self._owns_redis:
            with contextlib.suppress(Exception):
                await self.redis.aclose()

    async def _provision_type_streams(self) -> None:
        """Announce the per-type streams (and create required groups) before any event, so
        consumers following the registry are reading them when the first order or fill comes."""
        keys = [
            self.keys.of_type(label)
            for label in EVENT_TYPES
            if label not in ("candle", "quote", "ping")
        ]
        try:
            await self.writer.provision_streams(keys)
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

    def _foreign_lease(self) -> None:
        self.metrics.foreign_data.counts["lease"] += 1

    def _lease_lost(self, holder: str) -> None:
        self._failed = True
        self.request_stop(f"another connector ({holder}) took over the stream prefix")

    def _on_final(self) -> None:
        if self.backtest is not None:
            self.backtest.on_completion_acked()

    def _run_ended(self, outcome: Outcome, detail: str) -> None:
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

    # -- session handler -----------------------------------------------------------------------

    def on_frame(self, frame: str | bytes, received: float) -> bytes | None:
        return self.router.route(frame, received)

    async def on_connected(self, gap_started: float | None) -> None:
        if self.backtest is not None:
            self.backtest.on_connected()
        self.publisher.forget_ids()
        if gap_started is not None:
            now = time.time()
            self._marker(
                "reconnected",
                gap_start=_ms(gap_started),
                gap_end=_ms(now),
                gap_ms=str(int((now - gap_started) * 1000)),
            )
        await self.acknowledger.flush()

    def on_disconnected(self, reason: str, server_closed: bool) -> None:
        self._marker("disconnected", reason=reason)
        if self.backtest is not None:
            self.backtest.on_disconnected(server_closed)

    async def _send_frame(self, frame: bytes) -> bool:
        return await self.session.send(frame)

    # -- health --------------------------------------------------------------------------------

    async def readiness(self) -> Readiness:
        return self.readiness_now()

    def readiness_now(self) -> Readiness:
        return readiness(
            session=self.session,
            redis=self.redis_watch,
            publisher=self.publisher,
            gate=self.consumer_gate,
            lease=self.lease,
            phase=self._phase,
        )

    async def _reprovision(self) -> None:
        """Redis lost its data: streams, groups and the registry again, from their start."""
        self.provisioner.start_id = "0"
        self.writer.forget_streams()
        await self._provision_type_streams()
        if self.consumer_gate is not None:
            await self.consumer_gate.create_registry_groups()

    def _redis_refuses(self, exc: ConfigError) -> None:
        """Redis answered at last, and refuses us for good: stop with a configuration error."""
        self._config_error = exc
        self.request_stop("configuration error")

    def _marker(self, kind: str, **fields: Any) -> None:
        """A connector marker in the system stream (so downstream can see gaps)."""
        now = time.time()
        entry_fields = {"type": kind, "ts": _ms(now), "run": self.run_id}
        entry_fields.update((key, str(value)) for key, value in fields.items())
        self.publisher.submit(
            Entry(self.keys.system, entry_fields, "system", None, time.monotonic(), 256)
        )


def _report_unexpected_end(task: asyncio.Task[None]) -> None:
    """Background loops run until cancelled; one that ends otherwise is a bug worth shouting."""
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "background task failed", extra={"task": task.get_name()}, exc_info=task.exception()
        )


def _ms(unix_seconds: float) -> str:
    return str(int(unix_seconds * 1000))
