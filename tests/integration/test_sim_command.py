"""``connector simulate`` as a process: the URL line, a completed backtest, SIGINT."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
import uuid
from pathlib import Path

import orjson
from websockets.asyncio.client import connect

LIMIT = 10.0
REPO = Path(__file__).resolve().parents[2]

# The simulate command as `connector simulate` runs it, without depending on connector.cli.
SCRIPT = """
import argparse, sys
from connector.sim.command import configure_parser, run
parser = argparse.ArgumentParser(prog="connector simulate")
configure_parser(parser)
sys.exit(run(parser.parse_args(sys.argv[1:])))
"""


async def start(*argv: str) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SCRIPT,
        *argv,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    assert process.stderr is not None
    async with asyncio.timeout(LIMIT):
        line = (await process.stderr.readline()).decode()
    match = re.search(r"ws://127\.0\.0\.1:\d+/v1/ws", line)
    assert match, line
    return process, match.group(0)


async def finish(process: asyncio.subprocess.Process) -> tuple[int, str]:
    assert process.stderr is not None
    async with asyncio.timeout(LIMIT):
        rest = await process.stderr.read()
        code = await process.wait()
    return code, rest.decode()


async def test_a_completed_backtest_exits_0(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    process, url = await start(
        "--steps",
        "2",
        "--fill-every",
        "0",
        "--other-every",
        "0",
        "--shutdown-grace",
        "0",
        "--report",
        str(report),
    )
    async with connect(url) as ws:
        while True:
            async with asyncio.timeout(LIMIT):
                frame = orjson.loads(await ws.recv())
            if "event_id" in frame:
                ack = {
                    "type": "event_ack",
                    "correlation_id": str(uuid.uuid4()),
                    "events_processed": [frame["event_id"]],
                    "timestamp": int(time.time() * 1000),
                }
                await ws.send(orjson.dumps(ack).decode())
            if frame.get("type") == "connection":
                assert frame["event"] == "DISCONNECTING"
                break
    code, err = await finish(process)
    assert code == 0, err
    assert "completed" in err
    data = orjson.loads(report.read_bytes())
    assert data["outcome"] == "completed"
    assert data["complete_acked"] is True
    assert data["counts"]["acked_ids"] == 7


async def test_sigint_stops_a_live_run_cleanly() -> None:
    process, url = await start("--mode", "live", "--rate", "100", "--shutdown-grace", "0")
    async with connect(url) as ws:
        async with asyncio.timeout(LIMIT):
            first = orjson.loads(await ws.recv())
        assert first["type"] == "quote"
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(LIMIT):
            while (frame := orjson.loads(await ws.recv()))["type"] != "connection":
                pass
        assert frame["event"] == "DISCONNECTING"
    code, err = await finish(process)
    assert code == 0, err
    assert "Traceback" not in err
