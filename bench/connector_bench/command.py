"""Measure the connector against the documentation's Hello World loop, end to end.

Every run starts its own processes: a private redis-server, the client under test (the connector,
the docs-loop baseline, or a receive-only client showing the simulator's own limit) and the
simulator (`connector simulate`). Scenarios: live burst, backtest lock-step (immediate acks),
backtest in consumer-ack mode with the toolkit (`consumer`, it notifies) and with the documented
plain redis-py consumer (`consumer-plain`, it only XACKs), ack latency at a fixed rate, and a
1,000,000-event run for peak memory. Only when named (or with --quick): `consumer-wide` and
`consumer-wide-plain` (500 symbols per step) and `consumer-idle` (1,000 idle streams beside the
run's), which show what checking group state costs Redis, and `consumer-floor` (a consumer that
does the least per step, with no event loop: what the machine allows consumer-ack mode, to read
the toolkit's figure against); `scale` (--scenarios scale): 1, 2, 3...
connectors at once, each with its own simulator and stream prefix, against one redis-server or a
local Redis Cluster (--cluster). Optionally a soak (--soak SECONDS) that watches the connector's
memory.

Prints a table of medians with the targets (PASS/MISS); --json writes every run; --chart draws a
PNG (needs matplotlib); --profile DIR records py-spy profiles of the connector. Exit code 0 when
every run completed (targets missed or not), 1 when a run failed, 2 for bad options.

Quick check (about 40 seconds, every scenario but scale): connector bench --quick
Full run (about 7 minutes): connector bench --json /tmp/bench.json   (see docs/performance.md)
Checking cost: connector bench --scenarios backtest,consumer,consumer-plain,consumer-wide,\
    consumer-wide-plain,consumer-idle --clients connector
Toolkit against the floor: connector bench --scenarios backtest,consumer,consumer-floor \
    --clients connector
Scale (about 5 minutes): connector bench --scenarios scale --cluster --also-single
    (see docs/scaling.md)
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from connector_bench import chart, machine, parity, procs
from connector_bench.backtest import BACKTEST_SCENARIOS
from connector_bench.feeds import Latency, Live, soak
from connector_bench.report import document, profile_block, render
from connector_bench.results import CLIENTS, SCENARIOS, RunResult, evaluate_targets, medians
from connector_bench.scale import ScalePlan, scale_scenarios, scale_settings
from connector_bench.scenarios import Plan, Runner, Scenario, symbol_names

#: Scenarios run only when named (not part of the default selection); --quick runs all but
#: ``scale`` (its own options) at tiny sizes.
EXTRA_SCENARIOS: tuple[str, ...] = (
    "consumer-floor",
    "consumer-wide",
    "consumer-wide-plain",
    "consumer-idle",
    "scale",
)
#: The fill-parity comparison (immediate vs consumer-ack mode, same strategy and data): not a
#: speed figure, so it has its own table (see connector_bench.parity).
PARITY = "parity"
NAMES: tuple[str, ...] = (*SCENARIOS, PARITY)
DEFAULT_SCENARIOS: tuple[str, ...] = tuple(s for s in NAMES if s not in EXTRA_SCENARIOS)
QUICK_SCENARIOS: tuple[str, ...] = tuple(s for s in NAMES if s != "scale")

#: Which clients each scenario runs with (the consumer-ack ones and the scale scenario: the
#: connector only, the docs' loop has no consumer mode).
SCENARIO_CLIENTS: dict[str, tuple[str, ...]] = {
    name: CLIENTS if name in ("live", "backtest", "latency") else ("connector",)
    for name in SCENARIOS
}
#: Scenarios profiled with --profile (connector only; scale: one connector per topology).
PROFILED = ("live", "backtest", "consumer", "consumer-plain", "latency")

QUICK = Plan(
    live_events=5_000,
    backtest_steps=200,
    consumer_steps=100,
    parity_steps=150,
    wide_symbols=20,
    wide_steps=20,
    idle_streams=100,
    latency_events=500,
    million_events=10_000,
    first_timeout=30.0,
    stall_timeout=10.0,
    soak_interval=1.0,
)
DEFAULT = Plan()

#: Size options and the Plan field each sets.
SIZE_OPTIONS: tuple[tuple[str, str], ...] = (
    ("events", "live_events"),
    ("steps", "backtest_steps"),
    ("consumer_steps", "consumer_steps"),
    ("parity_steps", "parity_steps"),
    ("wide_symbols", "wide_symbols"),
    ("wide_steps", "wide_steps"),
    ("idle_streams", "idle_streams"),
    ("latency_events", "latency_events"),
    ("latency_rate", "latency_rate"),
    ("million", "million_events"),
    ("soak_interval", "soak_interval"),
    ("stall_timeout", "stall_timeout"),
)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    _what_options(parser)
    _size_options(parser)
    _soak_options(parser)
    _scale_options(parser)
    _output_options(parser)


def _what_options(parser: argparse.ArgumentParser) -> None:
    what = parser.add_argument_group("what to run")
    what.add_argument(
        "--scenarios",
        default=None,
        help=f"comma list of {','.join(NAMES)}, or 'none' (e.g. with --soak only); default "
        f"{','.join(DEFAULT_SCENARIOS)} ({', '.join(EXTRA_SCENARIOS)} only when named; --quick: "
        "all but scale)",
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
    what.add_argument(
        "--redis-server",
        type=Path,
        default=None,
        metavar="PATH",
        help="the server to run (e.g. a valkey-server or a newer redis-server); default: the "
        "redis-server on PATH",
    )


def _size_options(parser: argparse.ArgumentParser) -> None:
    d = DEFAULT
    sizes = parser.add_argument_group("sizes")
    sizes.add_argument(
        "--symbols", type=int, default=None, help=f"symbols (default {len(d.symbols)})"
    )
    for option, name, what in (
        ("--events", "live_events", "live events"),
        ("--steps", "backtest_steps", "backtest steps"),
        ("--consumer-steps", "consumer_steps", "consumer-ack steps"),
        ("--parity-steps", "parity_steps", "bars of each fill-parity run"),
        ("--wide-symbols", "wide_symbols", "symbols per step of consumer-wide*"),
        ("--wide-steps", "wide_steps", "steps of consumer-wide*"),
        ("--idle-streams", "idle_streams", "idle streams of consumer-idle"),
        ("--latency-events", "latency_events", "latency events"),
        ("--million", "million_events", "events of the peak-RSS run"),
    ):
        sizes.add_argument(option, type=int, default=None, help=f"{what} ({getattr(d, name):,})")
    sizes.add_argument(
        "--latency-rate", type=float, default=None, help=f"latency events/s ({d.latency_rate:g})"
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


def _soak_options(parser: argparse.ArgumentParser) -> None:
    soak_group = parser.add_argument_group("soak")
    soak_group.add_argument("--soak", type=float, default=0.0, metavar="SECONDS", help="0 = none")
    soak_group.add_argument(
        "--soak-rate", type=float, default=DEFAULT.soak_rate, help="events/s (%(default)g)"
    )
    soak_group.add_argument(
        "--soak-interval", type=float, default=None, help="seconds between RSS samples (5)"
    )


def _scale_options(parser: argparse.ArgumentParser) -> None:
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


def _output_options(parser: argparse.ArgumentParser) -> None:
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
    for option, name in SIZE_OPTIONS:
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


def scale_plan_from(args: argparse.Namespace) -> ScalePlan | None:
    """The scale scenario's shape when ``scale`` is among the scenarios, else None."""
    if "scale" not in _scenario_names(args):
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
    named = _scenario_names(args)
    if named == ["none"]:
        return []
    unknown = [s for s in named if s not in NAMES]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; choose from {NAMES}")
    clients = _split(args.clients)
    bad = [c for c in clients if c not in CLIENTS]
    if bad:
        raise ValueError(f"unknown client(s) {', '.join(bad)}")
    return [
        (scenario, client)
        for scenario in SCENARIOS
        if scenario in named and scenario != "scale"
        for client in SCENARIO_CLIENTS[scenario]
        if client in clients
    ]


