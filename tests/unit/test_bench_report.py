"""Medians, targets and the formatting of the benchmark's table and JSON."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from connector_bench.report import (
    MAIN_COLUMNS,
    document,
    format_table,
    latency_cell,
    main_lines,
    number,
    profile_block,
    render,
    soak_line,
    steps_section,
)
from connector_bench.results import (
    Medians,
    RunResult,
    baseline_ratio,
    evaluate_targets,
    median_row,
    medians,
)
from connector_bench.stats import summarize_latencies


def run(scenario: str, client: str, index: int = 0, **values: Any) -> RunResult:
    result = RunResult(scenario, client, index, expected_events=values.pop("expected", 1000))
    for name, value in values.items():
        setattr(result, name, value)
    return result


def sample_runs() -> list[RunResult]:
    runs = []
    for i, rate in enumerate((20_000.0, 22_000.0, 19_000.0)):
        runs.append(run("live", "connector", i, events=1000, events_per_s=rate, peak_rss_mb=60.0))
    for i, rate in enumerate((2_000.0, 2_100.0, 1_900.0)):
        runs.append(run("live", "baseline", i, events=1000, events_per_s=rate))
    runs.append(run("backtest", "connector", events=400, events_per_s=2400.0, steps_per_s=600.0))
    runs.append(run("backtest", "baseline", events=400, events_per_s=1200.0, steps_per_s=300.0))
    runs.append(run("consumer", "connector", events=400, steps_per_s=240.0))
    latency = run("latency", "connector", events=1000, events_per_s=1000.0)
    latency.set_latency(summarize_latencies([0.0005, 0.001, 0.0015]))
    runs.append(latency)
    runs.append(run("million", "connector", expected=1_000_000, events=1_000_000, peak_rss_mb=80.0))
    return runs


def test_median_row_ignores_failed_runs() -> None:
    runs = [
        run("live", "connector", 0, events=10, events_per_s=100.0),
        run("live", "connector", 1, events=10, events_per_s=300.0),
        run("live", "connector", 2, error="boom", events_per_s=1e9),
    ]
    row = median_row(runs)
    assert row["runs"] == 3
    assert row["ok_runs"] == 2
    assert row["errors"] == ["boom"]
    assert row["events_per_s"] == 200.0
    assert row["ack_p99_ms"] is None


def test_set_cpu_gives_seconds_per_thousand_events() -> None:
    result = run("live", "connector", events=20_000)
    result.set_cpu(1.0)
    assert result.cpu_per_1k_events == pytest.approx(0.05)
    empty = run("live", "connector", events=0)
    empty.set_cpu(1.0)
    assert empty.cpu_per_1k_events is None


def test_baseline_ratios() -> None:
    table = medians(sample_runs())
    assert baseline_ratio(table, "live") == pytest.approx(10.0)
    assert baseline_ratio(table, "backtest") == pytest.approx(2.0)
    # The docs loop has no consumer mode: consumer-ack is compared with the lock-step baseline.
    assert baseline_ratio(table, "consumer") == pytest.approx(0.8)
    assert baseline_ratio(table, "million") is None


def test_targets_pass_miss_and_not_measured() -> None:
    verdicts = {t.name: t.verdict for t in evaluate_targets(medians(sample_runs()))}
    assert verdicts == {
        "live_rate": "MISS",  # 20,000 < 50,000
        "live_vs_baseline": "PASS",  # exactly 10x
        "backtest_vs_baseline": "PASS",
        "latency_p99": "PASS",
        "consumer_vs_immediate": "MISS",  # 240 / 600 = 0.4
        "plain_vs_toolkit": "n/a",  # no plain-XACK run
        "idle_streams_redis": "n/a",
        "wide_redis_per_entry": "n/a",
        "peak_rss_million": "PASS",
        "soak_flat": "n/a",
    }


def consumer_runs(
    immediate: float, toolkit: float, plain: float, idle_us: float, wide_us: float
) -> list[RunResult]:
    """Connector backtests: steps/s, and Redis CPU (plain: 100 us/step over 4-entry steps)."""
    runs = [
        run("backtest", "connector", events=400, steps=100, steps_per_s=immediate),
        run("consumer", "connector", events=400, steps=100, steps_per_s=toolkit),
        run("consumer-plain", "connector", events=400, steps=100, steps_per_s=plain),
        run("consumer-idle", "connector", events=400, steps=100, steps_per_s=plain),
        run("consumer-wide-plain", "connector", events=5000, steps=10, steps_per_s=5.0),
    ]
    cpus = (0.005, 0.01, 0.01, idle_us * 100e-6, wide_us * 5000e-6)
    for result, cpu_s in zip(runs, cpus, strict=True):
        result.set_redis_cpu(cpu_s)
    return runs


def test_redis_cpu_per_step_and_per_entry() -> None:
    result = run("consumer-plain", "connector", events=400, steps=100)
    result.set_redis_cpu(0.02)
    assert result.measures["redis_us_per_step"] == pytest.approx(200.0)
    assert result.measures["redis_us_per_entry"] == pytest.approx(50.0)
    live = run("live", "connector", events=0)
    live.set_redis_cpu(0.5)
    assert live.redis_cpu_s == 0.5
    assert live.measures == {}  # no steps, no entries: no per-step figure


@pytest.mark.parametrize(
    ("figures", "expected"),
    [
        # toolkit 800 = 0.8x immediate; plain 400 = 0.5x toolkit; idle 120 vs 100 us/step;
        # wide 20 us/entry vs the 4-symbol run's 25: every target met, at its edge.
        ((1000.0, 800.0, 400.0, 120.0, 20.0), ("PASS", "PASS", "PASS", "PASS")),
        ((1000.0, 790.0, 390.0, 130.0, 30.0), ("MISS", "MISS", "MISS", "MISS")),
    ],
)
def test_consumer_ack_targets(
    figures: tuple[float, float, float, float, float], expected: tuple[str, ...]
) -> None:
    targets = {t.name: t for t in evaluate_targets(medians(consumer_runs(*figures)))}
    names = ("consumer_vs_immediate", "plain_vs_toolkit", "idle_streams_redis")
    names += ("wide_redis_per_entry",)
    assert tuple(targets[name].verdict for name in names) == expected
    assert targets["consumer_vs_immediate"].goal == ">= 0.8x immediate"
    assert targets["plain_vs_toolkit"].goal == ">= 0.5x toolkit"


def test_step_cost_table() -> None:
    runs = consumer_runs(1000.0, 800.0, 400.0, 100.0, 20.0)
    runs[3].measures["idle_streams"] = 1000
    runs[0].measures["ack_frames_per_step"] = 1.0
    runs[2].measures["ack_frames_per_step"] = 2.5
    text = steps_section(medians(runs))
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith("consumer")}
    assert "plain XACK (checked) + 1,000 idle streams" in rows["consumer-idle"]
    assert rows["consumer"].split()[-4:] == ["0.80x", "100", "25.0", "-"]
    assert rows["consumer-plain"].split()[-4:] == ["0.40x", "100", "25.0", "2.50"]
    assert steps_section(medians(runs[:1])) == ""  # immediate acks alone: nothing to compare


def test_small_runs_are_shown_but_not_judged() -> None:
    table = medians(sample_runs())
    targets = {t.name: t for t in evaluate_targets(table, million_events=10_000)}
    assert targets["peak_rss_million"].passed is None
    assert "only 10,000 events" in targets["peak_rss_million"].shown
    soak = {
        "seconds": 60.0,
        "rate": 5000.0,
        "flatness": {"growth_mb": 0.3, "slope_after_warmup_mb_per_min": 0.01, "flat": True},
    }
    judged = {t.name: t for t in evaluate_targets(table, soak)}
    assert judged["soak_flat"].passed is None  # a 1-minute soak says little
    soak["seconds"] = 600.0
    judged = {t.name: t for t in evaluate_targets(table, soak)}
    assert judged["soak_flat"].verdict == "PASS"


def test_format_table_pads_and_aligns() -> None:
    text = format_table(("name", "n"), [["a", "1"], ["long name", "1,000"]], right={1})
    lines = text.splitlines()
    assert lines[0] == "name           n"
    assert lines[1] == "---------  -----"
    assert lines[2] == "a              1"
    assert lines[3] == "long name  1,000"


def test_format_table_rejects_ragged_rows() -> None:
    with pytest.raises(ValueError, match="cells"):
        format_table(("a", "b"), [["only one"]], set())


def test_number_and_latency_cells() -> None:
    assert number(1234567.8) == "1,234,568"
    assert number(0.12345, 3) == "0.123"
    assert number(None) == "-"
    assert latency_cell({"ack_p50_ms": 0.5, "ack_p99_ms": 1.25, "ack_max_ms": 3.0}) == (
        "0.50 / 1.25 / 3.00"
    )
    assert latency_cell({}) == "-"


def median_rows(table: Medians) -> list[list[str]]:
    """The main table's cells."""
    return [[column.cell(line) for column in MAIN_COLUMNS] for line in main_lines(table)]


