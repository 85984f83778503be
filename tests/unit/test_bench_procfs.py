"""Reading CPU time and memory from /proc."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from connector_bench.procfs import kb_to_mb, parse_stat, parse_status, read_sample

# A real line's shape; comm "(my (odd) name)" contains spaces and parentheses.
STAT = (
    "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1532 0 0 0 "
    "250 37 0 0 20 0 3 0 1234 567890 12345 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1"
)

STATUS = """Name:\tpython
State:\tS (sleeping)
VmPeak:\t  300000 kB
VmHWM:\t   61234 kB
VmRSS:\t   58000 kB
RssAnon:\t   40000 kB
Threads:\t3
voluntary_ctxt_switches:\t10
"""


def test_parse_stat_finds_fields_after_the_last_parenthesis() -> None:
    stat = parse_stat(STAT)
    assert stat.pid == 4242
    assert stat.comm == "my (odd) name"
    assert stat.state == "S"
    assert stat.utime_ticks == 250
    assert stat.stime_ticks == 37
    assert stat.cpu_seconds(100) == pytest.approx(2.87)


@pytest.mark.parametrize("text", ["", "4242 python S 1", "4242 (python) S 1 2 3"])
def test_parse_stat_rejects_what_is_not_a_stat_line(text: str) -> None:
    with pytest.raises(ValueError, match="stat line"):
        parse_stat(text)


def test_parse_status_keeps_memory_lines_in_kb() -> None:
    values = parse_status(STATUS)
    assert values == {"VmPeak": 300000, "VmHWM": 61234, "VmRSS": 58000, "RssAnon": 40000}


def test_parse_status_of_a_zombie_has_no_memory() -> None:
    assert parse_status("Name:\tpython\nState:\tZ (zombie)\nThreads:\t1\n") == {}


def test_read_sample_from_a_fake_proc(tmp_path: Path) -> None:
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "stat").write_text(STAT)
    (tmp_path / "4242" / "status").write_text(STATUS)
    sample = read_sample(4242, proc_root=str(tmp_path))
    assert sample is not None
    assert sample.alive
    assert sample.hwm_kb == 61234
    assert sample.rss_kb == 58000
    assert sample.cpu_s > 0


def test_read_sample_of_a_zombie_and_of_nothing(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "stat").write_text(STAT.replace(") S ", ") Z "))
    (tmp_path / "7" / "status").write_text("Name:\tpython\nState:\tZ (zombie)\n")
    zombie = read_sample(7, proc_root=str(tmp_path))
    assert zombie is not None
    assert not zombie.alive
    assert zombie.cpu_s > 0  # CPU times survive the exit
    assert zombie.hwm_kb is None
    assert read_sample(8, proc_root=str(tmp_path)) is None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_read_sample_of_this_process() -> None:
    sample = read_sample(os.getpid())
    assert sample is not None
    assert sample.alive
    assert sample.hwm_kb is not None
    assert sample.rss_kb is not None
    assert sample.hwm_kb >= sample.rss_kb > 0


def test_kb_to_mb() -> None:
    assert kb_to_mb(2048) == 2.0
    assert kb_to_mb(None) is None
