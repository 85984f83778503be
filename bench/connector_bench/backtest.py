"""Lock-step backtests: immediate acks (``backtest``) and consumer-ack mode with each consumer.

Each step is one candle per symbol (no fills, no extras) and the engine waits for every id of a
step before the next. Window: first step emitted -> last step released (simulator clock). Ack
latency per event: emitted -> ack received. Redis' own CPU (the redis-server process over the
window) is divided by the steps and the entries, so what the connector's checks of group state
cost Redis shows beside the step rate. Ack frames per step: ``event_ack`` frames the simulator
received that name a step's ids / steps (1.0 when every step is acknowledged in one frame).

Consumer-ack scenarios (the connector only; each consumer is a process of its own):

* ``consumer``: ``connector consume`` (the toolkit), which notifies on ``md:confirm``;
* ``consumer-plain``: the repository's ``docs/recipes/redis_py_consumer.py``, which only XACKs:
  the connector finds its confirmations by checking group state;
* ``consumer-floor``: ``connector_bench.floorconsumer``, the least a consumer does per step (no
  event loop, it notifies): what this machine allows, to read the toolkit's figure against;
* ``consumer-wide`` / ``consumer-wide-plain``: the same with ``Plan.wide_symbols`` symbols;
* ``consumer-idle``: ``consumer-plain`` with ``Plan.idle_streams`` idle streams under the
  prefix, created (with the group, and announced in the registry) before the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis import Redis

from connector.localredis import free_port
from connector_bench.clients import (
    STREAM_PREFIX,
    candle_keys,
    start_consumer,
    start_floor_consumer,
    start_plain_consumer,
)
from connector_bench.procs import BenchError, Managed, start_redis
from connector_bench.results import RunResult
from connector_bench.scenarios import Plan, Run, Window, record_resources, start_client, watched
from connector_bench.simproc import (
    event_ack_latencies,
    read_report_file,
    start_simulator,
    step_frames,
    step_stats,
)
from connector_bench.stats import rate, summarize_latencies

CONSUMER_GROUP = "bench"
#: The plain consumer and the floor read the candle streams: the connector is told so.
PLAIN_GROUPS = f"{CONSUMER_GROUP}[types=candle]"


@dataclass(frozen=True, slots=True)
class Backtest:
    """One lock-step backtest. ``consumer``: None (immediate acks), ``toolkit``, ``plain`` or
    ``floor``."""

    name: str
    consumer: str | None = None
    wide: bool = False
    idle: bool = False
    variant: str = ""

    def symbols(self, plan: Plan) -> tuple[str, ...]:
        if not self.wide:
            return plan.symbols
        return tuple(f"W{i:04d}" for i in range(1, plan.wide_symbols + 1))

    def steps(self, plan: Plan) -> int:
        if self.consumer is None:
            return plan.backtest_steps
        return plan.wide_steps if self.wide else plan.consumer_steps

    def expected(self, plan: Plan) -> int:
        return self.steps(plan) * len(self.symbols(plan))

    def measure(self, run: Run) -> None:
        redis, redis_url = (None, "") if run.client == "raw" else start_redis(run.processes)
        port = free_port()
        started = start_client(run, port, redis_url, "backtest", 0, "batch", self._ack_env())
        procs = watched(started, redis)
        if self.idle:
            create_idle_streams(redis_url, run.plan.idle_streams)
        consumer = self._consumer(run, redis_url)
        helpers = {"consumer": consumer} if consumer is not None else None
        procs.update(helpers or {})
        window = Window()
        window.open(procs)
        run.profile(started.process, helpers)
        report = self._simulate(run, port, procs, window)
        self._figures(run.result, report)
        record_resources(run.result, window, started)
        run.result.measures["symbols"] = len(self.symbols(run.plan))
        if self.idle:
            run.result.measures["idle_streams"] = run.plan.idle_streams

    def _ack_env(self) -> dict[str, str]:
        if self.consumer is None:
            return {}
        groups = CONSUMER_GROUP if self.consumer == "toolkit" else PLAIN_GROUPS
        return {"CONNECTOR_ACK_MODE": "consumer", "CONNECTOR_CONSUMER_GROUPS": groups}

    def _consumer(self, run: Run, redis_url: str) -> Managed | None:
        if self.consumer is None:
            return None
        if self.consumer == "plain":
            streams = candle_keys(self.symbols(run.plan))
            return start_plain_consumer(run.processes, redis_url, CONSUMER_GROUP, streams)
        if self.consumer == "floor":
            streams = candle_keys(self.symbols(run.plan))
            return start_floor_consumer(run.processes, redis_url, CONSUMER_GROUP, streams)
        return start_consumer(
            run.processes, redis_url, CONSUMER_GROUP, dict(run.plan.connector_env)
        )

    def _simulate(
        self, run: Run, port: int, procs: dict[str, Managed], window: Window
    ) -> dict[str, Any]:
        """The backtest itself, to its end; returns the simulator's report."""
        steps = self.steps(run.plan)
        report_path = run.processes.workdir / "simulator-report.json"
        sim = start_simulator(run.processes, port, self._args(run.plan, steps, report_path))
        procs["simulator"] = sim
        window.open({"simulator": sim})
        timeout = run.plan.first_timeout + steps * 0.2
        if not sim.wait_exit(timeout):
            raise BenchError(f"the backtest did not finish within {timeout:g} s")
        window.close(procs)
        run.stop_profile()
        sim.stop()
        if sim.returncode not in (0, None):
            raise BenchError(f"the simulator exited with {sim.returncode}:\n{sim.log_tail()}")
        return read_report_file(report_path)

    def _args(self, plan: Plan, steps: int, report_path: Path) -> list[str]:
        return [
            *("--mode", "backtest", "--steps", str(steps)),
            *("--symbols", ",".join(self.symbols(plan))),
            *("--fill-every", "0", "--other-every", "0", "--shutdown-grace", "0.1"),
            # The gateway leaves the socket open after a run, and the docs' loop (the baseline)
            # never leaves by itself: end the run for every client alike.
            "--exit-after-run",
            *("--report", str(report_path)),
        ]

    @staticmethod
    def _figures(result: RunResult, report: dict[str, Any]) -> None:
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
        if stats.steps:
            result.measures["ack_frames_per_step"] = step_frames(report) / stats.steps
        result.extra["steps_timed_out"] = stats.timed_out
        result.extra["complete_acked"] = bool(report.get("complete_acked"))
        if stats.timed_out:
            result.notes.append(f"{stats.timed_out} steps timed out")
        if missing:
            result.notes.append(f"{missing} ids never acked")


