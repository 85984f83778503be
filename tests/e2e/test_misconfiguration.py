"""The mistakes a new user makes, each driven through the command line: one line on stderr that
names the setting and what to do, the documented exit code (2), no traceback. Transient
conditions (Redis not answering yet) are not configuration errors: they keep retrying."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import clean_env
from tests.support.redis_server import RedisServer, free_port

CONNECTOR = [sys.executable, "-m", "connector"]
EXIT_CONFIG = 2
PASSWORD = "right-password"


def connector(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CONNECTOR, *args],
        env=clean_env(**{"CONNECTOR_HTTP_HOST": "127.0.0.1", "CONNECTOR_HTTP_PORT": "0", **env}),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_config_line(result: subprocess.CompletedProcess[str]) -> str:
    """The exit code is 2 and stderr's last line is the configuration error (a service that
    started logs before it; nothing after), with no traceback anywhere."""
    assert result.returncode == EXIT_CONFIG, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "configuration error" in line]
    assert len(errors) == 1, result.stderr[-2000:]
    assert result.stderr.rstrip().endswith(errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis that wants a password, as production ones do."""
    server = RedisServer(tmp_path_factory.mktemp("locked"), ["--requirepass", PASSWORD])
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"CONNECTOR_REDIS_URI": "redis://cache:6379/0"},
            "CONNECTOR_REDIS_URI: unknown setting (did you mean CONNECTOR_REDIS_URL?)",
        ),
        (
            {"CONNECTOR_API_URL": "ws://gateway:99999/v1/ws"},
            "CONNECTOR_API_URL: the port must be a number from 1 to 65535",
        ),
        (
            {"CONNECTOR_REDIS_URL": "redis://cache:abc/0"},
            "CONNECTOR_REDIS_URL: the port must be a number from 1 to 65535",
        ),
        (
            {"CONNECTOR_PING_INTERVAL": "inf"},
            "CONNECTOR_PING_INTERVAL: expected a finite number",
        ),
        (
            {"CONNECTOR_PING_TIMEOUT": "1e308"},
            "CONNECTOR_PING_TIMEOUT: expected less than or equal to",
        ),
        (
            {"CONNECTOR_MAX_FRAME_BYTES": "1e308"},
            "CONNECTOR_MAX_FRAME_BYTES: expected a valid integer",
        ),
        (
            {"CONNECTOR_BUFFER_MAX_EVENTS": "100000000000000000000"},
            "CONNECTOR_BUFFER_MAX_EVENTS: expected less than or equal to",
        ),
    ],
)
@pytest.mark.parametrize("command", [("run",), ("run", "--print-config")])
def test_settings_that_can_never_work_stop_start_up(
    command: tuple[str, ...], env: dict[str, str], expected: str
) -> None:
    line = one_config_line(connector(*command, **env))
    assert expected in line


def test_print_config_shows_sources_and_flags_unknown_variables() -> None:
    result = connector(
        "run", "--print-config", "--ping-interval", "2",
        CONNECTOR_MODE="backtest", CONNECTOR_STREAM_PRFIX="md2",
    )  # fmt: skip
    assert "CONNECTOR_STREAM_PRFIX: unknown setting (did you mean CONNECTOR_STREAM_PREFIX?)" in (
        one_config_line(result)
    )
    shown = json.loads(result.stdout)  # still printed: the user sees what would have run
    assert shown["sources"]["ping_interval"] == "--ping-interval"
    assert shown["sources"]["mode"] == "CONNECTOR_MODE"
    assert shown["sources"]["stream_prefix"] == "default"
    assert shown["unknown_variables"] == {"CONNECTOR_STREAM_PRFIX": "CONNECTOR_STREAM_PREFIX"}
    assert shown["settings"]["ping_interval"] == 2.0


