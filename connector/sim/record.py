"""What happened during a run, kept so tests, the demo and the benchmark can check it end to end.

Times are ``time.monotonic()`` (for durations and ordering) with ``time.time()`` beside them
where a wall-clock reading helps a human. The record is plain data, mutated only from the event
loop; :meth:`Record.wait_until` lets a test await a condition on it instead of sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Outcome = Literal["completed", "halted", "sent", "stopped"]


@dataclass(slots=True)
class SentFrame:
    """One frame emitted to all connected clients (one entry per emission, not per client)."""

    seq: int
    time: float
    wall: float
    type: str | None
    event_id: str | None
    symbol: str | None
    step: int | None
    text: str | None  # the exact text, None for a binary frame
    clients: int  # clients connected at emission; 0 means nobody received it
    binary: bool = False


@dataclass(slots=True)
class AckRecord:
    time: float
    wall: float
    client_id: int
    correlation_id: str
    ids: list[str]
    timestamp: int


@dataclass(slots=True)
class RejectedAck:
    time: float
    client_id: int
    text: str
    reason: str


@dataclass(slots=True)
class StepRecord:
    """One backtest step; ``kind`` is ``bar`` (candles), ``orders`` (order events such as
    ORDER_CREATED) or ``fills`` (the fills at bar ``index``'s open, emitted before its candles)."""

    index: int
    ids: list[str]
    emitted_at: float
    completed_at: float | None = None
    timed_out: bool = False
    kind: str = "bar"


@dataclass(slots=True)
class OrderRecord:
    """One order, with what a benchmark needs for fill lag: ``fill_bar - signal_bar - 1``.

    ``received_step`` is the last bar index emitted when the order arrived (None before the
    first bar): the strategy's signal bar if it ordered before acknowledging that bar.
    ``fill_step`` is the bar whose open filled it. Live orders have no bars: only times.
    """

    order_id: str
    client_order_id: str | None
    correlation_id: str | None
    symbol: str
    side: str
    order_type: str
    quantity: str
    received_at: float
    received_wall: float
    received_step: int | None
    received_while_pending: bool  # a step was waiting for acks when the order arrived
    synthetic: bool = False  # made by the fill_every option, not by a REST request
    status: str = "OPEN"
    fill_step: int | None = None
    fill_price: str | None = None
    filled_at: float | None = None
    cancelled_at: float | None = None

    @property
    def fill_lag(self) -> int | None:
        """Bars between the signal bar and the fill, beyond the one a fill always takes."""
        if self.fill_step is None or self.received_step is None:
            return None
        return self.fill_step - self.received_step - 1


@dataclass(slots=True)
class ConnectionRecord:
    client_id: int
    path: str
    auth: str | None  # "authorization" or "x-api-key": which header carried the key
    user_agent: str | None
    remote: str
    connected_at: float
    connected_wall: float
    disconnected_at: float | None = None
    close_code: int | None = None


@dataclass(slots=True)
class AuthFailure:
    time: float
    path: str
    reason: str
    header: str | None


@dataclass(slots=True)
class Record:
    """Everything the simulator sent and received; see docs/simulator.md."""

    sent: list[SentFrame] = field(default_factory=list)
    acks: list[AckRecord] = field(default_factory=list)
    rejected_acks: list[RejectedAck] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    connections: list[ConnectionRecord] = field(default_factory=list)
    auth_failures: list[AuthFailure] = field(default_factory=list)
    orders: list[OrderRecord] = field(default_factory=list)
    controls: list[str] = field(default_factory=list)
    http_requests: int = 0
    json_pongs: int = 0
    ignored_client_frames: int = 0
    dropped: dict[int, int] = field(default_factory=dict)
    sent_count: int = 0
    market_frames: int = 0
    timeouts: int = 0
    halted: bool = False
    completed: bool = False
    complete_acked: bool = False
    outcome: Outcome | None = None
    _waiters: list[asyncio.Future[None]] = field(default_factory=list, repr=False)

    # Queries -------------------------------------------------------------------------------

    def acked_ids(self) -> set[str]:
        """Every id named by a valid ack (known or not)."""
        return {event_id for ack in self.acks for event_id in ack.ids}

    def event_ids(self) -> list[str]:
        """Ids of emitted frames, in emission order (needs ``record_frames``)."""
        return [frame.event_id for frame in self.sent if frame.event_id is not None]

    def first_ack_time(self, event_id: str) -> float | None:
        for ack in self.acks:
            if event_id in ack.ids:
                return ack.time
        return None

    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    def frames_of_type(self, frame_type: str) -> list[SentFrame]:
        return [frame for frame in self.sent if frame.type == frame_type]

    def order(self, order_id: str) -> OrderRecord | None:
        for order in self.orders:
            if order.order_id == order_id:
                return order
        return None

    def fill_lags(self) -> list[int]:
        """Fill lag of every filled backtest order placed through the REST API."""
        return [
            lag
            for order in self.orders
            if not order.synthetic and (lag := order.fill_lag) is not None
        ]

    # Waiting -------------------------------------------------------------------------------

    def changed(self) -> None:
        """Wake whoever waits in :meth:`wait_until`; cheap when nobody does."""
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds (wrap in ``asyncio.timeout`` to bound the wait)."""
        loop = asyncio.get_running_loop()
        while not predicate():
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            await waiter

    # Export --------------------------------------------------------------------------------

    def to_dict(self, *, frames: bool = False, details: bool = True) -> dict[str, Any]:
        """JSON-friendly summary; ``frames`` adds each sent frame's text, ``details`` the lists."""
        summary: dict[str, Any] = {
            "outcome": self.outcome,
            "completed": self.completed,
            "halted": self.halted,
            "complete_acked": self.complete_acked,
            "counts": {
                "sent": self.sent_count,
                "market_frames": self.market_frames,
                "event_ids": sum(1 for frame in self.sent if frame.event_id is not None),
                "acks": len(self.acks),
                "acked_ids": len(self.acked_ids()),
                "rejected_acks": len(self.rejected_acks),
                "steps": len(self.steps),
                "steps_timed_out": sum(1 for step in self.steps if step.timed_out),
                "timeouts": self.timeouts,
                "connections": len(self.connections),
                "auth_failures": len(self.auth_failures),
                "json_pongs": self.json_pongs,
                "ignored_client_frames": self.ignored_client_frames,
                "dropped": self.total_dropped(),
                "orders": sum(1 for order in self.orders if not order.synthetic),
                "fills": sum(1 for order in self.orders if order.status == "FILLED"),
                "http_requests": self.http_requests,
            },
            "dropped": {str(client): count for client, count in self.dropped.items()},
        }
        if details:
            sent = [asdict(frame) for frame in self.sent]
            if not frames:
                for entry in sent:
                    entry.pop("text")
            summary["sent"] = sent
            summary["acks"] = [asdict(ack) for ack in self.acks]
            summary["rejected_acks"] = [asdict(rejected) for rejected in self.rejected_acks]
            summary["steps"] = [asdict(step) for step in self.steps]
            summary["connections"] = [asdict(conn) for conn in self.connections]
            summary["auth_failures"] = [asdict(failure) for failure in self.auth_failures]
            summary["orders"] = [_order_dict(order) for order in self.orders]
            summary["controls"] = list(self.controls)
        return summary


def _order_dict(order: OrderRecord) -> dict[str, Any]:
    entry = asdict(order)
    entry["fill_lag"] = order.fill_lag
    return entry
