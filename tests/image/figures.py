"""Figures of the image tier (sizes, build times, time to healthy, stop times), collected while
the tests run and printed at the end of the session (see conftest.pytest_terminal_summary)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

LINES: list[str] = []
PARTS: list[tuple[str, float]] = []  # (part, seconds) of what timed() measured


def figure(label: str, value: str) -> None:
    LINES.append(f"{label}: {value}")


def part(label: str, seconds: float, note: str = "") -> None:
    """A part of the run and how long it took (also listed in CI's summary of parts)."""
    PARTS.append((label, seconds))
    figure(label, f"{note}{seconds:.1f} s")


@contextmanager
def timed(label: str) -> Iterator[None]:
    """Record how long the block took (also when it fails: the figure says so)."""
    started = time.monotonic()
    outcome = "failed after "
    try:
        yield
        outcome = ""
    finally:
        part(label, time.monotonic() - started, outcome)


def megabytes(size: int) -> str:
    return f"{size / 1e6:.0f} MB ({size} bytes)"