def idle_keys(count: int, prefix: str = STREAM_PREFIX) -> list[str]:
    """Candle streams of symbols no step ever has (``IDLE0001``...)."""
    return candle_keys([f"IDLE{i:04d}" for i in range(1, count + 1)], prefix)


def create_idle_streams(redis_url: str, count: int, prefix: str = STREAM_PREFIX) -> None:
    """``count`` streams as a connector that once wrote them would leave them: the group
    created on each, and each announced in the registry; then no data ever comes."""
    redis = Redis.from_url(redis_url, socket_timeout=30)
    try:
        pipe = redis.pipeline(transaction=False)
        for key in idle_keys(count, prefix):
            pipe.xgroup_create(key, CONSUMER_GROUP, id="$", mkstream=True)
            symbol = key.split("{", 1)[1].split("}", 1)[0]
            fields = {"stream": key, "type": "candle", "symbol": symbol, "timeframe": "1m"}
            pipe.xadd(f"{prefix}:streams", fields)  # type: ignore[arg-type]
        pipe.execute()
    finally:
        redis.close()


#: Every lock-step backtest, by name.
BACKTEST_SCENARIOS: dict[str, Backtest] = {
    scenario.name: scenario
    for scenario in (
        Backtest("backtest"),
        Backtest("consumer", "toolkit"),
        Backtest("consumer-plain", "plain"),
        Backtest("consumer-floor", "floor"),
        Backtest("consumer-wide", "toolkit", wide=True),
        Backtest("consumer-wide-plain", "plain", wide=True),
        Backtest("consumer-idle", "plain", idle=True),
    )
}