def test_median_rows_follow_scenario_and_client_order() -> None:
    rows = median_rows(medians(sample_runs()))
    assert [(r[0], r[1]) for r in rows] == [
        ("live burst", "connector"),
        ("live burst", "baseline (docs loop)"),
        ("backtest lock-step", "connector"),
        ("backtest lock-step", "baseline (docs loop)"),
        ("consumer-ack, toolkit", "connector"),
        ("ack latency @ fixed rate", "connector"),
        ("1M events (peak RSS)", "connector"),
    ]
    live = rows[0]
    assert live[3] == "20,000"
    assert live[8] == "10.00x events/s"
    assert rows[1][8] == ""  # ratios only on the connector's row


def test_median_rows_flag_failed_runs() -> None:
    runs = [run("live", "connector", 0, events_per_s=1.0), run("live", "connector", 1, error="x")]
    rows = median_rows(medians(runs))
    assert rows[0][1] == "connector (1/2 ok)"


def machine() -> dict[str, Any]:
    return {
        "nproc": 2,
        "cpu_model": "Test CPU",
        "python": "3.11.7",
        "redis_server": "7.0.15",
        "packages": {"websockets": "15", "redis": "5"},
        "load_average_start": [0.5, 0.4, 0.3],
        "load_average_end": [0.7, 0.5, 0.3],
        "source_digest_start": "aaaa",
        "source_digest_end": "bbbb",
    }


