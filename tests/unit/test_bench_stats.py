"""The benchmark's statistics: percentiles, slopes, ack latencies, memory flatness."""

from __future__ import annotations

import pytest

from connector_bench.stats import (
    ack_latencies,
    median,
    median_or_none,
    memory_flatness,
    percentile,
    rate,
    ratio,
    slope,
    summarize_latencies,
)


def test_percentile_interpolates_like_numpy_linear() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    # numpy.percentile([1, 2, 3, 4], 99) == 3.97
    assert percentile(values, 99) == pytest.approx(3.97)
    assert percentile([5.0], 99) == 5.0


def test_percentile_does_not_depend_on_order() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 25) == percentile([1.0, 2.0, 3.0, 4.0], 25) == 1.75


def test_percentile_rejects_empty_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], 101)


def test_median_and_median_or_none() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median_or_none([None, 4.0, None, 2.0]) == 3.0
    assert median_or_none([None, None]) is None


def test_slope_of_a_line_and_degenerate_inputs() -> None:
    assert slope([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx(2.0)
    assert slope([0, 1, 2], [5, 5, 5]) == 0.0
    assert slope([1], [2]) == 0.0
    assert slope([1, 1, 1], [1, 2, 3]) == 0.0
    with pytest.raises(ValueError, match="length"):
        slope([1, 2], [1])


def test_summarize_latencies_in_milliseconds() -> None:
    summary = summarize_latencies([0.001, 0.002, 0.003])
    assert summary is not None
    assert summary.count == 3
    assert summary.p50_ms == pytest.approx(2.0)
    assert summary.max_ms == pytest.approx(3.0)
    assert summary.mean_ms == pytest.approx(2.0)
    assert summarize_latencies([]) is None


def test_ack_latencies_take_the_first_ack_and_count_missing() -> None:
    sent = [("a", 1.0), ("b", 1.5), ("c", 2.0), ("a", 9.0)]  # "a" re-emitted: first one counts
    acks = [(3.0, ["a", "b"]), (2.5, ["a"]), (4.0, ["unknown"])]
    latencies, missing = ack_latencies(sent, acks)
    assert latencies == pytest.approx([1.5, 1.5])
    assert missing == 1  # "c" was never acknowledged


def test_ack_latency_is_never_negative() -> None:
    latencies, missing = ack_latencies([("a", 2.0)], [(1.0, ["a"])])
    assert latencies == [0.0]
    assert missing == 0


def test_rate_and_ratio_guard_against_zero() -> None:
    assert rate(100, 2.0) == 50.0
    assert rate(100, 0.0) == 0.0
    assert ratio(10.0, 4.0) == 2.5
    assert ratio(10.0, 0.0) is None
    assert ratio(None, 1.0) is None


def test_memory_flatness_of_a_flat_series() -> None:
    times = [float(t) for t in range(0, 601, 5)]
    rss = [50.0 + (0.2 if i % 2 else -0.2) for i in range(len(times))]
    flat = memory_flatness(times, rss)
    assert flat.flat
    assert flat.window_s == 60.0
    assert abs(flat.growth_mb) < 0.5
    assert abs(flat.slope_mb_per_min) < 0.05


def test_memory_flatness_detects_steady_growth() -> None:
    times = [float(t) for t in range(0, 601, 5)]
    rss = [50.0 + t / 60.0 for t in times]  # +1 MB per minute
    flat = memory_flatness(times, rss)
    assert not flat.flat
    assert flat.growth_mb == pytest.approx(9.0, abs=0.6)
    assert flat.slope_after_warmup_mb_per_min == pytest.approx(1.0)


def test_memory_flatness_uses_thirds_of_a_short_run() -> None:
    flat = memory_flatness([0.0, 10.0, 20.0, 30.0], [40.0, 40.0, 40.0, 40.5])
    assert flat.window_s == pytest.approx(10.0)
    assert flat.flat  # 0.25 MB over a 2 MB tolerance


def test_memory_flatness_needs_two_samples() -> None:
    with pytest.raises(ValueError, match="two"):
        memory_flatness([0.0], [1.0])
