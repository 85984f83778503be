"""Connected clients and the one road every frame takes to reach them.

Like the real gateway, each client has a bounded outgoing queue drained by its own writer task.
The feed never waits for a client: :meth:`Hub.emit` does ``put_nowait`` and, when a queue is full,
the frame is dropped for that client and counted. (The optional ``backpressure`` setting of the
live feed waits for space *before* emitting; it is a benchmark aid the real server lacks.)

The writer sends everything queued in one batch and flushes the socket once per batch, which is
what lets a Python process push frames fast enough for the benchmark. The ``relay_gap`` option
does what the gateway's relay does instead: each frame is its own write, a short gap apart, so
the frames of one step reach a client in separate reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.server import ServerProtocol

from connector.sim.config import SimConfig
from connector.sim.frames import Outgoing
from connector.sim.record import ConnectionRecord, Record, SentFrame

log = logging.getLogger(__name__)

#: Most frames a writer hands to the socket before flushing and yielding.
_WRITE_BATCH = 1024
#: How long a ``drop_after`` fault waits for already-written frames to leave before aborting.
_FLUSH_BEFORE_DROP = 2.0


class Client:
    """One connected WebSocket client: its queue, its writer and its counters."""

    __slots__ = (
        "connection",
        "dropped",
        "id",
        "info",
        "open",
        "queue",
        "space",
        "writer",
        "written",
    )

    def __init__(
        self, client_id: int, ws: ServerConnection, info: ConnectionRecord, size: int
    ) -> None:
        self.id = client_id
        self.connection = ws
        self.info = info
        self.queue: asyncio.Queue[Outgoing] = asyncio.Queue(maxsize=size)
        self.space = asyncio.Event()  # set whenever the writer takes frames out of the queue
        self.writer: asyncio.Task[None] | None = None
        self.written = 0
        self.dropped = 0
        self.open = True

    def free_slots(self) -> int:
        return self.queue.maxsize - self.queue.qsize()


class Hub:
    """The registry of clients; emits frames to all of them and records each emission."""

    def __init__(self, config: SimConfig, record: Record) -> None:
        self.clients: dict[int, Client] = {}
        self._record = record
        self._queue_size = config.queue_size
        self._record_frames = config.record_frames
        self._relay_gap = config.relay_gap
        self._drop_after = config.drop_after
        self._drop_pending = config.drop_after > 0
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)

    # Membership ----------------------------------------------------------------------------

    def add(self, ws: ServerConnection, info: ConnectionRecord) -> Client:
        client = Client(info.client_id, ws, info, self._queue_size)
        self.clients[client.id] = client
        self._record.connections.append(info)
        client.writer = asyncio.get_running_loop().create_task(
            self._write_loop(client), name=f"sim-writer-{client.id}"
        )
        self._record.changed()
        return client

    def next_client_id(self) -> int:
        return next(self._ids)

    async def remove(self, client: Client) -> None:
        """Forget a client whose connection ended; frames still queued for it are discarded."""
        if not client.open:
            return
        client.open = False
        client.space.set()  # release a backpressured feed waiting on this client
        self.clients.pop(client.id, None)
        writer = client.writer
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        client.info.disconnected_at = time.monotonic()
        client.info.close_code = client.connection.close_code
        self._record.changed()

    async def wait_clients(self, count: int) -> None:
        await self._record.wait_until(lambda: len(self.clients) >= count)

    def abort_all(self) -> int:
        """Drop every client's TCP connection without a close frame (a network failure)."""
        clients = list(self.clients.values())
        for client in clients:
            client.connection.transport.abort()
        return len(clients)

    # Sending -------------------------------------------------------------------------------

    def emit(self, out: Outgoing, step: int | None = None) -> None:
        """Queue ``out`` for every connected client, never waiting; record the emission."""
        record = self._record
        record.sent_count += 1
        clients = self.clients
        if self._record_frames:
            record.sent.append(
                SentFrame(
                    seq=next(self._seq),
                    time=time.monotonic(),
                    wall=time.time(),
                    type=out.type,
                    event_id=out.event_id,
                    symbol=out.symbol,
                    step=step,
                    text=None if out.binary else out.payload.decode("utf-8", "replace"),
                    clients=len(clients),
                    binary=out.binary,
                )
            )
        for client in clients.values():
            try:
                client.queue.put_nowait(out)
            except asyncio.QueueFull:
                client.dropped += 1
                record.dropped[client.id] = client.dropped
        record.changed()

    async def wait_for_space(self, needed: int) -> None:
        """Wait until every client's queue has ``needed`` free slots (live ``backpressure``)."""
        for client in list(self.clients.values()):
            while client.open and client.free_slots() < needed:
                client.space.clear()
                await client.space.wait()

    async def _write_loop(self, client: Client) -> None:
        ws = client.connection
        protocol = ws.protocol
        queue = client.queue
        try:
            while True:
                batch = [await queue.get()]
                limit = _WRITE_BATCH
                if self._drop_pending:
                    limit = max(1, min(limit, self._drop_after - client.written))
                while len(batch) < limit and not queue.empty():
                    batch.append(queue.get_nowait())
                client.space.set()
                if self._relay_gap > 0:
                    await self._write_relayed(ws, batch)
                else:
                    # One write (one syscall) and one flow-control wait per batch, not per frame.
                    async with ws.send_context():
                        for out in batch:
                            _queue_frame(protocol, out)
                        _write_joined(ws)
                client.written += len(batch)
                if self._drop_pending and client.written >= self._drop_after:
                    self._drop_pending = False
                    await self._drop(client)
                    return
        except ConnectionClosed:
            pass
        except Exception:
            # Never leave a client connected but unfed: log, then cut it like a network failure.
            log.exception("writer of client %d failed", client.id)
            ws.transport.abort()

    async def _write_relayed(self, ws: ServerConnection, batch: list[Outgoing]) -> None:
        """One write per frame with ``relay_gap`` seconds between them, like the gateway."""
        for number, out in enumerate(batch):
            if number:
                await asyncio.sleep(self._relay_gap)
            async with ws.send_context():
                _queue_frame(ws.protocol, out)
                _write_joined(ws)

    async def _drop(self, client: Client) -> None:
        """The ``drop_after`` fault: let written frames leave, then abort the TCP connection."""
        ws = client.connection
        transport = ws.transport
        log.info("dropping client %d after %d frames (drop_after fault)", client.id, client.written)
        # With a zero high-water mark, drain() returns only once the transport buffer is empty.
        transport.set_write_buffer_limits(high=0, low=0)
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(_FLUSH_BEFORE_DROP):
                await ws.drain()
        transport.abort()


def _queue_frame(protocol: ServerProtocol, out: Outgoing) -> None:
    if out.binary:
        protocol.send_binary(out.payload)
    else:
        protocol.send_text(out.payload)


def _write_joined(ws: ServerConnection) -> None:
    """Hand the protocol's pending frames to the transport as one buffer.

    ``send_context`` would write them one ``transport.write`` (so one ``send`` syscall) per frame;
    joining them first is several times cheaper for a batch. Anything unusual (an EOF marker,
    which only a closing protocol produces) is left for ``send_context`` to handle.
    """
    chunks = ws.protocol.data_to_send()
    if all(chunks):
        ws.transport.write(b"".join(chunks))
        return
    for chunk in chunks:
        if chunk:
            ws.transport.write(chunk)
        elif ws.transport.can_write_eof():
            ws.transport.write_eof()
        else:
            ws.transport.close()
