"""The benchmark's output: a table for people, a JSON document for machines.

Pure formatting: everything here takes plain data (medians, targets, machine facts) and returns
text or a dict, so it is unit-tested without running anything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from connector_bench.results import (
    BACKTESTS,
    CLIENT_LABELS,
    CLIENTS,
    PRIMARY,
    SCENARIOS,
    Medians,
    RunResult,
    Target,
    baseline_ratio,
)
from connector_bench.scaling import scale_rows
from connector_bench.stats import ratio

DASH = "-"
JSON_FORMAT_VERSION = 2

SCENARIO_LABELS: dict[str, str] = {
    "live": "live burst",
    "backtest": "backtest lock-step",
    "consumer": "consumer-ack, toolkit",
    "consumer-plain": "consumer-ack, plain XACK",
    "consumer-floor": "consumer-ack, floor",
    "consumer-wide": "consumer-ack wide, toolkit",
    "consumer-wide-plain": "consumer-ack wide, plain XACK",
    "consumer-idle": "consumer-ack idle streams, plain",
    "latency": "ack latency @ fixed rate",
    "million": "1M events (peak RSS)",
    "scale": "scale",
}

#: The consumer each lock-step backtest runs, as the step-cost table names it.
CONSUMER_LABELS: dict[str, str] = {
    "backtest": "none (immediate acks)",
    "consumer": "toolkit (notifies)",
    "consumer-plain": "plain XACK (checked)",
    "consumer-floor": "floor (no event loop, notifies)",
    "consumer-wide": "toolkit (notifies)",
    "consumer-wide-plain": "plain XACK (checked)",
    "consumer-idle": "plain XACK (checked)",
}


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


# -- one renderer, a column set per table ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """One median row as a table sees it: where it comes from, and the whole table (ratios)."""

    scenario: str
    key: str
    row: dict[str, Any]
    table: Medians

    def figure(self, name: str) -> float | None:
        value = self.row.get(name)
        return float(value) if isinstance(value, int | float) else None


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    cell: Callable[[Line], str]
    right: bool = True


def render_table(columns: Sequence[Column], lines: Sequence[Line]) -> str:
    rows = [[column.cell(line) for column in columns] for line in lines]
    right = {i for i, column in enumerate(columns) if column.right}
    return format_table([column.header for column in columns], rows, right)


def _figure(name: str, digits: int = 0, scale: float = 1.0) -> Callable[[Line], str]:
    def cell(line: Line) -> str:
        value = line.figure(name)
        return number(None if value is None else value * scale, digits)

    return cell


def _flag(row: dict[str, Any]) -> str:
    return "" if row["ok_runs"] == row["runs"] else f" ({row['ok_runs']}/{row['runs']} ok)"


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
    name, higher_is_better = PRIMARY.get(scenario, ("events_per_s", True))
    what = {"events_per_s": "events/s", "steps_per_s": "steps/s", "ack_p99_ms": "p99"}[name]
    suffix = "" if higher_is_better else " (lower is better)"
    return f"{value:.2f}x {what}{suffix}"


MAIN_COLUMNS: tuple[Column, ...] = (
    Column("scenario", lambda line: SCENARIO_LABELS.get(line.scenario, line.scenario), False),
    Column("client", lambda line: CLIENT_LABELS.get(line.key, line.key) + _flag(line.row), False),
    Column("events", _figure("events")),
    Column("events/s", _figure("events_per_s")),
    Column("steps/s", _figure("steps_per_s")),
    Column("ack p50/p99/max ms", lambda line: latency_cell(line.row)),
    Column("CPU s/1k ev", _figure("cpu_per_1k_events", 3)),
    Column("peak RSS MB", _figure("peak_rss_mb", 1)),
    Column("vs baseline", lambda line: ratio_cell(line.table, line.scenario, line.key), False),
)


def _consumer_cell(line: Line) -> str:
    label = CONSUMER_LABELS.get(line.scenario, "")
    idle = line.figure("idle_streams")
    return label + (f" + {idle:,.0f} idle streams" if idle else "") + _flag(line.row)


def _vs_immediate(line: Line) -> str:
    immediate = line.table.get("backtest", {}).get("connector", {}).get("steps_per_s")
    value = ratio(line.figure("steps_per_s"), immediate)
    return DASH if value is None else f"{value:.2f}x"


STEP_COLUMNS: tuple[Column, ...] = (
    Column("scenario", lambda line: line.scenario, False),
    Column("consumer", _consumer_cell, False),
    Column("symbols", _figure("symbols")),
    Column("steps/s", _figure("steps_per_s")),
    Column("vs immediate", _vs_immediate),
    Column("Redis CPU us/step", _figure("redis_us_per_step")),
    Column("Redis CPU us/entry", _figure("redis_us_per_entry", 1)),
    Column("ack frames/step", _figure("ack_frames_per_step", 2)),
)


def _speedup(line: Line) -> str:
    value = line.figure("speedup_vs_1")
    return DASH if value is None else f"{value:.2f}x"


SCALE_COLUMNS: tuple[Column, ...] = (
    Column("redis", lambda line: line.key.partition("/")[0] + _flag(line.row), False),
    Column("connectors", lambda line: line.key.partition("/")[2]),
    Column("events", _figure("events")),
    Column("aggregate ev/s", _figure("events_per_s")),
    Column("x vs 1", _speedup),
    Column("per connector ev/s", _figure("per_connector_events_per_s")),
    Column("slowest ev/s", _figure("per_connector_min_events_per_s")),
    Column("conn CPU s/1k", _figure("cpu_per_1k_events", 3)),
    Column("redis CPU s/1k", _figure("redis_us_per_entry", 3, scale=1e-3)),
    Column("busy cores", _figure("busy_cores", 2)),
    Column("peak RSS MB", _figure("peak_rss_mb", 1)),
    Column("stored once", lambda line: "yes" if line.row.get("all_stored_once") else "NO", False),
)


def main_lines(table: Medians) -> list[Line]:
    """Every row but the scale scenario's, in scenario then client order."""
    return [
        Line(scenario, client, table[scenario][client], table)
        for scenario in SCENARIOS
        if scenario != "scale"
        for client in CLIENTS
        if client in table.get(scenario, {})
    ]


