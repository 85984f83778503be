"""The runner: one run = fresh processes, one measured window, one :class:`RunResult`.

Every scenario (live burst, lock-step backtests, consumer-ack, ack latency, the scale scenario)
is a :class:`Scenario`: the :class:`Runner` gives it a run directory, a ``Processes`` block that
stops every child however the run ends, and a profiler when asked; it catches the run's failure
and logs one line. The scenarios themselves are in ``feeds.py``, ``backtest.py`` and ``scale.py``.

Order inside a run: redis-server, then the client (it retries its connection), then a CPU
reading, then the simulator on the port the client is already dialling. The simulator's feed
starts when the client connects. At the end of the window the processes are read again (CPU,
peak RSS) *before* anything is stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from connector_bench.clients import (
    ClientProcess,
    start_baseline,
    start_connector,
    start_raw,
)
from connector_bench.procfs import ProcSample, kb_to_mb
from connector_bench.procs import BenchError, Managed, Processes
from connector_bench.profile import Profiler
from connector_bench.results import RunResult
from connector_bench.scrape import histogram_quantile, parse_prometheus, total

Log = Callable[[str], None]
MARKET = frozenset({"candle", "quote"})

#: Symbols used in order; more than these get generated names.
SYMBOL_NAMES = ("AAPL", "MSFT", "BTCUSD", "EURUSD", "GOOG", "AMZN", "NVDA", "TSLA")


def symbol_names(count: int) -> tuple[str, ...]:
    names = list(SYMBOL_NAMES[:count])
    names += [f"SYM{i}" for i in range(len(names) + 1, count + 1)]
    return tuple(names)


@dataclass(frozen=True, slots=True)
class Plan:
    """Sizes of one invocation's scenarios."""

    symbols: tuple[str, ...] = ("AAPL", "MSFT", "BTCUSD", "EURUSD")
    live_events: int = 200_000
    backtest_steps: int = 5_000
    consumer_steps: int = 2_000
    parity_steps: int = 500  # bars of the fill-parity runs (each mode)
    wide_symbols: int = 500  # consumer-wide*: symbols per step
    wide_steps: int = 200
    idle_streams: int = 1_000  # consumer-idle: streams with the group that get no data
    latency_events: int = 10_000
    latency_rate: float = 1_000.0
    million_events: int = 1_000_000
    first_timeout: float = 60.0  # nothing at all stored within this: the run failed
    stall_timeout: float = 15.0  # stored count stuck this long: stop waiting, count the loss
    soak_rate: float = 5_000.0
    soak_interval: float = 5.0
    # Extra CONNECTOR_* settings for every connector run (experiments; default: none).
    connector_env: tuple[tuple[str, str], ...] = ()
    # The command that runs the connector (default: this interpreter, ``-m connector run``).
    connector_argv: tuple[str, ...] = ()


@dataclass(slots=True)
class Window:
    """CPU readings of the processes of a run at the start and end of the measured window."""

    start: dict[str, ProcSample] = field(default_factory=dict)
    end: dict[str, ProcSample] = field(default_factory=dict)

    def open(self, processes: dict[str, Managed]) -> None:
        for name, process in processes.items():
            reading = process.sample()
            if reading is not None:
                self.start[name] = reading

    def close(self, processes: dict[str, Managed]) -> None:
        for name, process in processes.items():
            reading = process.sample()
            if reading is not None:
                self.end[name] = reading

    def cpu(self, name: str) -> float | None:
        if name not in self.start or name not in self.end:
            return None
        return max(0.0, self.end[name].cpu_s - self.start[name].cpu_s)

    def total_cpu(self, prefix: str) -> float | None:
        """Summed CPU of the processes whose name starts with ``prefix`` (None: none read)."""
        cpus = [self.cpu(name) for name in self.start if name.startswith(prefix)]
        known = [cpu for cpu in cpus if cpu is not None]
        return sum(known) if known else None


@dataclass(slots=True)
class Run:
    """What a scenario gets for one run: its sizes, its processes, its result to fill in."""

    plan: Plan
    processes: Processes
    result: RunResult
    profiler: Profiler | None

    @property
    def client(self) -> str:
        return self.result.client

    def profile(self, process: Managed, helpers: dict[str, Managed] | None = None) -> None:
        if self.profiler is not None:
            self.profiler.start(self.processes, process, helpers)

    def stop_profile(self) -> None:
        if self.profiler is not None:
            self.profiler.stop()


class Scenario(Protocol):
    """One kind of run. ``variant`` tells apart rows of one scenario and client (the scale
    scenario's topology and connector count); most scenarios have none."""

    @property
    def name(self) -> str: ...

    @property
    def variant(self) -> str: ...

    def expected(self, plan: Plan) -> int:
        """Events the run should store."""
        ...

    def measure(self, run: Run) -> None:
        """Start the run's processes in ``run.processes`` and fill in ``run.result``; raise
        BenchError when the run cannot be carried out."""
        ...


