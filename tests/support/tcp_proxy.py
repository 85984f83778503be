"""A loopback TCP proxy that can lose a reply: the request reaches the server, the answer never
reaches the client, and the connection drops. That is what a network failure in the middle of a
pipelined round trip looks like to a Redis client.
"""

from __future__ import annotations

import asyncio
import contextlib


class ReplyCuttingProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream_port``; see :meth:`cut_reply_after`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._trigger: bytes | None = None
        self._cuts_left = 0
        self.cuts = 0
        self.cut_done = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cut_reply_after(self, marker: bytes, times: int = 1) -> None:
        """The next ``times`` requests containing ``marker`` are delivered, their replies lost."""
        self._trigger = marker
        self._cuts_left = times
        self.cut_done.clear()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.close()
            self._tasks.discard(task)
            return
        doomed = asyncio.Event()  # set when this connection's next reply must be lost

        async def requests() -> None:
            while data := await client_r.read(65536):
                if self._trigger is not None and self._cuts_left and self._trigger in data:
                    self._cuts_left -= 1
                    doomed.set()
                upstream_w.write(data)
                await upstream_w.drain()

        async def replies() -> None:
            while data := await upstream_r.read(65536):
                if doomed.is_set():
                    self.cuts += 1
                    self.cut_done.set()
                    return  # the server has executed the request; its answer is lost
                client_w.write(data)
                await client_w.drain()

        pumps = [asyncio.create_task(requests()), asyncio.create_task(replies())]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for pump in pumps:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pump
            for writer in (client_w, upstream_w):
                writer.transport.abort()
            self._tasks.discard(task)
