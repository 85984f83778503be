"""The scale scenario's pure parts: options, symbols, machine CPU, cluster state, figures, table."""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from connector_bench import chart
from connector_bench.cluster import cluster_state_ok, parse_cluster_info
from connector_bench.command import configure_parser, scale_plan_from, selection
from connector_bench.procfs import MachineCpu, busy_cores, parse_machine_cpu
from connector_bench.procs import BenchError
from connector_bench.progress import GroupedProgress, Stored, StreamProgress, total_stored
from connector_bench.report import (
    SCALE_COLUMNS,
    render,
    render_table,
    scale_lines,
    scale_section,
)
from connector_bench.results import RunResult, medians
from connector_bench.scale import ScalePlan, connector_symbols, prefix_of
from connector_bench.scaling import ConnectorFigures, fill_result, scale_rows, variant_of
from connector_bench.scenarios import Plan, Run, Runner


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(list(argv))


# -- options -----------------------------------------------------------------------------------


def test_scale_is_only_run_when_named() -> None:
    assert scale_plan_from(parse()) is None
    assert ("live", "connector") in selection(parse())
    plan = scale_plan_from(parse("--scenarios", "scale"))
    assert plan == ScalePlan(connectors=(1, 2, 3), topologies=("single",))
    assert selection(parse("--scenarios", "scale")) == []
    assert selection(parse("--scenarios", "live,scale", "--clients", "connector")) == [
        ("live", "connector")
    ]


