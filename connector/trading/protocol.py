"""Trading API frames to typed events, and the two frames the client sends (pong, event_ack).

Every frame is parsed exactly once here. The result is either a typed event or an
:class:`Invalid` that says why the frame was rejected and, where one can still be recognised, the
event id that must be acknowledged so a backtest engine does not stall on it.

Rules from the real server (see docs/protocol.md): prices, sizes and volumes are decimal strings and
stay exactly as received; timestamps are ISO-8601 UTC with 0 to 9 fractional digits; the id is in
``event_id`` (``id`` on documentation-style servers) and only engine frames carry one; optional
fields are absent rather than null; unknown fields are ignored; key order is not fixed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

import orjson

# Labels used for metrics and stream names; anything else is "other".
MARKET_TYPES: Final = frozenset({"candle", "quote"})
# Every frame type the protocol defines (metrics label values follow this order).
FRAME_TYPES: Final = (
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
    "backtest_complete",
    "ping",
)
KNOWN_TYPES: Final = frozenset(FRAME_TYPES)

MAX_EVENT_ID_CHARS: Final = 256
MAX_SYMBOL_CHARS: Final = 128
MAX_DECIMAL_CHARS: Final = 64

# re.ASCII: \d must not match other scripts' digits (Arabic-Indic, fullwidth), which int()
# would accept.
# An exponent of at most two digits: "1e9999" is text no price is, and a consumer's float()
# would turn it into infinity.
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,2})?", re.ASCII)
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:(Z)|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
# Symbols and timeframes become part of Redis keys: no braces (Cluster hash tags), no glob
# characters (SCAN/KEYS patterns), no whitespace or control characters, and none of Unicode's
# invisible format characters (zero-width spaces and joiners, bidirectional controls, the byte
# order mark): "AAPL\u200b" would be a second AAPL stream that looks like the first.
_KEY_PART = re.compile(
    r"[^\s{}\[\]*?\\\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e"
    r"\u2060-\u206f\ufeff\ufff9-\ufffb]{1,128}"
)
_TIMEFRAME = re.compile(r"[0-9]{1,4}[a-zA-Z]{1,3}", re.ASCII)
_TIMEFRAMES_SEEN: set[str] = set()  # checked timeframes (cleared past 1024 entries)
# For frames that are not valid JSON: find an id anyway, so the engine is not left waiting.
_SNIFF_EVENT_ID = re.compile(rb'"event_id"\s*:\s*"([^"\\\x00-\x1f]{1,256})"')
_SNIFF_DOCS_ID = re.compile(rb'"id"\s*:\s*"([^"\\\x00-\x1f]{1,256})"')
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()


class FrameError(ValueError):
    """A frame or field that breaks the protocol; ``reason`` is a bounded metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# Events are plain slotted classes, not frozen ones: a frozen dataclass pays for
# object.__setattr__ on every field, and events are built once per frame on the hot path.
@dataclass(slots=True)
class Candle:
    """A bar; ``ts_ms`` is the bar start. Price and volume strings are exactly as received."""

    event_id: str | None
    symbol: str
    timeframe: str
    ts_ms: int
    open: str
    high: str
    low: str
    close: str
    volume: str | None
    provider: str | None


@dataclass(slots=True)
class Quote:
    """A top-of-book quote; ``ts_ms`` is the quote's own (market) time."""

    event_id: str | None
    symbol: str
    ts_ms: int
    bid: str
    ask: str
    last: str | None
    bid_size: str | None
    ask_size: str | None
    volume: str | None
    provider: str | None


@dataclass(slots=True)
class Other:
    """Any non-market frame: kept whole (``raw``), with the few fields worth indexing."""

    label: str  # bounded: a KNOWN_TYPES member or "other"
    type: str  # the frame's own type string
    event_id: str | None
    event: str | None
    symbol: str | None
    ts_ms: int | None
    raw: str


@dataclass(slots=True, frozen=True)
class Ping:
    """A JSON ``ping`` (documentation-style servers); answered with :data:`PONG` at once."""


@dataclass(slots=True)
class Invalid:
    """A rejected frame: counted by ``reason``, dead-lettered, acked if ``event_id`` is known."""

    reason: str
    detail: str
    raw: bytes
    event_id: str | None
    type: str | None = None


Event = Candle | Quote | Other | Ping | Invalid

PING: Final = Ping()
PONG: Final = b'{"type":"pong"}'


