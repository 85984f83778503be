"""Small, dependency-free statistics for the benchmark: percentiles, medians, slopes, latencies.

Everything here is pure so it can be unit-tested without processes or sockets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks.

    Same definition as numpy's default (``linear``); raises ValueError on an empty sequence.
    """
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0..100, not {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def median_or_none(values: Iterable[float | None]) -> float | None:
    """Median of the values that are not None; None when there are none."""
    present = [value for value in values if value is not None]
    return median(present) if present else None


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs`` (0.0 with fewer than two distinct xs)."""
    if len(xs) != len(ys):
        raise ValueError("xs and ys differ in length")
    n = len(xs)
    if n < 2:
        return 0.0
    mean_x = sum(xs) / n
    mean_y = sum(ys) / n
    var_x = sum((x - mean_x) ** 2 for x in xs)
    if var_x == 0:
        return 0.0
    cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    return cov / var_x


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latencies in milliseconds."""

    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float


def summarize_latencies(seconds: Sequence[float]) -> LatencySummary | None:
    """p50/p99/max/mean in ms of latencies given in seconds; None when there are none."""
    if not seconds:
        return None
    ms = [value * 1000.0 for value in seconds]
    return LatencySummary(
        count=len(ms),
        p50_ms=percentile(ms, 50),
        p99_ms=percentile(ms, 99),
        max_ms=max(ms),
        mean_ms=sum(ms) / len(ms),
    )


def ack_latencies(
    sent: Iterable[tuple[str, float]], acks: Iterable[tuple[float, Sequence[str]]]
) -> tuple[list[float], int]:
    """Per-event latency from emission to the first ack naming the id.

    ``sent`` is (event id, emission time), ``acks`` is (receipt time, ids) in any order; times are
    from one monotonic clock. Returns (latencies in seconds, number of sent ids never acked).
    An id emitted twice counts from its first emission.
    """
    first_ack: dict[str, float] = {}
    for time_, ids in acks:
        for event_id in ids:
            known = first_ack.get(event_id)
            if known is None or time_ < known:
                first_ack[event_id] = time_
    latencies: list[float] = []
    seen: set[str] = set()
    missing = 0
    for event_id, emitted in sent:
        if event_id in seen:
            continue
        seen.add(event_id)
        acked = first_ack.get(event_id)
        if acked is None:
            missing += 1
        else:
            latencies.append(max(0.0, acked - emitted))
    return latencies, missing


def rate(count: float, seconds: float) -> float:
    """``count`` per second; 0.0 for a non-positive duration (nothing measurable)."""
    return count / seconds if seconds > 0 else 0.0


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


@dataclass(frozen=True, slots=True)
class Flatness:
    """Did memory stay flat over a soak? Sizes in MB, slope in MB per minute."""

    first_window_mb: float
    last_window_mb: float
    growth_mb: float
    growth_pct: float
    slope_mb_per_min: float
    slope_after_warmup_mb_per_min: float
    slope_second_half_mb_per_min: float
    window_s: float
    samples: int
    flat: bool


def memory_flatness(
    times_s: Sequence[float],
    rss_mb: Sequence[float],
    *,
    window_s: float = 60.0,
    tolerance_mb: float = 2.0,
    tolerance_pct: float = 5.0,
) -> Flatness:
    """Compare the mean RSS of the first and the last window (60 s, or a third of a short run).

    Flat means the last window's mean is at most ``max(tolerance_mb, tolerance_pct %)`` above the
    first window's. The slopes (least squares over every sample, over the samples after the first
    window, and over the second half) are reported beside it: a leak keeps its slope to the end,
    a warm-up (allocator arenas, caches filling) levels off in the second half.
    """
    if len(times_s) != len(rss_mb) or len(times_s) < 2:
        raise ValueError("need at least two (time, rss) samples of equal count")
    start, end = times_s[0], times_s[-1]
    span = end - start
    window = min(window_s, span / 3) if span > 0 else 0.0
    first = [m for t, m in zip(times_s, rss_mb, strict=True) if t <= start + window] or [rss_mb[0]]
    last = [m for t, m in zip(times_s, rss_mb, strict=True) if t >= end - window] or [rss_mb[-1]]
    first_mean = sum(first) / len(first)
    last_mean = sum(last) / len(last)
    growth = last_mean - first_mean
    pct = 100.0 * growth / first_mean if first_mean > 0 else 0.0
    minutes = [(t - start) / 60.0 for t in times_s]
    after = [(x, m) for x, m, t in zip(minutes, rss_mb, times_s, strict=True) if t > start + window]
    after_slope = slope([x for x, _ in after], [m for _, m in after]) if len(after) >= 2 else 0.0
    half = [
        (x, m) for x, m, t in zip(minutes, rss_mb, times_s, strict=True) if t >= start + span / 2
    ]
    half_slope = slope([x for x, _ in half], [m for _, m in half]) if len(half) >= 2 else 0.0
    allowed = max(tolerance_mb, first_mean * tolerance_pct / 100.0)
    return Flatness(
        first_window_mb=first_mean,
        last_window_mb=last_mean,
        growth_mb=growth,
        growth_pct=pct,
        slope_mb_per_min=slope(minutes, list(rss_mb)),
        slope_after_warmup_mb_per_min=after_slope,
        slope_second_half_mb_per_min=half_slope,
        window_s=window,
        samples=len(times_s),
        flat=growth <= allowed,
    )
