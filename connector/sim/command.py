"""``connector simulate``: run the simulator from the command line until it is done or stopped.

Exit codes: 0 when a backtest completed, a live run sent its ``--count`` or the run was stopped
(SIGINT/SIGTERM or ``/control/shutdown``); 1 when a backtest halted; 2 for invalid options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

from connector.sim.config import TIMEFRAMES, SimConfig
from connector.sim.record import Outcome
from connector.sim.simulator import Simulator

_DEFAULTS = SimConfig()


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add every simulator option (kebab-case of the SimConfig fields) to ``parser``."""
    d = _DEFAULTS
    server = parser.add_argument_group("server")
    server.add_argument("--mode", choices=("backtest", "live"), default=d.mode)
    server.add_argument("--host", default=d.host, help="interface to bind (default %(default)s)")
    server.add_argument("--port", type=int, default=d.port, help="0 picks a free port")
    server.add_argument(
        "--symbols", default=",".join(d.symbols), help="comma list, kept exactly as written"
    )
    server.add_argument("--timeframe", choices=tuple(TIMEFRAMES), default=d.timeframe)
    server.add_argument("--seed", type=int, default=d.seed, help="seed of the price walk")
    server.add_argument("--provider", default=d.provider, help="provider named in bars/quotes")
    server.add_argument("--api-key", default=None, help="require this key at the upgrade")
    server.add_argument(
        "--id-field",
        choices=("event_id", "id"),
        default=d.id_field,
        help="event_id = current server; id = documentation style (live frames get ids too)",
    )
    server.add_argument("--data-file", type=Path, default=None, help="CSV of bars to replay")

    backtest = parser.add_argument_group("backtest")
    backtest.add_argument("--steps", type=int, default=d.steps)
    backtest.add_argument("--step-timeout", type=float, default=d.step_timeout)
    backtest.add_argument("--halt-after-timeouts", type=int, default=d.halt_after_timeouts)
    backtest.add_argument("--halt-before-first-ack", type=int, default=d.halt_before_first_ack)
    backtest.add_argument("--complete-timeout", type=float, default=d.complete_timeout)
    backtest.add_argument("--fill-every", type=int, default=d.fill_every, help="0 = never")
    backtest.add_argument("--other-every", type=int, default=d.other_every, help="0 = never")
    backtest.add_argument("--backtest-quotes", action="store_true", help="a quote per symbol/step")
    backtest.add_argument(
        "--no-complete-id",
        action="store_true",
        help="send backtest_complete without an id and do not wait for its ack",
    )
    backtest.add_argument(
        "--no-sort-keys", action="store_true", help="do not sort engine frames' keys"
    )
    backtest.add_argument(
        "--no-wait-for-client",
        action="store_true",
        help="start the run (either mode) without waiting for a client",
    )
    backtest.add_argument("--min-clients", type=int, default=d.min_clients)

    live = parser.add_argument_group("live")
    live.add_argument(
        "--rate",
        type=float,
        default=d.rate,
        help="market frames per second in total; 0 = mock feed (every 2 s a quote and a candle "
        "per symbol); inf = as fast as possible",
    )
    live.add_argument("--burst", action="store_true", help="same as --rate inf")
    live.add_argument(
        "--backpressure",
        action="store_true",
        help="burst only as fast as every client reads (no drops; a benchmark aid)",
    )
    live.add_argument("--count", type=int, default=None, help="stop after N market frames")
    live.add_argument("--tick-interval", type=float, default=d.tick_interval)
    live.add_argument("--json-ping-interval", type=float, default=d.json_ping_interval)
    live.add_argument("--queue-size", type=int, default=d.queue_size)

    faults = parser.add_argument_group("faults")
    faults.add_argument("--no-pong", action="store_true", help="never answer WebSocket pings")
    faults.add_argument("--malformed-every", type=int, default=d.malformed_every)
    faults.add_argument("--drop-after", type=int, default=d.drop_after)
    faults.add_argument(
        "--duplicate-every",
        type=int,
        default=d.duplicate_every,
        help="backtest: every N steps deliver a frame twice (same id)",
    )
    tls = parser.add_argument_group("TLS")
    tls.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain (wss://)")
    tls.add_argument("--tls-key", type=Path, default=None, help="PEM private key")

    run_group = parser.add_argument_group("run")
    run_group.add_argument("--shutdown-grace", type=float, default=d.shutdown_grace)
    run_group.add_argument("--report", type=Path, default=None, help="write the report as JSON")
    run_group.add_argument(
        "--report-frames", action="store_true", help="include every frame's text in --report"
    )
    run_group.add_argument(
        "--linger",
        type=float,
        default=0.0,
        help="after the backtest (or live --count) keep serving this long before stopping",
    )


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """Build the SimConfig; raises ValueError with a readable message on bad values."""
    symbols = tuple(s.strip() for s in str(args.symbols).split(",") if s.strip())
    return SimConfig(
        mode=args.mode,
        host=args.host,
        port=args.port,
        symbols=symbols,
        timeframe=args.timeframe,
        seed=args.seed,
        provider=args.provider,
        api_key=args.api_key,
        id_field=args.id_field,
        steps=args.steps,
        step_timeout=args.step_timeout,
        halt_after_timeouts=args.halt_after_timeouts,
        halt_before_first_ack=args.halt_before_first_ack,
        complete_timeout=args.complete_timeout,
        fill_every=args.fill_every,
        other_every=args.other_every,
        backtest_quotes=args.backtest_quotes,
        complete_with_id=not args.no_complete_id,
        sort_keys=not args.no_sort_keys,
        wait_for_client=not args.no_wait_for_client,
        min_clients=args.min_clients,
        rate=float("inf") if args.burst else args.rate,
        count=args.count,
        tick_interval=args.tick_interval,
        backpressure=args.backpressure,
        json_ping_interval=args.json_ping_interval,
        queue_size=args.queue_size,
        data_file=args.data_file,
        answer_pings=not args.no_pong,
        malformed_every=args.malformed_every,
        drop_after=args.drop_after,
        duplicate_every=args.duplicate_every,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        shutdown_grace=args.shutdown_grace,
        record_frames=args.report_frames or args.report is not None,
    )


def run(args: argparse.Namespace) -> int:
    """Run until done or SIGINT/SIGTERM; 0 = completed/sent/stopped, 1 = halted, 2 = bad options."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"connector simulate: {exc}", file=sys.stderr)
        return 2
    outcome, report = asyncio.run(_serve(config, args.linger, args.report_frames))
    if args.report is not None:
        args.report.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    counts = report["counts"]
    print(
        f"connector simulate: {outcome}; sent {counts['sent']} frames, "
        f"{counts['acks']} acks, {counts['dropped']} dropped",
        file=sys.stderr,
    )
    return 1 if outcome == "halted" else 0


async def _serve(config: SimConfig, linger: float, frames: bool) -> tuple[Outcome, dict[str, Any]]:
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, interrupted.set)
    sim = Simulator(config)
    await sim.start()
    print(
        f"connector simulate: {config.mode} simulator on {sim.url} (also {sim.docs_url}); "
        f"controls at {sim.http_url}/control/<name>",
        file=sys.stderr,
        flush=True,
    )
    try:
        outcome = await _first(sim.wait_finished(), interrupted.wait(), sim.wait_stopped())
        if outcome is not None and outcome != "stopped" and linger > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(linger):
                    await _first(interrupted.wait(), sim.wait_stopped())
    finally:
        await sim.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
    final: Outcome = sim.record.outcome or "stopped"
    return final, sim.report(frames=frames)


async def _first(*waits: Any) -> Any:
    """Result of whichever awaitable finishes first; the others are cancelled."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        return next(iter(done)).result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
