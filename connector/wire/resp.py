"""RESP encoding and a minimal pipelined connection for the write path.

The hot path writes one pipelined batch per round trip and reads all the replies back. redis-py
does this well but spends tens of microseconds per command in Python (argument encoding, one
coroutine per reply); that is the connector's main cost at high rates. Here a batch is encoded
with plain byte joins (each entry's fields are encoded once and kept across retries) and the
replies are parsed by hiredis' C reader in one loop. Everything else (health checks, consumer
groups, verification after a retry, Redis Cluster) keeps using redis-py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.credentials import CredentialProvider
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = str | bytes | int


def encode_arg(value: Arg) -> bytes:
    data = value if isinstance(value, bytes) else str(value).encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def encode_command(args: Sequence[Arg]) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(encode_arg(arg) for arg in args)


_FIELD_NAMES: dict[str, str] = {}  # field name -> its RESP bulk string (a small, fixed set)


def encode_fields(fields: dict[str, str]) -> bytes:
    """The field/value part of an XADD, encoded once per entry.

    Built as text and encoded once: for ASCII (the protocol's decimals, ids, timestamps and
    nearly every symbol) character counts are byte counts; anything else takes the byte path.
    """
    parts = []
    names = _FIELD_NAMES
    for key, value in fields.items():
        name = names.get(key)
        if name is None:
            if not key.isascii() or len(names) >= 256:
                return _encode_fields_bytes(fields)
            name = names[key] = f"${len(key)}\r\n{key}\r\n"
        parts.append(name)
        parts.append(f"${len(value)}\r\n{value}\r\n")
    text = "".join(parts)
    if text.isascii():
        return text.encode()
    return _encode_fields_bytes(fields)


def _encode_fields_bytes(fields: dict[str, str]) -> bytes:
    out = []
    for key, value in fields.items():
        k = key.encode()
        v = value.encode()
        out.append(b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect: TCP (optionally TLS) or a unix socket, credentials, database."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: ssl.SSLContext | None = None
    # Asked at every connect (a rotated password file): wins over username/password.
    credentials: CredentialProvider | None = None

    @classmethod
    def of_client(cls, client: Any) -> Endpoint | None:
        """The endpoint of a redis-py ``Redis`` client, or None when its configuration is one
        this minimal connection does not reproduce (RESP3, client certificates)."""
        pool = getattr(client, "connection_pool", None)
        return cls.of_connection(
            getattr(pool, "connection_kwargs", None), getattr(pool, "connection_class", None)
        )

    @classmethod
    def of_connection(cls, kwargs: Any, connection_class: Any) -> Endpoint | None:
        """The same from redis-py's connection settings (a pool's, or a cluster node's)."""
        if not isinstance(kwargs, dict):
            return None
        if kwargs.get("protocol") not in (None, 2, "2"):
            return None
        provider = kwargs.get("credential_provider")
        if provider is not None and not isinstance(provider, CredentialProvider):
            return None
        if kwargs.get("ssl_certfile") or kwargs.get("ssl_keyfile"):
            return None
        password = kwargs.get("password")
        if password is not None and not isinstance(password, str):
            return None
        context = None
        if connection_class is SSLConnection:
            context = ssl.create_default_context(cafile=kwargs.get("ssl_ca_certs"))
            if kwargs.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        return cls(
            host=str(kwargs.get("host", "localhost")),
            port=int(kwargs.get("port", 6379)),
            path=kwargs.get("path"),
            db=int(kwargs.get("db", 0) or 0),
            username=kwargs.get("username"),
            password=password,
            ssl=context,
            credentials=provider,
        )


def _keepalive(writer: asyncio.StreamWriter) -> None:
    """TCP keepalive with short probes: a subscriber waits on its socket indefinitely, and a
    peer that vanished without a word (a rescheduled Redis pod) must still end the wait."""
    sock = writer.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


async def _setup_commands(endpoint: Endpoint) -> list[list[Arg]]:
    """AUTH (when credentials are configured), SELECT (a database other than 0), a name."""
    setup: list[list[Arg]] = []
    if endpoint.credentials is not None:
        setup.append(["AUTH", *await endpoint.credentials.get_credentials_async()])
    elif endpoint.password is not None:
        auth: list[Arg] = ["AUTH", endpoint.password]
        setup.append(["AUTH", endpoint.username, endpoint.password] if endpoint.username else auth)
    if endpoint.db:
        setup.append(["SELECT", endpoint.db])
    # The name only helps operators (CLIENT LIST): a user without the CLIENT command, or a
    # provider that disables it, must not stop the connection, so its reply is not checked.
    setup.append(["CLIENT", "SETNAME", "connector"])
    return setup


