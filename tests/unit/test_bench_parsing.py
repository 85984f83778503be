"""Pure parsers of the benchmark: metrics text, py-spy stacks, Redis progress, simulator reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ResponseError

from connector.sim.inbound import Ack, parse_client_frame
from connector_bench.baseline import stream_for
from connector_bench.machine import cpu_model, source_digest
from connector_bench.profile import (
    JSON_LAYER,
    LAYERS,
    classify,
    frame_function,
    frame_location,
    layer_shares,
    orjson_call_lines,
    parse_collapsed,
    top_functions,
)
from connector_bench.progress import id_millis, summarize_infos
from connector_bench.rawclient import ack_frame, event_id_of
from connector_bench.scrape import histogram_quantile, parse_prometheus, total
from connector_bench.simproc import (
    event_ack_latencies,
    first_connection_wall,
    sent_span,
    step_frames,
    step_stats,
)

METRICS = """# HELP connector_dropped_events_total Events dropped before storage, by reason.
# TYPE connector_dropped_events_total counter
connector_dropped_events_total{reason="buffer_full"} 12.0
connector_dropped_events_total{reason="shutdown"} 3.0
connector_published_total{type="candle"} 100.0
connector_published_total{type="quote"} 50.0
connector_ack_latency_seconds_bucket{le="0.001"} 50.0
connector_ack_latency_seconds_bucket{le="0.002"} 90.0
connector_ack_latency_seconds_bucket{le="0.005"} 100.0
connector_ack_latency_seconds_bucket{le="+Inf"} 100.0
connector_ack_latency_seconds_count 100.0
garbage line
"""


def test_parse_prometheus_and_totals() -> None:
    samples = parse_prometheus(METRICS)
    assert total(samples, "connector_dropped_events_total") == 15.0
    assert total(samples, "connector_dropped_events_total", reason="buffer_full") == 12.0
    assert total(samples, "connector_published_total") == 150.0
    assert total(samples, "absent") == 0.0


def test_histogram_quantile_interpolates_within_buckets() -> None:
    samples = parse_prometheus(METRICS)
    assert histogram_quantile(samples, "connector_ack_latency_seconds", 0.5) == pytest.approx(0.001)
    assert histogram_quantile(samples, "connector_ack_latency_seconds", 0.7) == pytest.approx(
        0.0015
    )
    assert histogram_quantile(samples, "connector_ack_latency_seconds", 0.99) == pytest.approx(
        0.0047
    )
    assert histogram_quantile(samples, "nothing", 0.5) is None


ROOT = "main (connector/cli.py:90);_run_once (asyncio/base_events.py:1922)"
PY_SPY = f"""\
{ROOT};parse_frame (connector/trading/protocol.py:148) 30
{ROOT};parse_frame (connector/trading/protocol.py:160) 10
main (connector/cli.py:90);xadd (redis/commands/core.py:3500);__init__ (<string>:2) 40
main (connector/cli.py:90);select (selectors.py:468) 20
not a stack line
"""


def test_parse_collapsed_and_frames() -> None:
    stacks = parse_collapsed(PY_SPY.splitlines())
    assert len(stacks) == 4
    assert stacks[0][1] == 30
    assert stacks[0][0][-1] == "parse_frame (connector/trading/protocol.py:148)"
    assert frame_location("recv (websockets/asyncio/connection.py:322)") == (
        "websockets/asyncio/connection.py",
        322,
    )
    assert frame_location("native_thing") == ("", None)
    assert frame_function("recv (/x/site-packages/websockets/frames.py:12)") == (
        "recv (websockets/frames.py)"
    )


def test_classify_charges_the_innermost_known_frame() -> None:
    json_lines = {"connector/trading/protocol.py": frozenset({148})}
    stacks = parse_collapsed(PY_SPY.splitlines())
    layers = [classify(frames, json_lines) for frames, _ in stacks]
    # orjson's C time is charged to the calling line: line 148 is JSON, line 160 validation;
    # a dataclass __init__ ("<string>") belongs to whoever called it.
    assert layers == [JSON_LAYER, "protocol (validation)", "redis-py", "asyncio: epoll/selector"]


def test_layer_shares_add_up_to_100() -> None:
    shares = layer_shares(parse_collapsed(PY_SPY.splitlines()))
    assert list(shares) == list(LAYERS)
    assert sum(shares.values()) == pytest.approx(100.0)
    assert shares["redis-py"] == pytest.approx(40.0)
    assert layer_shares([]) == dict.fromkeys(LAYERS, 0.0)


def test_top_functions_self_and_inclusive() -> None:
    own, inclusive = top_functions(parse_collapsed(PY_SPY.splitlines()), limit=3)
    assert dict(own) == {
        "__init__ (<string>)": pytest.approx(40.0),
        # two lines, one function
        "parse_frame (connector/trading/protocol.py)": pytest.approx(40.0),
        "select (selectors.py)": pytest.approx(20.0),
    }
    name, share = inclusive[0]
    assert name == "main (connector/cli.py)"
    assert share == pytest.approx(100.0)


def test_orjson_call_lines_are_found_in_the_source(tmp_path: Path) -> None:
    (tmp_path / "trading").mkdir()
    (tmp_path / "trading" / "protocol.py").write_text("import orjson\n\nx = orjson.loads(b'1')\n")
    (tmp_path / "other.py").write_text("print('no json here')\n")
    assert orjson_call_lines(tmp_path) == {"connector/trading/protocol.py": frozenset({3})}
    # By default: the installed package's own modules, sub-packages included.
    assert "connector/trading/protocol.py" in orjson_call_lines()


def test_progress_id_millis_and_summaries() -> None:
    assert id_millis(b"1700000000123-4") == 1700000000123
    assert id_millis("5-0") == 5
    assert id_millis("0-0") is None
    assert id_millis(None) is None
    infos: list[Any] = [
        {"entries-added": 10, "last-generated-id": b"2000-3"},
        ResponseError("no such key"),
        {"entries-added": 5, "last-generated-id": b"3000-0"},
    ]
    stored = summarize_infos(infos)
    assert stored.added == 15
    assert stored.last_wall == 3.0
    assert summarize_infos([]).last_wall is None


REPORT: dict[str, Any] = {
    "counts": {"sent": 5, "dropped": 0},
    "connections": [{"connected_wall": 100.5}, {"connected_wall": 101.0}],
    "steps": [
        {"index": 0, "ids": ["e1", "e2"], "emitted_at": 10.0, "completed_at": 10.002},
        {"index": 1, "ids": ["e3", "e4"], "emitted_at": 10.003, "completed_at": 10.004},
        {"index": 2, "ids": ["e5"], "emitted_at": 10.005, "completed_at": None, "timed_out": True},
    ],
    "sent": [
        {"event_id": "e1", "time": 10.0, "type": "candle"},
        {"event_id": "e2", "time": 10.0, "type": "candle"},
        {"event_id": "e3", "time": 10.003, "type": "candle"},
        {"event_id": "e4", "time": 10.003, "type": "quote"},
        {"event_id": "e9", "time": 10.01, "type": "backtest_complete"},
    ],
    "acks": [
        {"time": 10.001, "ids": ["e1"]},
        {"time": 10.002, "ids": ["e2"]},
        {"time": 10.004, "ids": ["e3", "e4"]},
    ],
}


def test_simulator_report_parsing() -> None:
    assert first_connection_wall(REPORT) == 100.5
    assert first_connection_wall({}) is None
    stats = step_stats(REPORT)
    assert stats.steps == 2
    assert stats.events == 4
    assert stats.timed_out == 1
    assert stats.span_s == pytest.approx(0.004)
    assert step_stats({"steps": []}).steps == 0
    latencies, missing = event_ack_latencies(REPORT, frozenset({"candle"}))
    assert latencies == pytest.approx([0.001, 0.002, 0.001])
    assert missing == 0
    _, missing_all = event_ack_latencies(REPORT)
    assert missing_all == 1  # backtest_complete was never acked
    sent, span = sent_span(REPORT, frozenset({"candle", "quote"}))
    assert sent == 4
    assert span == pytest.approx(0.003)


def test_ack_frames_per_step_count_frames_naming_step_ids() -> None:
    steps = [
        {"ids": ["a", "b"], "emitted_at": 1.0, "completed_at": 1.1},
        {"ids": ["c", "d"], "emitted_at": 2.0, "completed_at": 2.1},
        {"ids": ["e"], "emitted_at": 3.0},  # never completed: its frames do not count
    ]
    acks = [
        {"time": 1.05, "ids": ["a", "b"]},  # step 1 in one frame
        {"time": 2.05, "ids": ["c"]},  # step 2 piecemeal: a gateway relaying each event alone
        {"time": 2.06, "ids": ["d"]},
        {"time": 3.05, "ids": ["e"]},
        {"time": 4.0, "ids": ["complete-1"]},  # backtest_complete's ack
    ]
    assert step_frames({"steps": steps, "acks": acks}) == 3
    assert step_frames({}) == 0


def test_raw_client_acks_pass_the_simulators_strict_parser() -> None:
    frame = parse_client_frame(ack_frame(["evt-1", "evt-2"]).decode())
    assert isinstance(frame, Ack)
    assert frame.ids == ["evt-1", "evt-2"]
    assert event_id_of('{"type":"candle","event_id":"evt-5"}') == ("candle", "evt-5")
    assert event_id_of('{"type":"quote","id":"q-1"}') == ("quote", "q-1")
    assert event_id_of("not json") == (None, None)
    assert event_id_of("[1, 2]") == (None, None)


def test_baseline_streams_one_per_symbol() -> None:
    bar = {"symbol": "AAPL", "close": "151", "timestamp": "2024-01-01T00:00:00Z"}
    assert stream_for("candle", {"bar": bar}) == ("hello:{AAPL}", {"type": "candle", **bar})
    quote = {"symbol": "F:EURUSD", "bid": "1.08"}
    assert stream_for("quote", {"quote": quote})[0] == "hello:{F:EURUSD}"
    key, fields = stream_for("order", {"type": "order", "event": "ORDER_FILLED"})
    assert key == "hello:order"
    assert fields["type"] == "order"
    assert '"ORDER_FILLED"' in fields["data"]


def test_cpu_model_from_cpuinfo() -> None:
    assert cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"
    assert cpu_model("processor\t: 0\n") is None


def test_source_digest_changes_with_the_source(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    first = source_digest(tmp_path)
    assert first == source_digest(tmp_path)
    (tmp_path / "a.py").write_text("x = 2\n")
    assert source_digest(tmp_path) != first
