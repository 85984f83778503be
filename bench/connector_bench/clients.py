"""Starting the clients under test: the connector, the docs-loop baseline, the raw receiver.

Each is started *before* the simulator, pointed at the port the simulator will listen on, and
retries its connection until it is up. So the client's start-up (imports, settings, connecting
to Redis) is over before the CPU reading that opens the measurement, and the simulator's feed,
which starts when its first client connects, meets a client that is ready.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

import connector
from connector.localredis import free_port
from connector_bench.procs import (
    READY_TIMEOUT,
    BenchError,
    Managed,
    Processes,
    child_env,
    file_contains,
    http_get,
    wait_until,
)

STREAM_PREFIX = "md"
#: The connector's log line once it is in its connect-retry loop (start-up is finished).
RETRYING_MARKER = "cannot connect to the Trading API"


@dataclass(slots=True)
class ClientProcess:
    """A started client: its process, and for the connector its HTTP port."""

    kind: str
    process: Managed
    http_port: int | None = None

    def metrics_text(self) -> str | None:
        if self.http_port is None:
            return None
        answer = http_get(f"http://127.0.0.1:{self.http_port}/metrics")
        return answer[1].decode("utf-8", "replace") if answer and answer[0] == 200 else None


def connector_keys(symbols: Sequence[str], prefix: str = STREAM_PREFIX) -> list[str]:
    """The connector's market-data streams for ``symbols`` (1m candles and quotes)."""
    keys: list[str] = []
    for symbol in symbols:
        keys.append(f"{prefix}:{{{symbol}}}:candle:1m")
        keys.append(f"{prefix}:{{{symbol}}}:quote")
    return keys


def candle_keys(symbols: Sequence[str], prefix: str = STREAM_PREFIX) -> list[str]:
    """The connector's 1m candle streams for ``symbols`` (what a backtest step writes)."""
    return [f"{prefix}:{{{symbol}}}:candle:1m" for symbol in symbols]


def baseline_keys(symbols: Sequence[str]) -> list[str]:
    """The baseline's one stream per symbol."""
    return [f"hello:{{{symbol}}}" for symbol in symbols]


def start_connector(
    processes: Processes,
    api_url: str,
    redis_url: str,
    mode: str,
    extra_env: Mapping[str, str] | None = None,
    argv: Sequence[str] = (),
    name: str = "connector",
) -> ClientProcess:
    """``python -m connector run`` (or ``argv``) configured by environment; returns once it is
    retrying its connection (its start-up is over). ``name`` names its log file."""
    http_port = free_port()
    env = child_env(
        {
            "CONNECTOR_API_URL": api_url,
            "CONNECTOR_MODE": mode,
            "CONNECTOR_REDIS_URL": redis_url,
            "CONNECTOR_STREAM_PREFIX": STREAM_PREFIX,
            "CONNECTOR_HTTP_HOST": "127.0.0.1",
            "CONNECTOR_HTTP_PORT": str(http_port),
            "CONNECTOR_LOG_FORMAT": "json",
            # Only the start-up wait for the simulator is affected (not the hot path).
            "CONNECTOR_RECONNECT_MIN_DELAY": "0.02",
            "CONNECTOR_RECONNECT_MAX_DELAY": "0.05",
            **(extra_env or {}),
        }
    )
    command = list(argv) or [sys.executable, "-m", "connector", "run"]
    process = processes.start(name, command, env=env)
    wait_until(
        lambda: file_contains(process.log_path, RETRYING_MARKER),
        READY_TIMEOUT,
        f"{name} to start",
        process=process,
    )
    return ClientProcess("connector", process, http_port)


def start_baseline(processes: Processes, ws_url: str, redis_url: str) -> ClientProcess:
    argv = [sys.executable, "-m", "connector_bench.baseline", ws_url, redis_url, "--quiet"]
    process = processes.start("baseline", argv, capture_stdout=True)
    _wait_ready_line(process)
    return ClientProcess("baseline", process)


def start_raw(processes: Processes, ws_url: str, args: Sequence[str]) -> ClientProcess:
    argv = [sys.executable, "-m", "connector_bench.rawclient", ws_url, *args]
    process = processes.start("raw", argv, capture_stdout=True)
    _wait_ready_line(process)
    return ClientProcess("raw", process)


#: The ``--connector-env`` settings that ``connector consume`` honours too.
CONSUMER_SETTINGS = frozenset({"CONNECTOR_EVENT_LOOP"})


