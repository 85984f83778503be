"""What one benchmark run measured, medians over repeats, and the targets they are judged by."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from connector_bench.stats import LatencySummary, median_or_none, ratio

Client = Literal["connector", "baseline", "raw"]
CLIENTS: tuple[Client, ...] = ("connector", "baseline", "raw")

#: Consumer-ack scenarios, by the consumer they run (each as its own process): the toolkit
#: (``connector consume``, which notifies), the plain redis-py recipe (XACK only) or the floor
#: (``connector_bench.floorconsumer``: the least a consumer does per step).
CONSUMER_SCENARIOS: tuple[str, ...] = (
    "consumer",
    "consumer-plain",
    "consumer-floor",
    "consumer-wide",
    "consumer-wide-plain",
    "consumer-idle",
)
#: Lock-step backtests: immediate acks, then every consumer-ack variant.
BACKTESTS: tuple[str, ...] = ("backtest", *CONSUMER_SCENARIOS)

#: Names of the scenarios, in the order they run and are shown.
SCENARIOS: tuple[str, ...] = ("live", *BACKTESTS, "latency", "million", "scale")

#: What a client is called in the table.
CLIENT_LABELS: dict[str, str] = {
    "connector": "connector",
    "baseline": "baseline (docs loop)",
    "raw": "raw (sim limit)",
}

#: Per scenario: the headline figure the connector/baseline ratio is taken of, and whether a
#: higher value is better (scenarios not named: events/s).
PRIMARY: dict[str, tuple[str, bool]] = {
    **dict.fromkeys(BACKTESTS, ("steps_per_s", True)),
    "latency": ("ack_p99_ms", False),
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
    "redis_cpu_s",
)


@dataclass(slots=True)
class RunResult:
    """One run of one scenario with one client (and, for the scale scenario, one variant: the
    topology and the connector count). Times in seconds, latencies in ms, memory in MB.
    ``measures`` holds a scenario's own figures, which get medians like the fields do."""

    scenario: str
    client: str
    index: int
    expected_events: int
    variant: str = ""
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
    redis_cpu_s: float | None = None
    measures: dict[str, float] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)  # must hold in every run of a row
    parts: list[dict[str, Any]] = field(default_factory=list)  # scale: one per connector
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def key(self) -> str:
        """The row it belongs to within its scenario: the variant, else the client."""
        return self.variant or self.client

    @property
    def label(self) -> str:
        return f"{self.scenario}/{self.key} #{self.index + 1}"

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

    def set_redis_cpu(self, cpu_s: float | None) -> None:
        """Redis' own CPU over the window, also per step and per entry (µs) in backtests."""
        self.redis_cpu_s = cpu_s
        if cpu_s is None:
            return
        if self.steps:
            self.measures["redis_us_per_step"] = cpu_s / self.steps * 1e6
        if self.events > 0:
            self.measures["redis_us_per_entry"] = cpu_s / self.events * 1e6

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def median_row(runs: Sequence[RunResult]) -> dict[str, Any]:
    """Median of every numeric field and measure over the successful ``runs`` (None where none
    has it)."""
    good = [run for run in runs if run.ok]
    first = runs[0] if runs else None
    row: dict[str, Any] = {
        "client": first.client if first else None,
        "variant": first.variant if first else "",
        "runs": len(runs),
        "ok_runs": len(good),
        "errors": [run.error for run in runs if run.error],
    }
    for name in NUMERIC_FIELDS:
        row[name] = median_or_none(_number(getattr(run, name)) for run in good)
    for name in dict.fromkeys(name for run in good for name in run.measures):
        row[name] = median_or_none(run.measures.get(name) for run in good)
    for name in dict.fromkeys(name for run in runs for name in run.checks):
        row[name] = bool(good) and all(run.checks.get(name, False) for run in good)
    return row


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def medians(runs: Iterable[RunResult]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{scenario: {row key: median row}}`` over every run given (the key: the client, or the
    variant where the scenario has them)."""
    grouped: dict[str, dict[str, list[RunResult]]] = {}
    for run in runs:
        grouped.setdefault(run.scenario, {}).setdefault(run.key, []).append(run)
    return {
        scenario: {key: median_row(group) for key, group in rows.items()}
        for scenario, rows in grouped.items()
    }


Medians = dict[str, dict[str, dict[str, Any]]]


def _get(table: Medians, scenario: str, client: str, name: str) -> float | None:
    value = table.get(scenario, {}).get(client, {}).get(name)
    return float(value) if isinstance(value, int | float) else None


def baseline_ratio(table: Medians, scenario: str) -> float | None:
    """connector / baseline of the scenario's headline figure (the consumer-ack scenarios are
    compared with the lock-step baseline: the docs' loop has no consumer mode)."""
    name, _ = PRIMARY.get(scenario, ("events_per_s", True))
    base_scenario = "backtest" if scenario in CONSUMER_SCENARIOS else scenario
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
    return [
        *_throughput_targets(table),
        *_consumer_targets(table),
        _rss_target(_get(table, "million", "connector", "peak_rss_mb"), million_events),
        _soak_target(soak),
    ]


def _throughput_targets(table: Medians) -> list[Target]:
    return [
        _check(
            "live_rate",
            "live end to end (first frame sent -> last entry stored)",
            ">= 50,000 events/s",
            _get(table, "live", "connector", "events_per_s"),
            lambda v: f"{v:,.0f} events/s",
            lambda v: v >= 50_000,
        ),
        _at_least(
            "live_vs_baseline",
            "live events/s vs the docs loop",
            "baseline",
            10,
            baseline_ratio(table, "live"),
            digits=1,
        ),
        _at_least(
            "backtest_vs_baseline",
            "backtest lock-step steps/s vs the docs loop",
            "baseline",
            2,
            baseline_ratio(table, "backtest"),
            digits=1,
        ),
        _check(
            "latency_p99",
            "ack latency p99, immediate mode, fixed rate",
            "<= 2 ms",
            _get(table, "latency", "connector", "ack_p99_ms"),
            lambda v: f"{v:.2f} ms",
            lambda v: v <= 2.0,
        ),
    ]


def _consumer_targets(table: Medians) -> list[Target]:
    """Consumer-ack against immediate acks, the plain-XACK consumer (found by the connector's
    checks of group state) against the notifying toolkit, and what the checks cost Redis."""

    def steps(scenario: str) -> float | None:
        return _get(table, scenario, "connector", "steps_per_s")

    def redis(scenario: str, per: str) -> float | None:
        return _get(table, scenario, "connector", f"redis_us_per_{per}")

    return [
        _at_least(
            "consumer_vs_immediate",
            "consumer-ack (toolkit) steps/s vs immediate acks",
            "immediate",
            0.8,
            ratio(steps("consumer"), steps("backtest")),
        ),
        _at_least(
            "plain_vs_toolkit",
            "consumer-ack (plain XACK) steps/s vs the toolkit",
            "toolkit",
            0.5,
            ratio(steps("consumer-plain"), steps("consumer")),
        ),
        _at_most(
            "idle_streams_redis",
            "Redis CPU per step with idle streams vs without (plain XACK)",
            "without",
            1.25,
            ratio(redis("consumer-idle", "step"), redis("consumer-plain", "step")),
        ),
        _at_most(
            "wide_redis_per_entry",
            "Redis CPU per entry, wide run vs 4 symbols (plain XACK)",
            "4 symbols",
            1.0,
            ratio(redis("consumer-wide-plain", "entry"), redis("consumer-plain", "entry")),
        ),
    ]


def _at_least(
    name: str, description: str, of: str, factor: float, measured: float | None, digits: int = 2
) -> Target:
    return _check(
        name,
        description,
        f">= {factor:g}x {of}",
        measured,
        lambda v: f"{v:.{digits}f}x",
        lambda v: v >= factor,
    )


def _at_most(name: str, description: str, of: str, factor: float, measured: float | None) -> Target:
    return _check(
        name,
        description,
        f"<= {factor:g}x {of}",
        measured,
        lambda v: f"{v:.2f}x",
        lambda v: v <= factor,
    )


def _soak_target(soak: dict[str, Any] | None) -> Target:
    flat = None if soak is None else soak.get("flatness")
    if soak is None or not isinstance(flat, dict):
        return Target(
            "soak_flat",
            "memory flat over a 10-minute soak",
            "flat (last vs first window)",
            None,
            "not run (--soak 600)",
            None,
        )
    growth = float(flat["growth_mb"])
    long_enough = float(soak["seconds"]) >= 600
    return Target(
        "soak_flat",
        f"memory flat over a {soak['seconds']:g} s soak at {soak['rate']:g} events/s",
        "flat over >= 10 min (last vs first minute)",
        growth,
        f"{growth:+.1f} MB, {float(flat['slope_after_warmup_mb_per_min']):+.2f} MB/min"
        + ("" if long_enough else " (soak too short to judge)"),
        bool(flat["flat"]) if long_enough else None,
    )


def _rss_target(peak_mb: float | None, events: int) -> Target:
    name, goal = "peak_rss_million", "<= 100 MB"
    description = "connector peak RSS after 1,000,000 events"
    if peak_mb is None:
        return Target(name, description, goal, None, "not measured", None)
    if events < MILLION:
        shown = f"{peak_mb:.1f} MB after only {events:,} events (not judged)"
        return Target(name, description, goal, peak_mb, shown, None)
    return Target(name, description, goal, peak_mb, f"{peak_mb:.1f} MB", peak_mb <= 100)
