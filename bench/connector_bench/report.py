"""The benchmark's output: a table for people, a JSON document for machines.

Pure formatting: everything here takes plain data (medians, targets, machine facts) and returns
text or a dict, so it is unit-tested without running anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connector_bench.results import (
    CLIENT_LABELS,
    CLIENTS,
    PRIMARY,
    SCENARIOS,
    Medians,
    RunResult,
    Target,
    baseline_ratio,
)

DASH = "-"
JSON_FORMAT_VERSION = 1

SCENARIO_LABELS: dict[str, str] = {
    "live": "live burst",
    "backtest": "backtest lock-step",
    "consumer": "backtest consumer-ack",
    "latency": "ack latency @ fixed rate",
    "million": "1M events (peak RSS)",
}

HEADERS = (
    "scenario",
    "client",
    "events",
    "events/s",
    "steps/s",
    "ack p50/p99/max ms",
    "CPU s/1k ev",
    "peak RSS MB",
    "vs baseline",
)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    """Columns padded to their widest cell; columns in ``right`` are right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells, expected {len(headers)}")
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def number(value: float | None, digits: int = 0) -> str:
    """``12,345`` / ``1.23``; a dash for a missing value."""
    if value is None:
        return DASH
    return f"{value:,.{digits}f}"


def latency_cell(row: dict[str, Any]) -> str:
    values = [row.get("ack_p50_ms"), row.get("ack_p99_ms"), row.get("ack_max_ms")]
    if all(v is None for v in values):
        return DASH
    return " / ".join(number(v, 2) for v in values)


def ratio_cell(table: Medians, scenario: str, client: str) -> str:
    if client != "connector":
        return ""
    value = baseline_ratio(table, scenario)
    if value is None:
        return DASH
    _, higher_is_better = PRIMARY.get(scenario, ("", True))
    name = PRIMARY.get(scenario, ("events_per_s", True))[0]
    what = {"events_per_s": "events/s", "steps_per_s": "steps/s", "ack_p99_ms": "p99"}[name]
    suffix = "" if higher_is_better else " (lower is better)"
    return f"{value:.2f}x {what}{suffix}"


def median_rows(table: Medians) -> list[list[str]]:
    rows: list[list[str]] = []
    for scenario in SCENARIOS:
        clients = table.get(scenario)
        if not clients:
            continue
        for client in CLIENTS:
            row = clients.get(client)
            if row is None:
                continue
            flag = "" if row["ok_runs"] == row["runs"] else f" ({row['ok_runs']}/{row['runs']} ok)"
            rows.append(
                [
                    SCENARIO_LABELS.get(scenario, scenario),
                    CLIENT_LABELS.get(client, client) + flag,
                    number(row.get("events")),
                    number(row.get("events_per_s")),
                    number(row.get("steps_per_s")),
                    latency_cell(row),
                    number(row.get("cpu_per_1k_events"), 3),
                    number(row.get("peak_rss_mb"), 1),
                    ratio_cell(table, scenario, client),
                ]
            )
    return rows


def targets_block(targets: Sequence[Target]) -> str:
    rows = [[t.description, t.goal, t.shown, t.verdict] for t in targets]
    return format_table(("target", "goal", "measured (median)", "result"), rows, set())


def machine_line(machine: dict[str, Any]) -> str:
    load = machine.get("load_average_start")
    load_end = machine.get("load_average_end")
    load_text = ""
    if load:
        load_text = f"; load average {load[0]:.2f} at start"
        if load_end:
            load_text += f", {load_end[0]:.2f} at end"
    start, end = machine.get("source_digest_start"), machine.get("source_digest_end")
    source = ""
    if start:
        source = f"; source {start}"
        if end and end != start:
            source += f" -> {end} (CHANGED DURING THE RUN: results mix versions)"
    packages = machine.get("packages", {})
    # The connector's default event loop (CONNECTOR_EVENT_LOOP=auto) is uvloop when installed.
    uvloop = packages.get("uvloop")
    loop = f"uvloop {uvloop}" if uvloop else "asyncio loop"
    return (
        f"{machine.get('nproc')} CPUs ({machine.get('cpu_model') or 'unknown CPU'}), "
        f"Python {machine.get('python')}, redis-server {machine.get('redis_server')}, "
        f"websockets {packages.get('websockets')}, "
        f"redis-py {packages.get('redis')}, {loop}{load_text}{source}"
    )