def _scenario_names(args: argparse.Namespace) -> list[str]:
    if args.scenarios is None:
        return list(QUICK_SCENARIOS if args.quick else DEFAULT_SCENARIOS)
    return _split(args.scenarios)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def scenario_for(name: str) -> Scenario:
    """The scenario object behind a name (the scale scenario has its own: see ``jobs``)."""
    if name in BACKTEST_SCENARIOS:
        return BACKTEST_SCENARIOS[name]
    if name == "latency":
        return Latency()
    return Live(name)


@dataclass(frozen=True, slots=True)
class Job:
    """One row of the table: a scenario (and variant) with a client; run ``repeat`` times."""

    scenario: Scenario
    client: str


def jobs(pairs: list[tuple[str, str]], scale: ScalePlan | None, cores: int) -> list[Job]:
    found = [Job(scenario_for(name), client) for name, client in pairs]
    if scale is not None:
        found += [Job(scenario, "connector") for scenario in scale_scenarios(scale, cores)]
    return found


def profile_jobs(found: list[Job], scale: ScalePlan | None, cores: int) -> list[Job]:
    """The extra, profiled runs of --profile: the connector in the PROFILED scenarios, and one
    connector alone per scale topology (its per-event cost, without neighbours on the CPUs)."""
    chosen = [j for j in found if j.client == "connector" and j.scenario.name in PROFILED]
    if scale is not None:
        alone = replace(scale, connectors=(1,))
        chosen += [Job(scenario, "connector") for scenario in scale_scenarios(alone, cores)]
    return chosen


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Unwind normally, so every `with Processes` block stops its children.
    raise SystemExit(128 + signum)


@dataclass(frozen=True, slots=True)
class Invocation:
    """What one ``connector bench`` runs, from its options."""

    plan: Plan
    pairs: list[tuple[str, str]]
    scale: ScalePlan | None
    repeat: int
    parity: bool = False