def start_consumer(
    processes: Processes, redis_url: str, group: str, settings: Mapping[str, str] | None = None
) -> Managed:
    """``connector consume --group G``: the confirming consumer of consumer-ack mode.

    Ready once it has joined its group on the connector's ``backtest_complete`` stream (which
    the connector provisions, with the group, at start-up): so the consumer's start-up is over
    before the run starts. Of ``settings`` (the ``--connector-env`` ones) it gets those it
    honours (``CONSUMER_SETTINGS``: the event loop), so an A/B of the loop covers both processes.
    It runs at log level WARNING (as an operator would under load).
    """
    argv = [
        sys.executable,
        "-m",
        "connector",
        "consume",
        "--group",
        group,
        "--redis-url",
        redis_url,
        "--prefix",
        STREAM_PREFIX,
        "--log-level",
        "WARNING",
    ]
    own = {k: v for k, v in (settings or {}).items() if k in CONSUMER_SETTINGS}
    consumer = processes.start("consumer", argv, env=child_env(own))
    _wait_joined(consumer, redis_url, f"{STREAM_PREFIX}:backtest_complete", group)
    return consumer


#: The documented plain redis-py consumer, relative to the source tree's root.
PLAIN_RECIPE = Path("docs", "recipes", "redis_py_consumer.py")


def plain_recipe(root: Path | None = None) -> Path:
    """The repository's ``docs/recipes/redis_py_consumer.py``: the bench runs that very file, so
    its figure is the documented recipe's. ``root``: the source tree (default: the one the
    ``connector`` package is imported from)."""
    tree = root if root is not None else Path(connector.__file__).resolve().parent.parent
    path = tree / PLAIN_RECIPE
    if not path.is_file():
        raise BenchError(
            f"the plain-XACK consumer recipe is not at {path}: the consumer-plain scenarios run "
            "the repository's docs/recipes/redis_py_consumer.py, so run the bench from a source "
            "checkout (pip install -e . -e ./bench)"
        )
    return path


def start_plain_consumer(
    processes: Processes, redis_url: str, group: str, streams: Sequence[str]
) -> Managed:
    """The recipe as its own process, reading ``streams`` in ``group`` (it XACKs and never
    notifies). Ready once it waits in a blocked XREADGROUP, so its start-up is over before the
    run starts. Its per-entry line goes to a file, as an operator's log would."""
    argv = [sys.executable, str(plain_recipe())]
    env = child_env(
        {
            "REDIS_URL": redis_url,
            "GROUP": group,
            "STREAMS": ",".join(streams),
            "CONSUMER": "bench-plain",
        }
    )
    consumer = processes.start("consumer", argv, env=env, capture_stdout=True)
    _wait_blocked(consumer, redis_url)
    return consumer


def start_floor_consumer(
    processes: Processes, redis_url: str, group: str, streams: Sequence[str]
) -> Managed:
    """``connector_bench.floorconsumer`` reading ``streams`` in ``group``: the least a consumer
    does per step (it notifies, like the toolkit). Ready once it waits in a blocked read."""
    argv = [sys.executable, "-m", "connector_bench.floorconsumer"]
    env = child_env(
        {
            "REDIS_URL": redis_url,
            "GROUP": group,
            "STREAMS": ",".join(streams),
            "CONSUMER": "bench-floor",
            "PREFIX": STREAM_PREFIX,
        }
    )
    consumer = processes.start("consumer", argv, env=env, capture_stdout=True)
    _wait_blocked(consumer, redis_url)
    return consumer


def _wait_blocked(consumer: Managed, redis_url: str) -> None:
    """Until a client waits in a blocked XREADGROUP (Redis 7.0 adds a member to the group only
    when it is first served, so membership cannot tell)."""
    probe = Redis.from_url(redis_url, socket_timeout=5)

    def blocked() -> bool:
        try:
            clients = probe.client_list()
        except RedisError:
            return False
        return any(c.get("cmd") == "xreadgroup" and "b" in c.get("flags", "") for c in clients)

    try:
        wait_until(blocked, READY_TIMEOUT, "the consumer's first blocked read", process=consumer)
    finally:
        probe.close()


def _wait_joined(consumer: Managed, redis_url: str, key: str, group: str) -> None:
    """Until ``group`` on ``key`` has a member (a consumer joins with its first read)."""
    probe = Redis.from_url(redis_url, socket_timeout=5)

    def joined() -> bool:
        try:
            return bool(probe.xinfo_consumers(key, group))
        except RedisError:
            return False

    try:
        wait_until(joined, READY_TIMEOUT, "the consumer to join its group", process=consumer)
    finally:
        probe.close()


def _wait_ready_line(process: Managed) -> None:
    stdout = process.stdout_path
    assert stdout is not None
    wait_until(
        lambda: file_contains(stdout, "ready"),
        READY_TIMEOUT,
        f"{process.name} to start",
        process=process,
    )