def parse_frame(frame: str | bytes, max_bytes: int) -> Event:
    """Turn one WebSocket message into an event. Never raises for bad input."""
    if not isinstance(frame, str):
        # The protocol uses text frames only; a binary frame is rejected but its id honoured.
        return Invalid("binary_frame", "binary frame", bytes(frame), sniff_event_id(frame))
    # websockets has already checked the UTF-8, so characters only undercount multi-byte text;
    # the connection's own hard limit bounds bytes.
    if len(frame) > max_bytes:
        raw = frame.encode()
        return Invalid(
            "too_large", f"{len(raw)} bytes > {max_bytes}", raw, sniff_event_id(raw[:65536])
        )
    try:
        obj = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raw = frame.encode()
        return Invalid("invalid_json", str(exc)[:200], raw, sniff_event_id(raw))
    if not isinstance(obj, dict):
        return Invalid("not_object", f"top level is {type(obj).__name__}", frame.encode(), None)
    try:
        return _parse_object(obj, frame)
    except FrameError as exc:
        return Invalid(
            exc.reason, exc.detail, frame.encode(), _lenient_event_id(obj), _type_of(obj)
        )


def _parse_object(obj: dict[str, Any], raw: str) -> Event:
    kind = obj.get("type")
    if not isinstance(kind, str) or not kind:
        raise FrameError("missing_type", "no string 'type' field")
    event_id = event_id_of(obj)
    if kind == "candle":
        return _candle(obj, event_id)
    if kind == "quote":
        return _quote(obj, event_id)
    if kind == "ping":
        return PING
    label = kind if kind in KNOWN_TYPES else "other"
    return Other(
        label,
        kind[:64],
        event_id,
        _str_or_none(obj.get("event"), 64),
        _symbol_of(obj, kind),
        _optional_ts(obj.get("timestamp")),
        raw,
    )


def event_id_of(obj: dict[str, Any]) -> str | None:
    """The event id: ``event_id`` (real server) or ``id`` (documentation style), else None."""
    value = obj.get("event_id")
    if value is None:
        value = obj.get("id")
        if value is None:
            return None
    if not isinstance(value, str) or not value or len(value) > MAX_EVENT_ID_CHARS:
        # A non-string id cannot be put in an ack (the server would drop the whole ack).
        raise FrameError("bad_event_id", f"event id must be a string of 1-256 chars: {value!r:.80}")
    return value


def _lenient_event_id(obj: dict[str, Any]) -> str | None:
    try:
        return event_id_of(obj)
    except FrameError:
        return None


def sniff_event_id(raw: bytes | bytearray | memoryview) -> str | None:
    """Best effort: an ``"event_id":"..."`` in a frame that could not be parsed as JSON."""
    data = bytes(raw)
    # "event_id" wherever it is; "id" only without one (a nested order.id must not win).
    match = _SNIFF_EVENT_ID.search(data) or _SNIFF_DOCS_ID.search(data)
    if match is None:
        return None
    try:
        return match.group(1).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _type_of(obj: dict[str, Any]) -> str | None:
    kind = obj.get("type")
    return kind[:64] if isinstance(kind, str) else None


def _candle(obj: dict[str, Any], event_id: str | None) -> Candle:
    bar = _object(obj, "bar")
    timeframe = _required_str(bar, "timeframe")
    if timeframe not in _TIMEFRAMES_SEEN:
        if not _TIMEFRAME.fullmatch(timeframe):
            raise FrameError("bad_field", f"timeframe {timeframe!r:.40} is not like 1m, 4h, 1d")
        if len(_TIMEFRAMES_SEEN) >= 1024:
            _TIMEFRAMES_SEEN.clear()
        _TIMEFRAMES_SEEN.add(timeframe)
    return Candle(
        event_id=event_id,
        symbol=_symbol(bar),
        timeframe=timeframe,
        ts_ms=parse_timestamp_ms(_required_str(bar, "timestamp")),
        open=_decimal(bar, "open"),
        high=_decimal(bar, "high"),
        low=_decimal(bar, "low"),
        close=_decimal(bar, "close"),
        volume=_optional_decimal(bar, "volume"),
        provider=_str_or_none(bar.get("provider"), 64),
    )


def _quote(obj: dict[str, Any], event_id: str | None) -> Quote:
    quote = _object(obj, "quote")
    return Quote(
        event_id=event_id,
        symbol=_symbol(quote),
        ts_ms=parse_timestamp_ms(_required_str(quote, "timestamp")),
        bid=_decimal(quote, "bid"),
        ask=_decimal(quote, "ask"),
        last=_optional_decimal(quote, "last"),
        bid_size=_optional_decimal(quote, "bid_size"),
        ask_size=_optional_decimal(quote, "ask_size"),
        volume=_optional_decimal(quote, "volume"),
        provider=_str_or_none(quote.get("provider"), 64),
    )


def _object(obj: dict[str, Any], name: str) -> dict[str, Any]:
    value = obj.get(name)
    if not isinstance(value, dict):
        raise FrameError("missing_field", f"'{name}' must be an object")
    return value


