"""The ``connector`` command in its own process, as a user or an orchestrator runs it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

CONNECTOR = (sys.executable, "-m", "connector")
PIPE = asyncio.subprocess.PIPE
DEVNULL = asyncio.subprocess.DEVNULL


def clean_env(**extra: str) -> dict[str, str]:
    """This process' environment without any CONNECTOR_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    env.update(extra)
    return env


def service_env(api_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """Settings for ``connector run`` on loopback: a free HTTP port, JSON logs."""
    return clean_env(
        CONNECTOR_API_URL=api_url,
        CONNECTOR_REDIS_URL=redis_url,
        CONNECTOR_HTTP_PORT="0",
        CONNECTOR_HTTP_HOST="127.0.0.1",
        CONNECTOR_LOG_FORMAT="json",
        **extra,
    )


@contextlib.asynccontextmanager
async def connector_process(
    *args: str, env: dict[str, str], stdout: Any = DEVNULL, stderr: Any = PIPE
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``connector <args>`` in its own process, killed at the end if it is still running."""
    process = await asyncio.create_subprocess_exec(
        *CONNECTOR, *args, env=env, stdout=stdout, stderr=stderr
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def run_command(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """``connector <args>`` to completion: exit code, stdout, stderr."""
    async with connector_process(*args, env=env, stdout=PIPE, stderr=PIPE) as process:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def log_lines(process: asyncio.subprocess.Process) -> list[dict[str, Any]]:
    """The rest of a service's JSON log (it must have exited or be about to)."""
    assert process.stderr is not None
    return [json.loads(line) for line in (await process.stderr.read()).splitlines()]


async def wait_for_log(process: asyncio.subprocess.Process, message: str) -> None:
    """Read the service's JSON log until a line with ``msg == message``."""
    assert process.stderr is not None
    while line := await process.stderr.readline():
        if json.loads(line)["msg"] == message:
            return
    raise AssertionError(f"the service exited before logging {message!r}")
