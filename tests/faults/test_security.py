"""Security end to end: wss:// with a private CA, rediss:// against a TLS redis-server, Redis ACL
users, and secrets that never leak into logs, metrics, errors or printed configuration."""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from redis.asyncio import Redis

from connector.sim import SimConfig, Simulator
from tests.support.harness import run_connector, wait_until
from tests.support.processes import PIPE, clean_env, connector_process, run_command
from tests.support.redis_server import RedisServer, free_port


@dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A throwaway CA and a certificate for 127.0.0.1/localhost signed by it."""
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1", "localhost")
    paths = Pki(tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem")
    authority.cert_pem.write_to_path(str(paths.ca))
    for index, blob in enumerate(issued.cert_chain_pems):
        blob.write_to_path(str(paths.cert), append=index > 0)
    issued.private_key_pem.write_to_path(str(paths.key))
    return paths


@pytest.fixture
def tls_redis(tmp_path: Path, pki: Pki) -> Iterator[RedisServer]:
    port = free_port()
    server = RedisServer(
        tmp_path / "tls-redis",
        [
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(pki.cert),
            "--tls-key-file",
            str(pki.key),
            "--tls-ca-cert-file",
            str(pki.ca),
            "--tls-auth-clients",
            "no",
        ],
        port=port,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(
        tmp_path / "acl-redis",
        ["--user", "default", "off", "--user", "app", "on", ">pw-SECRET-456", "~*", "&*", "+@all"],
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def backtest(**overrides: object) -> SimConfig:
    return SimConfig(mode="backtest", symbols=("AAPL", "MSFT"), steps=20, **overrides)  # type: ignore[arg-type]


async def test_wss_with_a_custom_ca(redis_server: RedisServer, pki: Pki) -> None:
    async with Simulator(backtest(tls_cert=pki.cert, tls_key=pki.key)) as sim:
        assert sim.url.startswith("wss://")
        async with run_connector(sim, redis_server.url, mode="backtest", ws_ca_file=pki.ca) as app:
            assert await app.exit_code() == 0
    assert sim.record.outcome == "completed"


async def test_wss_refuses_a_certificate_it_cannot_verify(
    redis_server: RedisServer, pki: Pki
) -> None:
    async with (
        Simulator(backtest(tls_cert=pki.cert, tls_key=pki.key)) as sim,
        run_connector(sim, redis_server.url, mode="backtest") as app,  # system CAs only
    ):
        await wait_until(
            lambda: app.sample("connector_connect_failures_total", reason="other") >= 2
        )
        assert sim.record.connections == []
        assert app.sample("connector_connected") == 0


async def test_rediss_against_a_tls_redis_server(tls_redis: RedisServer, pki: Pki) -> None:
    url = f"rediss://127.0.0.1:{tls_redis.port}/0"
    async with (
        Simulator(backtest()) as sim,
        run_connector(sim, url, mode="backtest", redis_ca_file=pki.ca) as app,
    ):
        assert await app.exit_code() == 0
    client = Redis.from_url(url, ssl_ca_certs=str(pki.ca))
    try:
        assert await client.xlen("md:{AAPL}:candle:1m") == 20
    finally:
        await client.aclose()


async def test_redis_acl_user_and_password_file(acl_redis: RedisServer, tmp_path: Path) -> None:
    password_file = tmp_path / "redis-password"
    password_file.write_text("pw-SECRET-456\n")
    async with (
        Simulator(backtest()) as sim,
        run_connector(
            sim,
            acl_redis.url,
            mode="backtest",
            redis_username="app",
            redis_password_file=password_file,
        ) as app,
    ):
        assert await app.exit_code() == 0
    client = Redis.from_url(acl_redis.url, username="app", password="pw-SECRET-456")
    try:
        assert await client.xlen("md:{MSFT}:candle:1m") == 20
    finally:
        await client.aclose()


async def test_secrets_never_appear_in_logs_metrics_errors_or_config(
    acl_redis: RedisServer, tmp_path: Path
) -> None:
    api_key = "sk-SECRET-123-do-not-print"
    redis_url = f"redis://app:pw-SECRET-456@127.0.0.1:{acl_redis.port}/0"
    secrets = (api_key, "pw-SECRET-456")
    port = free_port()
    env = clean_env(
        CONNECTOR_API_KEY=api_key,
        CONNECTOR_REDIS_URL=redis_url,
        CONNECTOR_HTTP_HOST="127.0.0.1",
        CONNECTOR_HTTP_PORT=str(port),
        CONNECTOR_LOG_LEVEL="DEBUG",
        CONNECTOR_LOG_FORMAT="json",
        CONNECTOR_RECONNECT_MAX_DELAY="0.2",
    )
    seen: list[str] = []
    # The server wants another key: every connection attempt is refused with 401.
    async with Simulator(SimConfig(mode="live", api_key="the-right-key")) as sim:
        env["CONNECTOR_API_URL"] = sim.url
        async with connector_process("run", env=env, stdout=PIPE) as process:
            await sim.record.wait_until(lambda: len(sim.record.auth_failures) >= 2)
            for path in ("/metrics", "/readyz", "/healthz"):
                seen.append(await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}{path}"))
            process.send_signal(signal.SIGTERM)
            out, err = await asyncio.wait_for(process.communicate(), 30)
    seen += [out.decode(), err.decode()]
    _, printed_out, printed_err = await run_command("run", "--print-config", env=env)
    seen += [printed_out, printed_err]
    env["CONNECTOR_PING_INTERVAL"] = "-1"  # a configuration error, with the secrets still set
    code, failed_out, failed_err = await run_command("run", env=env)
    seen += [failed_out, failed_err]
    assert code == 2
    everything = "\n".join(seen)
    assert "refused the credentials" in everything  # the auth failure itself was logged
    assert "connector_connect_failures_total" in everything
    for secret in secrets:
        assert secret not in everything
    assert json.loads(printed_out)["settings"]["api_key"] == "***"


def fetch(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as error:  # /readyz answers 503 while not connected
        return str(error.read().decode())
