"""Fill parity: what consumer-ack mode buys a strategy.

The same strategy (the toolkit's moving-average crossover, placing market orders through the
simulator's REST surface) over the same data (same seed and symbols), once with immediate acks
and once in consumer-ack mode. The simulator fills a market order at the open of the bar after
the one it arrived in, so an order placed in reaction to bar *t* should fill at bar *t + 1*, as it
would live: the fill lag in bars (fill bar - signal bar - 1) is 0. In immediate mode the engine
moves on while the order is on its way, and some orders fill a bar (or more) late.

Each mode runs ``connector demo`` (simulator, connector and strategy) in its own process against
a private redis-server (started as every other scenario's), and reads back the figures it writes
with ``--report``.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from connector_bench.procs import Processes, start_redis

MODES = ("immediate", "consumer")
RUN_TIMEOUT_S = 600.0


def run(
    steps: int, symbols: tuple[str, ...], workdir: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    """Both modes on one private redis-server; {mode: the demo's figures} (or an error)."""
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    with Processes(workdir) as processes:
        _, url = start_redis(processes)
        for mode in MODES:
            report = workdir / f"parity-{mode}.json"
            command = [sys.executable, "-m", "connector", "demo", "--ack-mode", mode]
            command += ["--steps", str(steps), "--symbols", ",".join(symbols)]
            command += ["--redis-url", url, "--report", str(report)]
            with (workdir / f"parity-{mode}.log").open("w") as out:
                code = subprocess.run(
                    command,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=RUN_TIMEOUT_S,
                    check=False,
                ).returncode
            if code != 0 or not report.exists():
                results[mode] = {"error": f"connector demo exited {code}"}
                log(f"parity/{mode}: FAILED (exit {code}); see parity-{mode}.log")
                continue
            results[mode] = orjson.loads(report.read_bytes())
            log(f"parity/{mode}: {describe(results[mode])}")
    return results


def lag_distribution(lags: list[int]) -> str:
    counts = Counter(lags)
    return ", ".join(f"{lag}: {counts[lag]}" for lag in sorted(counts)) or "-"


def describe(figures: dict[str, Any]) -> str:
    strategy = figures["strategy"]
    return (
        f"{strategy['orders']} orders, {strategy['filled']} filled, fill lag (bars: orders) "
        f"{lag_distribution(strategy['fill_lags'])}, P&L {float(strategy['pnl']):+.2f}"
    )


def render(results: dict[str, Any]) -> str:
    """The parity table (one row per mode)."""
    header = (
        f"{'ack mode':<10}  {'orders':>6}  {'filled':>6}  {'lag 0':>6}  {'lag >= 1':>8}  "
        f"{'fill lag distribution (bars: orders)':<38}  {'P&L':>10}  {'bars/s':>7}"
    )
    lines = [header, "-" * len(header)]
    for mode in MODES:
        figures = results.get(mode)
        if figures is None or "error" in figures:
            lines.append(f"{mode:<10}  FAILED: {figures.get('error') if figures else 'not run'}")
            continue
        strategy = figures["strategy"]
        lags = strategy["fill_lags"]
        late = sum(1 for lag in lags if lag >= 1)
        lines.append(
            f"{mode:<10}  {strategy['orders']:>6}  {strategy['filled']:>6}  "
            f"{len(lags) - late:>6}  {late:>8}  {lag_distribution(lags):<38}  "
            f"{float(strategy['pnl']):>+10.2f}  {figures['bars_per_s'] or 0:>7,.0f}"
        )
    first = results.get(MODES[0], {})
    if "seed" in first:
        lines.append(
            f"same strategy, data and seed ({first['seed']}) in both modes: "
            f"{len(first['symbols'])} symbols x {first['steps']} bars; fill lag = fill bar - "
            "signal bar - 1 (0: filled at the next bar's open, as live)"
        )
    return "\n".join(lines)


def ok(results: dict[str, Any]) -> bool:
    """Consumer mode must give lag 0 for every order (and both runs must have run)."""
    consumer = results.get("consumer", {})
    if any("error" in results.get(mode, {"error": 1}) for mode in MODES):
        return False
    lags = consumer["strategy"]["fill_lags"]
    return bool(lags) and all(lag == 0 for lag in lags)
