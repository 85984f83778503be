"""``connector bench --quick`` end to end: every scenario, real processes, nothing left behind.

No timing threshold is asserted (tests never assert speed): only that every scenario ran with
every client and produced sane, positive figures, and that every process the harness started is
gone afterwards, also when the harness itself is stopped with SIGTERM in the middle of a run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
    pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc"),
]

REPO = Path(__file__).resolve().parents[2]
EXPECTED_CLIENTS = {
    "live": {"connector", "baseline", "raw"},
    "backtest": {"connector", "baseline", "raw"},
    "consumer": {"connector"},
    "consumer-plain": {"connector"},
    "consumer-floor": {"connector"},
    "consumer-wide": {"connector"},
    "consumer-wide-plain": {"connector"},
    "consumer-idle": {"connector"},
    "latency": {"connector", "baseline", "raw"},
    "million": {"connector"},
}
BACKTESTS = ("backtest", "consumer", "consumer-plain", "consumer-wide", "consumer-wide-plain")
BACKTESTS += ("consumer-idle", "consumer-floor")


def bench_env(marker: str) -> dict[str, str]:
    """The harness's environment, with a marker every child inherits (to find leftovers)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    env["BENCH_TEST_MARKER"] = marker
    return env


def processes_with(marker: str, workdir: Path) -> list[int]:
    """Pids of live (not zombie) processes started by the harness of one test.

    Python children inherit the marker in their environment; redis-server overwrites its
    environment (process title) but runs in its data directory, under ``workdir``.
    """
    needle = f"BENCH_TEST_MARKER={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            ours = needle in (entry / "environ").read_bytes() or os.readlink(
                entry / "cwd"
            ).startswith(str(workdir))
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if ours and state != "Z":
            found.append(int(entry.name))
    return found


