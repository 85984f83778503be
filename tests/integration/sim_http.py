"""A minimal HTTP/1.1 client for the simulator's REST tests: real sockets, no extra dependency."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson

LIMIT = 5.0


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def encode(
    method: str,
    path: str,
    *,
    json: Any = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    close: bool = True,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    extra = dict(headers or {})
    if json is not None:
        body = orjson.dumps(json)
        extra.setdefault("Content-Type", "application/json")
    if body is not None:
        extra.setdefault("Content-Length", str(len(body)))
    if close:
        extra.setdefault("Connection", "close")
    lines += [f"{name}: {value}" for name, value in extra.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    """One response from ``reader`` (Content-Length framed, as the simulator always sends)."""
    async with asyncio.timeout(LIMIT):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Reply(int(lines[0].split()[1]), headers, body)


async def request(port: int, method: str, path: str, **options: Any) -> Reply:
    """One request on its own connection (``Connection: close``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(encode(method, path, **options))
        return await read_reply(reader)
    finally:
        writer.close()
        await writer.wait_closed()


async def post_order(port: int, headers: dict[str, str] | None = None, **fields: Any) -> Reply:
    body: dict[str, Any] = {"symbol": "AAPL", "side": "BUY", "quantity": "10"}
    body["order_type"] = "MARKET"
    body.update(fields)
    return await request(port, "POST", "/v1/orders", json=body, headers=headers)