def _required_str(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        reason = "missing_field" if value is None else "bad_field"
        raise FrameError(reason, f"'{name}' must be a string")
    return value


_KNOWN_GOOD: set[str] = set()  # symbols and timeframes already checked (bounded)
_KNOWN_GOOD_LIMIT = 65_536


def _symbol(obj: dict[str, Any]) -> str:
    symbol = _required_str(obj, "symbol")
    if symbol in _KNOWN_GOOD:
        return symbol
    if not _KEY_PART.fullmatch(symbol):
        raise FrameError("bad_symbol", f"symbol {symbol!r:.80} cannot be part of a stream key")
    _remember_good(symbol)
    return symbol


def _remember_good(value: str) -> None:
    if len(_KNOWN_GOOD) >= _KNOWN_GOOD_LIMIT:
        _KNOWN_GOOD.clear()
    _KNOWN_GOOD.add(value)


def _decimal(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        if value is None:
            raise FrameError("missing_field", f"'{name}' is missing")
        # JSON numbers would already have lost precision in any parser: refuse them.
        raise FrameError("bad_decimal", f"'{name}' must be a decimal string, not {value!r:.40}")
    # Fast path: plain unsigned decimals ("187.25"); anything else goes through the regex.
    digits = value.replace(".", "", 1)
    if digits.isdigit() and digits.isascii() and len(value) <= MAX_DECIMAL_CHARS:
        return value
    if len(value) > MAX_DECIMAL_CHARS or not _DECIMAL.fullmatch(value):
        raise FrameError("bad_decimal", f"'{name}' is not a decimal: {value!r:.40}")
    return value


def _optional_decimal(obj: dict[str, Any], name: str) -> str | None:
    return None if obj.get(name) is None else _decimal(obj, name)


def _str_or_none(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _symbol_of(obj: dict[str, Any], kind: str) -> str | None:
    """The symbol an order/trade/position/financing frame is about, for indexing only."""
    symbol = obj.get("symbol")
    if symbol is None:
        nested = obj.get(kind)
        if isinstance(nested, dict):
            symbol = nested.get("symbol")
    return _str_or_none(symbol, MAX_SYMBOL_CHARS)


def _optional_ts(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_timestamp_ms(value)
    except FrameError:
        return None


_MINUTES: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM" -> epoch ms (bounded cache)
_MINUTES_LIMIT = 8192


def parse_timestamp_ms(text: str) -> int:
    """ISO-8601 (``2025-01-15T10:30:00.123456789Z``, 0-9 fractional digits) to epoch ms.

    Sub-millisecond digits are truncated, never rounded, so a bar start stays on its boundary.
    A numeric offset (``+02:00``) is accepted for tolerance and converted to UTC.
    """
    # Fast path for the shape the server sends: a cached minute, then seconds and fraction.
    if len(text) >= 20 and text[-1] == "Z" and text[16] == ":":
        minute = _MINUTES.get(text[:16])
        if minute is not None:
            seconds = text[17:19]
            fraction = text[20:-1]
            if (
                seconds.isdigit()
                and seconds.isascii()
                and int(seconds) < 60
                and (
                    (len(text) == 20)
                    or (
                        text[19] == "."
                        and 0 < len(fraction) <= 9
                        and fraction.isdigit()
                        and fraction.isascii()
                    )
                )
            ):
                millis = int(fraction[:3].ljust(3, "0")) if fraction else 0
                return minute + int(seconds) * 1000 + millis
    return _parse_timestamp_slow(text)


def _parse_timestamp_slow(text: str) -> int:
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise FrameError("bad_timestamp", f"not an ISO-8601 UTC timestamp: {text!r:.60}")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        days = date(int(year), int(month), int(day)).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise FrameError("bad_timestamp", f"no such date: {text!r:.60}") from None
    h, m, s = int(hour), int(minute), int(second)
    if h > 23 or m > 59 or s > 59:
        raise FrameError("bad_timestamp", f"no such time: {text!r:.60}")
    minute_ms = ((days * 24 + h) * 60 + m) * 60_000
    millis = int(fraction[:3].ljust(3, "0")) if fraction else 0
    if zulu is not None:
        if len(_MINUTES) >= _MINUTES_LIMIT:
            _MINUTES.clear()
        _MINUTES[text[:16]] = minute_ms
        return minute_ms + s * 1000 + millis
    if int(off_h) > 23 or int(off_m) > 59:
        raise FrameError("bad_timestamp", f"bad UTC offset: {text!r:.60}")
    offset = (int(off_h) * 60 + int(off_m)) * 60_000
    total = minute_ms + s * 1000 + millis
    return total - offset if sign == "+" else total + offset


def ack_frame(event_ids: list[str], timestamp_ms: int, correlation_id: str) -> bytes:
    """An ``event_ack`` as the server requires it: all three fields, an integer ms timestamp."""
    return orjson.dumps(
        {
            "type": "event_ack",
            "correlation_id": correlation_id,
            "events_processed": event_ids,
            "timestamp": timestamp_ms,
        }
    )
