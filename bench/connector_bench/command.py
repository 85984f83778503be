"""Measure the connector against the documentation's Hello World loop, end to end.

Every run starts its own processes: a private redis-server, the client under test (the connector,
the docs-loop baseline, or a receive-only client showing the simulator's own limit) and the
simulator (`connector simulate`). Scenarios: live burst, backtest lock-step (immediate acks),
backtest with consumer-confirmed acks, ack latency at a fixed rate, and a 1,000,000-event run for
peak memory; optionally a soak (--soak SECONDS) that watches the connector's memory, and the scale
scenario (--scenarios scale): 1, 2, 3... connectors at once, each with its own simulator and
stream prefix, against one redis-server or a local Redis Cluster (--cluster).

Prints a table of medians with the targets (PASS/MISS); --json writes every run; --chart draws a
PNG (needs matplotlib); --profile DIR records py-spy profiles of the connector. Exit code 0 when
every run completed (targets missed or not), 1 when a run failed, 2 for bad options.

Quick check (about 20 seconds): connector bench --quick
Full run (about 6 minutes): connector bench --json /tmp/bench.json   (see docs/performance.md)
Scale (about 5 minutes): connector bench --scenarios scale --cluster --also-single
    (see docs/scaling.md)
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from connector_bench import chart, machine
from connector_bench.report import document, machine_line, profile_block, render
from connector_bench.results import SCENARIOS, RunResult, evaluate_targets, medians
from connector_bench.scale import ScalePlan, ScaleRunner
from connector_bench.scaling import ScaleRun, render_scale, scale_medians
from connector_bench.scenarios import Plan, Runner

#: Scenarios run only when named (not part of the default selection).
EXTRA_SCENARIOS: tuple[str, ...] = ("scale",)

#: Symbols used in order; more than these get generated names.
SYMBOL_NAMES = ("AAPL", "MSFT", "BTCUSD", "EURUSD", "GOOG", "AMZN", "NVDA", "TSLA")
#: Which clients each scenario runs with.
SCENARIO_CLIENTS: dict[str, tuple[str, ...]] = {
    "live": ("connector", "baseline", "raw"),
    "backtest": ("connector", "baseline", "raw"),
    "consumer": ("connector",),
    "latency": ("connector", "baseline", "raw"),
    "million": ("connector",),
}
#: Scenarios profiled with --profile (connector only).
PROFILED = ("live", "backtest", "consumer", "latency")

QUICK = Plan(
    live_events=5_000,
    backtest_steps=200,
    consumer_steps=100,
    latency_events=500,
    million_events=10_000,
    first_timeout=30.0,
    stall_timeout=10.0,
    soak_interval=1.0,
)
DEFAULT = Plan()


def configure_parser(parser: argparse.ArgumentParser) -> None:
    d = DEFAULT
    what = parser.add_argument_group("what to run")
    what.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma list of %(default)s, or 'none' (e.g. with --soak only); also 'scale' "
        "(only when named: several connectors at once, see the scale options)",
    )
    what.add_argument(
        "--clients",
        default="connector,baseline,raw",
        help="comma list of connector, baseline, raw (default: all)",
    )
    what.add_argument("--repeat", type=int, default=None, help="runs per row (default 3; quick 1)")
    what.add_argument(
        "--quick", action="store_true", help="tiny counts (a few seconds per run): a smoke test"
    )
    sizes = parser.add_argument_group("sizes")
    sizes.add_argument(
        "--symbols", type=int, default=None, help=f"symbols (default {len(d.symbols)})"
    )
    sizes.add_argument("--events", type=int, default=None, help=f"live events ({d.live_events:,})")
    sizes.add_argument(
        "--steps", type=int, default=None, help=f"backtest steps ({d.backtest_steps:,})"
    )
    sizes.add_argument(
        "--consumer-steps",
        type=int,
        default=None,
        help=f"consumer-ack steps ({d.consumer_steps:,})",
    )
    sizes.add_argument(
        "--latency-events", type=int, default=None, help=f"latency events ({d.latency_events:,})"
    )
    sizes.add_argument(
        "--latency-rate", type=float, default=None, help=f"latency events/s ({d.latency_rate:g})"
    )
    sizes.add_argument(
        "--million",
        type=int,
        default=None,
        help=f"events of the peak-RSS run ({d.million_events:,})",
    )
    soak = parser.add_argument_group("soak")
    soak.add_argument("--soak", type=float, default=0.0, metavar="SECONDS", help="0 = no soak")
    soak.add_argument("--soak-rate", type=float, default=d.soak_rate, help="events/s (%(default)g)")
    soak.add_argument(
        "--soak-interval", type=float, default=None, help="seconds between RSS samples (5)"
    )
    sizes.add_argument(
        "--connector-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra CONNECTOR_* setting for every connector run (repeatable), e.g. "
        "CONNECTOR_BATCH_MAX_EVENTS=5000; the table then measures that configuration",
    )
    sizes.add_argument(
        "--connector-command",
        default=None,
        metavar="COMMAND",
        help="run the connector with this command instead of this interpreter's "
        "'-m connector run' (shell-style words), e.g. another checkout's "
        "'/path/.venv/bin/python -m connector run' to compare two versions",
    )
    scale = parser.add_argument_group(
        "scale (--scenarios scale)",
        "N connectors at once, each with its own simulator (live burst of --events events) and "
        "stream prefix; aggregate and per-connector events/s, CPU, every event stored once",
    )
    scale.add_argument(
        "--connectors",
        default="1,2,3",
        metavar="LIST",
        help="connector counts to run, comma list (default %(default)s)",
    )
    scale.add_argument(
        "--cluster",
        action="store_true",
        help="against a local Redis Cluster (redis-server processes + redis-cli --cluster "
        "create) instead of one redis-server",
    )
    scale.add_argument(
        "--also-single",
        action="store_true",
        help="with --cluster: also run every count against one redis-server, interleaved",
    )
    scale.add_argument(
        "--cluster-masters",
        type=int,
        default=None,
        metavar="N",
        help="cluster masters (default 3, the minimum; implies --cluster)",
    )
    scale.add_argument(
        "--cluster-replicas",
        type=int,
        default=0,
        metavar="R",
        help="replicas per master (default 0: masters only)",
    )
    scale.add_argument(
        "--shared-symbols",
        action="store_true",
        help="every connector gets the same symbols (default: each its own, as sessions with "
        "split subscriptions); the same symbol hashes to the same slot whatever the prefix",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--json", type=Path, default=None, metavar="FILE", help="write every run")
    out.add_argument("--chart", type=Path, default=None, metavar="FILE", help="PNG (matplotlib)")
    out.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="also run the connector under py-spy (extra, unmeasured runs); stacks go to DIR",
    )
    out.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep every process log here (default: a temporary directory, removed after)",
    )
    out.add_argument(
        "--stall-timeout",
        type=float,
        default=None,
        help="stop waiting when the stored count is stuck this long (default 15 s)",
    )


def plan_from(args: argparse.Namespace) -> Plan:
    """The run sizes: the quick or default preset, overridden by explicit options."""
    plan = QUICK if args.quick else DEFAULT
    count = len(plan.symbols) if args.symbols is None else args.symbols
    if count < 1:
        raise ValueError("--symbols must be >= 1")
    overrides: dict[str, Any] = {"symbols": symbol_names(count)}
    for option, name in (
        ("events", "live_events"),
        ("steps", "backtest_steps"),
        ("consumer_steps", "consumer_steps"),
        ("latency_events", "latency_events"),
        ("latency_rate", "latency_rate"),
        ("million", "million_events"),
        ("soak_interval", "soak_interval"),
        ("stall_timeout", "stall_timeout"),
    ):
        value = getattr(args, option)
        if value is not None:
            if value <= 0:
                raise ValueError(f"--{option.replace('_', '-')} must be > 0")
            overrides[name] = value
    overrides["soak_rate"] = args.soak_rate
    overrides["connector_env"] = tuple(_setting(text) for text in args.connector_env)
    if args.connector_command:
        overrides["connector_argv"] = tuple(shlex.split(args.connector_command))
    return replace(plan, **overrides)


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.upper().startswith("CONNECTOR_"):
        raise ValueError(f"--connector-env wants CONNECTOR_NAME=VALUE, not {text!r}")
    return name.upper(), value


def symbol_names(count: int) -> tuple[str, ...]:
    names = list(SYMBOL_NAMES[:count])
    names += [f"SYM{i}" for i in range(len(names) + 1, count + 1)]
    return tuple(names)


def scale_plan_from(args: argparse.Namespace) -> ScalePlan | None:
    """The scale scenario's shape when ``scale`` is among the scenarios, else None."""
    if "scale" not in _split(args.scenarios):
        return None
    try:
        counts = tuple(int(part) for part in _split(args.connectors))
    except ValueError:
        raise ValueError(
            f"--connectors wants a comma list of counts, not {args.connectors!r}"
        ) from None
    if not counts or any(count < 1 for count in counts):
        raise ValueError("--connectors wants counts >= 1")
    cluster = args.cluster or args.cluster_masters is not None
    masters = 3 if args.cluster_masters is None else args.cluster_masters
    if masters < 3:
        raise ValueError("--cluster-masters must be >= 3 (redis-cli --cluster create needs 3)")
    if args.cluster_replicas < 0:
        raise ValueError("--cluster-replicas must be >= 0")
    if args.also_single and not cluster:
        raise ValueError("--also-single goes with --cluster")
    topologies = ("single", "cluster") if args.also_single else ("cluster",) if cluster else ()
    return ScalePlan(
        connectors=tuple(dict.fromkeys(counts)),
        topologies=topologies or ("single",),
        masters=masters,
        replicas=args.cluster_replicas,
        shared_symbols=args.shared_symbols,
    )


