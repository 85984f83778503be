"""The operations endpoint: ``/metrics``, ``/healthz`` and ``/readyz`` on one port, nothing else.

A deliberately tiny HTTP/1.1 server on asyncio streams: three read-only endpoints need no framework,
and a small surface is easy to trust. Requests are bounded in size and time; every response closes
the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT = 5.0  # reading the request and writing the answer, each
# Connections served at once. The port shares the process' file descriptors with the Trading API
# session and Redis: a flood of idle connections must not starve them. At the cap, a new
# connection takes the place of the one that has been sending its request head the longest (a
# slow or idle client must not keep the liveness probe out); only when every connection is being
# answered does a new one get a 503 at once (Prometheus and probes retry).
MAX_CONNECTIONS = 64
BUSY_READ_S = 0.1
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
    b"Connection: close\r\n\r\nbusy\n"
)


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether the service should receive traffic, and the individual checks behind it."""

    ready: bool
    checks: dict[str, bool]
    detail: dict[str, str]


ReadinessProbe = Callable[[], Awaitable[Readiness]]


class OpsServer:
    """Serves the three endpoints until :meth:`stop`."""

    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, readiness: ReadinessProbe
    ) -> None:
        self._host = host
        self._port = port
        self._registry = registry
        self._readiness = readiness
        self._server: asyncio.Server | None = None
        self._serving = 0  # connections being handled now
        # Connections still sending their request head, oldest first (dicts keep order).
        self._heads: dict[asyncio.StreamWriter, None] = {}

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self._host, self._port, limit=MAX_REQUEST_BYTES
        )
        log.info(
            "serving /metrics, /healthz, /readyz", extra={"host": self._host, "port": self.port}
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._serving >= MAX_CONNECTIONS and not self._evict_slowest():
            writer.write(BUSY)
            # Take what the client sent first (briefly): closing on unread data resets the
            # connection, and the client would never read the 503.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(BUSY_READ_S):
                    await reader.read(MAX_REQUEST_BYTES)
            await _close(writer)
            return
        self._serving += 1
        try:
            await self._serve(reader, writer)
        finally:
            self._serving -= 1

    def _evict_slowest(self) -> bool:
        """Drop the connection that has been sending its request head the longest; its
        handler ends at once (its read fails) and frees the slot."""
        for writer in self._heads:
            del self._heads[writer]
            writer.transport.abort()
            return True
        return False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                self._heads[writer] = None
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                finally:
                    self._heads.pop(writer, None)
                status, content_type, body = await self._respond(head)
                send_body = not head.startswith(b"HEAD ")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            status, content_type, body = 400, "text/plain", b"bad request\n"
            send_body = True
        except ConnectionError:
            writer.close()
            return
        header = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
        ).encode()
        writer.write(header + body if send_body else header)
        await _close(writer)

    async def _respond(self, head: bytes) -> tuple[int, str, bytes]:
        request_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1") or not _plain(header_lines):
            return 400, "text/plain", b"bad request\n"
        method, target, _ = parts
        path = target.split("?", 1)[0]
        if path not in ("/metrics", "/healthz", "/readyz"):
            return 404, "text/plain", b"not found\n"
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if path == "/healthz":
            return 200, "application/json", b'{"status":"ok"}\n'
        state = await self._readiness()
        body = (
            orjson.dumps({"ready": state.ready, "checks": state.checks, "detail": state.detail})
            + b"\n"
        )
        return (200 if state.ready else 503), "application/json", body


def _plain(header_lines: list[str]) -> bool:
    """Headers a GET needs and nothing that asks for more: every line ``name: value`` (no
    obsolete line folding), no request body (Content-Length other than 0, Transfer-Encoding):
    a proxy in front of the port and this server must never disagree on where a request ends."""
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            return False
        lowered = name.lower()
        if lowered == "transfer-encoding" or (lowered == "content-length" and value.strip() != "0"):
            return False
    return True


async def _close(writer: asyncio.StreamWriter) -> None:
    """Flush and close, bounded: a client that never reads must not hold the connection open
    (a large /metrics fills the socket buffer, and drain() would wait for ever)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(REQUEST_TIMEOUT):
            await writer.drain()
    if writer.transport.get_write_buffer_size():
        writer.transport.abort()  # the answer did not leave in time: drop it
    else:
        writer.close()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(REQUEST_TIMEOUT):
            await writer.wait_closed()


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
