"""The floor of consumer-ack mode on this machine: the least a Python consumer does per step.

``consumer-floor`` runs it so that the toolkit's figure can be read against what the machine
allows, not only against immediate acks. One blocking socket and no event loop; one XREADGROUP
names every stream; per reply, an XACK per stream and the toolkit's notification (a PUBLISH on
``{prefix}:confirm``) go out in the same write as the next read. Nothing is decoded beyond the
ids, nothing is handled, nothing is retried: a bench tool, not a consumer to copy (see
docs/consumers.md for those).

Settings come from the environment, as for the plain recipe: ``REDIS_URL`` (no credentials),
``GROUP``, ``STREAMS`` (comma list), ``CONSUMER``, ``PREFIX``. It runs until it is stopped.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

import hiredis
import orjson

from connector.wire.resp import Arg, encode_command

COUNT = 256
BLOCK_MS = 500


class Floor:
    """One connection; ``turn()`` sends what is due with the next read and takes its replies."""

    def __init__(self, url: str, group: str, member: str, streams: Sequence[str], prefix: str):
        parts = urlsplit(url)
        self._sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._parser = hiredis.Reader()  # errors come back as values: BUSYGROUP is not raised
        self._group = group.encode()
        self._channel = f"{prefix}:confirm"
        head: list[Arg] = ["XREADGROUP", "GROUP", group, member, "COUNT", COUNT, "BLOCK", BLOCK_MS]
        self._read = encode_command([*head, "STREAMS", *streams, *([">"] * len(streams))])
        self._due: list[bytes] = []  # the confirmation of the last reply, sent with the next read
        setup = [encode_command(["SELECT", int(parts.path.strip("/") or 0)])]
        # "$", as the connector creates a group before its first entry; BUSYGROUP is fine.
        setup += [encode_command(["XGROUP", "CREATE", s, group, "$", "MKSTREAM"]) for s in streams]
        self._replies(self._send(setup))

    def _send(self, commands: list[bytes]) -> int:
        self._sock.sendall(b"".join(commands))
        return len(commands)

    def _replies(self, count: int) -> list[object]:
        out: list[object] = []
        while len(out) < count:
            reply = self._parser.gets()
            if reply is False:
                data = self._sock.recv(1 << 16)
                if not data:
                    raise ConnectionError("Redis closed the connection")
                self._parser.feed(data)
                continue
            out.append(reply)
        return out

    def turn(self) -> int:
        """One round trip; returns how many entries the read brought."""
        replies = self._replies(self._send([*self._due, self._read]))
        self._due = []
        read = replies[-1]
        if isinstance(read, hiredis.ReplyError):  # NOGROUP and the like: it does not recover
            raise RuntimeError(f"XREADGROUP refused: {read}")
        if not isinstance(read, list):  # the block ran out
            return 0
        confirmed: dict[str, list[str]] = {}
        for stream, rows in read:
            ids = [row[0] for row in rows]
            self._due.append(encode_command([b"XACK", stream, self._group, *ids]))
            confirmed[stream.decode()] = [entry_id.decode() for entry_id in ids]
        note = orjson.dumps({"g": self._group.decode(), "e": confirmed})
        self._due.append(encode_command([b"PUBLISH", self._channel, note]))
        return sum(len(ids) for ids in confirmed.values())


def main() -> int:
    env = os.environ
    streams = [s for s in env["STREAMS"].split(",") if s]
    floor = Floor(
        env["REDIS_URL"],
        env["GROUP"],
        env.get("CONSUMER", "floor"),
        streams,
        env.get("PREFIX", "md"),
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    total = 0
    try:
        while True:
            total += floor.turn()
    except (KeyboardInterrupt, SystemExit):
        pass
    print(f"handled {total} entries", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
