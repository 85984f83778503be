"""Run the connector service in-process against a simulator and a private Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from connector.app import Connector
from connector.config import load_settings
from connector.sim import Simulator
from connector.trading.protocol import parse_timestamp_ms


def connector_settings(api_url: str, redis_url: str, **overrides: Any) -> dict[str, Any]:
    """Settings for a test connector: loopback, ephemeral ports, quiet logs, fast liveness."""
    base: dict[str, Any] = {
        "api_url": api_url,
        "redis_url": redis_url,
        "http_host": "127.0.0.1",
        "http_port": "0",
        "log_level": "WARNING",
        "reconnect_min_delay": "0.01",
        "reconnect_max_delay": "0.2",
    }
    base.update({key: str(value) for key, value in overrides.items()})
    return base


@dataclass
class Running:
    connector: Connector
    task: asyncio.Task[int]

    def sample(self, name: str, **labels: str) -> float:
        value = self.connector.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    async def exit_code(self, within: float = 60.0) -> int:
        """The service's exit code, once it has stopped by itself (bounded by ``within``)."""
        return await asyncio.wait_for(asyncio.shield(self.task), within)


@contextlib.asynccontextmanager
async def run_connector(
    api: Simulator | str, redis_url: str, **overrides: Any
) -> AsyncIterator[Running]:
    """Start a connector on ``api`` (a simulator, or a URL); stop it gracefully at the end."""
    api_url = api if isinstance(api, str) else overrides.pop("api_url", api.url)
    settings = load_settings(connector_settings(api_url, redis_url, **overrides))
    connector = Connector(settings)
    task = asyncio.create_task(connector.run())
    running = Running(connector, task)
    try:
        yield running
    finally:
        connector.request_stop("test finished")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)


async def wait_until(predicate: Callable[[], bool], within: float = 30.0) -> None:
    """Re-check ``predicate`` until it holds (bounded by ``within``; no timing is asserted).

    For state with no change notification (service metrics, Redis contents). Where the simulator
    can tell, tests await its record instead (``sim.record.wait_until``), which is event driven.
    """
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - nothing to await: the state is polled
            await asyncio.sleep(0.005)


def expected_entry(frame_text: str) -> tuple[str, dict[str, str]]:
    """The stream and fields the connector must write for a candle or quote frame (prefix md)."""
    frame = orjson.loads(frame_text)
    event_id = frame.get("event_id", frame.get("id"))
    if frame["type"] == "candle":
        bar = frame["bar"]
        key = f"md:{{{bar['symbol']}}}:candle:{bar['timeframe']}"
        fields = {
            "symbol": bar["symbol"],
            "timeframe": bar["timeframe"],
            "ts": str(parse_timestamp_ms(bar["timestamp"])),
            "open": bar["open"],
            "high": bar["high"],
            "low": bar["low"],
            "close": bar["close"],
        }
        optional = {"volume": bar.get("volume"), "provider": bar.get("provider")}
    else:
        quote = frame["quote"]
        key = f"md:{{{quote['symbol']}}}:quote"
        fields = {
            "symbol": quote["symbol"],
            "ts": str(parse_timestamp_ms(quote["timestamp"])),
            "bid": quote["bid"],
            "ask": quote["ask"],
        }
        optional = {
            name: quote.get(name) for name in ("last", "bid_size", "ask_size", "volume", "provider")
        }
    fields.update({name: value for name, value in optional.items() if value is not None})
    if event_id is not None:
        fields["event_id"] = event_id
    return key, fields


async def stream_entries(redis: Redis, key: str) -> list[dict[str, str]]:
    rows = await redis.xrange(key)
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in rows]