def notes_block(runs: Sequence[RunResult]) -> str:
    lines = []
    for run in runs:
        label = f"{run.scenario}/{run.client} #{run.index + 1}"
        if run.error:
            lines.append(f"  {label}: FAILED: {run.error.splitlines()[0]}")
        elif run.notes:
            lines.append(f"  {label}: {'; '.join(run.notes)}")
    return "\n".join(lines)


def render(
    machine: dict[str, Any],
    settings: dict[str, Any],
    table: Medians,
    targets: Sequence[Target],
    runs: Sequence[RunResult],
    soak: dict[str, Any] | None = None,
) -> str:
    """The whole human-readable report."""
    parts = [
        f"connector bench on {machine_line(machine)}",
        f"medians of {settings['repeat']} run(s) per row; {len(settings['symbols'])} symbols "
        f"({','.join(settings['symbols'])}); every process separate (simulator, client, "
        "redis-server)",
        "",
        format_table(HEADERS, median_rows(table), {2, 3, 4, 5, 6, 7}),
        "",
        "events/s: live = client connected (feed starts) -> last entry stored; backtest = first "
        "step emitted -> last step released. ack latency: simulator emitted the frame -> "
        "simulator received the ack naming it. CPU and peak RSS: the client process only.",
    ]
    if soak is not None:
        parts += ["", soak_line(soak)]
    parts += ["", targets_block(targets)]
    notes = notes_block(runs)
    if notes:
        parts += ["", "notes:", notes]
    return "\n".join(parts) + "\n"


def soak_line(soak: dict[str, Any]) -> str:
    flat = soak.get("flatness") or {}
    if not flat:
        return f"soak: {soak.get('error', 'no samples')}"
    return (
        f"soak {soak['seconds']:g} s at {soak['rate']:g} events/s: connector RSS "
        f"{flat['first_window_mb']:.1f} MB (first {flat['window_s']:.0f} s) -> "
        f"{flat['last_window_mb']:.1f} MB (last {flat['window_s']:.0f} s), "
        f"{flat['growth_mb']:+.1f} MB ({flat['growth_pct']:+.1f} %), slope after warm-up "
        f"{flat['slope_after_warmup_mb_per_min']:+.3f} MB/min (second half "
        f"{flat.get('slope_second_half_mb_per_min', 0.0):+.3f}), "
        f"peak {soak['peak_rss_mb']:.1f} MB; "
        f"{soak['stored']:,} of {soak['sent']:,} events stored -> "
        + ("flat" if flat["flat"] else "GROWING")
    )


def document(
    machine: dict[str, Any],
    settings: dict[str, Any],
    table: Medians,
    targets: Sequence[Target],
    runs: Sequence[RunResult],
    soak: dict[str, Any] | None,
    profiles: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """The ``--json`` document: every run, the medians, the ratios and the targets."""
    return {
        "format_version": JSON_FORMAT_VERSION,
        "machine": machine,
        "settings": settings,
        "runs": [run.to_dict() for run in runs],
        "medians": table,
        "ratios_vs_baseline": {
            scenario: baseline_ratio(table, scenario) for scenario in SCENARIOS if scenario in table
        },
        "targets": [target.to_dict() for target in targets],
        "soak": soak,
        "profiles": list(profiles),
    }


def profile_block(profiles: Sequence[dict[str, Any]]) -> str:
    """Layer shares and hottest functions of each profiled process."""
    lines: list[str] = []
    for entry in profiles:
        summary = entry.get("profile") or {}
        label = f"{entry.get('scenario')}/{entry.get('client')}"
        _profile_lines(lines, label, summary)
        for name, helper in (summary.get("helpers") or {}).items():
            _profile_lines(lines, f"{label}, {name} process", helper)
    return "\n".join(lines)


def _profile_lines(lines: list[str], label: str, summary: dict[str, Any]) -> None:
    if "error" in summary:
        lines.append(f"  {label}: {summary['error']}")
        return
    shares = summary.get("layers_pct") or {}
    ranked = sorted(shares.items(), key=lambda item: -float(item[1]))
    text = ", ".join(f"{name} {pct:.0f}%" for name, pct in ranked if pct >= 0.5)
    lines.append(f"  {label} ({summary.get('samples', 0)} samples): {text}")
    top = summary.get("top_self_pct") or []
    if top:
        hot = "; ".join(f"{name} {pct:.1f}%" for name, pct in top[:5])
        lines.append(f"    hottest (self): {hot}")
    lines.append(f"    stacks: {summary.get('file')}")
