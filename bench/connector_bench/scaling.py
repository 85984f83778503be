"""The scale scenario's figures: per connector, per run, medians per (topology, N), the table.

Pure: plain data in, figures and text out (unit-tested without processes).

* **aggregate events/s** = every event stored by every connector of the run / the wall window
  from the first simulator's connection (its feed starts then) to the newest entry stored by any
  connector (its Redis id time);
* **per connector events/s** = its events / (its simulator's connection -> its last entry);
* **CPU s per 1k events** = the connectors' CPU over the window / the events (1,000s), and the
  same for the Redis node(s);
* **busy cores** = the machine's busy share over the burst (``/proc/stat``) times its cores;
* **stored once** = every prefix's ``entries-added`` equals the events its simulator sent (none
  lost, none twice).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from connector_bench.report import format_table, number
from connector_bench.stats import median_or_none, rate

TOPOLOGIES: tuple[str, ...] = ("single", "cluster")


@dataclass(slots=True)
class ConnectorFigures:
    """One connector (and its simulator) of a scale run."""

    prefix: str
    expected: int  # events its simulator was asked to send
    sent: int = 0  # market frames the simulator reports sent
    stored: int = 0  # entries-added over the prefix's market streams
    start_wall: float | None = None  # its simulator's first connection (feed starts)
    end_wall: float | None = None  # its newest entry (Redis id time)
    cpu_s: float | None = None
    peak_rss_mb: float | None = None

    @property
    def duration_s(self) -> float:
        if self.start_wall is None or self.end_wall is None:
            return 0.0
        return max(0.0, self.end_wall - self.start_wall)

    @property
    def events_per_s(self) -> float:
        return rate(self.stored, self.duration_s)

    @property
    def stored_once(self) -> bool:
        return self.stored == self.expected and self.sent in (0, self.expected)


@dataclass(slots=True)
class ScaleRun:
    """N connectors at once against one Redis topology."""

    topology: str
    connectors: int
    index: int
    per_connector: list[ConnectorFigures] = field(default_factory=list)
    redis_cpu_s: float | None = None
    simulator_cpu_s: float | None = None
    busy_cores: float | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def events(self) -> int:
        return sum(c.stored for c in self.per_connector)

    @property
    def expected(self) -> int:
        return sum(c.expected for c in self.per_connector)

    @property
    def window_s(self) -> float:
        starts = [c.start_wall for c in self.per_connector if c.start_wall is not None]
        ends = [c.end_wall for c in self.per_connector if c.end_wall is not None]
        if not starts or not ends:
            return 0.0
        return max(0.0, max(ends) - min(starts))

    @property
    def start_spread_s(self) -> float:
        """How far apart the feeds started (the simulators start side by side)."""
        starts = [c.start_wall for c in self.per_connector if c.start_wall is not None]
        return max(starts) - min(starts) if starts else 0.0

    @property
    def aggregate_events_per_s(self) -> float:
        return rate(self.events, self.window_s)

    @property
    def all_stored_once(self) -> bool:
        return bool(self.per_connector) and all(c.stored_once for c in self.per_connector)

    def connector_cpu_per_1k(self) -> float | None:
        cpus = [c.cpu_s for c in self.per_connector]
        if not cpus or any(cpu is None for cpu in cpus) or self.events <= 0:
            return None
        return sum(cpu for cpu in cpus if cpu is not None) / self.events * 1000.0

    def redis_cpu_per_1k(self) -> float | None:
        if self.redis_cpu_s is None or self.events <= 0:
            return None
        return self.redis_cpu_s / self.events * 1000.0

    def figures(self) -> dict[str, Any]:
        """The run's headline figures (the medians and the table are made of these)."""
        rates = [c.events_per_s for c in self.per_connector]
        rss = [c.peak_rss_mb for c in self.per_connector if c.peak_rss_mb is not None]
        return {
            "events": self.events,
            "expected": self.expected,
            "window_s": self.window_s,
            "aggregate_events_per_s": self.aggregate_events_per_s,
            "per_connector_events_per_s": median_or_none(rates),
            "per_connector_min_events_per_s": min(rates) if rates else None,
            "connector_cpu_per_1k": self.connector_cpu_per_1k(),
            "redis_cpu_per_1k": self.redis_cpu_per_1k(),
            "busy_cores": self.busy_cores,
            "start_spread_s": self.start_spread_s,
            "peak_rss_mb": max(rss) if rss else None,
            "bytes_per_entry": _float(self.extra.get("bytes_per_entry")),
            "all_stored_once": self.all_stored_once,
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["figures"] = self.figures()
        data["per_connector"] = [
            {**asdict(c), "events_per_s": c.events_per_s, "duration_s": c.duration_s}
            for c in self.per_connector
        ]
        return data


MEDIAN_FIELDS: tuple[str, ...] = (
    "events",
    "window_s",
    "aggregate_events_per_s",
    "per_connector_events_per_s",
    "per_connector_min_events_per_s",
    "connector_cpu_per_1k",
    "redis_cpu_per_1k",
    "busy_cores",
    "start_spread_s",
    "peak_rss_mb",
    "bytes_per_entry",
)


def scale_medians(runs: Sequence[ScaleRun]) -> list[dict[str, Any]]:
    """One row per (topology, N) in run order: medians over the successful repeats, and the
    speed-up of the aggregate over the same topology's single connector."""
    grouped: dict[tuple[str, int], list[ScaleRun]] = {}
    for run in runs:
        grouped.setdefault((run.topology, run.connectors), []).append(run)
    rows: list[dict[str, Any]] = []
    for (topology, count), group in sorted(
        grouped.items(), key=lambda item: (_topology_order(item[0][0]), item[0][1])
    ):
        good = [run for run in group if run.ok]
        figures = [run.figures() for run in good]
        row: dict[str, Any] = {
            "topology": topology,
            "connectors": count,
            "runs": len(group),
            "ok_runs": len(good),
            "all_stored_once": bool(good) and all(f["all_stored_once"] for f in figures),
            "errors": [run.error for run in group if run.error],
        }
        for name in MEDIAN_FIELDS:
            row[name] = median_or_none(_float(f.get(name)) for f in figures)
        rows.append(row)
    for row in rows:
        one = next(
            (r for r in rows if r["topology"] == row["topology"] and r["connectors"] == 1), None
        )
        base = None if one is None else one.get("aggregate_events_per_s")
        value = row.get("aggregate_events_per_s")
        row["speedup_vs_1"] = value / base if value is not None and base else None
    return rows


def _topology_order(topology: str) -> int:
    return TOPOLOGIES.index(topology) if topology in TOPOLOGIES else len(TOPOLOGIES)


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


SCALE_HEADERS = (
    "redis",
    "connectors",
    "events",
    "aggregate ev/s",
    "x vs 1",
    "per connector ev/s",
    "slowest ev/s",
    "conn CPU s/1k",
    "redis CPU s/1k",
    "busy cores",
    "peak RSS MB",
    "stored once",
)


def scale_table(rows: Sequence[dict[str, Any]]) -> str:
    cells: list[list[str]] = []
    for row in rows:
        flag = "" if row["ok_runs"] == row["runs"] else f" ({row['ok_runs']}/{row['runs']} ok)"
        speedup = row.get("speedup_vs_1")
        cells.append(
            [
                str(row["topology"]) + flag,
                str(row["connectors"]),
                number(row.get("events")),
                number(row.get("aggregate_events_per_s")),
                "-" if speedup is None else f"{speedup:.2f}x",
                number(row.get("per_connector_events_per_s")),
                number(row.get("per_connector_min_events_per_s")),
                number(row.get("connector_cpu_per_1k"), 3),
                number(row.get("redis_cpu_per_1k"), 3),
                number(row.get("busy_cores"), 2),
                number(row.get("peak_rss_mb"), 1),
                "yes" if row["all_stored_once"] else "NO",
            ]
        )
    return format_table(SCALE_HEADERS, cells, set(range(1, 11)))


def render_scale(
    rows: Sequence[dict[str, Any]], runs: Sequence[ScaleRun], settings: dict[str, Any]
) -> str:
    """The scale block of the report: settings, the table, how to read it, per-run notes."""
    cluster = settings.get("cluster") or {}
    topo = []
    if "single" in settings.get("topologies", ()):
        topo.append("single = one redis-server")
    if "cluster" in settings.get("topologies", ()):
        topo.append(
            f"cluster = local Redis Cluster, {cluster.get('masters')} masters, "
            f"{cluster.get('replicas')} replica(s) per master"
        )
    symbols = "the same symbols" if settings.get("shared_symbols") else "its own symbols"
    parts = [
        f"scale: N connectors at once, each with its own simulator (live burst, back-pressured, "
        f"{settings.get('events_per_connector', 0):,} events), its own stream prefix and "
        f"{symbols} ({settings.get('symbols_per_connector')} per connector); medians of "
        f"{settings.get('repeat')} run(s); {'; '.join(topo)}",
        "",
        scale_table(rows),
        "",
        "aggregate ev/s: all events stored / (first feed starts -> last entry stored by any "
        "connector); per connector: its own window (median over connectors and runs; slowest: "
        "the slowest connector). CPU s/1k: CPU seconds per 1,000 events, summed over the "
        "connectors (redis: over its node(s)). busy cores: the whole machine over the burst "
        "(/proc/stat). stored once: every prefix's entries-added = the events its simulator sent.",
    ]
    sizes = [
        f"{row['topology']} {row['bytes_per_entry']:.0f}"
        for row in rows
        if row["connectors"] == 1 and row.get("bytes_per_entry")
    ]
    if sizes:
        parts.append(
            "memory per stream entry (MEMORY USAGE of the first connector's market streams / "
            f"their entries, bytes): {', '.join(sizes)}"
        )
    notes = []
    for run in runs:
        label = f"{run.topology}/{run.connectors} #{run.index + 1}"
        if run.error:
            notes.append(f"  {label}: FAILED: {run.error.splitlines()[0]}")
        elif run.notes:
            notes.append(f"  {label}: {'; '.join(run.notes)}")
    if notes:
        parts += ["", "notes:", *notes]
    return "\n".join(parts) + "\n"