def wait_gone(marker: str, workdir: Path, timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    left = processes_with(marker, workdir)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = processes_with(marker, workdir)
    return left


def stop_leftovers(marker: str, workdir: Path) -> None:
    """Safety net for a failing test: whatever it started must not outlive it."""
    for pid in processes_with(marker, workdir):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(200)
def test_quick_bench_reports_every_scenario(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    out = tmp_path / "bench.json"
    workdir = tmp_path / "work"
    try:
        completed = run_quick(marker, out, workdir)
    finally:
        left = wait_gone(marker, workdir)
        stop_leftovers(marker, workdir)
    assert left == []
    assert completed.returncode == 0, completed.stdout + completed.stderr
    check_output(completed.stdout, out)


def run_quick(marker: str, out: Path, workdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "connector",
            "bench",
            "--quick",
            "--repeat",
            "1",
            "--json",
            str(out),
            "--workdir",
            str(workdir),
        ],
        env=bench_env(marker),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=190,
        check=False,
    )


def check_output(stdout: str, out: Path) -> None:
    assert "target" in stdout
    assert "live burst" in stdout

    doc: dict[str, Any] = orjson.loads(out.read_bytes())
    assert doc["machine"]["nproc"] >= 1
    assert doc["machine"]["python"]
    runs = doc["runs"]
    seen = {(run["scenario"], run["client"]) for run in runs}
    expected = {(s, c) for s, clients in EXPECTED_CLIENTS.items() for c in clients}
    assert seen == expected
    for run in runs:
        label = f"{run['scenario']}/{run['client']}: {run}"
        assert run["error"] is None, label
        assert run["events"] == run["expected_events"] > 0, label
        assert run["duration_s"] > 0, label
        assert run["events_per_s"] > 0, label
        assert run["cpu_s"] is not None, label
        assert run["cpu_s"] > 0, label
        assert run["cpu_per_1k_events"] > 0, label
        assert run["peak_rss_mb"] > 5, label
        if run["scenario"] in BACKTESTS:
            check_backtest(run, label)
        if run["scenario"] in (*BACKTESTS, "latency"):
            assert run["acked"] == run["events"], label
            assert 0 <= run["ack_p50_ms"] <= run["ack_p99_ms"] <= run["ack_max_ms"], label
    check_consumer_figures(stdout, doc)
    medians = doc["medians"]
    assert set(medians) == set(EXPECTED_CLIENTS)
    for scenario, clients in EXPECTED_CLIENTS.items():
        assert set(medians[scenario]) == clients
        for row in medians[scenario].values():
            assert row["ok_runs"] == row["runs"] == 1
    assert doc["ratios_vs_baseline"]["live"] > 0
    verdicts = {target["name"]: target["verdict"] for target in doc["targets"]}
    assert set(verdicts.values()) <= {"PASS", "MISS", "n/a"}
    assert verdicts["peak_rss_million"] == "n/a"  # a quick run is far from a million events
    check_parity(stdout, doc)


def check_parity(stdout: str, doc: dict[str, Any]) -> None:
    """Same strategy, data and seed in both modes: consumer-ack mode fills every order at the
    bar after its signal (lag 0); immediate mode is reported as it is."""
    assert "fill parity" in stdout
    immediate, consumer = doc["parity"]["immediate"], doc["parity"]["consumer"]
    assert immediate["seed"] == consumer["seed"]
    assert immediate["symbols"] == consumer["symbols"]
    assert consumer["strategy"]["orders"] > 0
    assert consumer["strategy"]["fill_lags"]
    assert set(consumer["strategy"]["fill_lags"]) == {0}
    assert immediate["strategy"]["filled"] == len(immediate["strategy"]["fill_lags"]) > 0


def check_backtest(run: dict[str, Any], label: str) -> None:
    assert run["steps"] > 0, label
    assert run["steps_per_s"] > 0, label
    if run["client"] == "raw":
        return  # no Redis
    assert run["redis_cpu_s"] is not None, label
    assert run["measures"]["redis_us_per_step"] >= 0, label
    if run["client"] == "connector":
        # The connector acknowledges a step's candles together, in one frame or a few.
        assert 1.0 <= run["measures"]["ack_frames_per_step"] <= 4.0, label


def check_consumer_figures(stdout: str, doc: dict[str, Any]) -> None:
    """The step-cost table and the consumer targets are there, from the runs' own figures."""
    assert "Redis CPU us/step" in stdout
    assert "plain XACK (checked) + 100 idle streams" in stdout
    assert "floor (no event loop, notifies)" in stdout
    settings = doc["settings"]
    wide = next(run for run in doc["runs"] if run["scenario"] == "consumer-wide-plain")
    assert wide["measures"]["symbols"] == settings["wide_symbols"]
    assert wide["events"] == settings["wide_symbols"] * settings["wide_steps"]
    idle = next(run for run in doc["runs"] if run["scenario"] == "consumer-idle")
    assert idle["measures"]["idle_streams"] == settings["idle_streams"]
    names = {target["name"] for target in doc["targets"] if target["verdict"] != "n/a"}
    assert {"consumer_vs_immediate", "plain_vs_toolkit", "idle_streams_redis"} <= names
    assert "wide_redis_per_entry" in names


@pytest.mark.timeout(90)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_stopping_the_harness_mid_run_stops_every_child(tmp_path: Path, signum: int) -> None:
    """SIGTERM: the harness unwinds and stops its children; SIGKILL: they die with it (Linux
    parent-death signal)."""
    marker = uuid.uuid4().hex
    workdir = tmp_path / "work"
    harness = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "connector",
            "bench",
            "--scenarios",
            "live",
            "--clients",
            "baseline",
            "--events",
            "1000000",  # far more than it will get through before the signal
            "--repeat",
            "1",
            "--workdir",
            str(workdir),
        ],
        env=bench_env(marker),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        # Wait until the simulator listens (so redis, the baseline and the simulator all run).
        while not any(
            "simulator on ws://" in p.read_text() for p in workdir.glob("*/simulator.log")
        ):
            assert harness.poll() is None, harness.stderr.read() if harness.stderr else ""
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
        children = set(processes_with(marker, workdir)) - {harness.pid}
        assert len(children) >= 3  # redis-server, the baseline, the simulator
        harness.send_signal(signum)
        harness.wait(timeout=30)
        left = wait_gone(marker, workdir)
    finally:
        if harness.poll() is None:
            harness.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                harness.wait(timeout=20)
        if harness.poll() is None:
            harness.kill()
            harness.wait()
        stop_leftovers(marker, workdir)
    assert left == []
    assert harness.returncode != 0
