"""Builders for every frame the simulator sends, encoded once into the bytes that go on the wire.

Each builder returns an :class:`Outgoing`: the encoded payload plus the few facts the record and
the backtest engine need (type, event id, symbol), so nobody has to parse a frame back.

Engine frames (candle, quote, order, trade, position, account, backtest_complete) get an event id
and, like the real relay, keys sorted at every level; ``financing`` comes from the engine too
(sorted keys) but, as on the real server, without an id, so the engine does not wait for it.
Server-generated frames (connection, data_staleness, rate_limit, error, ping) never carry an id
and keep ``type`` first, as the gateway's own serialiser writes them; so do live order frames,
which the gateway builds itself from its provider's callbacks.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from connector.sim.config import SimConfig
from connector.sim.market import Bar, Quote
from connector.sim.timefmt import IsoClock, iso_seconds

_SORTED = orjson.OPT_SORT_KEYS

#: Kinds of malformed frame, injected in this rotation.
MALFORMED_KINDS = ("invalid_json", "numeric_price", "braced_symbol", "missing_type", "binary")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One encoded frame, ready to be queued for every client."""

    payload: bytes
    type: str | None
    event_id: str | None = None
    symbol: str | None = None
    binary: bool = False


class FrameFactory:
    """Builds frames for one run; owns the event-id sequence (``evt-1``, ``evt-2``, ...)."""

    def __init__(self, config: SimConfig, clock: IsoClock | None = None) -> None:
        self.clock = clock or IsoClock()
        self._id_field = config.id_field
        self._sort = config.sort_keys
        self._provider = config.provider
        self._timeframe = config.timeframe
        self._ids = itertools.count(1)
        self._malformed = itertools.count()

    def next_id(self) -> str:
        return f"evt-{next(self._ids)}"

    # Engine frames -------------------------------------------------------------------------

    def _engine(
        self,
        frame_type: str,
        body: dict[str, Any],
        *,
        symbol: str | None,
        with_id: bool,
        sort: bool,
    ) -> Outgoing:
        frame: dict[str, Any] = {"type": frame_type, **body, "timestamp": self.clock.now()}
        event_id = None
        if with_id:
            event_id = self.next_id()
            frame[self._id_field] = event_id
        payload = orjson.dumps(frame, option=_SORTED) if sort else orjson.dumps(frame)
        return Outgoing(payload, frame_type, event_id, symbol)

    def candle(
        self,
        bar: Bar,
        *,
        with_id: bool = True,
        sort: bool | None = None,
        bar_time: str | None = None,
    ) -> Outgoing:
        """A candle; ``bar_time`` replaces the bar start (the live mock stamps emission time)."""
        body = {
            "bar": {
                "symbol": bar.symbol,
                "provider": self._provider,
                "timeframe": self._timeframe,
                "timestamp": bar_time or iso_seconds(bar.start),
                "open": bar.open,
                "high": bar.high,
                "low": bar.low,
                "close": bar.close,
                "volume": bar.volume,
            }
        }
        return self._engine(
            "candle", body, symbol=bar.symbol, with_id=with_id, sort=self._pick(sort)
        )

    def quote(
        self,
        quote: Quote,
        market_time: str,
        *,
        volume: str | None = None,
        with_id: bool = True,
        sort: bool | None = None,
    ) -> Outgoing:
        inner: dict[str, Any] = {
            "symbol": quote.symbol,
            "provider": self._provider,
            "bid": quote.bid,
            "bid_size": quote.size,
            "ask": quote.ask,
            "ask_size": quote.size,
            "last": quote.last,
        }
        if volume is not None:
            inner["volume"] = volume
        inner["timestamp"] = market_time
        return self._engine(
            "quote", {"quote": inner}, symbol=quote.symbol, with_id=with_id, sort=self._pick(sort)
        )

    def engine_event(self, frame_type: str, body: dict[str, Any], symbol: str) -> Outgoing:
        """An order/trade/account/position frame from the backtest engine: with an id."""
        return self._engine(frame_type, body, symbol=symbol, with_id=True, sort=self._sort)

    def live_event(self, frame_type: str, body: dict[str, Any], symbol: str) -> Outgoing:
        """The same from the live gateway: ``type`` first, an id only in documentation style."""
        return self._engine(
            frame_type, body, symbol=symbol, with_id=self._id_field == "id", sort=False
        )

    def financing(self, symbol: str, amount: str) -> Outgoing:
        body = {"symbol": symbol, "amount": amount}
        return self._engine("financing", body, symbol=symbol, with_id=False, sort=self._sort)

    def backtest_complete(self, *, with_id: bool) -> Outgoing:
        """The end of a run, naming the broker: with an id from the engine's clean end; without
        one (built by the gateway itself, so ``type`` first) when the run halted or the engine
        just closed."""
        return self._engine(
            "backtest_complete",
            {"broker": self._provider},
            symbol=None,
            with_id=with_id,
            sort=self._sort and with_id,
        )

    def _pick(self, sort: bool | None) -> bool:
        return self._sort if sort is None else sort

    # Server-generated frames (never with an id) --------------------------------------------

    def server(self, frame_type: str, **fields: Any) -> Outgoing:
        frame: dict[str, Any] = {"type": frame_type, **fields, "timestamp": self.clock.now()}
        return Outgoing(orjson.dumps(frame), frame_type)

    def connection(self, event: str, **fields: Any) -> Outgoing:
        return self.server("connection", event=event, **fields)

    def staleness(self, event: str, symbols: Sequence[str], **fields: Any) -> Outgoing:
        return self.server("data_staleness", event=event, symbols=list(symbols), **fields)

    def ping(self) -> Outgoing:
        return self.server("ping")

    # Faults --------------------------------------------------------------------------------

    def malformed(self, symbol: str, *, with_id: bool) -> Outgoing:
        """The next malformed frame in the rotation of :data:`MALFORMED_KINDS`.

        Frames that still parse as JSON objects (numeric price, braced symbol, missing type) carry
        an id when ``with_id``, so a backtest client must acknowledge even what it cannot use.
        Invalid JSON and binary frames cannot be acknowledged reliably and carry none.
        """
        kind = MALFORMED_KINDS[next(self._malformed) % len(MALFORMED_KINDS)]
        if kind == "invalid_json":
            return Outgoing(b'{"type":"candle","bar":{"symbol":"' + symbol.encode() + b'",', None)
        if kind == "binary":
            return Outgoing(b"\xff\xfe\x00binary-frame", None, binary=True)
        bar: dict[str, Any] = {
            "symbol": symbol,
            "provider": self._provider,
            "timeframe": self._timeframe,
            "timestamp": iso_seconds(0),
            "open": "1",
            "high": "1",
            "low": "1",
            "close": "1",
            "volume": "1",
        }
        frame: dict[str, Any] = {"type": "candle", "bar": bar, "timestamp": self.clock.now()}
        if kind == "numeric_price":
            bar["close"] = 101.25
        elif kind == "braced_symbol":
            bar["symbol"] = "{" + symbol + "}"
        else:  # missing_type
            del frame["type"]
        event_id = None
        if with_id:
            event_id = self.next_id()
            frame[self._id_field] = event_id
        frame_type = frame.get("type")
        return Outgoing(orjson.dumps(frame, option=_SORTED), frame_type, event_id, symbol)