def test_render_contains_table_targets_and_notes() -> None:
    runs = sample_runs()
    runs.append(run("live", "raw", error="the raw client did not start\ndetails"))
    runs[0].notes.append("12 events not stored")
    table: Medians = medians(runs)
    settings = {"repeat": 3, "symbols": ["AAPL", "MSFT"]}
    text = render(machine(), settings, table, evaluate_targets(table), runs)
    assert "2 CPUs (Test CPU)" in text
    assert "load average 0.50 at start, 0.70 at end" in text
    assert "source aaaa -> bbbb (CHANGED DURING THE RUN" in text
    assert "medians of 3 run(s)" in text
    assert "raw (sim limit) (0/1 ok)" in text
    assert "MISS" in text
    assert "PASS" in text
    assert "live/raw #1: FAILED: the raw client did not start" in text
    assert "live/connector #1: 12 events not stored" in text


def test_document_is_json_serialisable_and_complete() -> None:
    runs = sample_runs()
    table = medians(runs)
    targets = evaluate_targets(table)
    doc = document(machine(), {"repeat": 1}, table, targets, runs, None, [])
    decoded = orjson.loads(orjson.dumps(doc))
    assert decoded["format_version"] == 2
    assert len(decoded["runs"]) == len(runs)
    assert decoded["medians"]["live"]["connector"]["events_per_s"] == 20000.0
    assert decoded["ratios_vs_baseline"]["live"] == pytest.approx(10.0)
    assert {t["verdict"] for t in decoded["targets"]} == {"PASS", "MISS", "n/a"}


def test_soak_line_and_profile_block() -> None:
    soak = {
        "seconds": 600.0,
        "rate": 5000.0,
        "stored": 3_000_000,
        "sent": 3_000_000,
        "peak_rss_mb": 70.0,
        "flatness": {
            "first_window_mb": 60.0,
            "last_window_mb": 60.5,
            "growth_mb": 0.5,
            "growth_pct": 0.8,
            "slope_after_warmup_mb_per_min": 0.01,
            "window_s": 60.0,
            "flat": True,
        },
    }
    line = soak_line(soak)
    assert "60.0 MB (first 60 s) -> 60.5 MB (last 60 s)" in line
    assert line.endswith("flat")
    block = profile_block(
        [
            {
                "scenario": "live",
                "client": "connector",
                "profile": {
                    "samples": 100,
                    "layers_pct": {"redis-py": 40.0, "websockets": 60.0, "acks": 0.0},
                    "top_self_pct": [["pack_command (redis/x.py)", 12.5]],
                    "file": "/tmp/x.txt",
                },
            },
            {"scenario": "backtest", "client": "connector", "profile": {"error": "no py-spy"}},
        ]
    )
    assert "live/connector (100 samples): websockets 60%, redis-py 40%" in block
    assert "acks 0%" not in block  # layers under 0.5 % are left out
    assert "pack_command (redis/x.py) 12.5%" in block
    assert "backtest/connector: no py-spy" in block