def test_kubernetes_service_links_are_not_unknown_settings() -> None:
    """A Service named "connector" gives every pod CONNECTOR_PORT=tcp://… and friends."""
    result = connector(
        "run", "--print-config",
        CONNECTOR_PORT="tcp://10.0.0.7:9464", CONNECTOR_SERVICE_HOST="10.0.0.7",
        CONNECTOR_PORT_9464_TCP_ADDR="10.0.0.7",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:{port}/0", "Redis refused the credentials"),
        ("redis://:wrong@127.0.0.1:{port}/0", "Redis refused the credentials"),
        (f"redis://:{PASSWORD}@127.0.0.1:{{port}}/99", "Redis has no such database"),
    ],
)
@pytest.mark.parametrize("command", ["run", "consume"])
def test_redis_refusing_us_for_good_is_a_configuration_error(
    locked_redis: RedisServer, command: str, url: str, expected: str
) -> None:
    args = ("consume", "--group", "risk") if command == "consume" else ("run",)
    line = one_config_line(connector(*args, CONNECTOR_REDIS_URL=url.format(port=locked_redis.port)))
    assert f"CONNECTOR_REDIS_URL: {expected}" in line
    assert "wrong" not in line
    assert PASSWORD not in line


def test_a_busy_http_port_is_a_configuration_error(
    locked_redis: RedisServer,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = connector(
            "run",
            CONNECTOR_HTTP_PORT=str(port),
            CONNECTOR_REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:{locked_redis.port}/0",
        )
    line = one_config_line(result)
    assert f"CONNECTOR_HTTP_PORT: cannot serve on 127.0.0.1:{port}" in line
    assert "Choose another port" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--group", "risk", "--types", "candel"), "--types: 'candel' is not a stream type"),
        (("--group", "bad group"), "--group: 'bad group' must be 1-64 characters"),
        (("--group", "risk", "--max-events", "-1"), "cannot be negative"),
        (("--group", "risk", "--batch", "0"), "--batch: must be at least 1"),
        (
            ("--group", "risk", "--redis-url", "redis://app:Zm9vSECRET/x@127.0.0.1:1/0"),
            "--redis-url: the password holds",
        ),
    ],
)
def test_consume_refuses_what_could_never_work(args: tuple[str, ...], expected: str) -> None:
    line = one_config_line(connector("consume", *args))
    assert expected in line
    assert "SECRET" not in line


def test_consume_waits_for_redis_and_for_streams_saying_so(tmp_path: Path) -> None:
    """Transient, so not errors: Redis not answering, and no streams under the prefix yet. Both
    are said once each while waiting; then the consumer runs and stops after exactly 3."""
    port = free_port()
    process = subprocess.Popen(
        [
            *CONNECTOR,
            "consume",
            "--group",
            "risk",
            "--prefix",
            "demo",
            "--max-events",
            "3",
            "--print",
            "--types",
            "candle",
            "--start-id",
            "0",
        ],
        env=clean_env(
            CONNECTOR_REDIS_URL=f"redis://127.0.0.1:{port}/0", CONNECTOR_LOG_FORMAT="json"
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    server: RedisServer | None = None
    try:
        assert process.stderr is not None
        assert process.stdout is not None
        seen = [json.loads(process.stderr.readline())["msg"]]
        assert seen[0].startswith("Redis is not answering"), seen
        server = RedisServer(tmp_path / "redis", port=port)
        server.start()
        while "no streams under this prefix" not in seen[-1]:
            seen.append(json.loads(process.stderr.readline())["msg"])
        sim = subprocess.run(
            [
                *CONNECTOR,
                "demo",
                "--redis-url",
                server.url,
                "--steps",
                "20",
                "--ack-mode",
                "immediate",
            ],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert sim.returncode == 0, sim.stderr[-2000:]
        assert process.wait(60) == 0
        printed = [line for line in process.stdout.read().splitlines() if line.strip()]
        assert len(printed) == 3
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if server is not None:
            server.stop()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("simulate", "--steps", "-3"), "steps must be >= 0"),
        (("bench", "--scenario", "nope"), "unknown scenario(s) nope"),
    ],
)
def test_other_commands_follow_the_same_rules(args: tuple[str, ...], expected: str) -> None:
    result = connector(*args)
    assert result.returncode == EXIT_CONFIG, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert expected in result.stderr.strip().splitlines()[-1]
