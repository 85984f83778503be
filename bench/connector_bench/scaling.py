"""The scale scenario's figures, from what each of its connectors did. Pure: plain data in, a
filled-in :class:`RunResult` out (unit-tested without processes).

* **aggregate events/s** (the run's events/s) = every event stored by every connector of the run
  / the wall window from the first simulator's connection (its feed starts then) to the newest
  entry stored by any connector (its Redis id time);
* **per connector events/s** = its events / (its simulator's connection -> its last entry);
* **CPU s per 1k events** = the connectors' CPU over the window / the events (1,000s), and the
  same for the Redis node(s);
* **busy cores** = the machine's busy share over the burst (``/proc/stat``) times its cores;
* **stored once** = every prefix's ``entries-added`` equals the events its simulator sent (none
  lost, none twice).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from connector_bench.results import Medians, RunResult
from connector_bench.stats import median_or_none, rate

TOPOLOGIES: tuple[str, ...] = ("single", "cluster")


def variant_of(topology: str, connectors: int) -> str:
    """The scale scenario's row key: ``single/2``."""
    return f"{topology}/{connectors}"


def split_variant(variant: str) -> tuple[str, int]:
    topology, _, count = variant.partition("/")
    return topology, int(count) if count.isdigit() else 0


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

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "events_per_s": self.events_per_s, "duration_s": self.duration_s}


def window_s(parts: Sequence[ConnectorFigures]) -> float:
    starts = [c.start_wall for c in parts if c.start_wall is not None]
    ends = [c.end_wall for c in parts if c.end_wall is not None]
    if not starts or not ends:
        return 0.0
    return max(0.0, max(ends) - min(starts))


def start_spread_s(parts: Sequence[ConnectorFigures]) -> float:
    """How far apart the feeds started (the simulators start side by side)."""
    starts = [c.start_wall for c in parts if c.start_wall is not None]
    return max(starts) - min(starts) if starts else 0.0


def connectors_cpu(parts: Sequence[ConnectorFigures]) -> float | None:
    """The connectors' CPU together (None unless every one was read)."""
    cpus = [c.cpu_s for c in parts]
    if not cpus or any(cpu is None for cpu in cpus):
        return None
    return sum(cpu for cpu in cpus if cpu is not None)


def fill_result(
    result: RunResult, parts: Sequence[ConnectorFigures], redis_cpu_s: float | None
) -> None:
    """The run's figures from its connectors' (see the module docstring)."""
    result.parts = [part.to_dict() for part in parts]
    result.events = sum(part.stored for part in parts)
    result.lost_events = result.expected_events - result.events
    result.duration_s = window_s(parts)
    result.events_per_s = rate(result.events, result.duration_s)
    result.set_cpu(connectors_cpu(parts))
    rss = [part.peak_rss_mb for part in parts if part.peak_rss_mb is not None]
    result.peak_rss_mb = max(rss) if rss else None
    result.set_redis_cpu(redis_cpu_s)
    rates = [part.events_per_s for part in parts]
    if rates:
        result.measures["per_connector_events_per_s"] = median_or_none(rates) or 0.0
        result.measures["per_connector_min_events_per_s"] = min(rates)
    result.measures["start_spread_s"] = start_spread_s(parts)
    result.checks["all_stored_once"] = bool(parts) and all(p.stored_once for p in parts)


def scale_rows(table: Medians) -> list[tuple[str, dict[str, Any]]]:
    """The scale scenario's median rows by topology then connector count, each with its
    aggregate speed-up over the same topology's single connector (``speedup_vs_1``)."""
    rows = table.get("scale", {})
    ordered = sorted(rows.items(), key=lambda item: _order(item[0]))
    for variant, row in ordered:
        topology, _ = split_variant(variant)
        one = rows.get(variant_of(topology, 1), {}).get("events_per_s")
        value = row.get("events_per_s")
        row["speedup_vs_1"] = value / one if value is not None and one else None
    return ordered


def _order(variant: str) -> tuple[int, int]:
    topology, count = split_variant(variant)
    known = TOPOLOGIES.index(topology) if topology in TOPOLOGIES else len(TOPOLOGIES)
    return known, count