def invocation(args: argparse.Namespace) -> Invocation:
    """The options, checked (ValueError with a one-line message)."""
    plan = plan_from(args)
    pairs = selection(args)
    scale = scale_plan_from(args)
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    if repeat < 1:
        raise ValueError("--repeat must be >= 1")
    if args.soak < 0:
        raise ValueError("--soak must be >= 0")
    with_parity = PARITY in _scenario_names(args)
    if not pairs and not args.soak and scale is None and not with_parity:
        raise ValueError("nothing to run")
    server = args.redis_server
    if server is not None and not (server.is_file() and os.access(server, os.X_OK)):
        raise ValueError(f"--redis-server {server}: not an executable file")
    return Invocation(plan, pairs, scale, repeat, with_parity)


def run(args: argparse.Namespace) -> int:
    try:
        what = invocation(args)
    except ValueError as exc:
        print(f"connector bench: {exc}", file=sys.stderr)
        return 2
    if args.redis_server is not None:
        procs.use_redis_server(str(args.redis_server))
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="connector-bench-")) if temporary else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    failed = True
    try:
        failed = _bench(args, what, workdir)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if temporary and not failed:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            _log(f"process logs kept in {workdir}")
    return 1 if failed else 0


def _bench(args: argparse.Namespace, what: Invocation, workdir: Path) -> bool:
    """Run everything, print and write the results; True if any run failed."""
    facts = machine.describe()
    found = jobs(what.pairs, what.scale, facts["nproc"])
    soak_text = f"soak {args.soak:g} s, " if args.soak else ""
    _log(
        f"{len(found) * what.repeat} runs ({what.repeat} x {len(found)}), {soak_text}"
        f"on {facts['nproc']} CPUs; logs in {workdir}"
    )
    runner = Runner(what.plan, workdir, _log, args.profile)
    runs = [
        # Repeats are interleaved (every row, then again), so a passing disturbance on the
        # machine spreads over scenarios instead of skewing one median.
        runner.run(job.scenario, job.client, index)
        for index in range(what.repeat)
        for job in found
    ]
    soaked = soak(what.plan, workdir, _log, args.soak) if args.soak else None
    paritied = (
        parity.run(what.plan.parity_steps, what.plan.symbols, workdir / "parity", _log)
        if what.parity
        else None
    )
    profiles = []
    if args.profile is not None:
        profiles = _profiles(runner, profile_jobs(found, what.scale, facts["nproc"]))
    facts["load_average_end"] = machine.load_average()
    facts["source_digest_end"] = machine.source_digest()
    if facts["source_digest_end"] != facts["source_digest_start"]:
        _log("WARNING: the connector's source changed during the benchmark; results mix versions")
    _output(args, what, facts, runs, soaked, profiles, paritied)
    return any(not run.ok for run in runs) or (paritied is not None and not parity.ok(paritied))


def _profiles(runner: Runner, chosen: list[Job]) -> list[dict[str, Any]]:
    profiles = []
    for job in chosen:
        profiled = runner.run(job.scenario, job.client, 0, profile=True)
        label = job.scenario.name + (f" ({job.scenario.variant})" if job.scenario.variant else "")
        profiles.append(
            {
                "scenario": label,
                "client": job.client,
                "profile": profiled.extra.get("profile"),
                "run": profiled.to_dict(),
            }
        )
    return profiles


def _output(
    args: argparse.Namespace,
    what: Invocation,
    facts: dict[str, Any],
    runs: list[RunResult],
    soaked: dict[str, Any] | None,
    profiles: list[dict[str, Any]],
    paritied: dict[str, Any] | None = None,
) -> None:
    """The table on stdout, then --json and --chart."""
    table = medians(runs)
    targets = evaluate_targets(table, soaked, what.plan.million_events)
    settings: dict[str, Any] = {
        **asdict(what.plan),
        "repeat": what.repeat,
        "scenarios": sorted({run.scenario for run in runs}),
    }
    if what.scale is not None:
        settings["scale"] = scale_settings(what.plan, what.scale, what.repeat)
    sys.stdout.write(render(facts, settings, table, targets, runs, soaked))
    if paritied is not None:
        sys.stdout.write("\nfill parity (the example strategy; consumer-ack mode must fill every ")
        sys.stdout.write("order at the bar after its signal):\n\n" + parity.render(paritied) + "\n")
    if profiles:
        sys.stdout.write("\nprofiles (py-spy, share of the connector's on-CPU samples):\n")
        sys.stdout.write(profile_block(profiles) + "\n")
    sys.stdout.flush()
    if args.json is not None:
        doc = document(facts, settings, table, targets, runs, soaked, profiles)
        if paritied is not None:
            doc["parity"] = paritied
        args.json.write_bytes(
            orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
        )
        _log(f"wrote {args.json}")
    if args.chart is not None:
        title = f"connector bench ({facts['nproc']} CPUs)"
        problem = chart.draw(table, args.chart, title)
        if problem is not None:
            print(problem, file=sys.stderr)
        else:
            _log(f"wrote {args.chart}")
