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
from typing import Any

from connector.localredis import free_port
from connector_bench.clients import ClientProcess, connector_keys, start_connector
from connector_bench.cluster import LocalCluster, start_cluster
from connector_bench.feeds import live_args
from connector_bench.procfs import busy_cores, kb_to_mb, read_machine_cpu
from connector_bench.procs import Managed, start_redis
from connector_bench.progress import GroupedProgress, StreamProgress, wait_stored
from connector_bench.results import RunResult
from connector_bench.scaling import ConnectorFigures, fill_result, variant_of
from connector_bench.scenarios import Plan, Run, Window
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


@dataclass(frozen=True, slots=True)
class ScaleScenario:
    """N connectors at once against one Redis topology (one row of the scale table)."""

    topology: str
    connectors: int
    scale: ScalePlan
    cores: int
    name: str = "scale"

    @property
    def variant(self) -> str:
        return variant_of(self.topology, self.connectors)

    def expected(self, plan: Plan) -> int:
        return plan.live_events * self.connectors

    def measure(self, run: Run) -> None:
        """With a profiler, py-spy records the first connector over the window."""
        cluster = self.topology == "cluster"
        nodes, redis_url = self._redis(run, cluster)
        clients, ports = self._connectors(run, redis_url, cluster)
        procs: dict[str, Managed] = {f"connector-{i}": c.process for i, c in enumerate(clients)}
        procs.update({f"redis-{i}": node for i, node in enumerate(nodes)})
        window = Window()
        window.open(procs)
        run.profile(clients[0].process)
        sims = self._simulators(run, ports)
        machine_start = read_machine_cpu()
        window.open(sims)
        procs.update(sims)
        groups = self._groups(run.plan)
        progress = StreamProgress(redis_url, [], cluster=cluster)
        try:
            grouped = GroupedProgress(progress, groups)
            self._wait(run, grouped, clients)
            busy = busy_cores(machine_start, read_machine_cpu(), self.cores)
            window.close(procs)
            run.stop_profile()
            grouped.read()  # once more: anything stored twice would show now
            self._memory(run.result, progress, next(iter(groups.values())))
        finally:
            progress.close()
        self._figures(run.result, ports, grouped, window)
        if busy is not None:
            run.result.measures["busy_cores"] = busy

    def _redis(self, run: Run, cluster: bool) -> tuple[list[Managed], str]:
        if not cluster:
            node, url = start_redis(run.processes)
            return [node], url
        began = time.monotonic()
        local: LocalCluster = start_cluster(run.processes, self.scale.masters, self.scale.replicas)
        run.result.extra["cluster_start_s"] = round(time.monotonic() - began, 3)
        return local.nodes, local.url

    def _connectors(
        self, run: Run, redis_url: str, cluster: bool
    ) -> tuple[list[ClientProcess], list[int]]:
        """Each connector with its own prefix, dialling its own simulator's port (chosen now)."""
        clients: list[ClientProcess] = []
        ports: list[int] = []
        for i in range(self.connectors):
            port = free_port()
            env = {
                **dict(run.plan.connector_env),
                "CONNECTOR_STREAM_PREFIX": prefix_of(i),
                "CONNECTOR_REDIS_CLUSTER": "true" if cluster else "false",
            }
            api = f"ws://127.0.0.1:{port}/v1/ws"
            argv = run.plan.connector_argv
            name = f"connector-{i + 1}"
            clients.append(start_connector(run.processes, api, redis_url, "live", env, argv, name))
            ports.append(port)
        return clients, ports

    def _simulators(self, run: Run, ports: list[int]) -> dict[str, Managed]:
        """Started side by side, then waited for: their feeds start within a moment."""
        sims = {
            f"simulator-{i}": launch_simulator(
                run.processes, port, self._sim_args(run.plan, i), f"simulator-{i + 1}"
            )
            for i, port in enumerate(ports)
        }
        for sim in sims.values():
            wait_listening(sim)
        return sims

    def _sim_args(self, plan: Plan, index: int) -> list[str]:
        symbols = connector_symbols(plan.symbols, index, self.scale.shared_symbols)
        return [*live_args(plan, plan.live_events, symbols), "--seed", str(index + 1)]

    def _groups(self, plan: Plan) -> dict[str, list[str]]:
        """Each prefix's market streams."""
        return {
            prefix_of(i): connector_keys(
                connector_symbols(plan.symbols, i, self.scale.shared_symbols), prefix_of(i)
            )
            for i in range(self.connectors)
        }

    def _wait(self, run: Run, grouped: GroupedProgress, clients: list[ClientProcess]) -> None:
        """Until every prefix has all its events (or progress stalls, or a connector dies)."""
        outcome = wait_stored(
            grouped,
            run.result.expected_events,
            first_timeout=run.plan.first_timeout,
            stall_timeout=run.plan.stall_timeout,
            interval=0.1,
            alive=lambda: not any(c.process.exited() for c in clients),
        )
        if not outcome.complete:
            run.result.notes.append(f"incomplete: {outcome.reason}")

    @staticmethod
    def _memory(result: RunResult, progress: StreamProgress, keys: list[str]) -> None:
        """``MEMORY USAGE`` of the first connector's market streams / the entries they hold."""
        sizes = [progress.memory_usage(key) for key in keys]
        lengths = [_length(info) for info in progress.infos(keys)]
        if keys and None not in sizes and sum(lengths) > 0:
            result.measures["bytes_per_entry"] = sum(s for s in sizes if s) / sum(lengths)

    def _figures(
        self, result: RunResult, ports: list[int], grouped: GroupedProgress, window: Window
    ) -> None:
        parts = [self._connector(result, i, port, grouped, window) for i, port in enumerate(ports)]
        fill_result(result, parts, window.total_cpu("redis-"))
        simulators = window.total_cpu("simulator-")
        if simulators is not None:
            result.extra["simulator_cpu_s"] = round(simulators, 3)
        spread = result.measures["start_spread_s"]
        if spread > 1.0:
            result.notes.append(f"feeds started {spread:.2f} s apart")

    def _connector(
        self, result: RunResult, index: int, port: int, grouped: GroupedProgress, window: Window
    ) -> ConnectorFigures:
        """Connector ``index``'s figures, from its simulator's report and its prefix's streams."""
        prefix = prefix_of(index)
        report = fetch_report(port, details=True)
        stored = grouped.groups.get(prefix)
        end = window.end.get(f"connector-{index}")
        figures = ConnectorFigures(
            prefix=prefix,
            expected=result.expected_events // self.connectors,
            sent=counts(report).get("market_frames", 0),
            stored=0 if stored is None else stored.added,
            start_wall=first_connection_wall(report),
            end_wall=None if stored is None else stored.last_wall,
            cpu_s=window.cpu(f"connector-{index}"),
            peak_rss_mb=None if end is None else kb_to_mb(end.hwm_kb),
        )
        if not figures.stored_once:
            result.notes.append(
                f"{prefix}: {figures.stored:,} stored of {figures.expected:,} "
                f"({figures.sent:,} sent)"
            )
        dropped = counts(report).get("dropped", 0)
        if dropped:
            result.notes.append(f"{prefix}: the simulator dropped {dropped} frames")
        return figures


def _length(info: Any) -> int:
    return int(info.get("length") or 0) if isinstance(info, dict) else 0


def scale_settings(plan: Plan, scale: ScalePlan, repeat: int) -> dict[str, Any]:
    """The scale scenario's shape, for the report's heading and the JSON document."""
    return {
        "connectors": list(scale.connectors),
        "topologies": list(scale.topologies),
        "cluster": {"masters": scale.masters, "replicas": scale.replicas},
        "shared_symbols": scale.shared_symbols,
        "events_per_connector": plan.live_events,
        "symbols_per_connector": len(plan.symbols),
        "repeat": repeat,
        "connector_env": dict(plan.connector_env),
    }


def scale_scenarios(scale: ScalePlan, cores: int) -> list[ScaleScenario]:
    """One scenario per (topology, connector count), in the order they run."""
    return [
        ScaleScenario(topology, count, scale, cores)
        for topology in scale.topologies
        for count in scale.connectors
    ]
