"""Live-feed scenarios: the burst (``live``, ``million``), ack latency at a fixed rate, the soak.

What each measures is stated in its class; docs/performance.md repeats it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connector.localredis import free_port
from connector_bench.clients import ClientProcess, baseline_keys, connector_keys
from connector_bench.procfs import kb_to_mb
from connector_bench.procs import BenchError, Processes, start_redis
from connector_bench.progress import StreamProgress, WaitOutcome, wait_stored
from connector_bench.results import RunResult
from connector_bench.scenarios import (
    MARKET,
    Log,
    Plan,
    Run,
    Window,
    record_resources,
    start_client,
    wait_raw,
    watched,
)
from connector_bench.simproc import (
    counts,
    event_ack_latencies,
    fetch_report,
    first_connection_wall,
    read_report_file,
    sent_span,
    start_simulator,
)
from connector_bench.stats import Flatness, memory_flatness, rate, summarize_latencies


def live_args(plan: Plan, count: int, symbols: tuple[str, ...] | None = None) -> list[str]:
    """A back-pressured burst of ``count`` market frames (none dropped by the simulator)."""
    return [
        "--mode",
        "live",
        "--burst",
        "--backpressure",
        "--count",
        str(count),
        "--symbols",
        ",".join(symbols or plan.symbols),
        "--shutdown-grace",
        "0.1",
        "--linger",
        "3600",
    ]


def _stored_keys(plan: Plan, client: str) -> list[str]:
    if client == "connector":
        return connector_keys(plan.symbols)
    return baseline_keys(plan.symbols)


def _wait_all_stored(
    plan: Plan, redis_url: str, started: ClientProcess, count: int, interval: float
) -> WaitOutcome:
    progress = StreamProgress(redis_url, _stored_keys(plan, started.kind))
    try:
        return wait_stored(
            progress,
            count,
            first_timeout=plan.first_timeout,
            stall_timeout=plan.stall_timeout,
            interval=interval,
            alive=lambda: not started.process.exited(),
        )
    finally:
        progress.close()


@dataclass(frozen=True, slots=True)
class Live:
    """N market frames as fast as the simulator sends them (burst, back-pressured so none is
    dropped). Window: the client's connection (the feed starts then) -> the last entry stored
    (its Redis id time) or, for the raw client, the last frame received. ``million`` is the
    same with 1,000,000 events, for the connector's peak RSS."""

    name: str = "live"
    variant: str = ""

    def expected(self, plan: Plan) -> int:
        return plan.million_events if self.name == "million" else plan.live_events

    def measure(self, run: Run) -> None:
        plan, count = run.plan, run.result.expected_events
        redis, redis_url = (None, "") if run.client == "raw" else start_redis(run.processes)
        port = free_port()
        started = start_client(run, port, redis_url, "live", count, ack="none")
        procs = watched(started, redis)
        window = Window()
        window.open(procs)
        run.profile(started.process)
        procs["simulator"] = start_simulator(run.processes, port, live_args(plan, count))
        window.open({"simulator": procs["simulator"]})
        events, end_wall = self._wait(run, started, redis_url, count)
        window.close(procs)
        run.stop_profile()
        self._figures(run.result, port, events, end_wall)
        record_resources(run.result, window, started)

    @staticmethod
    def _wait(
        run: Run, started: ClientProcess, redis_url: str, count: int
    ) -> tuple[int, float | None]:
        """(events stored or received, wall time of the last one)."""
        if run.client == "raw":
            summary = wait_raw(run.plan, started.process, count)
            last = summary.get("last_wall")
            return int(summary.get("frames") or 0), float(last) if last is not None else None
        outcome = _wait_all_stored(run.plan, redis_url, started, count, interval=0.02)
        if not outcome.complete:
            run.result.notes.append(f"incomplete: {outcome.reason}")
        return min(outcome.stored.added, count), outcome.stored.last_wall

    @staticmethod
    def _figures(result: RunResult, port: int, events: int, end_wall: float | None) -> None:
        report = fetch_report(port, details=True)
        start_wall = first_connection_wall(report)
        if start_wall is None or end_wall is None:
            raise BenchError("the run produced no timing (no connection or nothing stored)")
        result.events = events
        result.lost_events = result.expected_events - events
        result.duration_s = end_wall - start_wall
        result.events_per_s = rate(events, result.duration_s)
        sim_counts = counts(report)
        result.extra["sim_dropped"] = sim_counts.get("dropped", 0)
        result.extra["sim_sent_market_frames"] = sim_counts.get("market_frames", 0)
        if sim_counts.get("dropped"):
            result.notes.append(f"simulator dropped {sim_counts['dropped']} frames")
        if result.lost_events:
            result.notes.append(f"{result.lost_events} events not stored")


