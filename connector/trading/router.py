"""Routing: each frame, parsed once, becomes one stream entry for the publisher (or a pong).

Candles and quotes go to their symbol's streams, other types to a stream per type, rejected frames
to the dead-letter stream. Nothing here can raise into the read loop: a bug in parsing a frame
turns into an ``internal_error`` dead letter, and the session carries on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from connector.logs import RateLimitedLog
from connector.metrics import Metrics
from connector.streams.schema import (
    Entry,
    StreamKeys,
    candle_fields,
    deadletter_fields,
    other_fields,
    quote_fields,
)
from connector.trading.protocol import (
    KNOWN_TYPES,
    PONG,
    Candle,
    Event,
    Invalid,
    Other,
    Ping,
    Quote,
    parse_frame,
    sniff_event_id,
)

log = logging.getLogger(__name__)

Submit = Callable[[Entry], None]

# What a buffered entry costs in memory, for the buffer's byte bound: about twice the frame (its
# field strings, or the frame itself kept whole for other types, then the same again once
# encoded for Redis), plus a fixed cost for the entry, its dict and its small strings. Measured
# with tracemalloc: a 256-byte candle holds ~1.3 KB, a 100 KB order ~201 KB.
ENTRY_BYTES = 1000


class Router:
    """The session's frame handler: parse, count, encode, submit."""

    def __init__(
        self,
        keys: StreamKeys,
        submit: Submit,
        metrics: Metrics,
        *,
        max_frame_bytes: int,
        expect_ack: Callable[[int], None],
        max_streams: int = 10_000,
        on_terminal: Callable[[str | None], None] = lambda event_id: None,
        on_goodbye: Callable[[], None] = lambda: None,
    ) -> None:
        self._keys = keys
        self._submit = submit
        self._metrics = metrics
        self._max_frame_bytes = max_frame_bytes
        self._max_streams = max_streams
        self._streams: set[str] = set()  # market-data streams admitted so far
        self._expect_ack = expect_ack
        self._events = metrics.events_by_type
        self._invalid_log = RateLimitedLog(log, interval=10.0)
        self._symbol_events = metrics.symbol_events
        self._on_terminal = on_terminal  # backtest_complete (see connector.trading.run)
        self._on_goodbye = on_goodbye  # connection/DISCONNECTING: the server shuts down

    def route(self, frame: str | bytes, received: float) -> bytes | None:
        """Handle one frame; returns a frame to send back at once (a pong), if any."""
        try:
            event: Event = parse_frame(frame, self._max_frame_bytes)
            return self._dispatch(event, frame, received)
        except Exception as exc:  # a bug must not end the session: keep the frame, move on
            log.exception("unexpected error routing a frame")
            raw = frame.encode() if isinstance(frame, str) else bytes(frame)
            return self._dispatch(
                Invalid("internal_error", repr(exc)[:300], raw, sniff_event_id(raw)),
                frame,
                received,
            )

    def _dispatch(self, event: Event, frame: str | bytes, received: float) -> bytes | None:
        kind = type(event)
        if kind is Candle:
            assert isinstance(event, Candle)
            self._events["candle"] += 1
            key = self._keys.candle(event.symbol, event.timeframe)
            if key not in self._streams and not self._admit(key, event.event_id, frame, received):
                return None
            self._emit(key, candle_fields(event), "candle", event.event_id, received, len(frame))
            if self._symbol_events is not None:
                self._symbol_events.labels(event.symbol).inc()
        elif kind is Quote:
            assert isinstance(event, Quote)
            self._events["quote"] += 1
            key = self._keys.quote(event.symbol)
            if key not in self._streams and not self._admit(key, event.event_id, frame, received):
                return None
            self._emit(key, quote_fields(event), "quote", event.event_id, received, len(frame))
            if self._symbol_events is not None:
                self._symbol_events.labels(event.symbol).inc()
        elif kind is Other:
            assert isinstance(event, Other)
            self._events[event.label] += 1
            final = event.label == "backtest_complete"
            if final:
                self._on_terminal(event.event_id)
            elif event.label == "connection" and event.event == "DISCONNECTING":
                self._on_goodbye()
            self._emit(
                self._keys.of_type(event.label),
                other_fields(event),
                event.label,
                event.event_id,
                received,
                len(frame),
                final,
            )
        elif kind is Ping:
            self._events["ping"] += 1
            self._metrics.json_pongs.inc()
            return PONG
        else:
            assert isinstance(event, Invalid)
            self._reject(event, received)
        return None

    def _admit(self, key: str, event_id: str | None, frame: str | bytes, received: float) -> bool:
        """A new market-data stream, unless that would pass ``max_streams``: a server that
        invents symbols must not grow Redis (and our per-stream state) without bound."""
        if len(self._streams) < self._max_streams:
            self._streams.add(key)
            return True
        raw = frame.encode() if isinstance(frame, str) else bytes(frame)
        detail = f"{key} would exceed CONNECTOR_MAX_STREAMS={self._max_streams}"
        self._reject(Invalid("too_many_streams", detail, raw, event_id), received)
        return False

    def _emit(
        self,
        key: str,
        fields: dict[str, str],
        label: str,
        event_id: str | None,
        received: float,
        size: int,
        final: bool = False,
    ) -> None:
        if event_id is not None:
            self._expect_ack(1)
        self._submit(Entry(key, fields, label, event_id, received, ENTRY_BYTES + 2 * size, final))

    def _reject(self, event: Invalid, received: float) -> None:
        label = event.type if event.type in KNOWN_TYPES else "other"
        self._events[label] += 1
        self._metrics.invalid_by_reason[event.reason].inc()
        self._invalid_log.warning(
            event.reason,
            "rejected a frame",
            reason=event.reason,
            detail=event.detail[:200],
            event_id=event.event_id,
        )
        fields = deadletter_fields(event, time.time_ns() // 1_000_000)
        size = sum(len(value) for value in fields.values())
        self._emit(self._keys.deadletter, fields, "deadletter", event.event_id, received, size)
