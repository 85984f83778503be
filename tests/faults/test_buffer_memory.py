"""The buffer's byte bound means what it says: what the process holds while Redis is away.

A storm of candles while Redis is frozen (SIGSTOP): the buffer fills to CONNECTOR_BUFFER_MAX_BYTES
and then drops the oldest. The connector's resident memory grows by no more than 1.3 times the
bound (the estimate per entry covers its strings, the entry and its encoded form).
"""

from __future__ import annotations

import asyncio
import os
import signal
import urllib.request
from collections.abc import Callable

from connector.sim import SimConfig, Simulator
from tests.support.processes import connector_process, service_env, wait_for_log
from tests.support.redis_server import RedisServer, free_port

BOUND = 32 * 1024 * 1024


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def sample(port: int, name: str) -> float:
    """The sum of a metric's samples (every label set) on the service's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        lines = answer.read().decode().splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith((name + " ", name + "{"))
    )


async def until(predicate: Callable[[], bool], within: float = 60.0) -> None:
    async with asyncio.timeout(within):
        while not await asyncio.to_thread(predicate):  # noqa: ASYNC110 - /metrics: polled
            await asyncio.sleep(0.05)


async def test_a_storm_while_redis_is_frozen_stays_within_the_byte_bound(
    redis_server: RedisServer,
) -> None:
    assert redis_server.process is not None
    http_port = free_port()
    config = SimConfig(mode="live", symbols=("AAPL", "MSFT", "BTCUSD"), rate=20_000.0)
    async with Simulator(config) as sim:
        env = service_env(sim.url, redis_server.url)
        env.update(
            CONNECTOR_HTTP_PORT=str(http_port),
            CONNECTOR_BUFFER_MAX_BYTES=str(BOUND),
            CONNECTOR_BUFFER_MAX_EVENTS="10000000",
            CONNECTOR_REDIS_TIMEOUT="1",
            CONNECTOR_PREFIX_LOCK="false",
        )
        async with connector_process("run", env=env) as process:
            await wait_for_log(process, "connected to the Trading API")
            await until(lambda: sample(http_port, "connector_published_total") > 1000)
            before = rss_bytes(process.pid)
            os.kill(redis_server.process.pid, signal.SIGSTOP)
            try:
                # Full, then well past full: the oldest are being dropped.
                await until(
                    lambda: sample(http_port, "connector_dropped_events_total") > 20_000,
                    within=120,
                )
                held = sample(http_port, "connector_buffered_bytes")
                grown = rss_bytes(process.pid) - before
            finally:
                os.kill(redis_server.process.pid, signal.SIGCONT)
    assert held > 0.9 * BOUND  # the bound was reached...
    assert grown < 1.3 * BOUND, (
        f"RSS grew {grown / 2**20:.1f} MiB for a {BOUND / 2**20:.0f} MiB bound"
    )
