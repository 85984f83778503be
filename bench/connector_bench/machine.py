"""What the benchmark ran on: CPUs, CPU model, Python, library and redis-server versions, load."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import connector
from connector_bench import procs

PACKAGES = (
    "connector",
    "websockets",
    "redis",
    "hiredis",
    "orjson",
    "prometheus-client",
    "uvloop",
)


def cpu_model(cpuinfo: str) -> str | None:
    """The first ``model name`` of /proc/cpuinfo text (None if absent)."""
    for line in cpuinfo.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() in ("model name", "Model", "cpu model"):
            return value.strip() or None
    return None


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def redis_server_version() -> str | None:
    """The version of the server the runs start, with its name when it is not Redis."""
    try:
        binary = procs.redis_server_binary()
    except procs.BenchError:
        return None
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    name = "" if out.startswith("Redis") else f" ({out.split(' ', 1)[0]})"
    for part in out.split():
        if part.startswith("v="):
            return part[2:] + name
    return out.strip() or None


def source_digest(package_dir: Path | None = None) -> str:
    """A short digest of the connector's source (every ``.py`` under the package).

    Taken at the start and the end of an invocation: when they differ, someone edited the code
    while it was measured and the results mix versions.
    """
    root = package_dir or Path(connector.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        digest.update(str(path.relative_to(root)).encode())
        try:
            digest.update(path.read_bytes())
        except OSError:
            continue
    return digest.hexdigest()[:12]


def load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def describe() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    return {
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(_read("/proc/cpuinfo")),
        "memory_total_mb": _mem_total_mb(_read("/proc/meminfo")),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "redis_server": redis_server_version(),
        "packages": versions,
        "load_average_start": load_average(),
        "source_digest_start": source_digest(),
    }


def _mem_total_mb(meminfo: str) -> int | None:
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) // 1024
    return None
