"""An optional PNG chart of the medians, drawn with matplotlib when it is installed.

matplotlib is deliberately not a dependency of the connector: without it, ``--chart`` prints how
to get it and the rest of the benchmark is unaffected.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from connector_bench.report import SCENARIO_LABELS
from connector_bench.results import CLIENT_LABELS, CLIENTS, SCENARIOS, Medians

MISSING_MESSAGE = (
    "connector bench: --chart needs matplotlib, which is not installed "
    "(pip install matplotlib); the table and --json output are complete without it"
)


def load_pyplot() -> Any | None:
    """``matplotlib.pyplot`` on the non-interactive Agg backend, or None if unavailable."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        return None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def draw(table: Medians, path: Path, title: str) -> str | None:
    """Write the chart; returns an error message instead when it cannot."""
    plt = load_pyplot()
    if plt is None:
        return MISSING_MESSAGE
    # The latency scenario runs at a fixed rate: its events/s say nothing about throughput.
    scenarios = [s for s in SCENARIOS if s in table and s != "latency"]
    figure, (rates, latency) = plt.subplots(1, 2, figsize=(13, 5))
    width = 0.8 / len(CLIENTS)
    for offset, client in enumerate(CLIENTS):
        values = [_value(table, s, client, "events_per_s") for s in scenarios]
        positions = [i + (offset - (len(CLIENTS) - 1) / 2) * width for i in range(len(scenarios))]
        rates.bar(positions, values, width, label=CLIENT_LABELS[client])
    rates.set_xticks(range(len(scenarios)))
    rates.set_xticklabels([SCENARIO_LABELS[s] for s in scenarios], rotation=20, ha="right")
    rates.set_ylabel("events/s (median)")
    rates.set_yscale("log")
    rates.set_title("Throughput, end to end")
    rates.legend()

    with_acks = [s for s in SCENARIOS if _value(table, s, "connector", "ack_p99_ms")]
    for offset, name in enumerate(("connector", "baseline")):
        for metric, hatch in (("ack_p50_ms", ""), ("ack_p99_ms", "//")):
            values = [_value(table, s, name, metric) for s in with_acks]
            positions = [
                i + (offset * 2 + (metric == "ack_p99_ms") - 1.5) * 0.2
                for i in range(len(with_acks))
            ]
            latency.bar(
                positions,
                values,
                0.2,
                hatch=hatch,
                label=f"{CLIENT_LABELS[name]} {metric[4:7]}",
                color=f"C{offset}",
                alpha=1.0 if metric == "ack_p50_ms" else 0.6,
            )
    latency.set_xticks(range(len(with_acks)))
    latency.set_xticklabels([SCENARIO_LABELS[s] for s in with_acks], rotation=20, ha="right")
    latency.set_ylabel("ack latency, ms (median of runs)")
    latency.set_title("Ack latency p50 / p99")
    latency.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None


def _value(table: Medians, scenario: str, client: str, name: str) -> float:
    value = table.get(scenario, {}).get(client, {}).get(name)
    return float(value) if isinstance(value, int | float) else 0.0


def draw_scale(rows: list[dict[str, Any]], path: Path, title: str) -> str | None:
    """The scale scenario: aggregate and per-connector events/s against the connector count,
    one line per Redis topology; busy cores on the right."""
    plt = load_pyplot()
    if plt is None:
        return MISSING_MESSAGE
    figure, (rates, cores) = plt.subplots(1, 2, figsize=(12, 4.5))
    for topology in dict.fromkeys(str(row["topology"]) for row in rows):
        mine = [row for row in rows if row["topology"] == topology]
        counts = [int(row["connectors"]) for row in mine]
        rates.plot(
            counts,
            [row.get("aggregate_events_per_s") or 0.0 for row in mine],
            marker="o",
            label=f"{topology}: aggregate",
        )
        rates.plot(
            counts,
            [row.get("per_connector_events_per_s") or 0.0 for row in mine],
            marker="x",
            linestyle="--",
            label=f"{topology}: per connector",
        )
        cores.plot(
            counts, [row.get("busy_cores") or 0.0 for row in mine], marker="o", label=topology
        )
    ticks = sorted({int(row["connectors"]) for row in rows})
    rates.set_xticks(ticks)
    cores.set_xticks(ticks)
    rates.set_xlabel("connectors at once")
    rates.set_ylabel("events/s stored (median)")
    rates.set_ylim(bottom=0)
    rates.set_title("Throughput")
    rates.legend()
    cores.set_xlabel("connectors at once")
    cores.set_ylabel("busy cores (machine)")
    cores.set_ylim(bottom=0)
    cores.set_title("CPU")
    cores.legend()
    figure.suptitle(f"{title}: scale")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None
