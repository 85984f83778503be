"""The simulator as a separate process (``python -m connector simulate``), and its report.

The report's times are the simulator's own ``time.monotonic()`` (for intervals inside the
simulator: step durations, send -> ack latencies) with ``time.time()`` beside some of them (to
line up with times taken elsewhere on the same machine, such as Redis entry ids).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from connector_bench.procs import (
    READY_TIMEOUT,
    BenchError,
    Managed,
    Processes,
    file_contains,
    http_get,
    wait_until,
)
from connector_bench.stats import ack_latencies

#: The simulator prints this on its first stderr line once it listens.
LISTENING_MARKER = "simulator on ws://"


def start_simulator(
    processes: Processes, port: int, args: Sequence[str], name: str = "simulator"
) -> Managed:
    """Start ``connector simulate --port PORT ARGS...`` and wait until it listens."""
    sim = launch_simulator(processes, port, args, name)
    wait_listening(sim)
    return sim


def launch_simulator(
    processes: Processes, port: int, args: Sequence[str], name: str = "simulator"
) -> Managed:
    """Start the simulator without waiting (several can then start side by side)."""
    argv = [sys.executable, "-m", "connector", "simulate", "--port", str(port), *args]
    return processes.start(name, argv)


def wait_listening(sim: Managed) -> None:
    """Until the simulator's log says it listens (BenchError if it dies or times out)."""
    wait_until(
        lambda: file_contains(sim.log_path, LISTENING_MARKER),
        READY_TIMEOUT,
        f"{sim.name} to listen",
        process=sim,
    )


def fetch_report(port: int, details: bool = False, timeout: float = 30.0) -> dict[str, Any]:
    """The running simulator's report over HTTP (summary, or with the per-item lists)."""
    url = f"http://127.0.0.1:{port}/report" + ("?details=1" if details else "")
    answer = http_get(url, timeout=timeout)
    if answer is None or answer[0] != 200:
        raise BenchError(f"the simulator did not answer {url}")
    report: dict[str, Any] = orjson.loads(answer[1])
    return report


def read_report_file(path: Path) -> dict[str, Any]:
    try:
        report: dict[str, Any] = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise BenchError(f"cannot read the simulator report {path}: {exc}") from None
    return report


def first_connection_wall(report: dict[str, Any]) -> float | None:
    """Wall-clock time the first client connected (the live feed starts right then)."""
    connections = report.get("connections") or []
    walls = [float(c["connected_wall"]) for c in connections if c.get("connected_wall")]
    return min(walls) if walls else None


@dataclass(frozen=True, slots=True)
class StepStats:
    """Backtest pacing from the report: completed steps, their events, and the span they took."""

    steps: int
    events: int
    timed_out: int
    span_s: float
    step_latencies_s: list[float]


def step_stats(report: dict[str, Any]) -> StepStats:
    """From the first step's emission to the last completed step's release (simulator clock)."""
    steps = report.get("steps") or []
    completed = [s for s in steps if s.get("completed_at") is not None]
    timed_out = sum(1 for s in steps if s.get("timed_out"))
    if not completed:
        return StepStats(0, 0, timed_out, 0.0, [])
    start = float(steps[0]["emitted_at"])
    end = max(float(s["completed_at"]) for s in completed)
    return StepStats(
        steps=len(completed),
        events=sum(len(s.get("ids") or []) for s in completed),
        timed_out=timed_out,
        span_s=end - start,
        step_latencies_s=[float(s["completed_at"]) - float(s["emitted_at"]) for s in completed],
    )


def step_frames(report: dict[str, Any]) -> int:
    """``event_ack`` frames received that name an id of a completed step (the frame that
    acknowledges ``backtest_complete`` is not one): one per step when a client acknowledges each
    step in a single frame, more when it acknowledges a step piecemeal."""
    steps = [s for s in report.get("steps") or [] if s.get("completed_at") is not None]
    ids = {str(event_id) for step in steps for event_id in step.get("ids") or []}
    return sum(
        1 for ack in report.get("acks") or [] if any(str(i) in ids for i in ack.get("ids") or [])
    )


def event_ack_latencies(
    report: dict[str, Any], types: frozenset[str] | None = None
) -> tuple[list[float], int]:
    """Per event: simulator emitted the frame -> simulator received an ack naming its id.

    Needs a report with the ``sent`` list (``--report``, which records every frame). ``types``
    limits it to frames of those types (e.g. leave out ``backtest_complete``).
    """
    sent = [
        (str(frame["event_id"]), float(frame["time"]))
        for frame in report.get("sent") or []
        if frame.get("event_id") is not None and (types is None or frame.get("type") in types)
    ]
    acks = [(float(ack["time"]), list(ack.get("ids") or [])) for ack in report.get("acks") or []]
    return ack_latencies(sent, acks)


def sent_span(report: dict[str, Any], types: frozenset[str]) -> tuple[int, float]:
    """(frames of ``types`` emitted, seconds from the first to the last of them)."""
    times = [float(f["time"]) for f in report.get("sent") or [] if f.get("type") in types]
    if len(times) < 2:
        return len(times), 0.0
    return len(times), max(times) - min(times)


def counts(report: dict[str, Any]) -> dict[str, int]:
    raw = report.get("counts") or {}
    return {str(k): int(v) for k, v in raw.items() if isinstance(v, int)}
