"""One port for HTTP and WebSocket: a small HTTP/1.1 front that hands upgrades to websockets.

The real gateway serves its REST API and its WebSocket on one host and port. websockets' own
HTTP parser only knows ``GET`` (it is a handshake parser, not a web server), so every connection
starts with :class:`FrontDoor`, an asyncio protocol that reads the request head itself:

* a ``GET`` with ``Upgrade: websocket`` is handed over untouched: the door builds the websockets
  connection (through the factory websockets' ``serve`` gives it), makes it the transport's
  protocol and replays the bytes read so far. From then on the transport talks to websockets
  directly, so the WebSocket path costs nothing extra: no proxy, no second socket, no copy;
* anything else is answered here by a synchronous handler (REST, controls, health), with
  keep-alive and pipelining, until the client closes or upgrades.

Parsing is bounded: a request head of at most 16 KiB and 100 header lines, a body of at most
64 KiB (``Content-Length`` only; ``Transfer-Encoding`` is refused with 411), 10 s from a
request's first byte to its last, 30 s of idle keep-alive. Malformed requests get a 4xx answer
and the connection is closed; nothing a client sends can grow a buffer without limit.
"""

from __future__ import annotations

import asyncio
import http
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
MAX_HEADERS = 100
MAX_BODY = 64 * 1024
REQUEST_TIMEOUT = 10.0
IDLE_TIMEOUT = 30.0
SERVER_NAME = "connector-sim"

_METHOD = re.compile(rb"^[A-Z]{1,16}$")
_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One parsed request; header names are lower-case, repeated headers joined with ``, ``."""

    method: str
    path: str  # percent-decoded
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    keep_alive: bool = True

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(slots=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, status: int, value: Any) -> HttpResponse:
        return cls(status, orjson.dumps(value))

    @classmethod
    def text(cls, status: int, text: str) -> HttpResponse:
        return cls(status, text.encode(), "text/plain; charset=utf-8")


HttpHandler = Callable[[HttpRequest], HttpResponse]
UpgradeFactory = Callable[[], asyncio.Protocol]


class BadRequest(Exception):
    """A request the front refuses before any handler sees it; the connection then closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class _Head:
    method: str
    target: str
    version: bytes
    headers: dict[str, str]


