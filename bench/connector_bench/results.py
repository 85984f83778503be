"""What one benchmark run measured, medians over repeats, and the targets they are judged by."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from connector_bench.stats import LatencySummary, median_or_none, ratio

Client = Literal["connector", "baseline", "raw"]
CLIENTS: tuple[Client, ...] = ("connector", "baseline", "raw")

#: Names of the scenarios, in the order they run and are shown.
SCENARIOS: tuple[str, ...] = ("live", "backtest", "consumer", "latency", "million")

#: What a client is called in the table.
CLIENT_LABELS: dict[str, str] = {
    "connector": "connector",
    "baseline": "baseline (docs loop)",
    "raw": "raw (sim limit)",
}

#: Per scenario: the headline figure the connector/baseline ratio is taken of, and whether a
#: higher value is better.
PRIMARY: dict[str, tuple[str, bool]] = {
    "live": ("events_per_s", True),
    "backtest": ("steps_per_s", True),
    "consumer": ("steps_per_s", True),
    "latency": ("ack_p99_ms", False),
    "million": ("events_per_s", True),
}

NUMERIC_FIELDS: tuple[str, ...] = (
    "events",
    "duration_s",
    "events_per_s",
    "steps",
    "steps_per_s",
    "ack_p50_ms",
    "ack_p99_ms",
    "ack_max_ms",
    "cpu_s",
    "cpu_per_1k_events",
    "peak_rss_mb",
    "lost_events",
)


@dataclass(slots=True)
class RunResult:
    """One run of one scenario with one client. Times in seconds, latencies in ms, memory in MB."""

    scenario: str
    client: str
    index: int
    expected_events: int
    events: int = 0
    duration_s: float = 0.0
    events_per_s: float = 0.0
    steps: int | None = None
    steps_per_s: float | None = None
    ack_p50_ms: float | None = None
    ack_p99_ms: float | None = None
    ack_max_ms: float | None = None
    acked: int | None = None
    cpu_s: float | None = None
    cpu_per_1k_events: float | None = None
    peak_rss_mb: float | None = None
    lost_events: int = 0
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def set_latency(self, summary: LatencySummary | None) -> None:
        if summary is None:
            return
        self.ack_p50_ms = summary.p50_ms
        self.ack_p99_ms = summary.p99_ms
        self.ack_max_ms = summary.max_ms
        self.acked = summary.count

    def set_cpu(self, cpu_s: float | None) -> None:
        self.cpu_s = cpu_s
        if cpu_s is not None and self.events > 0:
            self.cpu_per_1k_events = cpu_s / self.events * 1000.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def median_row(runs: Sequence[RunResult]) -> dict[str, Any]:
    """Median of every numeric field over the successful ``runs`` (None where none has it)."""
    good = [run for run in runs if run.ok]
    row: dict[str, Any] = {
        "runs": len(runs),
        "ok_runs": len(good),
        "errors": [run.error for run in runs if run.error],
    }
    for name in NUMERIC_FIELDS:
        row[name] = median_or_none(_number(getattr(run, name)) for run in good)
    return row


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def medians(runs: Iterable[RunResult]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{scenario: {client: median row}}`` over every run given."""
    grouped: dict[str, dict[str, list[RunResult]]] = {}
    for run in runs:
        grouped.setdefault(run.scenario, {}).setdefault(run.client, []).append(run)
    return {
        scenario: {client: median_row(group) for client, group in clients.items()}
        for scenario, clients in grouped.items()
    }


Medians = dict[str, dict[str, dict[str, Any]]]


def _get(table: Medians, scenario: str, client: str, name: str) -> float | None:
    value = table.get(scenario, {}).get(client, {}).get(name)
    return float(value) if isinstance(value, int | float) else None


def baseline_ratio(table: Medians, scenario: str) -> float | None:
    """connector / baseline of the scenario's headline figure (``consumer`` is compared with the
    lock-step baseline: the docs' loop has no consumer mode)."""
    name, _ = PRIMARY.get(scenario, ("events_per_s", True))
    base_scenario = "backtest" if scenario == "consumer" else scenario
    return ratio(
        _get(table, scenario, "connector", name), _get(table, base_scenario, "baseline", name)
    )


