"""The scale scenario: N connectors at once, each with its own simulator and stream prefix,
against one redis-server or a local Redis Cluster.

One run: the Redis topology (a fresh single node, or a fresh cluster: ``cluster.py``), then N
connectors one after the other (each retries its connection, so its start-up is over before the
window opens), a CPU reading of all of them, then the N simulators side by side (each on the port
its connector dials; its live burst starts when the connector connects). The run waits until every
prefix has all its events (or progress stalls), reads CPU and memory again, then fetches each
simulator's report. Every process is stopped when the run ends, however it ends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connector.localredis import free_port
from connector_bench.clients import ClientProcess, connector_keys, start_connector
from connector_bench.cluster import LocalCluster, start_cluster
from connector_bench.procfs import busy_cores, kb_to_mb, read_machine_cpu
from connector_bench.procs import BenchError, Managed, Processes, start_redis
from connector_bench.profile import Profiler
from connector_bench.progress import GroupedProgress, StreamProgress, wait_stored
from connector_bench.scaling import ConnectorFigures, ScaleRun
from connector_bench.scenarios import Log, Plan, Window
from connector_bench.simproc import (
    counts,
    fetch_report,
    first_connection_wall,
    launch_simulator,
    wait_listening,
)


@dataclass(frozen=True, slots=True)
class ScalePlan:
    """What the scale scenario runs: connector counts, topologies, cluster shape, symbols."""

    connectors: tuple[int, ...] = (1, 2, 3)
    topologies: tuple[str, ...] = ("single",)
    masters: int = 3
    replicas: int = 0
    shared_symbols: bool = False  # every connector the same symbols (default: its own)


def connector_symbols(symbols: tuple[str, ...], index: int, shared: bool) -> tuple[str, ...]:
    """Connector ``index``'s symbols: the plan's for the first (or for all when ``shared``),
    suffixed copies for the others (``AAPL2``...), as sessions with split subscriptions."""
    if shared or index == 0:
        return symbols
    return tuple(f"{symbol}{index + 1}" for symbol in symbols)


def prefix_of(index: int) -> str:
    return f"scale{index + 1}"


class ScaleRunner:
    """Runs the scale scenario; each call of :meth:`run` is one complete, self-cleaning run."""

    def __init__(
        self,
        plan: Plan,
        scale: ScalePlan,
        workdir: Path,
        log: Log,
        cores: int,
        profile_dir: Path | None = None,
    ) -> None:
        self.plan = plan
        self.scale = scale
        self.workdir = workdir
        self.log = log
        self.cores = cores
        self.profile_dir = profile_dir
        self._runs = 0

    def settings(self, repeat: int) -> dict[str, Any]:
        return {
            "connectors": list(self.scale.connectors),
            "topologies": list(self.scale.topologies),
            "cluster": {"masters": self.scale.masters, "replicas": self.scale.replicas},
            "shared_symbols": self.scale.shared_symbols,
            "events_per_connector": self.plan.live_events,
            "symbols_per_connector": len(self.plan.symbols),
            "repeat": repeat,
            "connector_env": dict(self.plan.connector_env),
        }

    def run(self, topology: str, count: int, index: int, *, profile: bool = False) -> ScaleRun:
        """One run; with ``profile`` (and a profile directory) py-spy records the first
        connector over the window (an extra run, not part of the medians)."""
        result = ScaleRun(topology, count, index)
        self._runs += 1
        tag = f"scale-{self._runs:03d}-{topology}-{count}-{index}" + ("-profile" if profile else "")
        rundir = self.workdir / tag
        rundir.mkdir(parents=True, exist_ok=True)
        profiler = Profiler(self.profile_dir, tag) if profile and self.profile_dir else None
        started = time.monotonic()
        try:
            with Processes(rundir) as processes:
                self._run(processes, result, profiler)
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

    def _run(self, processes: Processes, result: ScaleRun, profiler: Profiler | None) -> None:
        plan, cluster = self.plan, result.topology == "cluster"
        redis_nodes, redis_url = self._redis(processes, cluster, result)
        clients: list[ClientProcess] = []
        ports: list[int] = []
        groups: dict[str, list[str]] = {}
        for i in range(result.connectors):
            port = free_port()
            prefix = prefix_of(i)
            env = {
                **dict(plan.connector_env),
                "CONNECTOR_STREAM_PREFIX": prefix,
                "CONNECTOR_REDIS_CLUSTER": "true" if cluster else "false",
            }
            api = f"ws://127.0.0.1:{port}/v1/ws"
            clients.append(
                start_connector(
                    processes,
                    api,
                    redis_url,
                    "live",
                    env,
                    plan.connector_argv,
                    f"connector-{i + 1}",
                )
            )
            ports.append(port)
            symbols = connector_symbols(plan.symbols, i, self.scale.shared_symbols)
            groups[prefix] = connector_keys(symbols, prefix)
        watched: dict[str, Managed] = {f"connector-{i}": c.process for i, c in enumerate(clients)}
        watched.update({f"redis-{i}": node for i, node in enumerate(redis_nodes)})
        window = Window()
        window.open(watched)
        if profiler is not None:
            profiler.start(processes, clients[0].process)
        sims = [
            launch_simulator(processes, port, self._sim_args(i), f"simulator-{i + 1}")
            for i, port in enumerate(ports)
        ]
        for sim in sims:
            wait_listening(sim)
        machine_start = read_machine_cpu()
        sim_names = {f"simulator-{i}": sim for i, sim in enumerate(sims)}
        window.open(sim_names)
        watched.update(sim_names)
        progress = StreamProgress(redis_url, [], cluster=cluster)
        grouped = GroupedProgress(progress, groups)
        try:
            outcome = wait_stored(
                grouped,
                plan.live_events * result.connectors,
                first_timeout=plan.first_timeout,
                stall_timeout=plan.stall_timeout,
                interval=0.1,
                alive=lambda: not any(c.process.exited() for c in clients),
            )
            machine_end = read_machine_cpu()
            window.close(watched)
            if profiler is not None:
                profiler.stop()
            if not outcome.complete:
                result.notes.append(f"incomplete: {outcome.reason}")
            grouped.read()  # once more: anything stored twice would show now
            result.extra["bytes_per_entry"] = _bytes_per_entry(progress, groups, grouped)
        finally:
            progress.close()
        result.busy_cores = busy_cores(machine_start, machine_end, self.cores)
        self._figures(result, ports, groups, grouped, window)

    def _redis(
        self, processes: Processes, cluster: bool, result: ScaleRun
    ) -> tuple[list[Managed], str]:
        if not cluster:
            node, url = start_redis(processes)
            return [node], url
        began = time.monotonic()
        local: LocalCluster = start_cluster(processes, self.scale.masters, self.scale.replicas)
        result.extra["cluster_start_s"] = round(time.monotonic() - began, 3)
        return local.nodes, local.url

    def _sim_args(self, index: int) -> list[str]:
        symbols = connector_symbols(self.plan.symbols, index, self.scale.shared_symbols)
        return [
            "--mode",
            "live",
            "--burst",
            "--backpressure",
            "--count",
            str(self.plan.live_events),
            "--symbols",
            ",".join(symbols),
            "--seed",
            str(index + 1),
            "--shutdown-grace",
            "0.1",
            "--linger",
            "3600",
        ]

    def _figures(
        self,
        result: ScaleRun,
        ports: list[int],
        groups: dict[str, list[str]],
        grouped: GroupedProgress,
        window: Window,
    ) -> None:
        for i, (port, prefix) in enumerate(zip(ports, groups, strict=True)):
            report = fetch_report(port, details=True)
            stored = grouped.groups.get(prefix)
            end = window.end.get(f"connector-{i}")
            figures = ConnectorFigures(
                prefix=prefix,
                expected=self.plan.live_events,
                sent=counts(report).get("market_frames", 0),
                stored=0 if stored is None else stored.added,
                start_wall=first_connection_wall(report),
                end_wall=None if stored is None else stored.last_wall,
                cpu_s=window.cpu(f"connector-{i}"),
                peak_rss_mb=None if end is None else kb_to_mb(end.hwm_kb),
            )
            result.per_connector.append(figures)
            if not figures.stored_once:
                result.notes.append(
                    f"{prefix}: {figures.stored:,} stored of {figures.expected:,} "
                    f"({figures.sent:,} sent)"
                )
            dropped = counts(report).get("dropped", 0)
            if dropped:
                result.notes.append(f"{prefix}: the simulator dropped {dropped} frames")
        redis_cpu = [window.cpu(name) for name in window.start if name.startswith("redis-")]
        result.redis_cpu_s = sum(c for c in redis_cpu if c is not None) if redis_cpu else None
        sim_cpu = [window.cpu(name) for name in window.start if name.startswith("simulator-")]
        result.simulator_cpu_s = sum(c for c in sim_cpu if c is not None) if sim_cpu else None
        if result.start_spread_s > 1.0:
            result.notes.append(f"feeds started {result.start_spread_s:.2f} s apart")


def _bytes_per_entry(
    progress: StreamProgress, groups: dict[str, list[str]], grouped: GroupedProgress
) -> float | None:
    """``MEMORY USAGE`` of the first connector's market streams / the entries they hold."""
    prefix = next(iter(groups), None)
    if prefix is None:
        return None
    keys = groups[prefix]
    sizes = [progress.memory_usage(key) for key in keys]
    lengths = [_length(info) for info in progress.infos(keys)]
    if any(size is None for size in sizes) or sum(lengths) <= 0:
        return None
    return sum(size for size in sizes if size is not None) / sum(lengths)


def _length(info: Any) -> int:
    return int(info.get("length") or 0) if isinstance(info, dict) else 0


def _one_line(result: ScaleRun) -> str:
    head = f"scale/{result.topology}/{result.connectors} #{result.index + 1}"
    if result.error:
        return f"{head}: FAILED: {result.error.splitlines()[0]}"
    f = result.figures()
    parts = [
        f"{result.events:,} of {result.expected:,} events in {result.window_s:.2f} s",
        f"aggregate {f['aggregate_events_per_s']:,.0f} events/s",
        f"per connector {f['per_connector_events_per_s'] or 0:,.0f}",
    ]
    if f["connector_cpu_per_1k"] is not None:
        parts.append(f"CPU {f['connector_cpu_per_1k']:.3f} s/1k")
    if f["busy_cores"] is not None:
        parts.append(f"busy cores {f['busy_cores']:.2f}")
    notes = f" [{'; '.join(result.notes)}]" if result.notes else ""
    return f"{head}: {', '.join(parts)}{notes}"
