"""CPU time and memory of a process, read from ``/proc`` (Linux).

* CPU: fields 14 and 15 of ``/proc/<pid>/stat`` (``utime`` and ``stime``, in clock ticks). They
  stay readable while the process is a zombie (exited, not yet reaped), so the final figure of a
  process that ended by itself is exact.
* Memory: ``VmRSS`` (resident now) and ``VmHWM`` (the peak resident size, "high-water mark") of
  ``/proc/<pid>/status``, in kB. A zombie has no memory lines any more; the caller keeps the last
  reading (and the ``ru_maxrss`` of the reaped child as a cross-check).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

CLOCK_TICKS: int = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class StatFields:
    """What the benchmark needs from ``/proc/<pid>/stat``."""

    pid: int
    comm: str
    state: str
    utime_ticks: int
    stime_ticks: int

    def cpu_seconds(self, ticks_per_second: int = CLOCK_TICKS) -> float:
        return (self.utime_ticks + self.stime_ticks) / ticks_per_second


def parse_stat(text: str) -> StatFields:
    """Parse one ``/proc/<pid>/stat`` line.

    The command name (field 2) is in parentheses and may itself contain spaces and parentheses,
    so the fields after it are found from the *last* closing parenthesis.
    """
    open_at = text.find("(")
    close_at = text.rfind(")")
    if open_at < 0 or close_at < open_at:
        raise ValueError(f"not a /proc/<pid>/stat line: {text[:80]!r}")
    pid = int(text[:open_at].strip())
    comm = text[open_at + 1 : close_at]
    rest = text[close_at + 1 :].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    if len(rest) < 13:
        raise ValueError(f"truncated /proc/<pid>/stat line: {text[:80]!r}")
    return StatFields(pid, comm, rest[0], int(rest[11]), int(rest[12]))


def parse_status(text: str) -> dict[str, int]:
    """``Vm*``/``Rss*`` lines of ``/proc/<pid>/status`` in kB: ``{"VmHWM": 61234, ...}``."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        if not sep or not name.startswith(("Vm", "Rss")):
            continue
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            values[name] = int(parts[0])
    return values


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One reading of a process: when, its CPU seconds so far, its memory (None for a zombie)."""

    time: float  # time.monotonic() of the reading
    wall: float
    state: str
    cpu_s: float
    rss_kb: int | None
    hwm_kb: int | None

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")


def read_sample(pid: int, proc_root: str = "/proc") -> ProcSample | None:
    """Read ``pid`` now; None when the process is gone (reaped) or /proc is unavailable."""
    try:
        with open(f"{proc_root}/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = parse_stat(handle.read())
    except (OSError, ValueError):
        return None
    memory: dict[str, int] = {}
    try:
        with open(f"{proc_root}/{pid}/status", encoding="ascii", errors="replace") as handle:
            memory = parse_status(handle.read())
    except OSError:
        pass
    return ProcSample(
        time=time.monotonic(),
        wall=time.time(),
        state=stat.state,
        cpu_s=stat.cpu_seconds(),
        rss_kb=memory.get("VmRSS"),
        hwm_kb=memory.get("VmHWM"),
    )


def kb_to_mb(kb: int | None) -> float | None:
    """kB (as /proc reports them, 1024 bytes) to MB (MiB)."""
    return None if kb is None else kb / 1024.0


@dataclass(frozen=True, slots=True)
class MachineCpu:
    """The machine's CPU time so far, from the ``cpu`` line of ``/proc/stat`` (clock ticks)."""

    busy_ticks: int
    total_ticks: int


def parse_machine_cpu(text: str) -> MachineCpu:
    """The aggregate ``cpu`` line of ``/proc/stat``: idle = ``idle`` + ``iowait`` (fields 4, 5);
    everything else (user, nice, system, irq, softirq, steal) is busy. ``guest`` time is already
    counted in ``user`` and is left out of the total."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            values = [int(value) for value in parts[1:9]]
            if len(values) < 4:
                break
            total = sum(values)
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            return MachineCpu(total - idle, total)
    raise ValueError("no aggregate 'cpu' line in /proc/stat text")


def read_machine_cpu(proc_root: str = "/proc") -> MachineCpu | None:
    try:
        with open(f"{proc_root}/stat", encoding="ascii", errors="replace") as handle:
            return parse_machine_cpu(handle.read())
    except (OSError, ValueError):
        return None


def busy_cores(start: MachineCpu | None, end: MachineCpu | None, cores: int) -> float | None:
    """Cores busy on average between two readings (0..``cores``); None without both readings."""
    if start is None or end is None:
        return None
    total = end.total_ticks - start.total_ticks
    if total <= 0:
        return None
    return cores * (end.busy_ticks - start.busy_ticks) / total
