"""One-command tour: the simulator's backtest engine, the connector and a strategy that trades.

Runs a short backtest in consumer-ack mode against Redis: CONNECTOR_REDIS_URL (or
redis://localhost:6379/0) when it answers, otherwise a private redis-server started from PATH.
The strategy is the toolkit's example (a moving-average crossover, connector.examples.crossover):
it reads the candles in the consumer group ``strategy``, places market orders through the
simulator's REST API, and confirms each batch once its orders were accepted, so the engine's
simulated time waits for them. Shows progress, then a summary: the orders, how many filled on the
bar after their signal, the run's P&L, events per type, entries per stream, ack latency, missed
pongs, and a redis-cli line to look at the data. The demo owns the ``demo`` stream prefix and
clears it first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from connector import loop
from connector.app import Connector
from connector.config import ConfigError, load_settings, mask_url
from connector.examples import crossover
from connector.localredis import free_port, private_server_argv, redis_server_binary
from connector.logs import setup_logging
from connector.sim import SimConfig, Simulator
from connector.trading.rest import TradingRest

PREFIX = "demo"
GROUP = crossover.GROUP
DECLARED = f"{GROUP}[types=candle]"  # what the strategy reads: the engine waits for it there
DEFAULT_REDIS = "redis://localhost:6379/0"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--symbols", default="AAPL,MSFT,BTCUSD,F:EURUSD", help="comma list (default %(default)s)"
    )
    parser.add_argument("--steps", type=int, default=500, help="backtest steps (default 500)")
    parser.add_argument(
        "--ack-mode",
        choices=("consumer", "immediate"),
        default="consumer",
        help="consumer: the engine waits for the strategy (default); immediate: it does not",
    )
    parser.add_argument(
        "--redis-url",
        default=None,
        help="default: CONNECTOR_REDIS_URL when it answers, else a private redis-server",
    )
    parser.add_argument(
        "--keep-redis", action="store_true", help="leave a private redis-server running afterwards"
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the run's figures as JSON (the strategy's orders, fill lags and P&L)",
    )


def run(args: argparse.Namespace) -> int:
    setup_logging("WARNING", "text")
    try:
        return loop.run(_demo(args))
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1


class DemoError(Exception):
    pass


@dataclass
class RedisChoice:
    url: str
    private: asyncio.subprocess.Process | None = None
    directory: str | None = None


async def _demo(args: argparse.Namespace) -> int:
    symbols = tuple(s.strip() for s in args.symbols.split(",") if s.strip())
    async with _redis(args) as choice:
        redis = Redis.from_url(choice.url)
        try:
            await _clear_prefix(redis)
            return await _tour(args, symbols, choice, redis)
        finally:
            await redis.aclose()


async def _tour(
    args: argparse.Namespace, symbols: tuple[str, ...], choice: RedisChoice, redis: Redis
) -> int:
    out = sys.stdout
    # No synthetic fills: every order and every P&L figure is the strategy's.
    config = SimConfig(
        mode="backtest", symbols=symbols, steps=args.steps, seed=7, fill_every=0, other_every=0
    )
    sim = Simulator(config)
    await sim.start()
    try:
        settings = load_settings(
            {
                "api_url": sim.url,
                "mode": "backtest",
                "redis_url": choice.url,
                "stream_prefix": PREFIX,
                "http_host": "127.0.0.1",
                "http_port": "0",
                "log_level": "WARNING",
                "ack_mode": args.ack_mode,
                "consumer_groups": DECLARED if args.ack_mode == "consumer" else "",
            }
        )
    except ConfigError as exc:
        await sim.stop()
        raise DemoError(str(exc)) from None
    connector = Connector(settings)
    where = "private redis-server" if choice.private else mask_url(choice.url)
    print(
        f"connector demo: {len(symbols)} symbols x {args.steps} steps, ack mode "
        f"{args.ack_mode}, Redis: {where}; strategy: moving-average crossover "
        f"(group {DECLARED!r})",
        file=out,
    )
    strategy_redis = Redis.from_url(choice.url)
    rest = TradingRest(sim.url)
    trading = asyncio.create_task(crossover.run(strategy_redis, rest, prefix=PREFIX, name="demo-1"))
    started = time.perf_counter()
    running = asyncio.create_task(connector.run())
    try:
        await _progress(sim, connector, running, args.steps)
        code = await running
        elapsed = time.perf_counter() - started
        outcome = await asyncio.wait_for(sim.wait_finished(), 15)
        report = await asyncio.wait_for(trading, 30)
    finally:
        trading.cancel()
        await rest.close()
        await strategy_redis.aclose()
        await sim.stop()
    await _summary(sim, connector, report, redis, choice, elapsed, outcome)
    if args.report is not None:
        bars = sum(1 for step in sim.record.steps if step.kind == "bar")
        figures = {
            "ack_mode": args.ack_mode,
            "symbols": list(symbols),
            "steps": args.steps,
            "seed": config.seed,
            "outcome": outcome,
            "elapsed_s": round(elapsed, 3),
            "bars_per_s": round(bars / elapsed, 1) if elapsed > 0 else None,
            "engine_timeouts": sim.record.timeouts,
            "strategy": report,
        }
        args.report.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    return 0 if code == 0 and outcome == "completed" else 1


async def _progress(
    sim: Simulator, connector: Connector, running: asyncio.Task[int], steps: int
) -> None:
    tty = sys.stdout.isatty()
    interval = 0.2 if tty else 1.0
    connected = asyncio.ensure_future(sim.record.wait_until(lambda: bool(sim.record.connections)))
    await asyncio.wait([running, connected], return_when=asyncio.FIRST_COMPLETED)
    connected.cancel()
    print(f"  simulator {sim.url}; connector metrics http://127.0.0.1:{connector.ops.port}/metrics")
    while not running.done():
        record = sim.record
        done = sum(1 for step in record.steps if step.completed_at and step.kind == "bar")
        line = (
            f"  step {done:>5}/{steps}  events sent {len(record.sent):>6}  "
            f"acked {len(record.acked_ids()):>6}  engine timeouts {record.timeouts}"
        )
        print(("\r" + line) if tty else line, end="" if tty else "\n", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(running), interval)
    if tty:
        print()


async def _summary(
    sim: Simulator,
    connector: Connector,
    report: dict[str, Any],
    redis: Redis,
    choice: RedisChoice,
    elapsed: float,
    outcome: str,
) -> None:
    record = sim.record
    registry = connector.metrics.registry
    bars = sum(1 for step in record.steps if step.kind == "bar")
    print(
        f"\nbacktest {outcome} in {elapsed:.2f}s: {bars} bars (and {len(record.steps) - bars} "
        f"order and fill steps), {len(record.event_ids())} engine events, engine timeouts "
        f"{record.timeouts}"
    )
    lags = report["fill_lags"]
    late = len(lags) - report["filled_next_bar"]
    print(
        f"strategy: {report['orders']} orders placed, {report['filled']} filled, "
        f"{report['filled_next_bar']} on the bar after their signal"
        + (f", {late} later" if late else "")
        + f"; P&L {Decimal(report['pnl']):+.2f}"
    )
    print("events received by type:")
    for metric in registry.collect():
        if metric.name == "connector_events":
            for sample in metric.samples:
                if sample.name.endswith("_total") and sample.value:
                    print(f"  {sample.labels['type']:<18} {int(sample.value):>7}")
    print("entries per stream:")
    for key in sorted([k.decode() async for k in redis.scan_iter(f"{PREFIX}:*", _type="stream")]):
        print(f"  {key:<28} {await redis.xlen(key):>7}")
    latencies = _engine_latencies(sim)
    if latencies:
        p50, p99 = _quantile(latencies, 0.5), _quantile(latencies, 0.99)
        print(
            f"ack latency (engine sends an event -> receives its ack): p50 {p50 * 1000:.2f} ms, "
            f"p99 {p99 * 1000:.2f} ms"
        )
    missed = registry.get_sample_value("connector_missed_pongs_total") or 0
    print(
        f"missed pongs: {int(missed)}   reconnects: "
        f"{int(registry.get_sample_value('connector_reconnects_total') or 0)}"
    )
    if connector.consumer_gate is not None:
        gate = connector.consumer_gate
        print(
            f"consumer group {GROUP}: confirmations learnt by notification {gate.notifications}, "
            f"by checking {gate.checked}"
        )
    sample_key = f"{PREFIX}:{{{sim.config.symbols[0]}}}:candle:{sim.config.timeframe}"
    print("\nlook at the data:")
    print(f"  redis-cli -u {mask_url(choice.url)} XRANGE '{sample_key}' - + COUNT 3")
    print(f"  redis-cli -u {mask_url(choice.url)} XRANGE '{PREFIX}:trade' - + COUNT 3")
    if choice.private is not None and choice.directory is not None:
        print(
            "  (the private redis-server stops now; run `connector demo --keep-redis` to keep it)"
        )


def _engine_latencies(sim: Simulator) -> list[float]:
    first_ack: dict[str, float] = {}
    for ack in sim.record.acks:
        for event_id in ack.ids:
            first_ack.setdefault(event_id, ack.time)
    return sorted(
        first_ack[frame.event_id] - frame.time
        for frame in sim.record.sent
        if frame.event_id is not None and frame.event_id in first_ack
    )


def _quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


async def _clear_prefix(redis: Redis) -> None:
    keys = [key async for key in redis.scan_iter(f"{PREFIX}:*")]
    if keys:
        await redis.delete(*keys)


@contextlib.asynccontextmanager
async def _redis(args: argparse.Namespace) -> AsyncIterator[RedisChoice]:
    url = args.redis_url or os.environ.get("CONNECTOR_REDIS_URL") or DEFAULT_REDIS
    if await _answers(url):
        yield RedisChoice(url)
        return
    binary = redis_server_binary()
    if binary is None:
        raise DemoError(
            f"Redis does not answer at {mask_url(url)} and redis-server is not on PATH.\n"
            "  Install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install "
            "redis),\n  or point CONNECTOR_REDIS_URL at a running Redis."
        )
    directory = tempfile.mkdtemp(prefix="connector-demo-")
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *private_server_argv(binary, port, directory),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    private_url = f"redis://127.0.0.1:{port}/0"
    try:
        for _ in range(100):
            if await _answers(private_url) or process.returncode is not None:
                break
            await asyncio.sleep(0.05)
        if process.returncode is not None:
            raise DemoError(f"redis-server exited at start (code {process.returncode})")
        yield RedisChoice(private_url, process, directory)
    finally:
        if args.keep_redis and process.returncode is None:
            print(f"  private redis-server left running: pid {process.pid}, {private_url}")
        else:
            if process.returncode is None:
                process.terminate()
            await process.wait()
            shutil.rmtree(directory, ignore_errors=True)


async def _answers(url: str) -> bool:
    client = Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(await client.ping())
    except (RedisError, OSError, ValueError):
        return False
    finally:
        await client.aclose()
