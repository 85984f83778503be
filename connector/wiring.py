"""The composition step: the service's parts, built in order and connected, in one place.

:func:`build` is a plain function (no framework): it decides the topology once (a Redis Cluster
or one node, the write path's own connection or redis-py), builds every part and connects them
along the data flow (session -> router -> publisher -> writer -> ack gate -> acknowledger ->
session). What only the running service can decide (stop, the end of a backtest run, readiness)
comes back through :class:`ServiceHooks`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from connector.acks.acknowledger import AckGate, Acknowledger, ImmediateGate
from connector.acks.consumer_gate import ConsumerGate
from connector.config import Settings
from connector.health import RedisWatch
from connector.http import OpsServer, Readiness
from connector.metrics import Metrics
from connector.streams.groups import Readers
from connector.streams.lease import PrefixLease
from connector.streams.publisher import Publisher
from connector.streams.registry import StreamProvisioner
from connector.streams.schema import Entry, StreamKeys
from connector.streams.writer import StreamWriter
from connector.trading.router import Router
from connector.trading.run import BacktestRun, Outcome
from connector.trading.session import Session
from connector.wire.client import RedisClient, make_redis
from connector.wire.pipe import Opener, transport_for
from connector.wire.resp import WireConnection


class ServiceHooks(Protocol):
    """What the parts tell the running service."""

    def run_ended(self, outcome: Outcome, detail: str) -> None: ...

    async def readiness(self) -> Readiness: ...

    async def reprovision(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Parts:
    """Every part of one connector service, connected."""

    metrics: Metrics
    redis: RedisClient
    owns_redis: bool
    keys: StreamKeys
    run_id: str
    acknowledger: Acknowledger
    backtest: BacktestRun | None
    writer: StreamWriter
    provisioner: StreamProvisioner
    consumer_gate: ConsumerGate | None
    publisher: Publisher
    session: Session
    ops: OpsServer
    lease: PrefixLease | None
    redis_watch: RedisWatch
    markers: Markers


class Markers:
    """The connector's own markers in the system stream (started, stopped, gaps, run ends),
    each naming the run: downstream sees where a session had a gap and which run wrote what."""

    def __init__(self, keys: StreamKeys, run_id: str, submit: Callable[[Entry], None]) -> None:
        self._key = keys.system
        self._run_id = run_id
        self._submit = submit

    def write(self, kind: str, **fields: Any) -> None:
        entry_fields = {"type": kind, "ts": epoch_ms(time.time()), "run": self._run_id}
        entry_fields.update((key, str(value)) for key, value in fields.items())
        self._submit(Entry(self._key, entry_fields, "system", None, time.monotonic(), 256))


class SessionEvents:
    """What the session feeds, passed on along the flow: frames to the router; a new connection
    to the backtest run, the re-delivery memory and the acknowledger; a lost one to the markers."""

    def __init__(
        self,
        router: Router,
        publisher: Publisher,
        acknowledger: Acknowledger,
        backtest: BacktestRun | None,
        markers: Markers,
    ) -> None:
        self._router = router
        self._publisher = publisher
        self._acknowledger = acknowledger
        self._backtest = backtest
        self._markers = markers

    def on_frame(self, frame: str | bytes, received: float) -> bytes | None:
        return self._router.route(frame, received)

    async def on_connected(self, gap_started: float | None) -> None:
        if self._backtest is not None:
            self._backtest.on_connected()
        self._publisher.forget_ids()  # the server never re-sends: ids of before are no help
        if gap_started is not None:
            now = time.time()
            self._markers.write(
                "reconnected",
                gap_start=epoch_ms(gap_started),
                gap_end=epoch_ms(now),
                gap_ms=str(int((now - gap_started) * 1000)),
            )
        await self._acknowledger.flush()

    def on_disconnected(self, reason: str, server_closed: bool) -> None:
        self._markers.write("disconnected", reason=reason)
        if self._backtest is not None:
            self._backtest.on_disconnected(server_closed)


def build(
    settings: Settings,
    hooks: ServiceHooks,
    *,
    redis: RedisClient | None = None,
    metrics: Metrics | None = None,
) -> Parts:
    """The parts of one service, in the order they depend on each other."""
    metrics = metrics or Metrics(settings.group_names, settings.metrics_symbol_labels)
    owns_redis = redis is None
    redis = redis if redis is not None else make_redis(settings)
    keys = StreamKeys(settings.stream_prefix)
    # Names this run in its markers and registry entries: two backtests in a row on one prefix
    # are told apart (and `connector streams --clear` empties a prefix between them).
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)
    # The session is built last (it needs the router); acks reach it through this late binding.
    sessions: list[Session] = []

    async def send_frame(frame: bytes) -> bool:
        return await sessions[0].send(frame)

    backtest: BacktestRun | None = None

    def on_final() -> None:
        if backtest is not None:
            backtest.on_completion_acked()

    acknowledger = Acknowledger(
        send_frame,
        metrics,
        enabled=settings.mode == "backtest" or settings.ack_live,
        on_final=on_final,
    )
    if settings.mode == "backtest":
        backtest = BacktestRun(
            hooks.run_ended,
            lambda: acknowledger.seen,
            reconnect_window=settings.backtest_reconnect_window,
            complete_timeout=settings.complete_ack_timeout,
        )
    readers = Readers(keys, settings.consumer_groups)
    transport = transport_for(
        redis, opener=_wire_opener(settings), reply_timeout=settings.redis_timeout
    )
    writer = StreamWriter(
        redis, settings.stream_maxlen, keys.deadletter, pipe=transport.pipe(keyed=True)
    )
    provisioner = StreamProvisioner(keys, readers, run_id)
    writer.provision = provisioner
    consumer_gate = (
        ConsumerGate(
            redis,
            keys,
            readers,
            acknowledger,
            metrics,
            # Live acks are informational: gating them would only slow the feed down.
            gated=settings.mode == "backtest",
            timeout=settings.consumer_ack_timeout,
            policy=settings.consumer_timeout_policy,
            check_interval=settings.consumer_check_interval,
            stall_after=settings.consumer_stall_warning,
            known_streams=writer.known_streams,
            transport=transport,
        )
        if settings.ack_mode == "consumer"
        else None
    )
    gate: AckGate = consumer_gate if consumer_gate is not None else ImmediateGate(acknowledger)

    def foreign_lease() -> None:
        metrics.foreign_data.counts["lease"] += 1

    lease = (
        PrefixLease(
            redis,
            keys.lease,
            settings.session_id,
            write_timeout=settings.redis_timeout,
            on_foreign=foreign_lease,
        )
        if settings.prefix_lock
        else None
    )
    publisher = Publisher(
        writer,
        metrics,
        gate.on_stored,
        max_batch=settings.batch_max_events,
        max_events=settings.buffer_max_events,
        max_bytes=settings.buffer_max_bytes,
        dedupe_window=settings.dedupe_window,
        on_dropped=acknowledger.forget,
        # Writes only while the prefix is surely ours (see PrefixLease.confirmed).
        may_write=lambda: lease is None or lease.confirmed(),
    )
    router = Router(
        keys,
        publisher.submit,
        metrics,
        max_frame_bytes=settings.max_frame_bytes,
        expect_ack=acknowledger.expect,
        max_streams=settings.max_streams,
        on_terminal=backtest.on_terminal if backtest else lambda event_id: None,
        on_goodbye=backtest.on_goodbye if backtest else lambda: None,
    )
    markers = Markers(keys, run_id, publisher.submit)
    session = Session(
        settings, metrics, SessionEvents(router, publisher, acknowledger, backtest, markers)
    )
    sessions.append(session)
    redis_watch = RedisWatch(
        redis,
        settings.redis_url,
        settings.redis_timeout,
        metrics,
        registry_key=keys.registry,
        has_streams=lambda: bool(writer.known_streams),
        on_data_lost=hooks.reprovision,
    )
    ops = OpsServer(settings.http_host, settings.http_port, metrics.registry, hooks.readiness)
    return Parts(
        metrics=metrics,
        redis=redis,
        owns_redis=owns_redis,
        keys=keys,
        run_id=run_id,
        acknowledger=acknowledger,
        backtest=backtest,
        writer=writer,
        provisioner=provisioner,
        consumer_gate=consumer_gate,
        publisher=publisher,
        session=session,
        ops=ops,
        lease=lease,
        redis_watch=redis_watch,
        markers=markers,
    )


def _wire_opener(settings: Settings) -> Opener:
    """The hot paths' own connections (see :mod:`connector.wire.resp`), with the settings'
    credentials (the password file read again for every connection: rotation reaches it)."""

    async def open_wire(reply_timeout: float) -> WireConnection:
        return await WireConnection.open(
            settings.redis_url,
            reply_timeout=reply_timeout,
            username=settings.redis_username,
            password=settings.resolved_redis_password(),
            ca_file=str(settings.redis_ca_file) if settings.redis_ca_file else None,
        )

    return open_wire


def epoch_ms(seconds: float) -> str:
    return str(int(seconds * 1000))
