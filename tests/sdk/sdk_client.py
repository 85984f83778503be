"""A strategy written with the official SDK (``tektii``), run in the SDK's own environment.

``python sdk_client.py BASE_URL [--api-key KEY]``: streams a simulator backtest with the SDK's
``AsyncEventStream`` (which acknowledges every event after the loop body ran, and drops, with a
``Dropping ...`` warning on the ``tektii.stream`` logger, every frame its models reject), places
orders through the SDK's REST client while a bar is still unacknowledged, and prints one JSON
line: what it received, what it dropped, and the account as the SDK's models parsed it.

It runs under the SDK's Python (websockets < 17), never the project's: test_sdk_stream.py starts
it as a subprocess.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tektii import (
    AsyncTradingGateway,
    CandleEvent,
    GatewayEvent,
    OrderEvent,
)
from tektii.models import BacktestCompleteEvent

FIRST_BAR = datetime(2024, 1, 1, tzinfo=UTC)
CENT = Decimal("0.01")


class DropCounter(logging.Handler):
    """Counts the frames the SDK's stream drops as invalid (it only logs them)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.dropped: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Dropping"):
            self.dropped.append(message[:500])


class Strategy:
    """Trades AAPL on fixed bars, so every order event and fill kind shows up."""

    def __init__(self, gateway: AsyncTradingGateway) -> None:
        self.gateway = gateway
        self.handles: dict[str, dict[str, Any]] = {}
        self.resting: str | None = None

    async def on_bar(self, index: int, close: Decimal) -> None:
        gateway = self.gateway
        if index == 1:
            await self._order(index, "buy", "5")  # lower case, as the SDK's examples
        elif index == 3:
            far = (close * 2).quantize(CENT)  # never reached: it rests until cancelled
            handle = await self._order(index, "sell", "1", order_type="limit", limit_price=far)
            self.resting = handle["id"]
        elif index == 4:
            await self._order(index, "SELL", "8")  # flips the long to a short
        elif index == 5 and self.resting is not None:
            result = await gateway.cancel_order(self.resting)
            assert result.order.status == "CANCELLED", result
        elif index == 6:
            above = (close * Decimal("1.05")).quantize(CENT)  # fills at the next open
            await self._order(index, "buy", "3", order_type="limit", limit_price=above)
        elif index == 7:
            result = await gateway.cancel_all_orders()
            assert result.failed_count == 0, result

    async def _order(self, index: int, side: str, quantity: str, **extra: Any) -> dict[str, Any]:
        handle = await self.gateway.submit_order(
            "AAPL", side, quantity, client_order_id=f"signal-{index}", **extra
        )
        self.handles[handle.id] = handle.model_dump(mode="json")
        return self.handles[handle.id]


def bar_index(event: CandleEvent) -> int:
    return int((event.bar.timestamp - FIRST_BAR).total_seconds()) // 60


async def run(base_url: str, api_key: str | None) -> dict[str, Any]:
    drops = DropCounter()
    logging.getLogger("tektii.stream").addHandler(drops)
    received: Counter[str] = Counter()
    order_events: list[dict[str, Any]] = []
    event_ids: list[str] = []
    terminal: list[BacktestCompleteEvent] = []
    async with AsyncTradingGateway(base_url=base_url, api_key=api_key, max_retries=0) as gateway:
        strategy = Strategy(gateway)
        stream = gateway.stream(on_backtest_complete=terminal.append)
        async with stream:
            event: GatewayEvent
            async for event in stream:
                received[event.type] += 1
                if event.event_id is not None:
                    event_ids.append(event.event_id)
                if isinstance(event, CandleEvent) and event.bar.symbol == "AAPL":
                    await strategy.on_bar(bar_index(event), Decimal(event.bar.close))
                elif isinstance(event, OrderEvent):
                    order_events.append(event.model_dump(mode="json"))
        # After the end the REST surface still answers; the SDK's models validate every reply.
        positions = await gateway.list_positions()
        account = await gateway.get_account()
        history = await gateway.get_order_history()
        trades = await gateway.list_trades()
        health = await gateway.get_health()
    return {
        "received": dict(received),
        "yielded": sum(received.values()),
        "dropped": drops.dropped,
        "event_ids": event_ids,
        "terminal": [t.model_dump(mode="json") for t in terminal],
        "handles": strategy.handles,
        "order_events": order_events,
        "positions": [p.model_dump(mode="json") for p in positions],
        "account": account.model_dump(mode="json"),
        "orders": [o.model_dump(mode="json") for o in history],
        "trades": [t.model_dump(mode="json") for t in trades],
        "health": health.model_dump(mode="json"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url")
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    summary = asyncio.run(run(args.base_url, args.api_key))
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