def selection(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(scenario, client) pairs to run, in display order (the scale scenario apart)."""
    scenarios = [s for s in _split(args.scenarios) if s not in EXTRA_SCENARIOS]
    if scenarios == ["none"] or (not scenarios and "scale" in _split(args.scenarios)):
        return []
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        raise ValueError(
            f"unknown scenario(s) {', '.join(unknown)}; "
            f"choose from {(*SCENARIOS, *EXTRA_SCENARIOS)}"
        )
    clients = _split(args.clients)
    bad = [c for c in clients if c not in ("connector", "baseline", "raw")]
    if bad:
        raise ValueError(f"unknown client(s) {', '.join(bad)}")
    return [
        (scenario, client)
        for scenario in SCENARIOS
        if scenario in scenarios
        for client in SCENARIO_CLIENTS[scenario]
        if client in clients
    ]


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Unwind normally, so every `with Processes` block stops its children.
    raise SystemExit(128 + signum)


def run(args: argparse.Namespace) -> int:
    try:
        plan = plan_from(args)
        pairs = selection(args)
        scale = scale_plan_from(args)
        repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
        if repeat < 1:
            raise ValueError("--repeat must be >= 1")
        if args.soak < 0:
            raise ValueError("--soak must be >= 0")
    except ValueError as exc:
        print(f"connector bench: {exc}", file=sys.stderr)
        return 2
    if not pairs and not args.soak and scale is None:
        print("connector bench: nothing to run", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="connector-bench-")) if temporary else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    failed = True
    try:
        failed = _bench(args, plan, pairs, repeat, workdir, scale)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if temporary and not failed:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            _log(f"process logs kept in {workdir}")
    return 1 if failed else 0


def _bench(
    args: argparse.Namespace,
    plan: Plan,
    pairs: list[tuple[str, str]],
    repeat: int,
    workdir: Path,
    scale: ScalePlan | None = None,
) -> bool:
    """Run everything, print and write the results; True if any run failed."""
    facts = machine.describe()
    scale_count = 0 if scale is None else len(scale.connectors) * len(scale.topologies)
    _log(
        f"{(len(pairs) + scale_count) * repeat} runs ({repeat} x {len(pairs) + scale_count}), "
        f"{'soak ' + format(args.soak, 'g') + ' s, ' if args.soak else ''}"
        f"on {facts['nproc']} CPUs; logs in {workdir}"
    )
    runner = Runner(plan, workdir, _log, args.profile)
    runs: list[RunResult] = []
    # Repeats are interleaved (all scenarios, then again), so a passing disturbance on the
    # machine spreads over scenarios instead of skewing one median.
    for index in range(repeat):
        for scenario, client in pairs:
            runs.append(runner.run(scenario, client, index))
    scale_runs: list[ScaleRun] = []
    scale_profiles: list[dict[str, Any]] = []
    scaler = None
    if scale is not None:
        scaler = ScaleRunner(plan, scale, workdir, _log, facts["nproc"], args.profile)
        for index in range(repeat):
            for topology in scale.topologies:
                for count in scale.connectors:
                    scale_runs.append(scaler.run(topology, count, index))
        if args.profile is not None:
            # One connector alone: its per-event cost, without neighbours on the CPUs.
            for topology in scale.topologies:
                scaled = scaler.run(topology, 1, 0, profile=True)
                scale_profiles.append(
                    {
                        "scenario": f"scale ({topology}, 1 connector)",
                        "client": "connector",
                        "profile": scaled.extra.get("profile"),
                        "run": scaled.to_dict(),
                    }
                )
    soak = runner.soak(args.soak) if args.soak else None
    profiles: list[dict[str, Any]] = []
    if args.profile is not None:
        for scenario in PROFILED:
            if (scenario, "connector") in pairs:
                profiled = runner.run(scenario, "connector", 0, profile=True)
                profiles.append(
                    {
                        "scenario": scenario,
                        "client": "connector",
                        "profile": profiled.extra.get("profile"),
                        "run": profiled.to_dict(),
                    }
                )
    facts["load_average_end"] = machine.load_average()
    facts["source_digest_end"] = machine.source_digest()
    if facts["source_digest_end"] != facts["source_digest_start"]:
        _log("WARNING: the connector's source changed during the benchmark; results mix versions")
    table = medians(runs)
    targets = evaluate_targets(table, soak, plan.million_events)
    settings = {**asdict(plan), "repeat": repeat, "scenarios": sorted({s for s, _ in pairs})}
    scale_doc: dict[str, Any] | None = None
    if pairs or soak is not None:
        sys.stdout.write(render(facts, settings, table, targets, runs, soak))
    if scaler is not None:
        rows = scale_medians(scale_runs)
        scale_settings = scaler.settings(repeat)
        if not pairs and soak is None:
            sys.stdout.write(f"connector bench on {machine_line(facts)}\n")
        sys.stdout.write("\n" + render_scale(rows, scale_runs, scale_settings))
        if scale_profiles:
            sys.stdout.write("\nprofiles (py-spy, share of the connector's on-CPU samples):\n")
            sys.stdout.write(profile_block(scale_profiles) + "\n")
        scale_doc = {
            "settings": scale_settings,
            "rows": rows,
            "runs": [run.to_dict() for run in scale_runs],
            "profiles": scale_profiles,
        }
    if profiles:
        sys.stdout.write("\nprofiles (py-spy, share of the connector's on-CPU samples):\n")
        sys.stdout.write(profile_block(profiles) + "\n")
    sys.stdout.flush()
    if args.json is not None:
        doc = document(facts, settings, table, targets, runs, soak, profiles)
        doc["scale"] = scale_doc
        args.json.write_bytes(
            orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
        )
        _log(f"wrote {args.json}")
    if args.chart is not None:
        _charts(args.chart, table, scale_doc, facts)
    return any(not run.ok for run in runs) or any(not run.ok for run in scale_runs)


def _charts(
    path: Path, table: Any, scale_doc: dict[str, Any] | None, facts: dict[str, Any]
) -> None:
    """The medians chart at ``path`` (when there are medians); the scale chart beside it
    (``<name>-scale.png``, or at ``path`` itself when only the scale scenario ran)."""
    title = f"connector bench ({facts['nproc']} CPUs)"
    drawn: list[tuple[Path, str | None]] = []
    if table:
        drawn.append((path, chart.draw(table, path, title)))
    if scale_doc is not None:
        target = path.with_name(f"{path.stem}-scale{path.suffix}") if table else path
        drawn.append((target, chart.draw_scale(scale_doc["rows"], target, title)))
    for target, problem in drawn:
        if problem is not None:
            print(problem, file=sys.stderr)
        else:
            _log(f"wrote {target}")