@dataclass(frozen=True, slots=True)
class Latency:
    """Documentation-style live feed (ids in ``id`` on every frame, so every event is acked) at
    a fixed rate. Latency per event, from the simulator's record: frame emitted (queued for the
    client) -> ack naming it received and parsed, both on the simulator's monotonic clock. It
    includes both WebSocket hops, the client's work and its Redis round trip."""

    name: str = "latency"
    variant: str = ""

    def expected(self, plan: Plan) -> int:
        return plan.latency_events

    def measure(self, run: Run) -> None:
        count = run.result.expected_events
        redis, redis_url = (None, "") if run.client == "raw" else start_redis(run.processes)
        port = free_port()
        started = start_client(run, port, redis_url, "live", count, ack="each")
        procs = watched(started, redis)
        window = Window()
        window.open(procs)
        run.profile(started.process)
        report_path = run.processes.workdir / "simulator-report.json"
        sim = start_simulator(run.processes, port, self._args(run.plan, count, report_path))
        procs["simulator"] = sim
        window.open({"simulator": sim})
        self._wait(run, started, redis_url, port, count)
        window.close(procs)
        run.stop_profile()
        sim.stop()  # SIGTERM: the simulator writes its report and exits
        self._figures(run.result, read_report_file(report_path))
        record_resources(run.result, window, started)

    @staticmethod
    def _args(plan: Plan, count: int, report_path: Path) -> list[str]:
        return [
            *("--mode", "live", "--rate", f"{plan.latency_rate:g}", "--count", str(count)),
            *("--id-field", "id", "--symbols", ",".join(plan.symbols)),
            *("--linger", "3600", "--shutdown-grace", "0.1", "--report", str(report_path)),
        ]

    @staticmethod
    def _wait(run: Run, started: ClientProcess, redis_url: str, port: int, count: int) -> None:
        if run.client == "raw":
            wait_raw(run.plan, started.process, count)
            return
        outcome = _wait_all_stored(run.plan, redis_url, started, count, interval=0.1)
        if not outcome.complete:
            run.result.notes.append(f"incomplete: {outcome.reason}")
        _wait_acked(port, count, timeout=5.0)

    @staticmethod
    def _figures(result: RunResult, report: dict[str, Any]) -> None:
        latencies, missing = event_ack_latencies(report, MARKET)
        sent, span = sent_span(report, MARKET)
        result.events = sent - missing
        result.duration_s = span
        result.events_per_s = rate(sent, span)
        result.set_latency(summarize_latencies(latencies))
        result.lost_events = result.expected_events - result.events
        if missing:
            result.notes.append(f"{missing} events never acked")


def _wait_acked(port: int, count: int, timeout: float) -> None:
    """Give the last acks a moment to reach the simulator (live acks follow the stores)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if counts(fetch_report(port)).get("acked_ids", 0) >= count:
            return
        time.sleep(0.05)


# -- soak ----------------------------------------------------------------------------------------


def soak(plan: Plan, workdir: Path, log: Log, seconds: float) -> dict[str, Any]:
    """Live feed at a steady rate for ``seconds``; the connector's RSS sampled throughout."""
    rundir = workdir / "soak"
    rundir.mkdir(parents=True, exist_ok=True)
    with Processes(rundir) as processes:
        _, redis_url = start_redis(processes)
        port = free_port()
        result = RunResult("soak", "connector", 0, 0)
        started = start_client(
            Run(plan, processes, result, None), port, redis_url, "live", 0, "none"
        )
        args = ["--mode", "live", "--rate", f"{plan.soak_rate:g}"]
        args += ["--symbols", ",".join(plan.symbols), "--shutdown-grace", "0.1"]
        before = started.process.sample()
        start_simulator(processes, port, args)
        progress = StreamProgress(redis_url, connector_keys(plan.symbols))
        try:
            samples = _soak_samples(
                plan, started, progress, before.cpu_s if before else 0.0, seconds, log
            )
            sent = counts(fetch_report(port)).get("market_frames", 0)
        finally:
            progress.close()
    return _soak_result(plan, seconds, samples, sent, log)


def _soak_samples(
    plan: Plan,
    started: ClientProcess,
    progress: StreamProgress,
    cpu_before: float,
    seconds: float,
    log: Log,
) -> list[dict[str, float]]:
    samples: list[dict[str, float]] = []
    began = time.monotonic()
    next_report = began + 60
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
                "cpu_s": round(reading.cpu_s - cpu_before, 3),
                "stored": stored.added,
            }
        )
        if now >= next_report:
            next_report += 60
            log(
                f"soak: {now - began:.0f}/{seconds:g} s, RSS {samples[-1]['rss_mb']:.1f} MB, "
                f"{stored.added:,} stored"
            )
        if now - began >= seconds:
            return samples
        time.sleep(min(plan.soak_interval, max(0.0, began + seconds - now)))


def _soak_result(
    plan: Plan, seconds: float, samples: list[dict[str, float]], sent: int, log: Log
) -> dict[str, Any]:
    flat: Flatness = memory_flatness([s["t"] for s in samples], [s["rss_mb"] for s in samples])
    log(
        f"soak: first window {flat.first_window_mb:.1f} MB, last {flat.last_window_mb:.1f} MB "
        f"({flat.growth_mb:+.1f} MB), slope {flat.slope_after_warmup_mb_per_min:+.3f} MB/min "
        f"-> {'flat' if flat.flat else 'GROWING'}"
    )
    return {
        "seconds": seconds,
        "rate": plan.soak_rate,
        "samples": samples,
        "flatness": {k: getattr(flat, k) for k in flat.__slots__},
        "sent": sent,
        "stored": int(samples[-1]["stored"]) if samples else 0,
        "peak_rss_mb": max((s["hwm_mb"] for s in samples), default=0.0),
    }
