"""The HTTP/WebSocket face of the simulator: paths, auth, control endpoints, connections, shutdown.

* ``/ws`` (the docs' path) and ``/v1/ws`` (the current server's) upgrade to WebSocket. No greeting
  is sent: the socket is ready as soon as the upgrade succeeds.
* With an API key configured, the upgrade must carry ``Authorization: Bearer <key>`` or
  ``X-API-Key: <key>``; otherwise HTTP 401 before the upgrade, recorded in ``auth_failures``.
* ``GET /control/<name>?...`` runs a runtime control and ``GET /report`` returns the report; both
  are plain HTTP answered during the handshake (``process_request``), so ``curl`` works. They
  need the API key too when one is configured.
* Everything else is 404.

Protocol-level pings are answered by websockets itself; the ``answer_pings`` fault suppresses
the PONG frames by filtering the sans-I/O protocol's ``send_frame``, switchable at run time.
"""

from __future__ import annotations

import hmac
import http
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from connector.sim.clients import Client, Hub
from connector.sim.config import SimConfig
from connector.sim.record import AuthFailure, ConnectionRecord, Record

log = logging.getLogger(__name__)

WS_PATHS = ("/ws", "/v1/ws")
CONTROL_PREFIX = "/control/"
REPORT_PATH = "/report"

#: A control: (name, query parameters) -> JSON-friendly answer. KeyError = unknown (404),
#: ValueError = bad parameter (400).
ControlHandler = Callable[[str, dict[str, str]], dict[str, Any]]
FrameHandler = Callable[[Client, str | bytes], None]


class PongGate:
    """Decides whether protocol-level pings get their automatic PONG; flips at run time."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer

    def install(self, protocol: ServerProtocol) -> None:
        original = protocol.send_frame

        def send_frame(frame: Frame) -> None:
            if frame.opcode is Opcode.PONG and not self.answer:
                return
            original(frame)

        protocol.send_frame = send_frame  # type: ignore[method-assign]


def auth_header_used(request: Request, api_key: str | None) -> tuple[bool, str | None, str]:
    """Check the key like the server does: (accepted, header that carried a key, reason)."""
    bearer = request.headers.get("Authorization")
    api_key_header = request.headers.get("X-API-Key")
    header = "authorization" if bearer is not None else "x-api-key" if api_key_header else None
    if api_key is None:
        return True, header, "no key configured"
    expected = api_key.encode()
    if bearer is not None:
        scheme, _, token = bearer.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected):
            return True, "authorization", "bearer token"
    if api_key_header is not None and hmac.compare_digest(api_key_header.encode(), expected):
        return True, "x-api-key", "api key header"
    if header is None:
        return False, None, "missing credentials"
    return False, header, "wrong key"


class SimServer:
    """Owns the websockets server; hands connections to the hub and client frames onward."""

    def __init__(
        self,
        config: SimConfig,
        hub: Hub,
        record: Record,
        controls: ControlHandler,
        on_frame: FrameHandler,
        pong_gate: PongGate,
    ) -> None:
        self._config = config
        self._hub = hub
        self._record = record
        self._controls = controls
        self._on_frame = on_frame
        self._pongs = pong_gate
        self._server: Server | None = None
        self._port: int | None = None

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self._config.host,
            self._config.port,
            process_request=self._process_request,
            # The real server negotiates no compression and sends no keepalive pings.
            compression=None,
            ping_interval=None,
            close_timeout=self._config.close_timeout,
            write_limit=2**18,
            ssl=self._ssl_context(),
        )
        self._port = self._server.sockets[0].getsockname()[1]

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self._config.tls_cert is None or self._config.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self._config.tls_cert, self._config.tls_key)
        return context

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the simulator is not started")
        return self._port

    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def close(self) -> None:
        """Stop listening and close every connection with 1001 (going away)."""
        if self._server is None:
            return
        self._server.close(close_connections=True)
        await self._server.wait_closed()

    # HTTP ----------------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        path = url.path
        is_control = path == REPORT_PATH or path.startswith(CONTROL_PREFIX)
        if path not in WS_PATHS and not is_control:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")
        # The controls can stop the server, so they take the same key as the upgrade.
        accepted, header, reason = auth_header_used(request, self._config.api_key)
        if not accepted:
            self._record.auth_failures.append(
                AuthFailure(time=time.monotonic(), path=path, reason=reason, header=header)
            )
            self._record.changed()
            log.info("rejected request for %s: %s", path, reason)
            response = connection.respond(http.HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        if is_control:
            return self._http_control(connection, path, dict(parse_qsl(url.query)))
        self._pongs.install(connection.protocol)
        return None

    def _http_control(
        self, connection: ServerConnection, path: str, params: dict[str, str]
    ) -> Response:
        name = "report" if path == REPORT_PATH else path.removeprefix(CONTROL_PREFIX)
        try:
            status, body = http.HTTPStatus.OK, self._controls(name, params)
        except KeyError:
            status, body = http.HTTPStatus.NOT_FOUND, {"ok": False, "error": f"no control {name}"}
        except ValueError as exc:
            status, body = http.HTTPStatus.BAD_REQUEST, {"ok": False, "error": str(exc)}
        response = connection.respond(status, "")
        response.body = orjson.dumps(body)
        del response.headers["Content-Type"]
        del response.headers["Content-Length"]
        response.headers["Content-Type"] = "application/json"
        response.headers["Content-Length"] = str(len(response.body))
        return response

    # WebSocket -----------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None  # the handler only runs after a successful handshake
        _, header, _ = auth_header_used(request, None)
        remote = ws.remote_address
        info = ConnectionRecord(
            client_id=self._hub.next_client_id(),
            path=urlsplit(request.path).path,
            auth=header if self._config.api_key is not None else None,
            user_agent=request.headers.get("User-Agent"),
            remote=f"{remote[0]}:{remote[1]}" if isinstance(remote, tuple) else str(remote),
            connected_at=time.monotonic(),
            connected_wall=time.time(),
        )
        client = self._hub.add(ws, info)
        log.info("client %d connected on %s", client.id, info.path)
        try:
            async for message in ws:
                self._on_frame(client, message)
        except ConnectionClosed:
            pass
        finally:
            await ws.wait_closed()
            await self._hub.remove(client)
            log.info("client %d disconnected (code %s)", client.id, info.close_code)
