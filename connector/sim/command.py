"""``connector simulate``: run the simulator from the command line until it is done or stopped.

A backtest's end leaves the sockets open, as on the gateway: the command waits for its clients
to leave (``--leave-timeout`` bounds that; ``--exit-after-run`` stops at once), then ``--linger``
seconds, then stops gracefully.

Exit codes: 0 when a backtest completed, a live run sent its ``--count`` or the run was stopped
(SIGINT/SIGTERM or ``/control/shutdown``); 1 when a backtest halted; 2 for invalid options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from connector.sim.config import TIMEFRAMES, SimConfig
from connector.sim.decimals import SCALES
from connector.sim.record import Outcome
from connector.sim.simulator import Simulator

_DEFAULTS = SimConfig()
#: The gap ``--gateway-relay`` puts between frames: the gateway's are tens to hundreds of µs.
GATEWAY_RELAY_GAP = 0.0001


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add every simulator option (kebab-case of the SimConfig fields) to ``parser``."""
    _server_options(parser.add_argument_group("server"))
    _backtest_options(parser.add_argument_group("backtest"))
    _live_options(parser.add_argument_group("live"))
    _order_options(parser.add_argument_group("orders"))
    _gateway_options(parser.add_argument_group("what the real gateway does"))
    _fault_options(parser.add_argument_group("faults"))
    tls = parser.add_argument_group("TLS")
    tls.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain (wss://)")
    tls.add_argument("--tls-key", type=Path, default=None, help="PEM private key")
    _run_options(parser.add_argument_group("run"))


def _server_options(group: argparse._ArgumentGroup) -> None:
    d = _DEFAULTS
    group.add_argument(
        "--mode",
        choices=("backtest", "live"),
        default=d.mode,
        help="backtest: acks drive simulated time; live: a timed feed (default %(default)s)",
    )
    group.add_argument("--host", default=d.host, help="interface to bind (default %(default)s)")
    group.add_argument("--port", type=int, default=d.port, help="0 picks a free port")
    group.add_argument(
        "--symbols", default=",".join(d.symbols), help="comma list, kept exactly as written"
    )
    group.add_argument(
        "--timeframe",
        choices=tuple(TIMEFRAMES),
        default=d.timeframe,
        help="bar length; a backtest step advances one bar (default %(default)s)",
    )
    group.add_argument("--seed", type=int, default=d.seed, help="seed of the price walk")
    group.add_argument("--provider", default=d.provider, help="provider named in bars/quotes")
    group.add_argument(
        "--api-key", default=None, help="require this key (upgrade, REST API and controls)"
    )
    group.add_argument(
        "--id-field",
        choices=("event_id", "id"),
        default=d.id_field,
        help="event_id = current server; id = documentation style (live frames get ids too)",
    )
    group.add_argument("--data-file", type=Path, default=None, help="CSV of bars to replay")
    group.add_argument(
        "--decimal-scale",
        choices=SCALES,
        default=d.decimal_scale,
        help="plain = prices rounded to cents; full = the gateway's 28-digit decimals",
    )


def _backtest_options(group: argparse._ArgumentGroup) -> None:
    d = _DEFAULTS
    group.add_argument("--steps", type=int, default=d.steps, help="bars to replay")
    group.add_argument(
        "--step-timeout", type=float, default=d.step_timeout, help="seconds a step waits for acks"
    )
    group.add_argument(
        "--halt-after-timeouts",
        type=int,
        default=d.halt_after_timeouts,
        help="consecutive step timeouts that halt the run",
    )
    group.add_argument(
        "--halt-before-first-ack",
        type=int,
        default=d.halt_before_first_ack,
        help="the same, before the first good ack",
    )
    group.add_argument(
        "--complete-timeout",
        type=float,
        default=d.complete_timeout,
        help="seconds to wait for the backtest_complete ack",
    )
    group.add_argument(
        "--fill-every",
        type=int,
        default=d.fill_every,
        help="every N steps a synthetic fill (order, trade, account, position); 0 = never",
    )
    group.add_argument(
        "--other-every",
        type=int,
        default=d.other_every,
        help="every N steps a financing frame; 0 = never",
    )
    group.add_argument("--backtest-quotes", action="store_true", help="a quote per symbol/step")
    group.add_argument(
        "--no-complete-id",
        action="store_true",
        help="send backtest_complete without an id and do not wait for its ack",
    )
    group.add_argument(
        "--no-sort-keys", action="store_true", help="do not sort engine frames' keys"
    )
    group.add_argument(
        "--no-wait-for-client",
        action="store_true",
        help="start the run (either mode) without waiting for a client",
    )
    group.add_argument(
        "--min-clients",
        type=int,
        default=d.min_clients,
        help="clients to wait for before the run starts",
    )


def _live_options(group: argparse._ArgumentGroup) -> None:
    d = _DEFAULTS
    group.add_argument(
        "--rate",
        type=float,
        default=d.rate,
        help="market frames per second in total; 0 = mock feed (every 2 s a quote and a candle "
        "per symbol); inf = as fast as possible",
    )
    group.add_argument("--burst", action="store_true", help="same as --rate inf")
    group.add_argument(
        "--backpressure",
        action="store_true",
        help="burst only as fast as every client reads (no drops; a benchmark aid)",
    )
    group.add_argument("--count", type=int, default=None, help="stop after N market frames")
    group.add_argument(
        "--tick-interval",
        type=float,
        default=d.tick_interval,
        help="mock-feed period in seconds when --rate is 0",
    )
    group.add_argument(
        "--json-ping-interval",
        type=float,
        default=d.json_ping_interval,
        help="seconds between JSON ping frames; 0 = never (as the current server)",
    )
    group.add_argument(
        "--queue-size",
        type=int,
        default=d.queue_size,
        help="frames queued per client; beyond it frames are dropped for that client",
    )
    group.add_argument(
        "--live-bar-time",
        choices=("minute", "emission"),
        default=d.live_bar_time,
        help="live candle timestamp: the minute's start, or the emission instant to the "
        "nanosecond as the gateway's mock stamps it",
    )


def _order_options(group: argparse._ArgumentGroup) -> None:
    d = _DEFAULTS
    group.add_argument(
        "--live-fill-delay",
        type=float,
        default=d.live_fill_delay,
        help="live: seconds from ORDER_CREATED to the fill of a market order",
    )
    group.add_argument(
        "--live-fill-group",
        action="store_true",
        help="live: follow a fill with trade, position and account frames (the mock sends "
        "only the order frame)",
    )
    group.add_argument(
        "--position-time",
        choices=("wall", "sim"),
        default=d.position_time,
        help="position opened_at/updated_at: the wall clock (as the gateway) or simulated time",
    )
    group.add_argument(
        "--fill-correlation-loss",
        type=float,
        default=d.fill_correlation_loss,
        help="probability that an ORDER_FILLED lacks the order's correlation_id",
    )


def _gateway_options(group: argparse._ArgumentGroup) -> None:
    d = _DEFAULTS
    group.add_argument(
        "--relay-gap",
        type=float,
        default=d.relay_gap,
        help="seconds between the frames of one write; > 0 sends each frame on its own, as "
        "the gateway's relay does (0 = join a batch into one write)",
    )
    group.add_argument(
        "--gateway-relay",
        action="store_true",
        help=f"same as --relay-gap {GATEWAY_RELAY_GAP:g}",
    )
    group.add_argument(
        "--close-frame-loss",
        type=float,
        default=d.close_frame_loss,
        help="probability, per client, that the shutdown drops the TCP connection instead of "
        "sending the close frame (the gateway: about 1/6)",
    )


def _fault_options(group: argparse._ArgumentGroup) -> None:
    d = _DEFAULTS
    group.add_argument("--no-pong", action="store_true", help="never answer WebSocket pings")
    group.add_argument(
        "--malformed-every",
        type=int,
        default=d.malformed_every,
        help="every N steps/market frames a malformed frame; 0 = never",
    )
    group.add_argument(
        "--drop-after",
        type=int,
        default=d.drop_after,
        help="abort the first client's TCP connection after N frames (once); 0 = never",
    )
    group.add_argument(
        "--duplicate-every",
        type=int,
        default=d.duplicate_every,
        help="backtest: every N steps deliver a frame twice (same id)",
    )


def _run_options(group: argparse._ArgumentGroup) -> None:
    d = _DEFAULTS
    group.add_argument(
        "--shutdown-grace",
        type=float,
        default=d.shutdown_grace,
        help="seconds between DISCONNECTING and the close",
    )
    group.add_argument("--report", type=Path, default=None, help="write the report as JSON")
    group.add_argument(
        "--report-frames", action="store_true", help="include every frame's text in --report"
    )
    group.add_argument(
        "--linger",
        type=float,
        default=0.0,
        help="after the run (and its clients) are done, keep serving this long before stopping",
    )
    group.add_argument(
        "--exit-after-run",
        action="store_true",
        help="backtest: stop (DISCONNECTING, close) as soon as the run ends instead of "
        "waiting, like the gateway, for the clients to leave",
    )
    group.add_argument(
        "--leave-timeout",
        type=float,
        default=None,
        help="backtest: after the run, wait at most this long for the clients to leave "
        "(default: as long as they stay)",
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
        decimal_scale=args.decimal_scale,
        position_time=args.position_time,
        fill_correlation_loss=args.fill_correlation_loss,
        live_fill_delay=args.live_fill_delay,
        live_fill_group=args.live_fill_group,
        live_bar_time=args.live_bar_time,
        answer_pings=not args.no_pong,
        malformed_every=args.malformed_every,
        drop_after=args.drop_after,
        duplicate_every=args.duplicate_every,
        relay_gap=GATEWAY_RELAY_GAP if args.gateway_relay else args.relay_gap,
        close_frame_loss=args.close_frame_loss,
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
    ending = Ending(args.linger, args.exit_after_run, args.leave_timeout)
    outcome, report = asyncio.run(_serve(config, ending, args.report_frames))
    if args.report is not None:
        args.report.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    counts = report["counts"]
    print(
        f"connector simulate: {outcome}; sent {counts['sent']} frames, "
        f"{counts['acks']} acks, {counts['dropped']} dropped",
        file=sys.stderr,
    )
    return 1 if outcome == "halted" else 0


@dataclass(frozen=True, slots=True)
class Ending:
    """What the command does once the run is over."""

    linger: float  # keep serving this long afterwards
    exit_after_run: bool  # backtest: stop at once instead of waiting for the clients to leave
    leave_timeout: float | None  # backtest: the longest wait for them to leave


async def _serve(config: SimConfig, ending: Ending, frames: bool) -> tuple[Outcome, dict[str, Any]]:
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, interrupted.set)
    sim = Simulator(config)
    await sim.start()
    print(
        f"connector simulate: {config.mode} simulator on {sim.url} (also {sim.docs_url}); "
        f"REST API, probes and controls at {sim.http_url}",
        file=sys.stderr,
        flush=True,
    )
    try:
        outcome = await _first(sim.wait_finished(), interrupted.wait(), sim.wait_stopped())
        if outcome in ("completed", "halted") and not ending.exit_after_run:
            # As the gateway: the sockets stay open after the end; the clients leave by themselves.
            await _until(ending.leave_timeout, _clients_gone(sim), interrupted, sim)
        if outcome is not None and outcome != "stopped" and ending.linger > 0:
            await _until(ending.linger, None, interrupted, sim)
    finally:
        await sim.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
    final: Outcome = sim.record.outcome or "stopped"
    return final, sim.report(frames=frames)


async def _clients_gone(sim: Simulator) -> None:
    await sim.wait_for(lambda: sim.client_count == 0)


async def _until(
    seconds: float | None, done: Any, interrupted: asyncio.Event, sim: Simulator
) -> None:
    """Wait for ``done`` (an awaitable, or nothing), a signal or a stop; at most ``seconds``."""
    waits = [interrupted.wait(), sim.wait_stopped()]
    if done is not None:
        waits.append(done)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await _first(*waits)


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
