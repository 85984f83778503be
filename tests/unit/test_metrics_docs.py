"""The README's metrics table is what /metrics serves: every metric, with its labels."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from connector.metrics import Metrics

README = Path(__file__).resolve().parents[2] / "README.md"
DOCUMENTED = re.compile(r"`((?:connector|process|python)_[a-z_]+)(?:\{([a-z_,]*)\})?`")
STANDARD = ("process_", "python_")  # prometheus-client's collectors: documented as a group


def documented() -> dict[str, set[str]]:
    text = README.read_text()
    section = text[text.index("## Observability") : text.index("## Performance")]
    found: dict[str, set[str]] = {}
    for name, labels in DOCUMENTED.findall(section):
        found.setdefault(name, set()).update(filter(None, labels.split(",")))
    return found


def served() -> dict[str, set[str]]:
    """Families and label names as exposed, with every labelled child present (a child is
    created for a configured group and for the symbol counter's label)."""
    metrics = Metrics(consumer_groups=("risk",), symbol_labels=True)
    metrics.symbol_events.labels(symbol="AAPL").inc()  # type: ignore[union-attr]
    metrics.set_info("backtest", "consumer")
    text = generate_latest(metrics.registry).decode()
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):  # the text format's creation-time companions
            continue
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = found.setdefault(name, set())
        for sample in family.samples:
            labels.update(k for k in sample.labels if k not in ("le", "quantile"))
    return found


def test_every_connector_metric_is_documented_with_its_labels() -> None:
    docs, real = documented(), served()
    ours = {name: labels for name, labels in real.items() if name.startswith("connector_")}
    assert sorted(set(ours) - set(docs)) == []  # served, not documented
    assert sorted(n for n in docs if n.startswith("connector_") and n not in ours) == []
    for name, labels in docs.items():
        if name.startswith("connector_") and labels:
            assert labels == ours[name], name


def test_the_standard_process_metrics_are_served_as_documented() -> None:
    docs, real = documented(), served()
    for name in docs:
        if name.startswith(STANDARD):
            assert name in real, name
