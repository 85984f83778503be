"""Secrets and the network at the edges: redirects, URLs that hide a password, rotated secret
files, TLS that cannot be half turned off. Each case is one the security audit found."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from connector.config import ConfigError, load_settings
from connector.sim import SimConfig, Simulator
from tests.support.harness import run_connector, wait_until
from tests.support.processes import clean_env, run_command
from tests.support.redis_server import RedisServer


@contextlib.asynccontextmanager
async def redirecting(location: str | None = None) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A server answering every request with ``302 Location: location``, by default another
    origin (``localhost`` on a second port) that records every request head it gets: where a
    followed redirect would land."""
    heads: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.close()

    elsewhere = await asyncio.start_server(record, "127.0.0.1", 0)
    target = location or f"ws://localhost:{elsewhere.sockets[0].getsockname()[1]}/v1/ws"

    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                f"HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\n\r\n".encode()
            )
            await writer.drain()
        writer.close()

    first = await asyncio.start_server(redirect, "127.0.0.1", 0)
    try:
        yield first.sockets[0].getsockname()[1], heads
    finally:
        for server in (first, elsewhere):
            server.close()
            await server.wait_closed()


async def test_a_redirect_at_the_upgrade_is_not_followed_and_the_key_goes_nowhere(
    redis_server: RedisServer,
) -> None:
    """With X-API-Key (not stripped across origins by websockets), a followed redirect would hand
    the key to whatever host the redirect names."""
    async with (
        redirecting() as (port, heads),
        run_connector(
            f"ws://127.0.0.1:{port}/v1/ws",
            redis_server.url,
            api_key="sk-SECRET-redirect-777",
            api_key_header="x-api-key",
        ) as app,
    ):
        await wait_until(
            lambda: app.sample("connector_connect_failures_total", reason="protocol") >= 3
        )
    assert heads == []  # the other origin never saw a request, let alone the key


@pytest.mark.parametrize("target", ["ws://127.0.0.1:99999/v1/ws", "ws://[::1/v1/ws", "::"])
async def test_a_malformed_redirect_is_a_connection_failure_not_a_crash(
    redis_server: RedisServer, target: str
) -> None:
    async with (
        redirecting(target) as (port, _),
        run_connector(f"ws://127.0.0.1:{port}/v1/ws", redis_server.url) as app,
    ):
        await wait_until(
            lambda: app.sample("connector_connect_failures_total", reason="protocol") >= 3
        )
        assert not app.task.done()  # still running, retrying with backoff
    assert await app.exit_code() == 0  # stopped when asked, cleanly


@pytest.mark.parametrize(
    "password", ["Zm9vSECRET/YmFy+c2VjcmV0", "pw#SECRET1", "pw?SECRET2", "p@SECRET3"]
)
async def test_a_password_that_needs_escaping_is_never_shown(
    redis_server: RedisServer, password: str
) -> None:
    """Generated passwords hold '/' and '+': unescaped in a URL they end the authority for a
    URL parser. Refused at start-up (exit 2) with a message that shows no part of it."""
    url = f"redis://app:{password}@127.0.0.1:{redis_server.port}/0"
    env = clean_env(CONNECTOR_REDIS_URL=url, CONNECTOR_API_URL=f"ws://svc:{password}@h:1/v1/ws")
    code, out, err = await run_command("run", "--print-config", env=env)
    assert code == 2
    assert "percent-encode" in err
    assert "SECRET" not in out + err
    code, out, err = await run_command("run", env=env)
    assert code == 2
    assert "SECRET" not in out + err


def test_percent_encoded_passwords_work_and_are_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONNECTOR_REDIS_URL", "redis://app:Zm9v%2FSECRET%3Fx@127.0.0.1:1/0")
    settings = load_settings()
    assert settings.describe()["redis_url"] == "redis://app:***@127.0.0.1:1/0"
    assert "Zm9v%2FSECRET%3Fx" in settings.secrets()


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"CONNECTOR_REDIS_URL": "rediss://h:6380/0?ssl_cert_reqs=none"}, "ssl_cert_reqs"),
        ({"CONNECTOR_REDIS_URL": "rediss://h:6380/0?ssl_check_hostname=false"}, "ssl_check"),
        (
            {"CONNECTOR_REDIS_URL": "redis://h:6379/0", "CONNECTOR_REDIS_CA_FILE": "/etc/hosts"},
            "CONNECTOR_REDIS_CA_FILE is only used with a rediss://",
        ),
    ],
)
def test_tls_cannot_be_half_turned_off(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_an_api_key_a_header_cannot_carry_is_refused_without_showing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("sk-ROTATED-SECRET\u2013777")  # an en dash: a word processor's
    monkeypatch.setenv("CONNECTOR_API_KEY_FILE", str(key_file))
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert "CONNECTOR_API_KEY_FILE: the API key holds characters" in str(refused.value)
    assert "SECRET" not in str(refused.value)


@pytest.fixture
def acl_redis(tmp_path: Path) -> RedisServer:
    return RedisServer(
        tmp_path / "acl",
        ["--user", "default", "off", "--user", "rot", "on", ">pw-A-first", "~*", "&*", "+@all"],
    )


async def test_a_rotated_redis_password_reaches_every_connection(
    acl_redis: RedisServer, tmp_path: Path
) -> None:
    """The password file is rotated and the old password revoked, every connection killed:
    writes, lease renewals and consumer-ack checks all carry on with the new one."""
    acl_redis.start()
    try:
        password_file = tmp_path / "redis-password"
        password_file.write_text("pw-A-first")
        admin = Redis.from_url(acl_redis.url, username="rot", password="pw-A-first")
        config = SimConfig(mode="live", symbols=("AAPL",), rate=300.0)
        async with (
            Simulator(config) as sim,
            run_connector(
                sim,
                acl_redis.url,
                redis_username="rot",
                redis_password_file=password_file,
                ack_mode="consumer",
                consumer_groups="dash",
            ) as app,
        ):
            await wait_until(lambda: app.sample("connector_published_total", type="quote") > 20)
            await admin.execute_command("ACL", "SETUSER", "rot", "resetpass", ">pw-B-second")
            password_file.write_text("pw-B-second")
            await admin.execute_command("CLIENT", "KILL", "USER", "rot")  # admin's own too
            published = app.sample("connector_published_total", type="quote")
            await wait_until(
                lambda: app.sample("connector_published_total", type="quote") > published + 200
            )
            lease = app.connector.lease
            assert lease is not None
            renewed = lease._confirmed_at
            await wait_until(lambda: lease._confirmed_at > renewed)
            assert lease.confirmed()
            assert (await app.connector.readiness()).ready
        await admin.aclose()
    finally:
        acl_redis.stop()


@pytest.mark.parametrize("url", ["redis://127.0.0.1:99999/0", "redis://127.0.0.1:abc/0"])
async def test_a_port_that_is_no_port_is_a_configuration_error(url: str) -> None:
    code, _, err = await run_command("run", env=clean_env(CONNECTOR_REDIS_URL=url))
    assert code == 2, err
    assert "CONNECTOR_REDIS_URL: the port must be a number from 1 to 65535" in err
    assert "Traceback" not in err
