"""The backtest engine end to end, through a real WebSocket client on loopback.

Every wait is on a condition (a frame received, the record changed), bounded by asyncio.timeout
so a broken simulator fails fast instead of hanging.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from connector.sim import SimConfig, Simulator

LIMIT = 5.0  # seconds any single wait may take before the test fails


def fast(**changes: Any) -> SimConfig:
    base: dict[str, Any] = {
        "steps": 3,
        "fill_every": 0,
        "other_every": 0,
        "shutdown_grace": 0.01,
        "close_timeout": 0.5,
    }
    base.update(changes)
    return SimConfig(**base)


def ack(ids: list[str], **override: Any) -> str:
    frame: dict[str, Any] = {
        "type": "event_ack",
        "correlation_id": str(uuid.uuid4()),
        "events_processed": ids,
        "timestamp": int(time.time() * 1000),
    }
    frame.update(override)
    return orjson.dumps(frame).decode()


async def recv(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(LIMIT):
        message = await ws.recv()
    frame = orjson.loads(message)
    assert isinstance(frame, dict)
    return frame


async def recv_n(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [await recv(ws) for _ in range(count)]


async def wait(sim: Simulator, predicate: Any) -> None:
    async with asyncio.timeout(LIMIT):
        await sim.wait_for(predicate)


async def finished(sim: Simulator) -> str:
    async with asyncio.timeout(LIMIT):
        return await sim.wait_finished()


def sorted_everywhere(value: Any) -> bool:
    if isinstance(value, dict):
        keys = list(value)
        return keys == sorted(keys) and all(sorted_everywhere(v) for v in value.values())
    if isinstance(value, list):
        return all(sorted_everywhere(v) for v in value)
    return True


async def ack_everything_until_complete(ws: ClientConnection) -> list[dict[str, Any]]:
    """A correct client: ack every id as it arrives; stop after backtest_complete."""
    seen = []
    while True:
        async with asyncio.timeout(LIMIT):
            message = await ws.recv()
        if isinstance(message, bytes):
            continue
        try:
            frame = orjson.loads(message)
        except orjson.JSONDecodeError:
            continue
        seen.append(frame)
        event_id = frame.get("event_id", frame.get("id"))
        if isinstance(event_id, str):
            await ws.send(ack([event_id]))
        if frame.get("type") == "backtest_complete":
            return seen


async def test_sorted_keys_and_top_level_event_id() -> None:
    async with Simulator(fast(steps=2)) as sim, connect(sim.url) as ws:
        frames = await ack_everything_until_complete(ws)
        assert await finished(sim) == "completed"
        await wait(sim, lambda: sim.record.complete_acked)
    assert [f["type"] for f in frames] == ["candle"] * 6 + ["backtest_complete"]
    assert [f["event_id"] for f in frames] == [f"evt-{n}" for n in range(1, 8)]
    for frame in frames:
        assert sorted_everywhere(frame)
        assert "id" not in frame
        assert frame["timestamp"].endswith("Z")
    first = frames[0]["bar"]
    assert first["timestamp"] == "2024-01-01T00:00:00Z"
    assert frames[3]["bar"]["timestamp"] == "2024-01-01T00:01:00Z"
    for frame in frames[:6]:
        for field in ("open", "high", "low", "close", "volume"):
            assert isinstance(frame["bar"][field], str)
    assert sim.record.completed
    assert sim.record.complete_acked
    assert not sim.record.halted


async def test_a_step_waits_for_every_id_across_several_acks() -> None:
    async with Simulator(fast(steps=2)) as sim, connect(sim.url) as ws:
        step0 = await recv_n(ws, 3)
        ids = [f["event_id"] for f in step0]
        assert sim.pending_ids == frozenset(ids)

        await ws.send(ack([ids[2]]))
        await wait(sim, lambda: len(sim.record.acks) == 1)
        assert sim.pending_ids == {ids[0], ids[1]}

        # Unknown and duplicate ids are no-ops.
        await ws.send(ack(["evt-999", ids[2], "unknown"]))
        await ws.send(ack([]))
        await wait(sim, lambda: len(sim.record.acks) == 3)
        assert sim.pending_ids == {ids[0], ids[1]}
        assert len(sim.record.steps) == 1

        await ws.send(ack([ids[0], ids[1]]))
        step1 = await recv_n(ws, 3)
        assert [f["event_id"] for f in step1] == ["evt-4", "evt-5", "evt-6"]
        assert sim.record.steps[0].completed_at is not None
        assert not sim.record.steps[0].timed_out


async def test_acks_from_different_clients_release_a_step() -> None:
    async with (
        Simulator(fast(steps=2, min_clients=2)) as sim,
        connect(sim.url) as first,
        connect(sim.docs_url) as second,
    ):
        ids = [f["event_id"] for f in await recv_n(first, 3)]
        assert [f["event_id"] for f in await recv_n(second, 3)] == ids
        await first.send(ack([ids[1]]))
        await wait(sim, lambda: len(sim.record.acks) == 1)
        await second.send(ack([ids[2], ids[0]]))
        assert (await recv(first))["event_id"] == "evt-4"
        assert (await recv(second))["event_id"] == "evt-4"
        assert {a.client_id for a in sim.record.acks} == {1, 2}


async def test_malformed_acks_are_rejected_and_do_not_release() -> None:
    async with Simulator(fast(steps=2)) as sim, connect(sim.url) as ws:
        ids = [f["event_id"] for f in await recv_n(ws, 3)]
        missing = orjson.dumps({"type": "event_ack", "events_processed": ids, "timestamp": 1})
        await ws.send(missing.decode())
        await ws.send(ack(ids, timestamp=time.time() * 1000))  # a float timestamp
        await ws.send(ack(ids, timestamp=True))
        await ws.send("not json at all")
        await wait(sim, lambda: len(sim.record.rejected_acks) == 3)
        await wait(sim, lambda: sim.record.ignored_client_frames == 1)
        assert sim.pending_ids == frozenset(ids)
        assert sim.record.acks == []
        reasons = [r.reason for r in sim.record.rejected_acks]
        assert "correlation_id" in reasons[0]
        assert "float" in reasons[1]
        assert "bool" in reasons[2]
        await ws.send(ack(ids))
        assert (await recv(ws))["event_id"] == "evt-4"


async def test_halts_before_the_first_good_ack() -> None:
    config = fast(steps=20, step_timeout=0.02, halt_before_first_ack=3, halt_after_timeouts=1)
    async with Simulator(config) as sim, connect(sim.url) as ws:
        frames = [await recv(ws) for _ in range(10)]
        assert await finished(sim) == "halted"
        # Like the gateway: an id-less backtest_complete, and the socket stays open.
        assert frames[-1]["type"] == "backtest_complete"
        assert set(frames[-1]) == {"type", "broker", "timestamp"}
        assert frames[-1]["broker"] == "tektii"
        async with asyncio.timeout(LIMIT):
            await (await ws.ping())
        assert sim.record.frames_of_type("connection") == []  # no DISCONNECTING, no close
    record = sim.record
    assert record.halted
    assert not record.completed
    assert len(record.steps) == 3
    assert all(step.timed_out for step in record.steps)
    assert record.timeouts == 3
    assert [f.event_id for f in record.frames_of_type("backtest_complete")] == [None]


async def test_halts_after_consecutive_timeouts_once_acked() -> None:
    # The timeout must leave room for the acks to arrive, even on a busy CI machine.
    config = fast(steps=20, step_timeout=1.0, halt_before_first_ack=50, halt_after_timeouts=2)
    async with Simulator(config) as sim, connect(sim.url) as ws:
        ids = [f["event_id"] for f in await recv_n(ws, 3)]
        await ws.send(ack(ids))
        assert await finished(sim) == "halted"
    assert [step.timed_out for step in sim.record.steps] == [False, True, True]


async def test_a_released_step_resets_the_timeout_count() -> None:
    config = fast(steps=5, step_timeout=1.0, halt_before_first_ack=1, halt_after_timeouts=2)
    async with Simulator(config) as sim, connect(sim.url) as ws:
        # Ack the even steps only: no two timeouts in a row, so the run completes.
        for step in range(5):
            ids = [f["event_id"] for f in await recv_n(ws, 3)]
            if step % 2 == 0:
                await ws.send(ack(ids))
        complete = await recv(ws)
        assert complete["type"] == "backtest_complete"
        await ws.send(ack([complete["event_id"]]))
        assert await finished(sim) == "completed"
    assert [step.timed_out for step in sim.record.steps] == [False, True, False, True, False]
    assert sim.record.timeouts == 2


async def test_backtest_complete_must_be_acknowledged() -> None:
    async with Simulator(fast(steps=1)) as sim, connect(sim.url) as ws:
        await ws.send(ack([f["event_id"] for f in await recv_n(ws, 3)]))
        complete = await recv(ws)
        assert complete["type"] == "backtest_complete"
        await wait(sim, lambda: sim.pending_ids == {complete["event_id"]})
        assert not sim.finished
        await ws.send(ack([complete["event_id"]]))
        assert await finished(sim) == "completed"
        assert sim.record.complete_acked


async def test_unacknowledged_backtest_complete_still_completes() -> None:
    async with Simulator(fast(steps=1, complete_timeout=0.02)) as sim, connect(sim.url) as ws:
        await ws.send(ack([f["event_id"] for f in await recv_n(ws, 3)]))
        assert (await recv(ws))["type"] == "backtest_complete"
        assert await finished(sim) == "completed"
    assert sim.record.completed
    assert not sim.record.complete_acked


async def test_backtest_complete_without_an_id() -> None:
    async with Simulator(fast(steps=1, complete_with_id=False)) as sim, connect(sim.url) as ws:
        await ws.send(ack([f["event_id"] for f in await recv_n(ws, 3)]))
        complete = await recv(ws)
        assert set(complete) == {"type", "broker", "timestamp"}
        assert await finished(sim) == "completed"


async def test_after_a_clean_end_the_socket_stays_open() -> None:
    async with Simulator(fast(steps=1)) as sim, connect(sim.url) as ws:
        await ws.send(ack([f["event_id"] for f in await recv_n(ws, 3)]))
        complete = await recv(ws)
        assert set(complete) == {"type", "broker", "event_id", "timestamp"}
        assert list(complete) == sorted(complete)
        await ws.send(ack([complete["event_id"]]))
        assert await finished(sim) == "completed"
        # No DISCONNECTING, no close: the client has to leave by itself.
        async with asyncio.timeout(LIMIT):
            await (await ws.ping())
        assert sim.record.frames_of_type("connection") == []
        assert sim.client_count == 1


async def test_events_emitted_while_nobody_listens_are_never_resent() -> None:
    config = fast(steps=50, step_timeout=0.02, halt_before_first_ack=100)
    async with Simulator(config) as sim:
        async with connect(sim.url) as ws:
            first_ids = [f["event_id"] for f in await recv_n(ws, 3)]
        await wait(sim, lambda: any(f.clients == 0 and f.event_id for f in sim.record.sent))
        async with connect(sim.url) as ws:
            frame = await recv(ws)
            unseen = {f.event_id for f in sim.record.sent if f.clients == 0}
            assert frame["event_id"] not in unseen
            assert frame["event_id"] not in first_ids
            assert int(frame["event_id"].removeprefix("evt-")) > 3


async def test_fill_groups_other_events_quotes_and_malformed_frames_join_the_step() -> None:
    config = fast(steps=2, fill_every=1, other_every=1, backtest_quotes=True, malformed_every=1)
    async with Simulator(config) as sim, connect(sim.url) as ws:
        await ack_everything_until_complete(ws)
        assert await finished(sim) == "completed"
    steps = sim.record.steps
    by_step = [[f for f in sim.record.sent if f.step == n] for n in range(2)]
    kinds = [f.type for f in by_step[0]]
    assert kinds == ["candle"] * 3 + ["quote"] * 3 + [
        "order",
        "trade",
        "account",
        "position",
        "financing",
        None,  # invalid JSON: no type we could know, no id
    ]
    for number, frames in enumerate(by_step):
        assert steps[number].ids == [f.event_id for f in frames if f.event_id]
    # The second malformed frame (a candle with a numeric price) has an id the step waited for.
    malformed = by_step[1][-1]
    assert malformed.event_id in steps[1].ids
    assert malformed.text is not None
    assert '"close":101.25' in malformed.text
    assert not any(step.timed_out for step in steps)
    quote_times = [
        orjson.loads(f.text or "")["quote"]["timestamp"]
        for f in sim.record.sent
        if f.type == "quote"
    ]
    assert {len(t.split(".")[1]) - 1 if "." in t else 0 for t in quote_times} == {0, 3, 6, 9}


async def test_documentation_style_ids() -> None:
    async with Simulator(fast(steps=1, id_field="id")) as sim, connect(sim.docs_url) as ws:
        frames = await ack_everything_until_complete(ws)
        assert await finished(sim) == "completed"
    assert all("id" in f and "event_id" not in f for f in frames)
    assert sim.record.complete_acked


async def test_unsorted_keys_when_configured() -> None:
    async with Simulator(fast(steps=1, sort_keys=False)) as sim, connect(sim.url) as ws:
        frame = await recv(ws)
        assert next(iter(frame)) == "type"


async def test_symbols_are_kept_exactly_as_given() -> None:
    symbols = ("F:EURUSD", "BTC/USD", "EUR_USD")
    async with Simulator(fast(steps=1, symbols=symbols)) as sim, connect(sim.url) as ws:
        frames = await recv_n(ws, 3)
    assert tuple(f["bar"]["symbol"] for f in frames) == symbols
    assert frames[0]["bar"]["open"] == "1.08000"


async def test_replays_a_data_file(tmp_path: Path) -> None:
    data = tmp_path / "bars.csv"
    data.write_text(
        "symbol,timestamp,open,high,low,close,volume\n"
        "AAPL,2024-03-01T14:30:00Z,187.25,187.5,187.0,187.40,1200\n"
        "AAPL,2024-03-01T14:31:00Z,187.40,187.9,187.3,187.80,900\n"
    )
    config = fast(steps=10, symbols=("AAPL",), data_file=data)
    async with Simulator(config) as sim, connect(sim.url) as ws:
        frames = await ack_everything_until_complete(ws)
        assert await finished(sim) == "completed"
    candles = [f["bar"] for f in frames if f["type"] == "candle"]
    assert [(c["timestamp"], c["close"]) for c in candles] == [
        ("2024-03-01T14:30:00Z", "187.40"),
        ("2024-03-01T14:31:00Z", "187.80"),
    ]


async def test_same_seed_same_prices() -> None:
    closes = []
    for _ in range(2):
        async with Simulator(fast(steps=1, seed=42)) as sim, connect(sim.url) as ws:
            closes.append([f["bar"]["close"] for f in await recv_n(ws, 3)])
    assert closes[0] == closes[1]