MULTI = encode_command(["MULTI"])
EXEC = encode_command(["EXEC"])


class WireConnection:
    """One Redis connection used only to send a pipeline and read exactly its replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float):
        self._reader = reader
        self._writer = writer
        self._timeout = timeout
        self._parser = hiredis.Reader(replyError=ResponseError)

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        reply_timeout: float,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
    ) -> WireConnection:
        """Connect to the Redis named by ``url``, authenticate, select its database."""
        options = parse_url(url)
        context = (
            ssl.create_default_context(cafile=ca_file) if url.startswith("rediss://") else None
        )
        return await cls.connect(
            Endpoint(
                host=options.get("host", "localhost"),
                port=options.get("port", 6379),
                path=options.get("path"),
                db=options.get("db", 0),
                username=username if username is not None else options.get("username"),
                password=password if password is not None else options.get("password"),
                ssl=context,
            ),
            reply_timeout=reply_timeout,
        )

    @classmethod
    async def connect(cls, endpoint: Endpoint, *, reply_timeout: float) -> WireConnection:
        setup = await _setup_commands(endpoint)  # credentials first: nothing to close if they fail
        try:
            async with asyncio.timeout(reply_timeout):
                if endpoint.path is not None:
                    reader, writer = await asyncio.open_unix_connection(endpoint.path)
                else:
                    reader, writer = await asyncio.open_connection(
                        endpoint.host, endpoint.port, ssl=endpoint.ssl
                    )
        except (OSError, TimeoutError) as exc:
            # A TLS handshake with a server that does not speak TLS ends in a timeout with no
            # text of its own: say what happened instead of nothing.
            detail = str(exc) or (
                f"no answer within {reply_timeout:g} s"
                + (" (is the server speaking TLS?)" if endpoint.ssl is not None else "")
            )
            raise RedisConnectionError(f"cannot connect to Redis: {detail}") from exc
        _keepalive(writer)
        connection = cls(reader, writer, reply_timeout)
        try:
            replies = await connection.execute(
                b"".join(encode_command(c) for c in setup), len(setup)
            )
        except BaseException:
            await connection.close()
            raise
        for reply in replies[:-1]:
            if isinstance(reply, ResponseError):
                await connection.close()
                raise reply
        return connection

    async def execute(self, payload: bytes, replies: int) -> list[Any]:
        """Send ``payload`` and return its ``replies`` replies (errors as ResponseError values)."""
        try:
            async with asyncio.timeout(self._timeout):
                self._writer.write(payload)
                await self._writer.drain()
                out: list[Any] = []
                parser = self._parser
                while len(out) < replies:
                    data = await self._reader.read(1 << 16)
                    if not data:
                        raise RedisConnectionError("Redis closed the connection")
                    parser.feed(data)
                    while (reply := parser.gets()) is not False:
                        out.append(reply)
                return out
        except TimeoutError as exc:
            raise RedisTimeoutError(f"no reply from Redis within {self._timeout}s") from exc
        except OSError as exc:
            raise RedisConnectionError(str(exc) or type(exc).__name__) from exc

    async def subscribe(self, channel: str) -> None:
        """Turn this connection into a subscriber of ``channel`` (see :meth:`messages`)."""
        reply = await self.execute(encode_command(["SUBSCRIBE", channel]), 1)
        if not (isinstance(reply[0], list) and reply[0][:1] == [b"subscribe"]):
            raise RedisConnectionError(f"unexpected reply to SUBSCRIBE: {reply[0]!r}")

    async def messages(self) -> list[bytes]:
        """The payloads of the next published messages (waits as long as it takes)."""
        parser = self._parser
        while True:
            data = await self._reader.read(1 << 16)
            if not data:
                raise RedisConnectionError("Redis closed the connection")
            parser.feed(data)
            out = []
            while (reply := parser.gets()) is not False:
                if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                    out.append(reply[2])
            if out:
                return out

    async def close(self) -> None:
        self._writer.transport.abort()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
