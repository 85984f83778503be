"""The HTTP/WebSocket face of the simulator: one port for the stream, the REST API and controls.

Every connection starts with the :class:`~connector.sim.front.FrontDoor` (see front.py): a
WebSocket upgrade is handed to websockets, everything else is answered here.

* ``/ws`` (the docs' path) and ``/v1/ws`` (the current server's) upgrade to WebSocket. No greeting
  is sent: the socket is ready as soon as the upgrade succeeds.
* ``/v1/...``: the REST order surface (rest.py), as the gateway serves it next to the stream.
* ``/health``, ``/livez``, ``/readyz``: unversioned probes that need no key.
* ``GET /control/<name>?...`` runs a runtime control and ``GET /report`` returns the report.
* With an API key configured, everything but the probes needs ``Authorization: Bearer <key>``
  or ``X-API-Key: <key>``; otherwise HTTP 401 (before any upgrade) with the gateway's error body,
  recorded in ``auth_failures``.
* Everything else is 404.

Protocol-level pings are answered by websockets itself; the ``answer_pings`` fault suppresses
the PONG frames by filtering the sans-I/O protocol's ``send_frame``, switchable at run time.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import logging
import ssl
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, cast
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from connector.sim.clients import Client, Hub
from connector.sim.config import SimConfig
from connector.sim.front import FrontDoor, HttpRequest, HttpResponse
from connector.sim.record import AuthFailure, ConnectionRecord, Record
from connector.sim.rest import RestApi

log = logging.getLogger(__name__)

WS_PATHS = ("/ws", "/v1/ws")
CONTROL_PREFIX = "/control/"
REPORT_PATH = "/report"
API_PREFIX = "/v1/"
PROBE_PATHS = ("/health", "/livez", "/readyz")
#: The close reason the gateway gives when it shuts down.
SHUTDOWN_REASON = "Gateway shutting down"

#: A control: (name, query parameters) -> JSON-friendly answer. KeyError = unknown (404),
#: ValueError = bad parameter (400).
ControlHandler = Callable[[str, dict[str, str]], dict[str, Any]]
FrameHandler = Callable[[Client, str | bytes], None]
#: The health probes' view of the run: (ready, stale symbols).
HealthView = Callable[[], tuple[bool, list[str]]]


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


def auth_header_used(
    bearer: str | None, api_key_header: str | None, api_key: str | None
) -> tuple[bool, str | None, str]:
    """Check the key like the server does: (accepted, header that carried a key, reason).

    ``bearer`` is the ``Authorization`` header, ``api_key_header`` the ``X-API-Key`` one.
    """
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


def unauthorized_body(reason: str) -> dict[str, Any]:
    """The gateway's 401 body: API key missing, or present but wrong."""
    if reason == "missing credentials":
        message, code = "Unauthorized: API key required", "MISSING_API_KEY"
    else:
        message, code = "Unauthorized: Invalid API key", "INVALID_API_KEY"
    return {"code": "UNAUTHORIZED", "message": message, "details": {"code": code}}


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
        rest: RestApi,
        health: HealthView,
    ) -> None:
        self._config = config
        self._hub = hub
        self._record = record
        self._controls = controls
        self._on_frame = on_frame
        self._pongs = pong_gate
        self._rest = rest
        self._health = health
        self._server: Server | None = None
        self._port: int | None = None
        self._doors: set[FrontDoor] = set()  # connections still speaking plain HTTP

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self._config.host,
            self._config.port,
            process_request=self._process_request,
            # websockets documents this hook for wrappers: ours puts the HTTP front first.
            create_connection=cast(type[ServerConnection], self._front_door),
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

    async def close(self, *, lose: Callable[[ServerConnection], bool] | None = None) -> None:
        """Stop listening, close plain HTTP connections, close every WebSocket with 1001.

        ``lose(connection)`` True aborts that WebSocket's TCP connection instead of sending the
        close frame: the gateway's process sometimes exits before its close frame leaves.
        """
        if self._server is None:
            return
        for door in list(self._doors):
            door.close()
        if lose is not None:
            lost = [conn for conn in self._server.connections if lose(conn)]
            for connection in lost:
                connection.transport.abort()
            if lost:
                await asyncio.sleep(0)  # let the aborted connections see their loss first
        self._server.close(close_connections=True, reason=SHUTDOWN_REASON)
        await self._server.wait_closed()

    def _front_door(self, protocol: ServerProtocol, server: Server, **options: Any) -> FrontDoor:
        """websockets' connection factory, wrapped: the door builds the connection on upgrade."""

        def upgrade() -> ServerConnection:
            return ServerConnection(protocol, server, **options)

        return FrontDoor(self._http, upgrade, self._doors)

    # WebSocket handshake -------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path not in WS_PATHS:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")
        headers = request.headers
        accepted, header, reason = auth_header_used(
            headers.get("Authorization"), headers.get("X-API-Key"), self._config.api_key
        )
        if not accepted:
            self._auth_failed(path, reason, header)
            response = connection.respond(http.HTTPStatus.UNAUTHORIZED, "")
            _set_json_body(response, unauthorized_body(reason))
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        self._pongs.install(connection.protocol)
        return None

    def _auth_failed(self, path: str, reason: str, header: str | None) -> None:
        self._record.auth_failures.append(
            AuthFailure(time=time.monotonic(), path=path, reason=reason, header=header)
        )
        self._record.changed()
        log.info("rejected request for %s: %s", path, reason)

    # Plain HTTP ----------------------------------------------------------------------------

    def _http(self, request: HttpRequest) -> HttpResponse:
        """Every request that is not an upgrade: probes, then the key, then the routes."""
        self._record.http_requests += 1
        path = request.path
        if path in PROBE_PATHS:
            return self._probe(request)
        if not self._known(path):
            return HttpResponse.text(404, "Not Found\n")
        # The controls can stop the server, so they take the same key as the upgrade.
        accepted, header, reason = auth_header_used(
            request.header("authorization"), request.header("x-api-key"), self._config.api_key
        )
        if not accepted:
            self._auth_failed(path, reason, header)
            response = HttpResponse.json(401, unauthorized_body(reason))
            response.headers.append(("WWW-Authenticate", "Bearer"))
            return response
        if path in WS_PATHS:
            return HttpResponse.text(426, "Upgrade Required: this path speaks WebSocket\n")
        if path.startswith(API_PREFIX):
            return self._rest.handle(request)
        return self._control(request)

    @staticmethod
    def _known(path: str) -> bool:
        prefixes = (CONTROL_PREFIX, API_PREFIX)
        return path in WS_PATHS or path == REPORT_PATH or path.startswith(prefixes)

    def _probe(self, request: HttpRequest) -> HttpResponse:
        """``/livez`` (up), ``/readyz`` (serving), ``/health`` (broker link fresh or degraded)."""
        if request.method != "GET":
            return _not_allowed("GET")
        ready, stale = self._health()
        provider = self._config.provider
        if request.path == "/livez":
            return HttpResponse.json(200, {"status": "ok"})
        if request.path == "/readyz":
            body: dict[str, Any] = {"ready": ready, "providers": [provider], "provider_count": 1}
            if not ready:
                body["message"] = "shutting down"
            return HttpResponse.json(200 if ready else 503, body)
        detail: dict[str, Any] = {"platform": provider, "connected": not stale}
        if stale:
            detail["stale_instruments"] = stale
        return HttpResponse.json(
            200,
            {
                "status": "degraded" if stale else "connected",
                "providers": [detail],
                "version": _version(),
                "git_sha": "unknown",
            },
        )

    def _control(self, request: HttpRequest) -> HttpResponse:
        if request.method != "GET":
            return _not_allowed("GET")
        path = request.path
        name = "report" if path == REPORT_PATH else path.removeprefix(CONTROL_PREFIX)
        try:
            return HttpResponse.json(200, self._controls(name, request.query))
        except KeyError:
            return HttpResponse.json(404, {"ok": False, "error": f"no control {name}"})
        except ValueError as exc:
            return HttpResponse.json(400, {"ok": False, "error": str(exc)})

    # WebSocket -----------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None  # the handler only runs after a successful handshake
        headers = request.headers
        _, header, _ = auth_header_used(
            headers.get("Authorization"), headers.get("X-API-Key"), None
        )
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


def _not_allowed(allowed: str) -> HttpResponse:
    response = HttpResponse.text(405, "Method Not Allowed\n")
    response.headers.append(("Allow", allowed))
    return response


def _set_json_body(response: Response, body: dict[str, Any]) -> None:
    response.body = orjson.dumps(body)
    del response.headers["Content-Type"]
    del response.headers["Content-Length"]
    response.headers["Content-Type"] = "application/json"
    response.headers["Content-Length"] = str(len(response.body))


def _version() -> str:
    try:
        return version("connector")
    except PackageNotFoundError:
        return "unknown"
