"""``connector bench --scenarios scale`` end to end, tiny: 1 and 2 connectors against a local
Redis Cluster (3 masters) and against one redis-server.

No timing threshold is asserted: only that every row is there with positive figures, that every
event was stored exactly once, and that nothing the harness started outlives it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.test_bench_quick import REPO, bench_env, stop_leftovers, wait_gone

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
    pytest.mark.skipif(shutil.which("redis-cli") is None, reason="needs redis-cli"),
    pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc"),
]

EVENTS = 2_000


@pytest.mark.timeout(90)
def test_scale_scenario_on_a_cluster_and_a_single_node(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    out = tmp_path / "bench.json"
    workdir = tmp_path / "work"
    argv = [sys.executable, "-m", "connector", "bench", "--scenarios", "scale"]
    argv += ["--connectors", "1,2", "--cluster", "--also-single", "--events", str(EVENTS)]
    argv += ["--repeat", "1", "--json", str(out), "--workdir", str(workdir)]
    try:
        completed = subprocess.run(
            argv,
            env=bench_env(marker),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=80,
            check=False,
        )
    finally:
        left = wait_gone(marker, workdir)
        stop_leftovers(marker, workdir)
    assert left == []
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "aggregate ev/s" in completed.stdout

    doc: dict[str, Any] = orjson.loads(out.read_bytes())
    rows = doc["medians"]["scale"]
    assert set(rows) == {"single/1", "single/2", "cluster/1", "cluster/2"}
    for key, row in rows.items():
        label = f"{key}: {row}"
        count = int(key.partition("/")[2])
        assert row["ok_runs"] == row["runs"] == 1, label
        assert row["all_stored_once"] is True, label
        assert row["events"] == EVENTS * count, label
        for name in (
            "events_per_s",
            "per_connector_events_per_s",
            "cpu_per_1k_events",
            "busy_cores",
            "peak_rss_mb",
        ):
            assert row[name] is not None, f"{name}: {label}"
            assert row[name] > 0, f"{name}: {label}"
    for run in doc["runs"]:
        assert run["scenario"] == "scale"
        assert run["error"] is None, run
        prefixes = [part["prefix"] for part in run["parts"]]
        assert len(set(prefixes)) == len(prefixes) == int(run["variant"].partition("/")[2])
        for part in run["parts"]:
            assert part["stored"] == part["sent"] == part["expected"] == EVENTS
            assert part["events_per_s"] > 0
            assert part["cpu_s"] > 0
        if run["variant"].startswith("cluster"):
            assert run["extra"]["cluster_start_s"] > 0
    assert doc["settings"]["scale"]["cluster"] == {"masters": 3, "replicas": 0}
