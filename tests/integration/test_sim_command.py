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
            await ws.send(ack(frame["event_id"]))
            if frame.get("type") == "backtest_complete":
                break
        # As on the gateway the socket stays open after the end: the client leaves by itself,
        # and only then does the command stop.
        assert process.returncode is None
    code, err = await finish(process)
    assert code == 0, err
    assert "completed" in err
    data = orjson.loads(report.read_bytes())
    assert data["outcome"] == "completed"
    assert data["complete_acked"] is True
    assert data["counts"]["acked_ids"] == 7


def ack(event_id: str) -> str:
    frame = {
        "type": "event_ack",
        "correlation_id": str(uuid.uuid4()),
        "events_processed": [event_id],
        "timestamp": int(time.time() * 1000),
    }
    return orjson.dumps(frame).decode()


async def test_exit_after_run_stops_at_the_end_with_disconnecting() -> None:
    process, url = await start(
        "--steps",
        "1",
        "--fill-every",
        "0",
        "--other-every",
        "0",
        "--shutdown-grace",
        "0",
        "--exit-after-run",
    )
    async with connect(url) as ws:
        types = []
        while not types or types[-1] != "connection":
            async with asyncio.timeout(LIMIT):
                frame = orjson.loads(await ws.recv())
            types.append(frame["type"])
            if "event_id" in frame:
                await ws.send(ack(frame["event_id"]))
        assert frame["event"] == "DISCONNECTING"
    assert types == ["candle"] * 3 + ["backtest_complete", "connection"]
    code, err = await finish(process)
    assert code == 0, err


async def test_leave_timeout_bounds_the_wait_for_a_client_that_stays() -> None:
    process, url = await start(
        "--steps",
        "1",
        "--fill-every",
        "0",
        "--other-every",
        "0",
        "--shutdown-grace",
        "0",
        "--leave-timeout",
        "0.2",
    )
    async with connect(url) as ws:
        while True:
            async with asyncio.timeout(LIMIT):
                frame = orjson.loads(await ws.recv())
            if "event_id" in frame:
                await ws.send(ack(frame["event_id"]))
            if frame["type"] == "connection":  # the stop, while this client is still here
                assert frame["event"] == "DISCONNECTING"
                break
    code, err = await finish(process)
    assert code == 0, err


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
