"""Stream key names and the entry schema: typed events in, flat Redis stream entries out.

Schema version 1 (documented in the README). Market data is keyed by symbol, with the symbol as a
Redis Cluster hash tag so all of a symbol's streams share one slot:

* ``{prefix}:{SYMBOL}:candle:{timeframe}`` and ``{prefix}:{SYMBOL}:quote``;
* ``{prefix}:{type}`` for every other frame type (``md:order``, ``md:backtest_complete``, ...),
  ``{prefix}:other`` for types this version does not know;
* ``{prefix}:system`` for the connector's own markers (start, stop, disconnect, reconnect gaps);
* ``{prefix}:deadletter`` for rejected frames (raw text truncated), and
  ``{prefix}:deadletter:{group}`` for the entries a consumer group gave up on (the toolkit);
* ``{prefix}:streams``, the registry: one entry per data stream when this connector first writes it,
  so consumers discover new symbols without scanning; ``{prefix}:confirm`` is the pub/sub channel
  on which the consumer toolkit announces confirmations (consumer-ack mode).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from connector.trading.protocol import Candle, Invalid, Other, Quote

SCHEMA_VERSION = 1
DEADLETTER_RAW_BYTES = 8192

Fields = dict[str, str]


@dataclass(slots=True)
class Entry:
    """One stream entry waiting to be written, and what to do once Redis has it."""

    key: str | None  # None: nothing to write (a re-delivered id), only to acknowledge
    fields: Fields
    label: str  # bounded metric label: event type, "deadletter" or "system"
    event_id: str | None
    received: float  # monotonic time of receipt, for ack latency
    size: int  # approximate bytes held in memory, for the buffer bound
    final: bool = False  # backtest_complete: the run ends once this is acknowledged
    entry_id: str | None = field(default=None)  # assigned on the first write attempt
    blob: bytes | None = field(default=None)  # the fields, RESP-encoded once (see resp.py)


class StreamKeys:
    """Builds (and caches) stream key names for one prefix."""

    __slots__ = (
        "_candles",
        "_quotes",
        "_types",
        "confirm_channel",
        "deadletter",
        "lease",
        "prefix",
        "registry",
        "system",
    )

    _CACHE_LIMIT = 65_536

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.system = f"{prefix}:system"
        self.deadletter = f"{prefix}:deadletter"
        self.registry = f"{prefix}:streams"
        self.confirm_channel = f"{prefix}:confirm"
        self.lease = f"{prefix}:lease"
        self._candles: dict[tuple[str, str], str] = {}
        self._quotes: dict[str, str] = {}
        self._types: dict[str, str] = {}

    def candle(self, symbol: str, timeframe: str) -> str:
        key = self._candles.get((symbol, timeframe))
        if key is None:
            if len(self._candles) >= self._CACHE_LIMIT:
                self._candles.clear()
            key = self._candles[(symbol, timeframe)] = (
                f"{self.prefix}:{{{symbol}}}:candle:{timeframe}"
            )
        return key

    def quote(self, symbol: str) -> str:
        key = self._quotes.get(symbol)
        if key is None:
            if len(self._quotes) >= self._CACHE_LIMIT:
                self._quotes.clear()
            key = self._quotes[symbol] = f"{self.prefix}:{{{symbol}}}:quote"
        return key

    def of_type(self, label: str) -> str:
        """Stream of a non-market type; ``label`` is bounded (a known type or ``other``)."""
        key = self._types.get(label)
        if key is None:
            key = self._types[label] = f"{self.prefix}:{label}"
        return key

    def group_deadletter(self, group: str) -> str:
        """Where the consumer toolkit puts the entries group ``group`` gives up on."""
        return f"{self.deadletter}:{group}"

    def is_data_stream(self, key: str) -> bool:
        """True for streams that carry Trading API events (not markers, dead letters, registry)."""
        return (
            key.startswith(self.prefix + ":")
            and key not in (self.system, self.deadletter, self.registry)
            and not key.startswith(self.deadletter + ":")
        )


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a stream key says about its content."""

    key: str
    type: str
    symbol: str | None = None
    timeframe: str | None = None


def parse_key(prefix: str, key: str) -> StreamInfo | None:
    """``md:{AAPL}:candle:1m`` -> candle/AAPL/1m; ``md:order`` -> order; None if not ours."""
    if not key.startswith(prefix + ":"):
        return None
    rest = key[len(prefix) + 1 :]
    if rest.startswith("{"):
        symbol, brace, tail = rest[1:].partition("}:")
        if not brace:
            return None
        kind, _, timeframe = tail.partition(":")
        return StreamInfo(key, kind, symbol, timeframe or None)
    return StreamInfo(key, rest)


def candle_fields(event: Candle) -> Fields:
    fields = {
        "symbol": event.symbol,
        "timeframe": event.timeframe,
        "ts": str(event.ts_ms),
        "open": event.open,
        "high": event.high,
        "low": event.low,
        "close": event.close,
    }
    if event.volume is not None:
        fields["volume"] = event.volume
    if event.provider is not None:
        fields["provider"] = event.provider
    if event.event_id is not None:
        fields["event_id"] = event.event_id
    return fields


def quote_fields(event: Quote) -> Fields:
    fields = {"symbol": event.symbol, "ts": str(event.ts_ms), "bid": event.bid, "ask": event.ask}
    if event.last is not None:
        fields["last"] = event.last
    if event.bid_size is not None:
        fields["bid_size"] = event.bid_size
    if event.ask_size is not None:
        fields["ask_size"] = event.ask_size
    if event.volume is not None:
        fields["volume"] = event.volume
    if event.provider is not None:
        fields["provider"] = event.provider
    if event.event_id is not None:
        fields["event_id"] = event.event_id
    return fields


def other_fields(event: Other) -> Fields:
    """Indexable fields plus the whole frame as received in ``data`` (never re-serialised)."""
    fields = {"type": event.type}
    if event.event is not None:
        fields["event"] = event.event
    if event.symbol is not None:
        fields["symbol"] = event.symbol
    if event.ts_ms is not None:
        fields["ts"] = str(event.ts_ms)
    if event.event_id is not None:
        fields["event_id"] = event.event_id
    fields["data"] = event.raw
    return fields


def deadletter_fields(event: Invalid, now_ms: int) -> Fields:
    raw = event.raw[:DEADLETTER_RAW_BYTES]
    fields = {
        "reason": event.reason,
        "detail": event.detail[:500],
        "received_ms": str(now_ms),
        "size": str(len(event.raw)),
        "raw": raw.decode("utf-8", "backslashreplace"),
    }
    if len(event.raw) > DEADLETTER_RAW_BYTES:
        fields["truncated"] = "1"
    if event.type is not None:
        fields["type"] = event.type
    if event.event_id is not None:
        fields["event_id"] = event.event_id
    return fields
