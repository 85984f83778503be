"""The WebSocket session with the Trading API: connect, authenticate, read, keep alive, reconnect.

* No greeting is awaited: the socket is ready as soon as the upgrade succeeds.
* Liveness is our own: a protocol ping every ``ping_interval``; one unanswered within
  ``ping_timeout`` is a missed pong, and ``max_missed_pongs`` in a row drop the connection. (The
  current server never sends JSON pings; documentation-style servers do, and the frame handler
  answers those at once.)
* Any drop is followed by a reconnect with capped exponential backoff and full jitter; the backoff
  resets once a connection has stayed up for ``reconnect_reset_after``. HTTP 401/403 at the upgrade
  means the key is wrong: retrying soon is pointless, so it waits the maximum backoff.
* Stopping is two-step, so nothing is lost: :meth:`Session.run` returns when asked to stop
  reading but leaves the connection open, the service flushes and sends its final acks through
  :meth:`Session.send`, then calls :meth:`Session.close` (code 1000).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple, Protocol, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from connector import __version__
from connector.config import ConfigError, Settings, mask_url
from connector.metrics import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")

# A connection is failed (closed by us) only above this multiple of the dead-letter size limit,
# so a merely oversized frame is rejected without losing the session.
HARD_FRAME_FACTOR = 8
# Frames handled between yields to the event loop while frames keep arriving.
YIELD_EVERY = 128
# While the Trading API cannot be reached, a warning this often (the attempts between: debug).
WARNING_EVERY_S = 30.0


class SessionHandler(Protocol):
    """What the session feeds: frames in, optional immediate reply out, and lifecycle news."""

    def on_frame(self, frame: str | bytes, received: float) -> bytes | None: ...

    async def on_connected(self, gap_started: float | None) -> None: ...

    def on_disconnected(self, reason: str, server_closed: bool) -> None: ...


class Backoff:
    """Capped exponential backoff with full jitter: uniform(0, min(cap, base * 2**attempt))."""

    def __init__(self, base: float, cap: float, rng: Callable[[], float] = random.random) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng

    def next(self) -> float:
        ceiling = min(self.cap, self.base * (1 << min(self.attempt, 32)))
        self.attempt += 1
        return self._rng() * ceiling

    def reset(self) -> None:
        self.attempt = 0


class Drop(NamedTuple):
    """Why a connection ended; ``server_closed``: the server sent a closing handshake."""

    reason: str
    server_closed: bool = False


class ConnectFailed(Exception):
    """A connection attempt failed; ``reason`` is a bounded metric label."""

    def __init__(self, reason: str, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.status = status


class Session:
    """Keeps one WebSocket session to the Trading API alive until told to stop."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        handler: SessionHandler,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._handler = handler
        self._clock = clock
        self._backoff = Backoff(settings.reconnect_min_delay, settings.reconnect_max_delay, rng)
        self._ws: ClientConnection | None = None
        self._ever_connected = False
        self._failures = 0  # consecutive failed attempts in the current incident
        self._last_warning = float("-inf")  # when a failure was last logged as a warning
        self.connections = 0  # successful connections (tests check a session was never dropped)
        self.status = "not started"  # what the session is doing, for /readyz

    @property
    def connected(self) -> bool:
        return self._ws is not None

    # -- main loop -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Connect and read until ``stop`` is set. The open connection is left for :meth:`close`."""
        gap_started: float | None = None
        self.status = f"connecting to {mask_url(self._settings.api_url)}"
        while not stop.is_set():
            try:
                ws = await _until_stopped(self._connect(), stop)
            except ConnectFailed as exc:
                delay = self._connect_failed(exc)
            else:
                if ws is None:  # stop was requested while connecting
                    return
                if await self._serve(ws, gap_started, stop):
                    return  # stopping: the connection stays open for the final acks
                gap_started = time.time()
                delay = self._backoff.next()
            await _until_stopped(asyncio.sleep(delay), stop)

    async def _serve(
        self, ws: ClientConnection, gap_started: float | None, stop: asyncio.Event
    ) -> bool:
        """Run one connection. True if it ended because ``stop`` was set (left open)."""
        self._ws = ws
        self.connections += 1
        connected_at = self._clock()
        self._metrics.connected.set(1)
        if self._ever_connected:
            self._metrics.reconnects.inc()
        self._ever_connected = True
        log.info(
            "connected to the Trading API",
            extra={"url": mask_url(self._settings.api_url), "after_failures": self._failures},
        )
        self._failures = 0
        self.status = "connected"
        await self._handler.on_connected(gap_started)

        reader = asyncio.create_task(self._read(ws), name="session-read")
        keeper = asyncio.create_task(self._keepalive(ws), name="session-keepalive")
        stopper = asyncio.create_task(stop.wait(), name="session-stop")
        done, pending = await asyncio.wait(
            {reader, keeper, stopper}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        # asyncio.wait, not `await task` under suppress(CancelledError): that would also
        # swallow a cancellation of this task itself (a forced stop) and carry on.
        if pending:
            await asyncio.wait(pending)
        for task in pending:
            if not task.cancelled():
                task.exception()  # retrieved: it ended while being cancelled
        if stopper in done:
            return True

        drop = reader.result() if reader in done else keeper.result()
        if keeper in done:
            # A dead peer will not answer a closing handshake either: drop the TCP connection.
            ws.transport.abort()
        self._ws = None
        self._metrics.connected.set(0)
        if self._clock() - connected_at >= self._settings.reconnect_reset_after:
            self._backoff.reset()
        log.warning("disconnected from the Trading API", extra={"reason": drop.reason})
        self.status = f"disconnected ({drop.reason}); reconnecting"
        self._handler.on_disconnected(drop.reason, drop.server_closed)
        return False

    async def _read(self, ws: ClientConnection) -> Drop:
        on_frame = self._handler.on_frame
        clock = self._clock
        handled = 0
        try:
            while True:
                frame = await ws.recv()
                reply = on_frame(frame, clock())
                if reply is not None:
                    await ws.send(reply, text=True)
                handled += 1
                if handled >= YIELD_EVERY:
                    # recv() does not suspend while frames are queued, so under a burst this loop
                    # would starve the publisher (and the buffer would fill): let it run.
                    handled = 0
                    await asyncio.sleep(0)
        except ConnectionClosed as exc:
            return _closed(exc)
        except Exception as exc:  # never let a surprise end the service: start a new connection
            log.exception("unexpected error on the session; reconnecting")
            ws.transport.abort()
            return Drop(f"internal error: {type(exc).__name__}")

    async def _keepalive(self, ws: ClientConnection) -> Drop:
        settings = self._settings
        missed = 0
        while True:
            if missed == 0:
                await asyncio.sleep(settings.ping_interval)
            try:
                async with asyncio.timeout(settings.ping_timeout):
                    waiter = await ws.ping()
                    rtt = await asyncio.shield(waiter)
            except TimeoutError:
                missed += 1
                self._metrics.missed_pongs.inc()
                log.warning(
                    "missed pong",
                    extra={"missed": missed, "max_missed_pongs": settings.max_missed_pongs},
                )
                if missed >= settings.max_missed_pongs:
                    return Drop(f"{missed} missed pongs")
            except ConnectionClosed as exc:
                return _closed(exc)
            except Exception as exc:  # e.g. a ping refused by the library: treat as a dead link
                log.exception("unexpected error in the keepalive; reconnecting")
                return Drop(f"internal error: {type(exc).__name__}")
            else:
                missed = 0
                self._metrics.ping_rtt.observe(rtt)

    # -- connecting ----------------------------------------------------------------------------

    async def _connect(self) -> ClientConnection:
        settings = self._settings
        try:
            headers = self._auth_headers()
        except ConfigError as exc:  # e.g. a key file being rotated: empty or missing for now
            raise ConnectFailed("auth", str(exc)) from None
        try:
            return await _NoRedirects(
                settings.api_url,
                additional_headers=headers,
                user_agent_header=f"connector/{__version__}",
                compression="deflate" if settings.ws_compression else None,
                open_timeout=settings.open_timeout,
                ping_interval=None,  # our own keepalive counts misses instead of failing at once
                ping_timeout=None,
                close_timeout=2.0,
                max_size=settings.max_frame_bytes * HARD_FRAME_FACTOR,
                max_queue=4096,
                ssl=self._ssl_context(),
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            reason = "auth" if status in (401, 403) else "protocol"
            detail = f"HTTP {status} at the upgrade"
            location = exc.response.headers.get("Location")
            if 300 <= status < 400 and location:
                detail += (
                    f", redirecting to {mask_url(location)[:200]}: redirects are not followed "
                    "(they could send the key elsewhere); set CONNECTOR_API_URL to that URL"
                )
            raise ConnectFailed(reason, detail, status) from None
        except InvalidURI as exc:
            raise ConnectFailed("other", str(exc)) from None
        except InvalidHandshake as exc:
            raise ConnectFailed("protocol", f"{type(exc).__name__}: {exc}") from None
        except TimeoutError:
            raise ConnectFailed("timeout", f"no upgrade within {settings.open_timeout}s") from None
        except ssl.SSLError as exc:
            raise ConnectFailed("other", f"TLS: {exc}") from None
        except OSError as exc:
            raise ConnectFailed("refused", exc.strerror or str(exc) or type(exc).__name__) from None
        except Exception as exc:  # whatever answers the upgrade must never end the service
            raise ConnectFailed("protocol", f"{type(exc).__name__}: {exc}"[:300]) from None

    def _auth_headers(self) -> dict[str, str]:
        key = self._settings.resolved_api_key()
        if key is None:
            return {}
        if self._settings.api_key_header == "x-api-key":
            return {"X-API-Key": key}
        return {"Authorization": f"Bearer {key}"}

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self._settings.api_url.startswith("wss://"):
            return None
        ca_file = self._settings.ws_ca_file
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    def _connect_failed(self, exc: ConnectFailed) -> float:
        self._failures += 1
        self._metrics.connect_failures.labels(exc.reason).inc()
        url = mask_url(self._settings.api_url)
        if exc.reason == "auth":
            # The key is wrong or missing: say so every time, and never retry quickly.
            delay = self._settings.reconnect_max_delay
            message = (
                "the Trading API refused the credentials; check CONNECTOR_API_KEY"
                if exc.status is not None
                else "no API key to send; check CONNECTOR_API_KEY_FILE"
            )
            log.error(
                message,
                extra={"url": url, "status": exc.status, "error": exc.detail, "retry_in_s": delay},
            )
        else:
            delay = self._backoff.next()
            # Loud enough to notice, not a flood: the first failure of an incident, then one
            # line every WARNING_EVERY_S while it lasts (the rest at debug).
            now = self._clock()
            loud = self._failures == 1 or now - self._last_warning >= WARNING_EVERY_S
            if loud:
                self._last_warning = now
            log.log(
                logging.WARNING if loud else logging.DEBUG,
                "cannot connect to the Trading API; retrying",
                extra={
                    "url": url,
                    "attempt": self._failures,
                    "reason": exc.reason,
                    "error": exc.detail,
                    "retry_in_s": round(delay, 3),
                },
            )
        self.status = (
            f"connecting to {url}: attempt {self._failures} failed ({exc.reason}: "
            f"{exc.detail[:120]}); next in {delay:.1f} s"
        )
        return delay

    # -- used by the service -------------------------------------------------------------------

    async def send(self, data: bytes) -> bool:
        """Send a text frame. False when there is no open connection (nothing is raised)."""
        ws = self._ws
        if ws is None:
            return False
        try:
            await ws.send(data, text=True)
        except ConnectionClosed:
            return False
        return True

    async def close(self, code: int = 1000, reason: str = "client shutdown") -> None:
        """Close the connection with a closing handshake (bounded by the close timeout)."""
        ws, self._ws = self._ws, None
        self._metrics.connected.set(0)
        if ws is not None:
            await ws.close(code, reason)


async def _until_stopped(work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """Await ``work`` unless ``stop`` is set first; then cancel it and return None."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
            # Let the cancellation finish before looking at the task (a connection that
            # completed meanwhile is returned and closed by the caller's stop path).
            await asyncio.wait({task})
    if task.cancelled():
        return None
    return task.result()


class _NoRedirects(connect):
    """websockets' connect, refusing every redirect at the upgrade: the Trading API has no reason
    to send one, and following it could carry the API key (the X-API-Key header is not stripped
    across origins) to a host of the redirecting party's choice."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


def _closed(exc: ConnectionClosed) -> Drop:
    frame = exc.rcvd or exc.sent
    if frame is None:
        return Drop("connection lost without a closing handshake")
    reason = f"closed with code {frame.code}" + (f" ({frame.reason})" if frame.reason else "")
    # The server started the closing handshake (not an answer to ours, e.g. a 1009 we sent).
    server_closed = exc.rcvd is not None and (exc.sent is None or bool(exc.rcvd_then_sent))
    return Drop(reason, server_closed)
