"""Reading a few figures from the connector's ``/metrics`` (Prometheus text format).

Only what the benchmark cross-checks: events dropped by the connector's buffer, entries
published, and the connector's own view of ack latency (its histogram). Pure functions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> Samples:
    """``{(name, sorted labels): value}`` of every sample line; comments and junk are skipped."""
    samples: Samples = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            continue
        name, raw_labels, raw_value = match.groups()
        try:
            value = float(raw_value)
        except ValueError:
            continue
        labels = tuple(sorted(_LABEL.findall(raw_labels or "")))
        samples[(name, labels)] = value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of ``name`` over the samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(
        value
        for (sample_name, sample_labels), value in samples.items()
        if sample_name == name and wanted <= set(sample_labels)
    )


def histogram_quantile(samples: Samples, name: str, q: float) -> float | None:
    """Estimate the ``q`` (0..1) quantile of histogram ``name`` from its cumulative buckets.

    Linear interpolation inside the bucket, as Prometheus' ``histogram_quantile`` does; None
    when the histogram is empty or absent.
    """
    buckets: dict[float, float] = {}
    for (sample_name, labels), value in samples.items():
        if sample_name != f"{name}_bucket":
            continue
        bound = dict(labels).get("le")
        if bound is None:
            continue
        upper = math.inf if bound == "+Inf" else float(bound)
        buckets[upper] = buckets.get(upper, 0.0) + value
    return _quantile(buckets, q)


def _quantile(buckets: Mapping[float, float], q: float) -> float | None:
    if not buckets:
        return None
    bounds = sorted(buckets)
    count = buckets[bounds[-1]]
    if count <= 0:
        return None
    rank = q * count
    lower_bound, lower_count = 0.0, 0.0
    for upper in bounds:
        cumulative = buckets[upper]
        if cumulative >= rank:
            if math.isinf(upper):
                return lower_bound  # beyond the last finite bucket: its bound is all we know
            in_bucket = cumulative - lower_count
            if in_bucket <= 0:
                return upper
            return lower_bound + (upper - lower_bound) * (rank - lower_count) / in_bucket
        lower_bound, lower_count = upper, cumulative
    return bounds[-1]