@dataclass(frozen=True, slots=True)
class Target:
    """One target of the performance issue and how this run fared against it."""

    name: str
    description: str
    goal: str
    measured: float | None
    shown: str
    passed: bool | None  # None: not measured in this invocation

    @property
    def verdict(self) -> str:
        return "n/a" if self.passed is None else "PASS" if self.passed else "MISS"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict
        return data


def _check(
    name: str,
    description: str,
    goal: str,
    measured: float | None,
    shown: Callable[[float], str],
    passes: Callable[[float], bool],
) -> Target:
    if measured is None:
        return Target(name, description, goal, None, "not measured", None)
    return Target(name, description, goal, measured, shown(measured), passes(measured))


MILLION = 1_000_000


def evaluate_targets(
    table: Medians, soak: dict[str, Any] | None = None, million_events: int = MILLION
) -> list[Target]:
    """The targets of the performance issue, judged on the medians (and the soak, if run).

    The peak-RSS target is only judged on a run of at least 1,000,000 events, the soak target
    only on a soak of at least 10 minutes: smaller runs are shown but get no verdict.
    """
    live_rate = _get(table, "live", "connector", "events_per_s")
    immediate = _get(table, "backtest", "connector", "steps_per_s")
    consumer = _get(table, "consumer", "connector", "steps_per_s")
    targets = [
        _check(
            "live_rate",
            "live end to end (first frame sent -> last entry stored)",
            ">= 50,000 events/s",
            live_rate,
            lambda v: f"{v:,.0f} events/s",
            lambda v: v >= 50_000,
        ),
        _check(
            "live_vs_baseline",
            "live events/s vs the docs loop",
            ">= 10x baseline",
            baseline_ratio(table, "live"),
            lambda v: f"{v:.1f}x",
            lambda v: v >= 10,
        ),
        _check(
            "backtest_vs_baseline",
            "backtest lock-step steps/s vs the docs loop",
            ">= 2x baseline",
            baseline_ratio(table, "backtest"),
            lambda v: f"{v:.1f}x",
            lambda v: v >= 2,
        ),
        _check(
            "latency_p99",
            "ack latency p99, immediate mode, fixed rate",
            "<= 2 ms",
            _get(table, "latency", "connector", "ack_p99_ms"),
            lambda v: f"{v:.2f} ms",
            lambda v: v <= 2.0,
        ),
        _check(
            "consumer_vs_immediate",
            "consumer-ack step rate vs immediate",
            ">= 0.5x immediate",
            ratio(consumer, immediate),
            lambda v: f"{v:.2f}x",
            lambda v: v >= 0.5,
        ),
        _rss_target(_get(table, "million", "connector", "peak_rss_mb"), million_events),
    ]
    flat = None if soak is None else soak.get("flatness")
    if soak is not None and isinstance(flat, dict):
        growth = float(flat["growth_mb"])
        long_enough = float(soak["seconds"]) >= 600
        targets.append(
            Target(
                "soak_flat",
                f"memory flat over a {soak['seconds']:g} s soak at {soak['rate']:g} events/s",
                "flat over >= 10 min (last vs first minute)",
                growth,
                f"{growth:+.1f} MB, {float(flat['slope_after_warmup_mb_per_min']):+.2f} MB/min"
                + ("" if long_enough else " (soak too short to judge)"),
                bool(flat["flat"]) if long_enough else None,
            )
        )
    else:
        targets.append(
            Target(
                "soak_flat",
                "memory flat over a 10-minute soak",
                "flat (last vs first window)",
                None,
                "not run (--soak 600)",
                None,
            )
        )
    return targets


def _rss_target(peak_mb: float | None, events: int) -> Target:
    name, goal = "peak_rss_million", "<= 100 MB"
    description = "connector peak RSS after 1,000,000 events"
    if peak_mb is None:
        return Target(name, description, goal, None, "not measured", None)
    if events < MILLION:
        shown = f"{peak_mb:.1f} MB after only {events:,} events (not judged)"
        return Target(name, description, goal, peak_mb, shown, None)
    return Target(name, description, goal, peak_mb, f"{peak_mb:.1f} MB", peak_mb <= 100)
