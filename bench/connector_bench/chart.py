"""An optional PNG chart of the medians, drawn with matplotlib when it is installed.

matplotlib is deliberately not a dependency of the connector: without it, ``--chart`` prints how
to get it and the rest of the benchmark is unaffected.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connector_bench.report import SCENARIO_LABELS
from connector_bench.results import CLIENT_LABELS, CLIENTS, SCENARIOS, Medians
from connector_bench.scaling import scale_rows, split_variant

MISSING_MESSAGE = (
    "connector bench: --chart needs matplotlib, which is not installed "
    "(pip install matplotlib); the table and --json output are complete without it"
)

Panel = Callable[[Any, Medians], None]


def load_pyplot() -> Any | None:
    """``matplotlib.pyplot`` on the non-interactive Agg backend, or None if unavailable."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        return None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def draw(table: Medians, path: Path, title: str) -> str | None:
    """Write one PNG with a panel per kind of figure the medians have (throughput, ack
    latency, the scale scenario's rates and busy cores); returns an error message instead when
    it cannot."""
    plt = load_pyplot()
    if plt is None:
        return MISSING_MESSAGE
    panels = panels_for(table)
    if not panels:
        return "connector bench: nothing to chart"
    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
    for panel, axis in zip(panels, axes[0], strict=True):
        panel(axis, table)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None


def panels_for(table: Medians) -> list[Panel]:
    panels: list[Panel] = []
    if _rate_scenarios(table):
        panels.append(throughput_panel)
    if _ack_scenarios(table):
        panels.append(latency_panel)
    if "scale" in table:
        panels += [scale_rates_panel, scale_cores_panel]
    return panels


def _rate_scenarios(table: Medians) -> list[str]:
    # The latency scenario runs at a fixed rate: its events/s say nothing about throughput.
    return [s for s in SCENARIOS if s in table and s not in ("latency", "scale")]


def _ack_scenarios(table: Medians) -> list[str]:
    return [s for s in SCENARIOS if _value(table, s, "connector", "ack_p99_ms")]


def throughput_panel(axis: Any, table: Medians) -> None:
    scenarios = _rate_scenarios(table)
    width = 0.8 / len(CLIENTS)
    for offset, client in enumerate(CLIENTS):
        values = [_value(table, s, client, "events_per_s") for s in scenarios]
        positions = [i + (offset - (len(CLIENTS) - 1) / 2) * width for i in range(len(scenarios))]
        axis.bar(positions, values, width, label=CLIENT_LABELS[client])
    _scenario_ticks(axis, scenarios)
    axis.set_ylabel("events/s (median)")
    axis.set_yscale("log")
    axis.set_title("Throughput, end to end")
    axis.legend()


def latency_panel(axis: Any, table: Medians) -> None:
    scenarios = _ack_scenarios(table)
    for offset, name in enumerate(("connector", "baseline")):
        for metric in ("ack_p50_ms", "ack_p99_ms"):
            p99 = metric == "ack_p99_ms"
            axis.bar(
                [i + (offset * 2 + p99 - 1.5) * 0.2 for i in range(len(scenarios))],
                [_value(table, s, name, metric) for s in scenarios],
                0.2,
                hatch="//" if p99 else "",
                label=f"{CLIENT_LABELS[name]} {metric[4:7]}",
                color=f"C{offset}",
                alpha=0.6 if p99 else 1.0,
            )
    _scenario_ticks(axis, scenarios)
    axis.set_ylabel("ack latency, ms (median of runs)")
    axis.set_title("Ack latency p50 / p99")
    axis.legend()


def _scenario_ticks(axis: Any, scenarios: list[str]) -> None:
    axis.set_xticks(range(len(scenarios)))
    axis.set_xticklabels([SCENARIO_LABELS[s] for s in scenarios], rotation=20, ha="right")


def scale_rates_panel(axis: Any, table: Medians) -> None:
    """Aggregate and per-connector events/s against the connector count, per topology."""
    for topology, counts, rows in _by_topology(table):
        aggregate = [row.get("events_per_s") or 0.0 for row in rows]
        each = [row.get("per_connector_events_per_s") or 0.0 for row in rows]
        axis.plot(counts, aggregate, marker="o", label=f"{topology}: aggregate")
        axis.plot(counts, each, marker="x", linestyle="--", label=f"{topology}: per connector")
    _count_axis(axis, table, "events/s stored (median)", "Scale: throughput")


def scale_cores_panel(axis: Any, table: Medians) -> None:
    for topology, counts, rows in _by_topology(table):
        axis.plot(
            counts, [row.get("busy_cores") or 0.0 for row in rows], marker="o", label=topology
        )
    _count_axis(axis, table, "busy cores (machine)", "Scale: CPU")


def _by_topology(table: Medians) -> list[tuple[str, list[int], list[dict[str, Any]]]]:
    grouped: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for variant, row in scale_rows(table):
        topology, count = split_variant(variant)
        grouped.setdefault(topology, []).append((count, row))
    return [(t, [c for c, _ in rows], [r for _, r in rows]) for t, rows in grouped.items()]


def _count_axis(axis: Any, table: Medians, ylabel: str, title: str) -> None:
    axis.set_xticks(sorted({split_variant(variant)[1] for variant in table.get("scale", {})}))
    axis.set_xlabel("connectors at once")
    axis.set_ylabel(ylabel)
    axis.set_ylim(bottom=0)
    axis.set_title(title)
    axis.legend()


def _value(table: Medians, scenario: str, client: str, name: str) -> float:
    value = table.get(scenario, {}).get(client, {}).get(name)
    return float(value) if isinstance(value, int | float) else 0.0
