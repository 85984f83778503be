"""A small client for the Trading API's REST order surface, for strategies built on the toolkit.

Strategies read the connector's streams and trade over HTTP, on the Trading API's own host and
port, with the same key as the stream (``Authorization: Bearer`` or ``X-API-Key``). This client
does only that: JSON requests on one kept-alive connection, one request at a time, bounded in
time and size, errors raised with the server's ``{"code", "message", "details"}``. No framework:
the order path of a backtest is a few requests per bar.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

MAX_RESPONSE_BYTES = 4 * 1024 * 1024


class TradingApiError(Exception):
    """The server refused a request (``status`` 4xx/5xx with the gateway's error body)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def rest_base(api_url: str) -> str:
    """``ws://host:port/v1/ws`` -> ``http://host:port`` (``wss`` -> ``https``)."""
    parts = urlsplit(api_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected a ws://, wss://, http:// or https:// URL with a host")
    return f"{scheme}://{parts.netloc.rpartition('@')[2]}"


class TradingRest:
    """REST calls to one Trading API (see docs/simulator.md, "REST API", for the surface)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        key_header: str = "authorization",
        timeout: float = 10.0,
        ca_file: str | None = None,
    ) -> None:
        parts = urlsplit(rest_base(base_url))
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context(cafile=ca_file) if parts.scheme == "https" else None
        self._timeout = timeout
        self._headers = {"Host": parts.netloc, "Accept": "application/json"}
        if api_key is not None:
            if key_header == "x-api-key":
                self._headers["X-API-Key"] = api_key
            else:
                self._headers["Authorization"] = f"Bearer {api_key}"
        self._lock = asyncio.Lock()
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def place_order(
        self, symbol: str, side: str, quantity: str, order_type: str = "MARKET", **extra: Any
    ) -> dict[str, Any]:
        """``POST /v1/orders``: 201 ``{"id", "correlation_id", "status", ...}``."""
        body = {"symbol": symbol, "side": side, "quantity": quantity, "order_type": order_type}
        body.update(extra)
        answer: dict[str, Any] = await self.request("POST", "/v1/orders", body)
        return answer

    async def account(self) -> dict[str, Any]:
        answer: dict[str, Any] = await self.request("GET", "/v1/account")
        return answer

    async def trades(self) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = await self.request("GET", "/v1/trades")
        return answer

    async def order_history(self) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = await self.request("GET", "/v1/orders/history")
        return answer

    async def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """One request; the answer's JSON. A kept-alive connection the server closed meanwhile
        is replaced once, for requests that may be repeated (never a POST: an order the server
        took before the connection broke must not be placed twice)."""
        payload = orjson.dumps(body) if body is not None else b""
        async with self._lock:
            for attempt in range(2):
                reused = self._streams is not None
                try:
                    async with asyncio.timeout(self._timeout):
                        status, data = await self._exchange(method, path, payload)
                    break
                except (ConnectionError, asyncio.IncompleteReadError) as exc:
                    await self.close()
                    retry = reused and attempt == 0 and method != "POST"
                    if not retry or not _nothing_came_back(exc):
                        raise
                except BaseException:
                    await self.close()
                    raise
        answer = orjson.loads(data) if data else None
        if status >= 400:
            error = answer if isinstance(answer, dict) else {}
            raise TradingApiError(
                status,
                str(error.get("code", "HTTP_ERROR")),
                str(error.get("message", data[:200].decode("utf-8", "replace"))),
                error.get("details"),
            )
        return answer

    async def _exchange(self, method: str, path: str, payload: bytes) -> tuple[int, bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self._host, self._port, ssl=self._ssl)
        reader, writer = self._streams
        headers = dict(self._headers)
        if method in ("POST", "PUT", "PATCH"):
            headers["Content-Type"] = "application/json"
            headers["Content-Length"] = str(len(payload))
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        )
        writer.write(head.encode() + b"\r\n" + payload)
        await writer.drain()
        status_line = await reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length, close = 0, False
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
            elif name.strip().lower() == "connection":
                close = value.strip().lower() == "close"
        if length > MAX_RESPONSE_BYTES:
            raise ConnectionError(f"response of {length} bytes is too large")
        data = await reader.readexactly(length)
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        streams, self._streams = self._streams, None
        if streams is not None:
            streams[1].close()
            with contextlib.suppress(Exception):
                await streams[1].wait_closed()


def _nothing_came_back(exc: BaseException) -> bool:
    """The server closed an idle kept-alive connection: no byte of an answer was read."""
    return not (isinstance(exc, asyncio.IncompleteReadError) and exc.partial)
