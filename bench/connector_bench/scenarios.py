"""The scenarios: one run = a private redis-server, the client under test, the simulator.

Order inside a run: redis-server, then the client (it retries its connection), then a CPU
reading of the client, then the simulator on the port the client is already dialling. The
simulator's feed starts when the client connects. At the end of the measured window the client is
read again (CPU, peak RSS) *before* anything is stopped. Every process is stopped when the run
ends, however it ends (see :class:`connector_bench.procs.Processes`).

What each scenario measures is stated in its function; docs/performance.md repeats it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from connector.localredis import free_port
from connector_bench.clients import (
    ClientProcess,
    baseline_keys,
    connector_keys,
    start_baseline,
    start_connector,
    start_consumer,
    start_raw,
)
from connector_bench.procfs import ProcSample, kb_to_mb
from connector_bench.procs import BenchError, Managed, Processes, start_redis
from connector_bench.profile import Profiler
from connector_bench.progress import StreamProgress, wait_stored
from connector_bench.results import RunResult
from connector_bench.scrape import histogram_quantile, parse_prometheus, total
from connector_bench.simproc import (
    counts,
    event_ack_latencies,
    fetch_report,
    first_connection_wall,
    read_report_file,
    sent_span,
    start_simulator,
    step_stats,
)
from connector_bench.stats import memory_flatness, rate, summarize_latencies

Log = Callable[[str], None]
MARKET = frozenset({"candle", "quote"})
CONSUMER_GROUP = "bench"


@dataclass(frozen=True, slots=True)
class Plan:
    """Sizes of one invocation's scenarios."""

    symbols: tuple[str, ...] = ("AAPL", "MSFT", "BTCUSD", "EURUSD")
    live_events: int = 200_000
    backtest_steps: int = 5_000
    consumer_steps: int = 2_000
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

    # -- entry points ------------------------------------------------------------------------

    def run(self, scenario: str, client: str, index: int, *, profile: bool = False) -> RunResult:
        expected = {
            "live": self.plan.live_events,
            "backtest": self.plan.backtest_steps * len(self.plan.symbols),
            "consumer": self.plan.consumer_steps * len(self.plan.symbols),
            "latency": self.plan.latency_events,
            "million": self.plan.million_events,
        }[scenario]
        result = RunResult(scenario, client, index, expected)
        self._runs += 1
        tag = f"{self._runs:03d}-{scenario}-{client}-{index}" + ("-profile" if profile else "")
        rundir = self.workdir / tag
        rundir.mkdir(parents=True, exist_ok=True)
        profiler = Profiler(self.profile_dir, tag) if profile and self.profile_dir else None
        started = time.monotonic()
        try:
            with Processes(rundir) as processes:
                if scenario in ("live", "million"):
                    self._live(processes, result, client, expected, profiler)
                elif scenario == "backtest":
                    self._backtest(processes, result, client, self.plan.backtest_steps, profiler)
                elif scenario == "consumer":
                    self._backtest(
                        processes, result, client, self.plan.consumer_steps, profiler, True
                    )
                else:
                    self._latency(processes, result, client, profiler)
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
        self.log(_one_line(result))
        return result

    # -- live burst ----------------------------------------------------------------------------

    def _live(
        self,
        processes: Processes,
        result: RunResult,
        client: str,
        count: int,
        profiler: Profiler | None,
    ) -> None:
        """N market frames as fast as the simulator sends them (burst, back-pressured so none is
        dropped). Window: the client's connection (the feed starts then) -> the last entry stored
        (its Redis id time) or, for the raw client, the last frame received."""
        plan = self.plan
        redis, redis_url = (None, "") if client == "raw" else start_redis(processes)
        port = free_port()
        started = self._client(processes, client, port, redis_url, "live", count, ack="none")
        watched = self._watched(started, redis)
        window = Window()
        window.open(watched)
        if profiler is not None:
            profiler.start(processes, started.process)
        sim = start_simulator(processes, port, [*self._live_args(count), "--linger", "3600"])
        watched["simulator"] = sim
        window.open({"simulator": sim})
        if client == "raw":
            summary = self._wait_raw(started.process, count)
            window.close(watched)
            events = int(summary.get("frames") or 0)
            end_wall = summary.get("last_wall")
        else:
            keys = (
                connector_keys(plan.symbols)
                if client == "connector"
                else baseline_keys(plan.symbols)
            )
            progress = StreamProgress(redis_url, keys)
            try:
                outcome = wait_stored(
                    progress,
                    count,
                    first_timeout=plan.first_timeout,
                    stall_timeout=plan.stall_timeout,
                    alive=lambda: not started.process.exited(),
                )
            finally:
                progress.close()
            window.close(watched)
            events = min(outcome.stored.added, count)
            end_wall = outcome.stored.last_wall
            if not outcome.complete:
                result.notes.append(f"incomplete: {outcome.reason}")
        if profiler is not None:
            profiler.stop()
        report = fetch_report(port, details=True)
        start_wall = first_connection_wall(report)
        sim_counts = counts(report)
        if start_wall is None or not isinstance(end_wall, int | float):
            raise BenchError("the run produced no timing (no connection or nothing stored)")
        result.events = events
        result.lost_events = count - events
        result.duration_s = float(end_wall) - start_wall
        result.events_per_s = rate(events, result.duration_s)
        self._resources(result, window, started)
        result.extra["sim_dropped"] = sim_counts.get("dropped", 0)
        result.extra["sim_sent_market_frames"] = sim_counts.get("market_frames", 0)
        if sim_counts.get("dropped"):
            result.notes.append(f"simulator dropped {sim_counts['dropped']} frames")
        if result.lost_events:
            result.notes.append(f"{result.lost_events} events not stored")

    def _live_args(self, count: int) -> list[str]:
        return [
            "--mode",
            "live",
            "--burst",
            "--backpressure",
            "--count",
            str(count),
            "--symbols",
            ",".join(self.plan.symbols),
            "--shutdown-grace",
            "0.1",
        ]

    # -- backtest ------------------------------------------------------------------------------

    def _backtest(
        self,
        processes: Processes,
        result: RunResult,
        client: str,
        steps: int,
        profiler: Profiler | None,
        consumer_ack: bool = False,
    ) -> None:
        """Lock-step backtest: each step is one candle per symbol (no fills, no extras) and the
        engine waits for every id of a step before the next. Window: first step emitted -> last
        step released (simulator clock). Ack latency per event: emitted -> ack received."""
        plan = self.plan
        redis, redis_url = (None, "") if client == "raw" else start_redis(processes)
        port = free_port()
        env = (
            {"CONNECTOR_ACK_MODE": "consumer", "CONNECTOR_CONSUMER_GROUPS": CONSUMER_GROUP}
            if consumer_ack
            else {}
        )
        started = self._client(
            processes, client, port, redis_url, "backtest", 0, ack="batch", env=env
        )
        watched = self._watched(started, redis)
        if consumer_ack:
            consumer = start_consumer(
                processes, redis_url, CONSUMER_GROUP, dict(plan.connector_env)
            )
            started.helpers.append(consumer)
            watched["consumer"] = consumer
        window = Window()
        window.open(watched)
        if profiler is not None:
            profiler.start(
                processes,
                started.process,
                {"consumer": started.helpers[0]} if started.helpers else None,
            )
        report_path = processes.workdir / "simulator-report.json"
        args = [
            "--mode",
            "backtest",
            "--steps",
            str(steps),
            "--symbols",
            ",".join(plan.symbols),
            "--fill-every",
            "0",
            "--other-every",
            "0",
            "--shutdown-grace",
            "0.1",
            # The gateway leaves the socket open after a run, and the docs' loop (the baseline)
            # never leaves by itself: end the run for every client alike.
            "--exit-after-run",
            "--report",
            str(report_path),
        ]
        sim = start_simulator(processes, port, args)
        watched["simulator"] = sim
        window.open({"simulator": sim})
        timeout = plan.first_timeout + steps * 0.2
        if not sim.wait_exit(timeout):
            raise BenchError(f"the backtest did not finish within {timeout:g} s")
        window.close(watched)
        if profiler is not None:
            profiler.stop()
        sim.stop()
        if sim.returncode not in (0, None):
            raise BenchError(f"the simulator exited with {sim.returncode}:\n{sim.log_tail()}")
        report = read_report_file(report_path)
        stats = step_stats(report)
        result.steps = stats.steps
        result.events = stats.events
        result.duration_s = stats.span_s
        result.events_per_s = rate(stats.events, stats.span_s)
        result.steps_per_s = rate(stats.steps, stats.span_s)
        latencies, missing = event_ack_latencies(report, frozenset({"candle"}))
        result.set_latency(summarize_latencies(latencies))
        result.lost_events = result.expected_events - stats.events
        summary = summarize_latencies(stats.step_latencies_s)
        if summary is not None:
            result.extra["step_p50_ms"] = summary.p50_ms
            result.extra["step_p99_ms"] = summary.p99_ms
        result.extra["steps_timed_out"] = stats.timed_out
        result.extra["complete_acked"] = bool(report.get("complete_acked"))
        if stats.timed_out:
            result.notes.append(f"{stats.timed_out} steps timed out")
        if missing:
            result.notes.append(f"{missing} ids never acked")
        self._resources(result, window, started)

    # -- ack latency at a fixed rate -------------------------------------------------------------

    def _latency(
        self, processes: Processes, result: RunResult, client: str, profiler: Profiler | None
    ) -> None:
        """Documentation-style live feed (ids in ``id`` on every frame, so every event is acked)
        at a fixed rate. Latency per event, from the simulator's record: frame emitted (queued
        for the client) -> ack naming it received and parsed, both on the simulator's monotonic
        clock. It includes both WebSocket hops, the client's work and its Redis round trip."""
        plan = self.plan
        count = plan.latency_events
        redis, redis_url = (None, "") if client == "raw" else start_redis(processes)
        port = free_port()
        started = self._client(processes, client, port, redis_url, "live", count, ack="each")
        watched = self._watched(started, redis)
        window = Window()
        window.open(watched)
        if profiler is not None:
            profiler.start(processes, started.process)
        report_path = processes.workdir / "simulator-report.json"
        args = [
            "--mode",
            "live",
            "--rate",
            f"{plan.latency_rate:g}",
            "--count",
            str(count),
            "--id-field",
            "id",
            "--symbols",
            ",".join(plan.symbols),
            "--linger",
            "3600",
            "--shutdown-grace",
            "0.1",
            "--report",
            str(report_path),
        ]
        sim = start_simulator(processes, port, args)
        watched["simulator"] = sim
        window.open({"simulator": sim})
        if client == "raw":
            self._wait_raw(started.process, count)
        else:
            keys = (
                connector_keys(plan.symbols)
                if client == "connector"
                else baseline_keys(plan.symbols)
            )
            progress = StreamProgress(redis_url, keys)
            try:
                outcome = wait_stored(
                    progress,
                    count,
                    first_timeout=plan.first_timeout,
                    stall_timeout=plan.stall_timeout,
                    interval=0.1,
                    alive=lambda: not started.process.exited(),
                )
            finally:
                progress.close()
            if not outcome.complete:
                result.notes.append(f"incomplete: {outcome.reason}")
            _wait_acked(port, count, timeout=5.0)
        window.close(watched)
        if profiler is not None:
            profiler.stop()
        sim.stop()  # SIGTERM: the simulator writes its report and exits
        report = read_report_file(report_path)
        latencies, missing = event_ack_latencies(report, MARKET)
        sent, span = sent_span(report, MARKET)
        result.events = sent - missing
        result.duration_s = span
        result.events_per_s = rate(sent, span)
        result.set_latency(summarize_latencies(latencies))
        result.lost_events = count - result.events
        if missing:
            result.notes.append(f"{missing} events never acked")
        self._resources(result, window, started)

    # -- soak ----------------------------------------------------------------------------------

    def soak(self, seconds: float) -> dict[str, Any]:
        """Live feed at a steady rate for ``seconds``; the connector's RSS sampled throughout."""
        plan = self.plan
        rundir = self.workdir / "soak"
        rundir.mkdir(parents=True, exist_ok=True)
        samples: list[dict[str, float]] = []
        result: dict[str, Any] = {"seconds": seconds, "rate": plan.soak_rate, "samples": samples}
        with Processes(rundir) as processes:
            _, redis_url = start_redis(processes)
            port = free_port()
            started = self._client(processes, "connector", port, redis_url, "live", 0, "none")
            args = [
                "--mode",
                "live",
                "--rate",
                f"{plan.soak_rate:g}",
                "--symbols",
                ",".join(plan.symbols),
                "--shutdown-grace",
                "0.1",
            ]
            before = started.process.sample()
            start_simulator(processes, port, args)
            progress = StreamProgress(redis_url, connector_keys(plan.symbols))
            began = time.monotonic()
            next_report = began + 60
            try:
                while True:
                    now = time.monotonic()
                    reading = started.process.sample()
                    if reading is None or not reading.alive:
                        raise BenchError("the connector died during the soak")
                    stored = progress.read()
                    samples.append(
                        {
                            "t": round(now - began, 3),
                            "rss_mb": round(kb_to_mb(reading.rss_kb) or 0.0, 3),
                            "hwm_mb": round(kb_to_mb(reading.hwm_kb) or 0.0, 3),
                            "cpu_s": round(reading.cpu_s - (before.cpu_s if before else 0), 3),
                            "stored": stored.added,
                        }
                    )
                    if now >= next_report:
                        next_report += 60
                        self.log(
                            f"soak: {now - began:.0f}/{seconds:g} s, RSS "
                            f"{samples[-1]['rss_mb']:.1f} MB, {stored.added:,} stored"
                        )
                    if now - began >= seconds:
                        break
                    time.sleep(min(plan.soak_interval, max(0.0, began + seconds - now)))
                sim_counts = counts(fetch_report(port))
            finally:
                progress.close()
        flat = memory_flatness([s["t"] for s in samples], [s["rss_mb"] for s in samples])
        result["flatness"] = {k: getattr(flat, k) for k in flat.__slots__}
        result["sent"] = sim_counts.get("market_frames", 0)
        result["stored"] = int(samples[-1]["stored"]) if samples else 0
        result["peak_rss_mb"] = max((s["hwm_mb"] for s in samples), default=0.0)
        self.log(
            f"soak: first window {flat.first_window_mb:.1f} MB, last {flat.last_window_mb:.1f} MB "
            f"({flat.growth_mb:+.1f} MB), slope {flat.slope_after_warmup_mb_per_min:+.3f} MB/min "
            f"-> {'flat' if flat.flat else 'GROWING'}"
        )
        return result

    # -- helpers -------------------------------------------------------------------------------

    def _client(
        self,
        processes: Processes,
        client: str,
        port: int,
        redis_url: str,
        mode: str,
        count: int,
        ack: str,
        env: dict[str, str] | None = None,
    ) -> ClientProcess:
        url = f"ws://127.0.0.1:{port}/v1/ws"
        if client == "connector":
            return start_connector(
                processes,
                url,
                redis_url,
                mode,
                {**dict(self.plan.connector_env), **(env or {})},
                self.plan.connector_argv,
            )
        if client == "baseline":
            # The documentation's endpoint path.
            return start_baseline(processes, f"ws://127.0.0.1:{port}/ws", redis_url)
        args = ["--count", str(count), "--ack", ack]
        if ack == "batch":
            args += ["--batch", str(len(self.plan.symbols))]
        return start_raw(processes, url, args)

    @staticmethod
    def _watched(started: ClientProcess, redis: Managed | None) -> dict[str, Managed]:
        watched = {"client": started.process}
        if redis is not None:
            watched["redis"] = redis
        return watched

    def _wait_raw(self, process: Managed, count: int) -> dict[str, Any]:
        timeout = self.plan.first_timeout + count / 2_000
        if not process.wait_exit(timeout):
            raise BenchError(f"the raw client did not receive {count} frames in {timeout:g} s")
        lines = [line for line in process.stdout_lines() if line.startswith("{")]
        if not lines:
            raise BenchError(f"the raw client printed no summary:\n{process.log_tail()}")
        summary: dict[str, Any] = orjson.loads(lines[-1])
        return summary

    @staticmethod
    def _resources(result: RunResult, window: Window, started: ClientProcess) -> None:
        """Client CPU over the window, peak RSS, and the other processes' CPU for context."""
        result.set_cpu(window.cpu("client"))
        end = window.end.get("client")
        peak_kb = end.hwm_kb if end is not None else None
        result.peak_rss_mb = kb_to_mb(peak_kb)
        for name in ("simulator", "redis", "consumer"):
            cpu = window.cpu(name)
            if cpu is not None:
                result.extra[f"{name}_cpu_s"] = round(cpu, 3)
        text = started.metrics_text()
        if text is not None:
            samples = parse_prometheus(text)
            result.extra["connector_dropped"] = total(samples, "connector_dropped_events_total")
            result.extra["connector_published"] = total(samples, "connector_published_total")
            for q in (0.5, 0.99):
                value = histogram_quantile(samples, "connector_ack_latency_seconds", q)
                if value is not None:
                    result.extra[f"connector_ack_latency_p{round(q * 100)}_ms"] = value * 1000


