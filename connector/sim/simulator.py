"""The public face of the simulator: start, run, control, stop, report.

:class:`Simulator` wires the pieces (server, hub of clients, backtest engine or live feed, broker
link, trading desk, record) and exposes the runtime controls tests and users need to provoke the
situations the real server produces: broker outages, rate limits, errors, JSON pings, dead
connections and a graceful shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Coroutine, Iterable
from types import TracebackType
from typing import Any, Self

from connector.sim.backtest import Backtest
from connector.sim.broker import Broker
from connector.sim.clients import Client, Hub
from connector.sim.config import SimConfig
from connector.sim.desk import Desk
from connector.sim.frames import FrameFactory, Outgoing
from connector.sim.inbound import Ack, Ignored, Pong, RejectedAckFrame, parse_client_frame
from connector.sim.live import LiveFeed
from connector.sim.market import load_source
from connector.sim.record import AckRecord, Outcome, Record, RejectedAck
from connector.sim.rest import RestApi
from connector.sim.server import PongGate, SimServer
from connector.sim.timefmt import IsoClock

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class Simulator:
    """A Trading API server on loopback, faithful to the real wire protocol.

    ``async with Simulator(config) as sim:`` starts it and stops it gracefully; ``sim.url`` is
    the ``/v1/ws`` endpoint, ``sim.docs_url`` the ``/ws`` one, ``sim.record`` what happened.
    """

    def __init__(self, config: SimConfig | None = None, *, clock: IsoClock | None = None) -> None:
        self.config = config or SimConfig()
        self.record = Record()
        self.frames = FrameFactory(self.config, clock)
        self.hub = Hub(self.config, self.record)
        self.broker = Broker(self.frames, self.hub.emit, self.config.symbols, self.config.provider)
        self.desk = Desk(self.config, self.record, self.frames.clock)
        self._pongs = PongGate(self.config.answer_pings)
        self._server = SimServer(
            self.config,
            self.hub,
            self.record,
            self.control,
            self._on_client_frame,
            self._pongs,
            RestApi(self.desk),
            self._health,
        )
        self._faults = random.Random(f"{self.config.seed}:faults")
        self._engine: Backtest | None = None
        self._feed: LiveFeed | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._finished: asyncio.Future[Outcome] | None = None
        self._stopped = asyncio.Event()
        self._stop_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._started = False

    # Lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the port and start the run (which itself waits for the first client)."""
        if self._started:
            raise RuntimeError("the simulator was already started")
        self._started = True
        config = self.config
        source = load_source(config.symbols, config.seed, config.data_file, config.decimal_scale)
        loop = asyncio.get_running_loop()
        self._finished = loop.create_future()
        await self._server.start()
        parts = (config, self.frames, self.hub, self.record, source, self.broker, self.desk)
        run: Callable[[], Coroutine[Any, Any, Outcome]]
        if config.mode == "backtest":
            self._engine = Backtest(*parts)
            self.desk.attach(self._engine)
            run = self._engine.run
        else:
            self._feed = LiveFeed(*parts)
            self.desk.attach(self._feed)
            run = self._feed.run
        runner = loop.create_task(run(), name="sim-runner")
        runner.add_done_callback(self._runner_done)
        self._tasks.append(runner)
        if config.json_ping_interval > 0:
            self._tasks.append(loop.create_task(self._json_pings(), name="sim-json-pings"))
        log.info("simulator (%s) listening on %s", config.mode, self.url)

    def _runner_done(self, task: asyncio.Task[Outcome]) -> None:
        finished = self._finished
        if finished is None or finished.done():
            return
        if task.cancelled():
            self._finish("stopped")
        elif (exc := task.exception()) is not None:
            log.error("simulator run failed", exc_info=exc)
            finished.set_exception(exc)
        else:
            self._finish(task.result())

    def _finish(self, outcome: Outcome) -> None:
        """Settle the outcome once; a later stop() does not turn "completed" into "stopped"."""
        if self._finished is None or self._finished.done():
            return
        self.record.outcome = outcome
        self._finished.set_result(outcome)
        self.record.changed()

    async def wait_finished(self) -> Outcome:
        """``completed``/``halted`` (backtest), ``sent`` (live with ``count``) or ``stopped``.

        Bound the wait with ``asyncio.timeout`` if needed; cancelling it does not stop the run.
        """
        if self._finished is None:
            raise RuntimeError("the simulator is not started")
        return await asyncio.shield(self._finished)

    @property
    def finished(self) -> bool:
        return self._finished is not None and self._finished.done()

    async def wait_stopped(self) -> None:
        """Return once :meth:`stop` has completed (e.g. after ``/control/shutdown``)."""
        await self._stopped.wait()

    async def stop(self) -> None:
        """Graceful stop: DISCONNECTING to everyone, a short grace, then close with 1001."""
        if self._stopped.is_set() or not self._started:
            self._stopped.set()
            return
        if self._stop_task is None:
            self._stop_task = asyncio.get_running_loop().create_task(self._stop())
        await asyncio.shield(self._stop_task)

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            # A runner that failed was already logged (and reported by wait_finished).
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._finish("stopped")
        if self._feed is not None:
            self._feed.stop()
        if self._server.serving:
            self.hub.emit(self.frames.connection("DISCONNECTING"))
            await asyncio.sleep(self.config.shutdown_grace)
            await self._server.close(lose=self._close_frame_lost)
        for client in list(self.hub.clients.values()):
            await self.hub.remove(client)
        self._stopped.set()
        log.info("simulator stopped")

    def _close_frame_lost(self, connection: object) -> bool:
        """The ``close_frame_loss`` fault: this connection drops instead of closing."""
        loss = self.config.close_frame_loss
        return loss > 0 and self._faults.random() < loss

    def _health(self) -> tuple[bool, list[str]]:
        """For the probes: (still serving, symbols whose broker data is stale)."""
        return not self._stopped.is_set() and self._stop_task is None, sorted(self.broker.stale)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # Addresses -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def base_url(self) -> str:
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        scheme = "wss" if self.config.tls else "ws"
        return f"{scheme}://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The current server's endpoint, ``ws://host:port/v1/ws``."""
        return f"{self.base_url}/v1/ws"

    @property
    def docs_url(self) -> str:
        """The documentation's endpoint, ``ws://host:port/ws``."""
        return f"{self.base_url}/ws"

    @property
    def http_url(self) -> str:
        """Base of the control endpoints, ``http://host:port``."""
        scheme = "https" if self.config.tls else "http"
        return f"{scheme}://{self.base_url.split('://', 1)[1]}"

    @property
    def pending_ids(self) -> frozenset[str]:
        """Backtest: ids of the current step (or backtest_complete) not yet acknowledged."""
        return self._engine.pending_ids if self._engine is not None else frozenset()

    @property
    def client_count(self) -> int:
        return len(self.hub.clients)

    # Client frames -------------------------------------------------------------------------

    def _on_client_frame(self, client: Client, message: str | bytes) -> None:
        frame = parse_client_frame(message)
        record = self.record
        now = time.monotonic()
        if isinstance(frame, Ack):
            record.acks.append(
                AckRecord(
                    time=now,
                    wall=time.time(),
                    client_id=client.id,
                    correlation_id=frame.correlation_id,
                    ids=frame.ids,
                    timestamp=frame.timestamp,
                )
            )
            if self._engine is not None:
                self._engine.on_ack(frame.ids)
        elif isinstance(frame, Pong):
            record.json_pongs += 1
        elif isinstance(frame, RejectedAckFrame):
            log.debug("dropped event_ack from client %d: %s", client.id, frame.reason)
            text = message if isinstance(message, str) else message.decode("utf-8", "replace")
            record.rejected_acks.append(RejectedAck(now, client.id, text, frame.reason))
        elif isinstance(frame, Ignored):
            log.debug("ignored frame from client %d: %s", client.id, frame.reason)
            record.ignored_client_frames += 1
        record.changed()

    # Runtime controls ----------------------------------------------------------------------

    def broker_disconnect(self, symbols: Iterable[str] | None = None) -> list[str]:
        """BROKER_DISCONNECTED, then STALE for ``symbols`` (default: all); returns them."""
        return self.broker.disconnect(symbols)

    def broker_reconnect(self) -> int:
        """BROKER_RECONNECTED with ``gap_duration_ms``; FRESH follows per symbol on its tick."""
        return self.broker.reconnect()

    def broker_connection_failed(self) -> None:
        self.broker.connection_failed()

    def rate_limit(self, event: str = "RATE_LIMIT_WARNING") -> None:
        if event not in ("RATE_LIMIT_WARNING", "RATE_LIMIT_HIT"):
            raise ValueError(f"event must be RATE_LIMIT_WARNING or RATE_LIMIT_HIT, not {event!r}")
        clock = self.frames.clock
        reset_at = clock.format_ns(clock.now_ns() + 60 * 1_000_000_000, 3)
        remaining = 0 if event == "RATE_LIMIT_HIT" else 10
        self._emit(
            self.frames.server(
                "rate_limit", event=event, requests_remaining=remaining, reset_at=reset_at
            )
        )

    def send_error(self, code: str = "POSITION_UNPROTECTED", message: str | None = None) -> None:
        text = message or f"simulated {code.lower().replace('_', ' ')}"
        self._emit(
            self.frames.server(
                "error", code=code, message=text, details={"source": "simulator", "code": code}
            )
        )

    def send_json_ping(self) -> None:
        self._emit(self.frames.ping())

    def set_answer_pings(self, answer: bool) -> None:
        """Turn the automatic answers to protocol-level pings on or off for every connection."""
        self._pongs.answer = answer

    @property
    def answer_pings(self) -> bool:
        return self._pongs.answer

    def drop_clients(self) -> int:
        """Abort every client's TCP connection without a close frame; returns how many."""
        return self.hub.abort_all()

    async def shutdown(self) -> None:
        """The graceful stop, as a control."""
        await self.stop()

    def _emit(self, out: Outgoing) -> None:
        self.hub.emit(out)

    def control(self, name: str, params: dict[str, str]) -> dict[str, Any]:
        """Run a control by name (the HTTP ``/control/<name>`` surface); KeyError if unknown."""
        answer: dict[str, Any] = {"ok": True, "control": name}
        if name == "report":
            # Summary only by default: the per-frame lists of a long run are megabytes.
            frames = _flag(params.get("frames", "false"))
            return self.report(frames=frames, details=frames or _flag(params.get("details", "0")))
        if name == "broker_disconnect":
            raw = params.get("symbols")
            symbols = [s for s in raw.split(",") if s] if raw else None
            answer["symbols"] = self.broker_disconnect(symbols)
        elif name == "broker_reconnect":
            answer["gap_duration_ms"] = self.broker_reconnect()
        elif name == "broker_connection_failed":
            self.broker_connection_failed()
        elif name == "rate_limit":
            self.rate_limit(params.get("event", "RATE_LIMIT_WARNING"))
        elif name == "send_error":
            self.send_error(params.get("code", "POSITION_UNPROTECTED"), params.get("message"))
        elif name == "send_json_ping":
            self.send_json_ping()
        elif name == "set_answer_pings":
            self.set_answer_pings(_flag(params.get("value", "true")))
            answer["answer_pings"] = self.answer_pings
        elif name == "drop_clients":
            answer["dropped"] = self.drop_clients()
        elif name == "shutdown":
            # Answer the HTTP request first; the stop (with its grace period) runs after.
            task = asyncio.get_running_loop().create_task(self.stop())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            answer["stopping"] = True
        else:
            raise KeyError(name)
        self.record.controls.append(name)
        self.record.changed()
        return answer

    # Waiting and reporting -----------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Await a condition on the record (or anything else the simulator changes).

        The predicate is re-checked whenever the record changes: a frame emitted, an ack or a
        rejected ack received, a client connected or gone, a step finished.
        """
        await self.record.wait_until(predicate)

    def report(self, *, frames: bool = False, details: bool = True) -> dict[str, Any]:
        """JSON-serialisable summary of the run (``frames`` adds every sent frame's text)."""
        report = self.record.to_dict(frames=frames, details=details)
        report["config"] = _config_summary(self.config)
        if self._started and self._server.serving:
            report["url"] = self.url
            report["docs_url"] = self.docs_url
        report["clients"] = {
            str(client.id): {"written": client.written, "dropped": client.dropped}
            for client in self.hub.clients.values()
        }
        return report

    async def _json_pings(self) -> None:
        while True:
            await asyncio.sleep(self.config.json_ping_interval)
            self.send_json_ping()


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected true or false, not {value!r}")


def _config_summary(config: SimConfig) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name == "api_key" and value is not None:
            value = "***"
        elif isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif value is not None and not isinstance(value, str | int | float | bool):
            value = str(value)
        summary[field.name] = value
    return summary
