"""The server side: paths, auth, no greeting, controls over HTTP, pings, drops, graceful stop."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from connector.sim import SimConfig, Simulator

LIMIT = 5.0


def idle(**changes: Any) -> SimConfig:
    """A backtest that never starts (it waits for two clients): only what a test provokes."""
    base: dict[str, Any] = {"min_clients": 2, "shutdown_grace": 0.01, "close_timeout": 0.5}
    base.update(changes)
    return SimConfig(**base)


async def recv(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(LIMIT):
        message = await ws.recv()
    frame = orjson.loads(message)
    assert isinstance(frame, dict)
    return frame


async def wait(sim: Simulator, predicate: Any) -> None:
    async with asyncio.timeout(LIMIT):
        await sim.wait_for(predicate)


async def http_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    async with asyncio.timeout(LIMIT):
        data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


async def test_both_paths_upgrade_and_others_are_404() -> None:
    async with Simulator(idle()) as sim:
        for url in (sim.url, sim.docs_url):
            async with connect(url):
                pass
        assert sim.url.endswith("/v1/ws")
        assert sim.docs_url.endswith("/ws")
        with pytest.raises(InvalidStatus) as caught:
            async with connect(sim.url.replace("/v1/ws", "/v2/ws")):
                pass
        assert caught.value.response.status_code == 404
    assert [c.path for c in sim.record.connections] == ["/v1/ws", "/ws"]


async def test_auth_rejects_before_the_upgrade_and_accepts_both_header_styles() -> None:
    async with Simulator(idle(api_key="s3cret")) as sim:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "nope"}):
            with pytest.raises(InvalidStatus) as caught:
                async with connect(sim.url, additional_headers=headers):
                    pass
            assert caught.value.response.status_code == 401
        async with connect(sim.url, additional_headers={"Authorization": "Bearer s3cret"}):
            pass
        async with connect(sim.docs_url, additional_headers={"X-API-Key": "s3cret"}):
            pass
    failures = sim.record.auth_failures
    assert [(f.reason, f.header) for f in failures] == [
        ("missing credentials", None),
        ("wrong key", "authorization"),
        ("wrong key", "x-api-key"),
    ]
    assert [c.auth for c in sim.record.connections] == ["authorization", "x-api-key"]


async def test_no_greeting_after_the_upgrade() -> None:
    async with Simulator(idle()) as sim, connect(sim.url) as ws:
        await wait(sim, lambda: sim.client_count == 1)
        sim.send_json_ping()
        # The first frame is the ping we provoked: nothing was sent on connect.
        assert (await recv(ws))["type"] == "ping"
        assert sim.record.sent_count == 1


async def test_graceful_stop_sends_disconnecting_then_closes_with_1001() -> None:
    sim = Simulator(idle())
    await sim.start()
    async with connect(sim.url) as ws:
        await wait(sim, lambda: sim.client_count == 1)
        stopping = asyncio.create_task(sim.stop())
        frame = await recv(ws)
        assert frame["type"] == "connection"
        assert frame["event"] == "DISCONNECTING"
        assert "event_id" not in frame
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert ws.close_code == 1001
        await stopping
    assert sim.record.connections[0].close_code == 1001
    assert sim.record.outcome == "stopped"
    assert await sim.wait_finished() == "stopped"


async def test_drop_clients_aborts_without_a_close_frame() -> None:
    async with Simulator(idle()) as sim, connect(sim.url) as ws:
        await wait(sim, lambda: sim.client_count == 1)
        assert sim.drop_clients() == 1
        with pytest.raises(ConnectionClosedError):
            await recv(ws)
        assert ws.close_code == 1006  # abnormal closure: no close frame came
        await wait(sim, lambda: sim.client_count == 0)


async def test_drop_after_cuts_a_client_once() -> None:
    config = SimConfig(mode="live", rate=2000.0, drop_after=5, shutdown_grace=0.01)
    async with Simulator(config) as sim:
        async with connect(sim.url) as ws:
            for _ in range(5):
                await recv(ws)
            # Exactly five frames, then the TCP connection dies without a close frame.
            with pytest.raises(ConnectionClosedError):
                await recv(ws)
        # max_queue=None: this client keeps reading while it closes, so its close is prompt.
        async with connect(sim.url, max_queue=None) as ws:
            for _ in range(20):
                await recv(ws)
    assert [c.close_code for c in sim.record.connections] == [1006, 1000]


async def test_protocol_pings_go_unanswered_when_configured_and_switchable() -> None:
    async with Simulator(idle(answer_pings=False)) as sim, connect(sim.url) as ws:
        await wait(sim, lambda: sim.client_count == 1)
        unanswered = asyncio.ensure_future(await ws.ping())
        # Once the ping frame we provoke arrives, any pong sent before it has arrived too
        # (one TCP stream), so this is a barrier rather than a timing guess.
        sim.send_json_ping()
        assert (await recv(ws))["type"] == "ping"
        assert not unanswered.done()

        sim.set_answer_pings(True)
        answered = await ws.ping()
        async with asyncio.timeout(LIMIT):
            await answered
        assert unanswered.done()  # a pong acknowledges every earlier ping as well


async def test_protocol_pings_are_answered_by_default() -> None:
    async with Simulator(idle()) as sim, connect(sim.url) as ws:
        async with asyncio.timeout(LIMIT):
            await (await ws.ping())


async def test_controls_over_http() -> None:
    async with Simulator(idle()) as sim, connect(sim.url) as ws:
        await wait(sim, lambda: sim.client_count == 1)
        status, headers, body = await http_get(
            sim.port, "/control/send_error?code=LIQUIDATION&message=margin%20gone"
        )
        assert status == 200
        assert headers["content-type"] == "application/json"
        assert orjson.loads(body) == {"ok": True, "control": "send_error"}
        error = await recv(ws)
        assert error["type"] == "error"
        assert error["code"] == "LIQUIDATION"
        assert error["message"] == "margin gone"

        status, _, body = await http_get(sim.port, "/control/rate_limit?event=RATE_LIMIT_HIT")
        assert status == 200
        limit = await recv(ws)
        assert limit["type"] == "rate_limit"
        assert limit["event"] == "RATE_LIMIT_HIT"
        assert limit["requests_remaining"] == 0
        assert limit["reset_at"].endswith("Z")

        status, _, body = await http_get(sim.port, "/control/set_answer_pings?value=maybe")
        assert status == 400
        status, _, _ = await http_get(sim.port, "/control/launch_rockets")
        assert status == 404
        status, _, _ = await http_get(sim.port, "/elsewhere")
        assert status == 404

        status, _, body = await http_get(sim.port, "/report")
        report = orjson.loads(body)
        assert status == 200
        assert report["counts"]["sent"] == 2
        assert report["counts"]["connections"] == 1
        assert sim.record.controls == ["send_error", "rate_limit"]


async def test_shutdown_over_http() -> None:
    sim = Simulator(idle())
    await sim.start()
    async with connect(sim.url) as ws:
        await wait(sim, lambda: sim.client_count == 1)
        status, _, body = await http_get(sim.port, "/control/shutdown")
        assert status == 200
        assert orjson.loads(body)["stopping"] is True
        assert (await recv(ws))["event"] == "DISCONNECTING"
        async with asyncio.timeout(LIMIT):
            await sim.wait_stopped()
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert ws.close_code == 1001


async def http_get_with(port: int, path: str, header: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{header}Connection: close\r\n\r\n"
    writer.write(request.encode())
    async with asyncio.timeout(LIMIT):
        data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return int(data.split()[1])


async def test_controls_need_the_key_when_one_is_configured() -> None:
    async with Simulator(idle(api_key="k")) as sim:
        assert await http_get_with(sim.port, "/control/shutdown", "") == 401
        assert await http_get_with(sim.port, "/report", "X-API-Key: wrong\r\n") == 401
        assert await http_get_with(sim.port, "/report", "X-API-Key: k\r\n") == 200
        assert await http_get_with(sim.port, "/report", "Authorization: Bearer k\r\n") == 200
        assert await http_get_with(sim.port, "/nowhere", "X-API-Key: k\r\n") == 404
    assert [f.path for f in sim.record.auth_failures] == ["/control/shutdown", "/report"]
    assert not sim.record.controls


async def test_report_is_json_serialisable() -> None:
    async with Simulator(idle(api_key="k")) as sim:
        with pytest.raises(InvalidStatus):
            async with connect(sim.url):
                pass
        report = sim.report(frames=True)
    text = orjson.dumps(report)
    assert b'"api_key":"***"' in text
    assert b"k" not in orjson.dumps(report["auth_failures"])
    assert report["counts"]["auth_failures"] == 1
