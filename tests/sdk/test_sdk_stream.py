"""Every frame the simulator sends is one the official SDK accepts.

The SDK (PyPI ``tektii``, pydantic models) silently drops a frame its models reject: the event
is lost to that strategy. sdk_client.py runs the SDK's stream client and REST client against a
backtest that sends every frame type (candles, quotes, financing, synthetic fills, fills of
orders the strategy places over REST, order creations and cancellations, broker outage and
recovery, rate limit, error, JSON ping, backtest_complete) and reports what it received and
dropped. No Redis is involved.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Context, Decimal, localcontext
from pathlib import Path
from typing import Any

import pytest

from connector.sim import SimConfig, Simulator

CLIENT = Path(__file__).with_name("sdk_client.py")
API_KEY = "sdk-test-key"
RUN_LIMIT = 120.0
EVERY_TYPE = {
    "candle",
    "quote",
    "order",
    "trade",
    "position",
    "account",
    "financing",
    "connection",
    "data_staleness",
    "rate_limit",
    "error",
}

pytestmark = [pytest.mark.sdk, pytest.mark.timeout(900)]


#: The default simulator, and one that reproduces the gateway's quirks clients must survive:
#: 28-digit decimals, one write per frame, fills that sometimes lack their correlation id.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "gateway": {"decimal_scale": "full", "relay_gap": 0.0001, "fill_correlation_loss": 0.5},
}


def config(**changes: Any) -> SimConfig:
    return SimConfig(
        mode="backtest",
        symbols=("AAPL", "MSFT"),
        steps=12,
        seed=3,
        api_key=API_KEY,
        backtest_quotes=True,
        fill_every=4,
        other_every=5,
        shutdown_grace=0.01,
        close_timeout=0.5,
        **changes,
    )


async def provoke_server_frames(sim: Simulator) -> None:
    """The frames the gateway makes itself, sent once the strategy is a few bars in."""
    await sim.wait_for(lambda: sum(s.kind == "bar" for s in sim.record.steps) >= 3)
    sim.broker_disconnect(["MSFT"])  # connection/BROKER_DISCONNECTED, data_staleness/STALE
    sim.broker_reconnect()  # BROKER_RECONNECTED; FRESH before MSFT's next candle
    sim.rate_limit("RATE_LIMIT_WARNING")
    sim.send_error("POSITION_UNPROTECTED", "stop loss could not be placed")
    sim.send_json_ping()


async def run_sdk(sim: Simulator, python: Path) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        str(python),
        str(CLIENT),
        sim.http_url,
        "--api-key",
        API_KEY,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(RUN_LIMIT):
        provoker = asyncio.create_task(provoke_server_frames(sim))
        stdout, stderr = await process.communicate()
        await provoker
    assert process.returncode == 0, stderr.decode()[-3000:]
    summary: dict[str, Any] = json.loads(stdout)
    return summary


@pytest.mark.parametrize("variant", sorted(VARIANTS))
async def test_the_official_sdk_accepts_every_frame(sdk_python: Path, variant: str) -> None:
    async with Simulator(config(**VARIANTS[variant])) as sim:
        summary = await run_sdk(sim, sdk_python)
        await sim.wait_for(lambda: sim.client_count == 0)  # the SDK left by itself
        sent = list(sim.record.sent)  # before the stop adds its DISCONNECTING
    record = sim.record

    # Nothing dropped as invalid, and every frame type reached the strategy.
    assert summary["dropped"] == []
    assert set(summary["received"]) == EVERY_TYPE
    # Every frame sent reached the SDK: the events it yielded, the JSON ping it answered
    # internally and the backtest_complete it ended on.
    assert all(frame.clients == 1 for frame in sent)
    assert record.json_pongs == 1
    assert summary["yielded"] + record.json_pongs + 1 == len(sent)

    # Every id was acknowledged: the run completed without a single timeout.
    assert set(record.event_ids()) == record.acked_ids()
    assert (record.outcome, record.complete_acked, record.timeouts) == ("completed", True, 0)
    (terminal,) = summary["terminal"]
    assert terminal["broker"] == "tektii"
    assert terminal["event_id"] == record.frames_of_type("backtest_complete")[0].event_id

    check_orders(summary, sim)
    # Plain decimals add up exactly; 28-digit ones are rounded at every step, as on the server.
    check_account(summary, Decimal(0) if variant == "default" else Decimal("1e-18"))
    assert summary["health"]["status"] == "connected"
    print(  # the figures, for whoever runs this with -s
        f"SDK [{variant}]: {len(sent)} frames sent, {summary['yielded']} yielded, "
        f"{len(summary['dropped'])} dropped, {len(record.acked_ids())} of "
        f"{len(record.event_ids())} ids acked, {summary['received']}"
    )


def check_orders(summary: dict[str, Any], sim: Simulator) -> None:
    """The strategy's orders: created, filled at the next bar's open, or cancelled."""
    events = [(e["event"], e["order"]["client_order_id"]) for e in summary["order_events"]]
    rest = [(kind, cid) for kind, cid in events if cid is not None]
    assert rest == [
        ("ORDER_CREATED", "signal-1"),
        ("ORDER_FILLED", "signal-1"),
        ("ORDER_CREATED", "signal-3"),
        ("ORDER_CREATED", "signal-4"),
        ("ORDER_FILLED", "signal-4"),
        ("ORDER_CANCELLED", "signal-3"),
        ("ORDER_CREATED", "signal-6"),
        ("ORDER_FILLED", "signal-6"),
    ]
    placed = [order for order in sim.record.orders if not order.synthetic]
    assert [(o.client_order_id, o.status) for o in placed] == [
        ("signal-1", "FILLED"),
        ("signal-3", "CANCELLED"),
        ("signal-4", "FILLED"),
        ("signal-6", "FILLED"),
    ]
    for order in placed:
        assert order.received_step == int(order.client_order_id.removeprefix("signal-"))
        assert order.received_while_pending  # the SDK acks after the loop body
    assert sim.record.fill_lags() == [0, 0, 0]
    correlations = {h["id"]: h["correlation_id"] for h in summary["handles"].values()}
    for event in summary["order_events"]:
        order = event["order"]
        # A fill may lack it (the gateway variant loses some, as the gateway does); when it is
        # there it is the one the REST reply gave.
        if order["id"] in correlations and order["correlation_id"] is not None:
            assert order["correlation_id"] == correlations[order["id"]]


def check_account(summary: dict[str, Any], tolerance: Decimal) -> None:
    """The account as the SDK parsed it adds up (within ``tolerance``)."""
    account = {k: Decimal(v) for k, v in summary["account"].items() if k != "currency"}
    with localcontext(Context(prec=60)):
        unrealized = sum((Decimal(p["unrealized_pnl"]) for p in summary["positions"]), Decimal(0))
        assert abs(account["unrealized_pnl"] - unrealized) <= tolerance
        assert abs(account["equity"] - (account["balance"] + unrealized)) <= tolerance
        available = account["equity"] - account["margin_used"]
        assert abs(account["margin_available"] - available) <= tolerance
    commission = sum((Decimal(t["commission"]) for t in summary["trades"]), Decimal(0))
    assert len(summary["trades"]) == len([o for o in summary["orders"] if o["status"] == "FILLED"])
    assert commission == len(summary["trades"]) * Decimal("1.00")