def step_lines(table: Medians) -> list[Line]:
    """The connector's lock-step backtests, immediate and consumer-ack."""
    return [
        Line(scenario, "connector", table[scenario]["connector"], table)
        for scenario in BACKTESTS
        if "connector" in table.get(scenario, {})
    ]


def scale_lines(table: Medians) -> list[Line]:
    return [Line("scale", key, row, table) for key, row in scale_rows(table)]


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
        if run.error:
            lines.append(f"  {run.label}: FAILED: {run.error.splitlines()[0]}")
        elif run.notes:
            lines.append(f"  {run.label}: {'; '.join(run.notes)}")
    return "\n".join(lines)


def render(
    machine: dict[str, Any],
    settings: dict[str, Any],
    table: Medians,
    targets: Sequence[Target],
    runs: Sequence[RunResult],
    soak: dict[str, Any] | None = None,
) -> str:
    """The whole human-readable report: each section that has something to show."""
    judged = bool(main_lines(table)) or soak is not None
    sections = [
        f"connector bench on {machine_line(machine)}",
        main_section(settings, table),
        steps_section(table),
        soak_line(soak) if soak is not None else "",
        scale_section(settings.get("scale") or {}, table),
        targets_block(targets) if judged else "",
    ]
    notes = notes_block(runs)
    if notes:
        sections.append(f"notes:\n{notes}")
    return "\n\n".join(section for section in sections if section) + "\n"


def main_section(settings: dict[str, Any], table: Medians) -> str:
    lines = main_lines(table)
    if not lines:
        return ""
    symbols = settings.get("symbols") or []
    return "\n".join(
        [
            f"medians of {settings['repeat']} run(s) per row; {len(symbols)} symbols "
            f"({','.join(symbols)}); every process separate (simulator, client, redis-server)",
            "",
            render_table(MAIN_COLUMNS, lines),
            "",
            "events/s: live = client connected (feed starts) -> last entry stored; backtest = "
            "first step emitted -> last step released. ack latency: simulator emitted the frame "
            "-> simulator received the ack naming it. CPU and peak RSS: the client process only.",
        ]
    )


def steps_section(table: Medians) -> str:
    """Immediate and consumer-ack backtests side by side: what each consumer costs Redis."""
    lines = step_lines(table)
    if not any(line.scenario != "backtest" for line in lines):
        return ""
    return "\n".join(
        [
            "lock-step backtests, the connector (medians):",
            "",
            render_table(STEP_COLUMNS, lines),
            "",
            "Redis CPU: the redis-server process over the run's window, per step and per stored "
            "entry (it includes the connector's checks of group state for consumers that only "
            "XACK). ack frames/step: event_ack frames naming a step's ids / steps (1.00 = each "
            "step acknowledged in one frame).",
        ]
    )


def scale_section(settings: dict[str, Any], table: Medians) -> str:
    """The scale scenario: settings, the table, how to read it, memory per entry."""
    lines = scale_lines(table)
    if not lines:
        return ""
    parts = [_scale_heading(settings), "", render_table(SCALE_COLUMNS, lines), "", SCALE_LEGEND]
    sizes = [
        f"{line.key.partition('/')[0]} {line.figure('bytes_per_entry'):.0f}"
        for line in lines
        if line.key.endswith("/1") and line.figure("bytes_per_entry")
    ]
    if sizes:
        parts.append(
            "memory per stream entry (MEMORY USAGE of the first connector's market streams / "
            f"their entries, bytes): {', '.join(sizes)}"
        )
    return "\n".join(parts)


SCALE_LEGEND = (
    "aggregate ev/s: all events stored / (first feed starts -> last entry stored by any "
    "connector); per connector: its own window (median over connectors and runs; slowest: "
    "the slowest connector). CPU s/1k: CPU seconds per 1,000 events, summed over the "
    "connectors (redis: over its node(s)). busy cores: the whole machine over the burst "
    "(/proc/stat). stored once: every prefix's entries-added = the events its simulator sent."
)


def _scale_heading(settings: dict[str, Any]) -> str:
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
    return (
        f"scale: N connectors at once, each with its own simulator (live burst, back-pressured, "
        f"{settings.get('events_per_connector', 0):,} events), its own stream prefix and "
        f"{symbols} ({settings.get('symbols_per_connector')} per connector); medians of "
        f"{settings.get('repeat')} run(s); {'; '.join(topo)}"
    )


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