class Runner:
    """Runs scenarios; each call is one complete, self-cleaning run."""

    def __init__(
        self, plan: Plan, workdir: Path, log: Log, profile_dir: Path | None = None
    ) -> None:
        self.plan = plan
        self.workdir = workdir
        self.log = log
        self.profile_dir = profile_dir
        self._runs = 0

    def run(
        self, scenario: Scenario, client: str, index: int, *, profile: bool = False
    ) -> RunResult:
        """One run; with ``profile`` (and a profile directory) py-spy records the connector over
        the window (an extra run, not part of the medians)."""
        result = RunResult(
            scenario.name, client, index, scenario.expected(self.plan), scenario.variant
        )
        self._runs += 1
        key = result.key.replace("/", "-")
        tag = f"{self._runs:03d}-{scenario.name}-{key}-{index}" + ("-profile" if profile else "")
        rundir = self.workdir / tag
        rundir.mkdir(parents=True, exist_ok=True)
        profiler = Profiler(self.profile_dir, tag) if profile and self.profile_dir else None
        started = time.monotonic()
        try:
            with Processes(rundir) as processes:
                scenario.measure(Run(self.plan, processes, result, profiler))
        except BenchError as exc:
            result.error = str(exc)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # report, keep going with the other runs
            result.error = f"{type(exc).__name__}: {exc}"
        result.extra["wall_s"] = round(time.monotonic() - started, 3)
        result.extra["workdir"] = str(rundir)
        if profiler is not None:
            result.extra["profile"] = profiler.summary()
        self.log(one_line(result))
        return result


# -- helpers shared by the scenarios ---------------------------------------------------------


def start_client(
    run: Run,
    port: int,
    redis_url: str,
    mode: str,
    count: int,
    ack: str,
    env: dict[str, str] | None = None,
) -> ClientProcess:
    """The run's client under test, dialling the simulator's ``port``."""
    url = f"ws://127.0.0.1:{port}/v1/ws"
    plan = run.plan
    if run.client == "connector":
        settings = {**dict(plan.connector_env), **(env or {})}
        return start_connector(run.processes, url, redis_url, mode, settings, plan.connector_argv)
    if run.client == "baseline":
        # The documentation's endpoint path.
        return start_baseline(run.processes, f"ws://127.0.0.1:{port}/ws", redis_url)
    args = ["--count", str(count), "--ack", ack]
    if ack == "batch":
        args += ["--batch", str(len(plan.symbols))]
    return start_raw(run.processes, url, args)


def watched(started: ClientProcess, redis: Managed | None) -> dict[str, Managed]:
    """The processes whose CPU a window reads: the client, and redis-server when there is one."""
    found = {"client": started.process}
    if redis is not None:
        found["redis"] = redis
    return found


def wait_raw(plan: Plan, process: Managed, count: int) -> dict[str, Any]:
    """The raw client's summary line once it has received ``count`` frames and exited."""
    timeout = plan.first_timeout + count / 2_000
    if not process.wait_exit(timeout):
        raise BenchError(f"the raw client did not receive {count} frames in {timeout:g} s")
    lines = [line for line in process.stdout_lines() if line.startswith("{")]
    if not lines:
        raise BenchError(f"the raw client printed no summary:\n{process.log_tail()}")
    summary: dict[str, Any] = orjson.loads(lines[-1])
    return summary


def record_resources(result: RunResult, window: Window, started: ClientProcess) -> None:
    """Client CPU over the window, peak RSS, Redis' own CPU, and the other processes' CPU and
    the connector's counters for context. Call it once the run's events and steps are set."""
    result.set_cpu(window.cpu("client"))
    end = window.end.get("client")
    result.peak_rss_mb = kb_to_mb(end.hwm_kb if end is not None else None)
    result.set_redis_cpu(window.cpu("redis"))
    for name in ("simulator", "consumer"):
        cpu = window.cpu(name)
        if cpu is not None:
            result.extra[f"{name}_cpu_s"] = round(cpu, 3)
    text = started.metrics_text()
    if text is not None:
        _connector_metrics(result, text)


def _connector_metrics(result: RunResult, text: str) -> None:
    samples = parse_prometheus(text)
    result.extra["connector_dropped"] = total(samples, "connector_dropped_events_total")
    result.extra["connector_published"] = total(samples, "connector_published_total")
    for q in (0.5, 0.99):
        value = histogram_quantile(samples, "connector_ack_latency_seconds", q)
        if value is not None:
            result.extra[f"connector_ack_latency_p{round(q * 100)}_ms"] = value * 1000


def one_line(result: RunResult) -> str:
    """The progress line logged after each run."""
    if result.error:
        return f"{result.label}: FAILED: {result.error.splitlines()[0]}"
    notes = f" [{'; '.join(result.notes)}]" if result.notes else ""
    return f"{result.label}: {', '.join(_figures_text(result))}{notes}"


def _figures_text(result: RunResult) -> list[str]:
    parts = [
        f"{result.events:,} events in {result.duration_s:.2f} s",
        f"{result.events_per_s:,.0f} events/s",
    ]
    if result.steps_per_s is not None:
        parts.append(f"{result.steps_per_s:,.0f} steps/s")
    if result.ack_p99_ms is not None:
        parts.append(f"ack p50/p99 {result.ack_p50_ms:.2f}/{result.ack_p99_ms:.2f} ms")
    if result.cpu_per_1k_events is not None:
        parts.append(f"CPU {result.cpu_per_1k_events:.3f} s/1k")
    measures = result.measures
    for name, text in (
        ("redis_us_per_step", "Redis {:,.0f} us/step"),
        ("per_connector_events_per_s", "per connector {:,.0f} events/s"),
        ("busy_cores", "busy cores {:.2f}"),
    ):
        if name in measures:
            parts.append(text.format(measures[name]))
    if result.peak_rss_mb is not None:
        parts.append(f"peak RSS {result.peak_rss_mb:.1f} MB")
    return parts