def test_cluster_options() -> None:
    plan = scale_plan_from(parse("--scenarios", "scale", "--cluster", "--connectors", "1,2,2,4"))
    assert plan is not None
    assert plan.topologies == ("cluster",)
    assert plan.connectors == (1, 2, 4)
    assert (plan.masters, plan.replicas) == (3, 0)
    both = scale_plan_from(
        parse("--scenarios", "scale", "--cluster-masters", "4", "--also-single", "--shared-symbols")
    )
    assert both is not None
    assert both.topologies == ("single", "cluster")
    assert both.masters == 4
    assert both.shared_symbols


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--connectors", "0"), ">= 1"),
        (("--connectors", "one"), "comma list"),
        (("--cluster-masters", "2"), ">= 3"),
        (("--cluster", "--cluster-replicas", "-1"), ">= 0"),
        (("--also-single",), "goes with --cluster"),
    ],
)
def test_bad_scale_options(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        scale_plan_from(parse("--scenarios", "scale", *argv))


def test_each_connector_gets_its_own_symbols_and_prefix() -> None:
    base = ("AAPL", "MSFT")
    assert connector_symbols(base, 0, shared=False) == base
    assert connector_symbols(base, 2, shared=False) == ("AAPL3", "MSFT3")
    assert connector_symbols(base, 2, shared=True) == base
    assert len({prefix_of(i) for i in range(5)}) == 5


# -- machine CPU and cluster state ------------------------------------------------------------


def test_machine_cpu_from_proc_stat() -> None:
    text = "cpu  100 5 50 800 20 0 10 15 0 0\ncpu0 50 2 25 400 10 0 5 7 0 0\nintr 1 2 3\n"
    cpu = parse_machine_cpu(text)
    assert cpu.total_ticks == 100 + 5 + 50 + 800 + 20 + 0 + 10 + 15
    assert cpu.busy_ticks == cpu.total_ticks - 800 - 20
    with pytest.raises(ValueError, match="no aggregate"):
        parse_machine_cpu("intr 1 2 3\n")


def test_busy_cores() -> None:
    start, end = MachineCpu(100, 1000), MachineCpu(400, 1400)
    assert busy_cores(start, end, 2) == pytest.approx(2 * 300 / 400)
    assert busy_cores(None, end, 2) is None
    assert busy_cores(end, end, 2) is None


def test_cluster_info_text_or_dict() -> None:
    text = "cluster_state:ok\r\ncluster_slots_ok:16384\r\ncluster_known_nodes:3\r\n"
    fields = parse_cluster_info(text.encode())
    assert cluster_state_ok(fields, 3)
    assert not cluster_state_ok(fields, 6)  # not every node known yet
    parsed = parse_cluster_info({"cluster_state": "fail", "cluster_slots_ok": 16384})
    assert parsed["cluster_slots_ok"] == "16384"
    assert not cluster_state_ok(parsed, 3)


# -- progress per prefix ----------------------------------------------------------------------


class FakeProgress(StreamProgress):
    def __init__(self, infos: list[Any]) -> None:
        self._infos = infos
        self.asked: list[str] = []

    def infos(self, keys: Sequence[str]) -> list[Any]:
        self.asked = list(keys)
        return self._infos[: len(keys)]


def test_grouped_progress_splits_one_pipeline_per_prefix() -> None:
    infos: list[Any] = [
        {"entries-added": 10, "last-generated-id": b"2000-0"},
        ValueError("no such key"),
        {"entries-added": 5, "last-generated-id": b"3000-1"},
        {"entries-added": 7, "last-generated-id": b"1000-0"},
    ]
    fake = FakeProgress(infos)
    grouped = GroupedProgress(fake, {"a": ["a1", "a2"], "b": ["b1", "b2"]})
    total = grouped.read()
    assert fake.asked == ["a1", "a2", "b1", "b2"]
    assert grouped.groups["a"] == Stored(10, 2.0)
    assert grouped.groups["b"] == Stored(12, 3.0)
    assert total == Stored(22, 3.0)
    assert total_stored([]) == Stored(0, None)


# -- figures, medians, table ------------------------------------------------------------------


def figures(prefix: str, start: float, end: float, stored: int = 1000, **kw: Any) -> Any:
    return ConnectorFigures(
        prefix=prefix,
        expected=1000,
        sent=kw.pop("sent", 1000),
        stored=stored,
        start_wall=start,
        end_wall=end,
        cpu_s=kw.pop("cpu_s", 0.5),
        peak_rss_mb=kw.pop("rss", 50.0),
    )


def scale_run(topology: str, count: int, index: int = 0, spread: float = 0.0) -> RunResult:
    run = RunResult("scale", "connector", index, 1000 * count, variant_of(topology, count))
    parts = [figures(f"p{i}", 100.0 + i * spread, 101.0 + i * 0.5) for i in range(count)]
    fill_result(run, parts, redis_cpu_s=0.2)
    run.measures["busy_cores"] = 1.5
    return run


def test_run_figures() -> None:
    run = scale_run("single", 2, spread=0.25)
    # 2,000 events from the first feed (100.0) to the last entry (101.5).
    assert run.events == run.expected_events == 2000
    assert run.lost_events == 0
    assert run.duration_s == pytest.approx(1.5)
    assert run.events_per_s == pytest.approx(2000 / 1.5)
    assert run.measures["start_spread_s"] == pytest.approx(0.25)
    # Per connector: 1000 / 1.0 s and 1000 / 1.25 s.
    assert run.measures["per_connector_events_per_s"] == pytest.approx((1000 + 800) / 2)
    assert run.measures["per_connector_min_events_per_s"] == pytest.approx(800)
    assert run.cpu_per_1k_events == pytest.approx(1.0 / 2000 * 1000)
    assert run.measures["redis_us_per_entry"] == pytest.approx(0.2 / 2000 * 1e6)
    assert run.checks["all_stored_once"] is True
    data = run.to_dict()
    assert data["parts"][0]["events_per_s"] == pytest.approx(1000)
    assert data["variant"] == "single/2"


@pytest.mark.parametrize(("stored", "sent"), [(999, 1000), (1001, 1000), (1000, 999)])
def test_lost_or_duplicated_events_are_not_stored_once(stored: int, sent: int) -> None:
    assert not figures("p", 0.0, 1.0, stored=stored, sent=sent).stored_once
    run = RunResult("scale", "connector", 0, 1000, "single/1")
    fill_result(run, [figures("p", 0.0, 1.0, stored, sent=sent)], None)
    assert not run.checks["all_stored_once"]


def test_a_run_without_timing_has_no_rate() -> None:
    run = RunResult("scale", "connector", 0, 10, "cluster/1")
    fill_result(run, [ConnectorFigures("p", 10, stored=10)], None)
    assert run.duration_s == 0.0
    assert run.events_per_s == 0.0
    assert run.cpu_per_1k_events is None
    empty = RunResult("scale", "connector", 0, 10, "single/1")
    fill_result(empty, [], None)
    assert empty.checks["all_stored_once"] is False


def test_medians_per_topology_and_count_with_speedup() -> None:
    runs = [
        scale_run("cluster", 1),
        scale_run("single", 2, 0),
        scale_run("single", 1, 0),
        scale_run("single", 1, 1),
        scale_run("single", 2, 1),
    ]
    failed = RunResult("scale", "connector", 0, 2000, "cluster/2")
    failed.error = "the cluster did not become healthy"
    runs.append(failed)
    rows = scale_rows(medians(runs))
    assert [key for key, _ in rows] == ["single/1", "single/2", "cluster/1", "cluster/2"]
    single_1, single_2, _, cluster_2 = (row for _, row in rows)
    assert single_1["runs"] == single_1["ok_runs"] == 2
    assert single_1["speedup_vs_1"] == pytest.approx(1.0)
    assert single_2["speedup_vs_1"] == pytest.approx((2000 / 1.5) / 1000)
    assert cluster_2["ok_runs"] == 0
    assert cluster_2["events_per_s"] is None
    assert cluster_2.get("all_stored_once", False) is False
    assert cluster_2["errors"] == ["the cluster did not become healthy"]


def test_scale_table_and_block() -> None:
    runs = [scale_run("single", 1), scale_run("single", 2), scale_run("cluster", 1)]
    runs[2].measures["bytes_per_entry"] = 90.0
    runs[1].notes.append("feeds started 1.20 s apart")
    table = medians(runs)
    lines = render_table(SCALE_COLUMNS, scale_lines(table)).splitlines()
    assert lines[0].startswith("redis")
    assert len(lines) == 2 + 3
    assert "1.33x" in lines[3]  # single, 2 connectors: 1,333 vs 1,000 events/s
    assert lines[2].split()[-1] == "yes"
    settings = {
        "topologies": ["single", "cluster"],
        "cluster": {"masters": 3, "replicas": 0},
        "events_per_connector": 1000,
        "symbols_per_connector": 4,
        "repeat": 1,
    }
    block = scale_section(settings, table)
    assert "3 masters" in block
    assert "its own symbols" in block
    assert "cluster 90" in block
    machine = {"nproc": 2, "packages": {}}
    text = render(machine, {"repeat": 1, "scale": settings}, table, [], runs)
    assert "scale/single/2 #1: feeds started 1.20 s apart" in text
    assert "target" not in text  # a scale-only invocation judges no target


def test_one_chart_for_every_scenario(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    runs = [scale_run("single", 1), scale_run("single", 2), scale_run("cluster", 1)]
    runs.append(RunResult("live", "connector", 0, 10, events=10, events_per_s=5.0))
    table = medians(runs)
    names = [panel.__name__ for panel in chart.panels_for(table)]
    assert names == ["throughput_panel", "scale_rates_panel", "scale_cores_panel"]
    path = tmp_path / "bench.png"
    if importlib.util.find_spec("matplotlib") is not None:
        assert chart.draw(table, path, "title") is None
        assert path.read_bytes().startswith(b"\x89PNG")
    monkeypatch.setattr(chart, "load_pyplot", lambda: None)
    message = chart.draw(table, tmp_path / "other.png", "title")
    assert message is not None
    assert "matplotlib" in message


# -- the one runner ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeScenario:
    """A scenario whose run does nothing but what it is told (no process is started)."""

    failure: BaseException | None = None
    name: str = "scale"
    variant: str = "cluster/2"

    def expected(self, plan: Plan) -> int:
        return plan.live_events * 2

    def measure(self, run: Run) -> None:
        if self.failure is not None:
            raise self.failure
        run.result.events = run.result.expected_events
        run.result.measures["busy_cores"] = 1.25


def test_runner_runs_any_scenario_in_its_own_directory(tmp_path: Path) -> None:
    logged: list[str] = []
    runner = Runner(Plan(live_events=10), tmp_path, logged.append)
    result = runner.run(FakeScenario(), "connector", 1)
    assert result.ok
    assert (result.scenario, result.variant, result.key) == ("scale", "cluster/2", "cluster/2")
    assert result.events == result.expected_events == 20
    assert Path(result.extra["workdir"]) == tmp_path / "001-scale-cluster-2-1"
    assert Path(result.extra["workdir"]).is_dir()
    assert logged[0].startswith("scale/cluster/2 #2: 20 events")
    assert "busy cores 1.25" in logged[0]


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (BenchError("the cluster did not become healthy"), "the cluster did not become healthy"),
        (KeyError("port"), "KeyError: 'port'"),
    ],
)
def test_runner_reports_a_failed_run_and_goes_on(
    tmp_path: Path, failure: BaseException, message: str
) -> None:
    logged: list[str] = []
    runner = Runner(Plan(), tmp_path, logged.append)
    result = runner.run(FakeScenario(failure), "connector", 0)
    assert result.error == message
    assert logged == [f"scale/cluster/2 #1: FAILED: {message}"]
    assert result.extra["wall_s"] >= 0