def _wait_acked(port: int, count: int, timeout: float) -> None:
    """Give the last acks a moment to reach the simulator (live acks follow the stores)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if counts(fetch_report(port)).get("acked_ids", 0) >= count:
            return
        time.sleep(0.05)


def _one_line(result: RunResult) -> str:
    head = f"{result.scenario}/{result.client} #{result.index + 1}"
    if result.error:
        first = result.error.splitlines()[0] if result.error else ""
        return f"{head}: FAILED: {first}"
    parts = [f"{result.events:,} events in {result.duration_s:.2f} s"]
    parts.append(f"{result.events_per_s:,.0f} events/s")
    if result.steps_per_s is not None:
        parts.append(f"{result.steps_per_s:,.0f} steps/s")
    if result.ack_p99_ms is not None:
        parts.append(f"ack p50/p99 {result.ack_p50_ms:.2f}/{result.ack_p99_ms:.2f} ms")
    if result.cpu_per_1k_events is not None:
        parts.append(f"CPU {result.cpu_per_1k_events:.3f} s/1k")
    if result.peak_rss_mb is not None:
        parts.append(f"peak RSS {result.peak_rss_mb:.1f} MB")
    notes = f" [{'; '.join(result.notes)}]" if result.notes else ""
    return f"{head}: {', '.join(parts)}{notes}"
