"""Everything in the README runs as pasted.

Each Python and shell block of the README is run in a shell, in a copy of the source tree (so
``.venv`` in a block is the copy's own), against a private redis-server and the simulator. Only the
host names a reader replaces with their own are replaced: ``localhost:6379``, ``redis:6379`` and
``gateway:8080`` become the private Redis and simulator. Blocks that cannot run here say why in
``NOT_RUN``; a new block must be added to one list or the other, so none goes unchecked.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import clean_env
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BLOCK = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.S | re.M)

#: Blocks not run, by their first line, and why.
NOT_RUN = {
    "make demo    # a backtest through the connector into Redis, with a strategy that trades": (
        "the quick start: `make test` is the command CI runs this suite with, and `make demo` "
        "is run by test_quick_start_demo below (its first line only)"
    ),
    ".venv/bin/connector bench --soak 600 --json /tmp/bench.json": (
        "17 minutes; tests/integration/test_bench_quick.py runs the same harness with --quick"
    ),
}


@dataclass(frozen=True)
class Block:
    language: str
    text: str

    @property
    def first_line(self) -> str:
        return self.text.strip().splitlines()[0].strip()


def readme_blocks() -> list[Block]:
    found = BLOCK.findall(README.read_text())
    return [
        Block(language, textwrap_dedent(text, indent))
        for indent, language, text in found
        if language in ("python", "sh")
    ]


def textwrap_dedent(text: str, indent: str) -> str:
    return "\n".join(line.removeprefix(indent) for line in text.splitlines()) + "\n"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed-or-not source files (what a clone holds), without .venv and caches."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    copy = tmp_path_factory.mktemp("clone") / "connector"
    for name in files:
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    return copy


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def simulator() -> Iterator[str]:
    """``connector simulate`` (a backtest that ends after the run); yields its host:port."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "connector",
            "simulate",
            "--mode",
            "backtest",
            "--port",
            "0",
            "--steps",
            "30",
            "--exit-after-run",
        ],
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    first = process.stderr.readline()
    match = re.search(r"ws://([^/\s]+)/v1/ws", first)
    assert match, first
    try:
        yield match.group(1)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def run_block(block: Block, cwd: Path, redis: RedisServer, api: str = "") -> str:
    """Run one block as a reader would paste it: shell blocks in bash -e, Python blocks as a
    script, both with the source tree's interpreter and command first on PATH."""
    text = block.text
    for public, private in (
        ("localhost:6379", f"127.0.0.1:{redis.port}"),
        ("redis:6379", f"127.0.0.1:{redis.port}"),
        ("gateway:8080", api),
    ):
        text = text.replace(public, private)
    env = clean_env(CONNECTOR_HTTP_PORT="0", CONNECTOR_HTTP_HOST="127.0.0.1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    if block.language == "python":
        command = [sys.executable, "-c", text]
    else:
        command = ["bash", "-euo", "pipefail", "-c", text]
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, (
        f"{block.first_line}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    )
    return result.stdout


def find(first_line_start: str) -> Block:
    matches = [b for b in readme_blocks() if b.first_line.startswith(first_line_start)]
    assert len(matches) == 1, first_line_start
    return matches[0]


RUN = {
    "python3 -m venv .venv": "test_installing_block_gives_a_working_command",
    "export CONNECTOR_API_URL=": "test_running_it_then_the_toolkit_snippet",
    "import asyncio": "test_running_it_then_the_toolkit_snippet",
    'CONNECTOR_CONSUMER_GROUPS="risk,': "test_the_groups_declaration_is_accepted",
}


def test_every_block_is_run_or_says_why_not() -> None:
    for block in readme_blocks():
        ran = any(block.first_line.startswith(start) for start in RUN)
        assert ran or block.first_line in NOT_RUN, f"unchecked README block: {block.first_line}"


def test_installing_block_gives_a_working_command(tree: Path, redis: RedisServer) -> None:
    out = run_block(find("python3 -m venv .venv"), tree, redis)
    from connector import __version__

    assert __version__ in out


def test_running_it_then_the_toolkit_snippet(
    tree: Path, redis: RedisServer, simulator: str
) -> None:
    """The "Running it" block against the simulator's backtest (``connector run`` returns once
    the run completed), then the toolkit snippet reads ten of its candles."""
    out = run_block(find("export CONNECTOR_API_URL="), tree, redis, api=simulator)
    assert '"settings"' in out  # --print-config ran last
    printed = run_block(find("import asyncio"), tree, redis).splitlines()
    assert len(printed) == 10
    symbol, close = printed[0].split()
    assert symbol in ("AAPL", "MSFT", "BTCUSD")
    assert float(close) > 0


def test_the_groups_declaration_is_accepted(tree: Path, redis: RedisServer) -> None:
    block = find('CONNECTOR_CONSUMER_GROUPS="risk,')
    checked = Block("sh", f"export {block.text.strip()}\nconnector run --print-config\n")
    assert "strategy[types=candle,order; symbols=AAPL,MSFT]" in run_block(checked, tree, redis)


def test_quick_start_demo(tree: Path, redis: RedisServer) -> None:
    """``make demo`` on the copy, with CONNECTOR_REDIS_URL pointing at the private Redis (the
    README says the demo uses it when it answers)."""
    block = Block("sh", f"export CONNECTOR_REDIS_URL={redis.url}\nmake demo\n")
    out = run_block(block, tree, redis)
    assert "orders" in out