class FrontDoor(asyncio.Protocol):
    """The first protocol of every connection: HTTP here, or a hand-over to websockets."""

    def __init__(self, handler: HttpHandler, upgrade: UpgradeFactory, doors: set[FrontDoor]):
        self._handler = handler
        self._upgrade = upgrade
        self._doors = doors
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._head: _Head | None = None  # parsed head of the request whose body is awaited
        self._timer: asyncio.TimerHandle | None = None
        self._idle = False
        self._write_paused = False
        self._closing = False

    # asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's do not derive from asyncio.Transport: no isinstance).
        self._transport = cast(asyncio.Transport, transport)
        self._doors.add(self)
        self._arm(REQUEST_TIMEOUT, idle=False)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self._idle:
            self._arm(REQUEST_TIMEOUT, idle=False)  # a new request's first bytes
        self._buffer += data
        self._process()

    def eof_received(self) -> bool:
        return False  # a half-closed HTTP client has nothing more to say: close

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._cancel_timer()
        self._doors.discard(self)

    def pause_writing(self) -> None:
        # A client that pipelines requests without reading answers gets no more read.
        self._write_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()
            self._process()

    def close(self) -> None:
        """Close the connection (server shutdown)."""
        if self._transport is not None and not self._closing:
            self._closing = True
            self._transport.close()

    # Requests ----------------------------------------------------------------------------

    def _process(self) -> None:
        """Answer every complete request in the buffer (pipelining), or hand over to websockets."""
        while not self._closing and not self._write_paused:
            try:
                request = self._next_request()
            except BadRequest as exc:
                self._refuse(exc.status, str(exc))
                return
            if request is None:
                return
            self._respond(request, self._answer(request))

    def _next_request(self) -> HttpRequest | None:
        """The next complete request, None if more bytes are needed (or it was handed over)."""
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD:
                    raise BadRequest(431, "request head too large")
                return None
            if end > MAX_HEAD:
                raise BadRequest(431, "request head too large")
            head = parse_head(bytes(self._buffer[:end]))
            if _is_upgrade(head):
                self._hand_over()
                return None
            del self._buffer[: end + 4]
            self._head = head
            self._expect_continue(head)
        head = self._head
        length = _content_length(head.headers)
        if len(self._buffer) < length:
            return None
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        self._head = None
        return _request(head, body)

    def _expect_continue(self, head: _Head) -> None:
        expect = head.headers.get("expect", "").lower()
        waiting = _content_length(head.headers) > len(self._buffer)
        if expect == "100-continue" and head.version == b"HTTP/1.1" and waiting:
            assert self._transport is not None
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _answer(self, request: HttpRequest) -> HttpResponse:
        try:
            return self._handler(request)
        except Exception:
            # Never leave a client without an answer: a bug here is a 500, logged.
            log.exception("HTTP handler failed for %s %s", request.method, request.path)
            return HttpResponse.json(
                500, {"code": "INTERNAL_ERROR", "message": "Internal error: see the server log"}
            )

    def _respond(self, request: HttpRequest, response: HttpResponse) -> None:
        assert self._transport is not None
        self._transport.write(encode_response(response, keep_alive=request.keep_alive))
        if not request.keep_alive:
            self.close()
            return
        self._arm(IDLE_TIMEOUT if not self._buffer else REQUEST_TIMEOUT, idle=not self._buffer)

    def _refuse(self, status: int, message: str) -> None:
        assert self._transport is not None
        response = HttpResponse.text(status, message + "\n")
        self._transport.write(encode_response(response, keep_alive=False))
        self.close()

    # Hand-over to websockets -------------------------------------------------------------

    def _hand_over(self) -> None:
        """Make the websockets connection the transport's protocol and replay what was read."""
        transport = self._transport
        assert transport is not None
        self._closing = True  # this door is done; late callbacks must not touch the transport
        self._cancel_timer()
        self._doors.discard(self)
        connection = self._upgrade()
        transport.set_protocol(connection)
        connection.connection_made(transport)
        data, self._buffer = bytes(self._buffer), bytearray()
        connection.data_received(data)

    # Timers ------------------------------------------------------------------------------

    def _arm(self, seconds: float, *, idle: bool) -> None:
        self._cancel_timer()
        self._idle = idle
        self._timer = asyncio.get_running_loop().call_later(seconds, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._idle and not self._buffer:
            self.close()  # an idle keep-alive connection: just close it
        else:
            self._refuse(408, "request not completed in time")


# Parsing -----------------------------------------------------------------------------------


def parse_head(head: bytes) -> _Head:
    """Request line and headers of ``head`` (without the blank line); BadRequest if malformed."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _METHOD.match(parts[0]) or parts[2] not in _VERSIONS:
        raise BadRequest(400, "malformed request line")
    target = parts[1]
    if not target.startswith(b"/"):
        raise BadRequest(400, "the request target must be a path")
    if len(lines) - 1 > MAX_HEADERS:
        raise BadRequest(431, "too many header lines")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name):
            raise BadRequest(400, "malformed header line")
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return _Head(parts[0].decode("ascii"), target.decode("latin-1"), parts[2], headers)


def _content_length(headers: dict[str, str]) -> int:
    if "transfer-encoding" in headers:
        raise BadRequest(411, "send a Content-Length; Transfer-Encoding is not supported")
    raw = headers.get("content-length")
    if raw is None:
        return 0
    values = {value.strip() for value in raw.split(",")}
    if len(values) != 1 or not (value := values.pop()).isdigit():
        raise BadRequest(400, "invalid Content-Length")
    length = int(value)
    if length > MAX_BODY:
        raise BadRequest(413, f"request body larger than {MAX_BODY} bytes")
    return length


def _is_upgrade(head: _Head) -> bool:
    tokens = {token.strip().lower() for token in head.headers.get("upgrade", "").split(",")}
    return head.method == "GET" and "websocket" in tokens


def _request(head: _Head, body: bytes) -> HttpRequest:
    url = urlsplit(head.target)
    tokens = {token.strip().lower() for token in head.headers.get("connection", "").split(",")}
    keep_alive = head.version == b"HTTP/1.1" and "close" not in tokens
    return HttpRequest(
        method=head.method,
        path=unquote(url.path),
        query=dict(parse_qsl(url.query, keep_blank_values=True)),
        headers=head.headers,
        body=body,
        keep_alive=keep_alive,
    )


def encode_response(response: HttpResponse, *, keep_alive: bool) -> bytes:
    phrase = http.HTTPStatus(response.status).phrase
    lines = [
        f"HTTP/1.1 {response.status} {phrase}",
        f"Server: {SERVER_NAME}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
    ]
    lines.extend(f"{name}: {value}" for name, value in response.headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body
