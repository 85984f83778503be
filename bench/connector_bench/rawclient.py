"""A client that only receives: the simulator's raw send rate, with no Redis at all.

``python -m connector_bench.rawclient WS_URL --count N [--ack none|each|batch] [--batch K]``

* ``--ack none`` (live): read frames and count them, nothing else (not even JSON parsing).
* ``--ack each``: parse each frame and acknowledge its id at once, in its own ``event_ack``.
* ``--ack batch``: acknowledge once ``K`` ids are pending (one ack per backtest step when ``K``
  is the step size), and at once for ``backtest_complete``.

It exits after ``N`` frames (``--count``), after acknowledging ``backtest_complete``, or when
the server closes, and prints one JSON line on stdout: frames received, ids acknowledged, and the
wall-clock times of the first and last frame. It prints ``ready`` first (before connecting).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

CONNECT_TIMEOUT = 60.0


async def _connect(uri: str) -> ClientConnection:
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        try:
            return await connect(uri, max_queue=4096, ping_interval=None, compression=None)
        except OSError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.02)


def ack_frame(ids: list[str]) -> bytes:
    return orjson.dumps(
        {
            "type": "event_ack",
            "correlation_id": str(uuid.uuid4()),
            "events_processed": ids,
            "timestamp": time.time_ns() // 1_000_000,
        }
    )


def event_id_of(message: str | bytes) -> tuple[str | None, str | None]:
    """(type, id) of a frame; (None, None) for anything that is not a JSON object."""
    try:
        event = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(event, dict):
        return None, None
    found = event.get("event_id", event.get("id"))
    kind = event.get("type")
    return (kind if isinstance(kind, str) else None, found if isinstance(found, str) else None)


async def run(uri: str, count: int, ack: str, batch: int) -> dict[str, float | int | None]:
    received = acked = 0
    first: float | None = None
    last: float | None = None
    pending: list[str] = []
    ws = await _connect(uri)
    try:
        while count <= 0 or received < count:
            message = await ws.recv()
            received += 1
            last = time.time()
            if first is None:
                first = last
            if ack == "none":
                continue
            kind, event_id = event_id_of(message)
            if event_id is not None:
                pending.append(event_id)
            if pending and (ack == "each" or len(pending) >= batch or kind == "backtest_complete"):
                await ws.send(ack_frame(pending), text=True)
                acked += len(pending)
                pending = []
            if kind == "backtest_complete":
                break
    except ConnectionClosed:
        pass
    finally:
        await ws.close()
    return {"frames": received, "acked": acked, "first_wall": first, "last_wall": last}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m connector_bench.rawclient",
        description="Receive-only client measuring the simulator's raw send rate.",
    )
    parser.add_argument("url")
    parser.add_argument("--count", type=int, default=0, help="stop after N frames (0 = never)")
    parser.add_argument("--ack", choices=("none", "each", "batch"), default="none")
    parser.add_argument("--batch", type=int, default=1, help="ids per ack with --ack batch")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    summary = asyncio.run(run(args.url, args.count, args.ack, max(1, args.batch)))
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
