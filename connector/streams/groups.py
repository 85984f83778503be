"""Required consumer groups and what each of them reads (``CONNECTOR_CONSUMER_GROUPS``).

In consumer-ack mode a backtest step is acknowledged once every group that *reads* one of its
entries has confirmed it. A group reads every data stream unless its declaration narrows it down
to event types and/or symbols, so a service that follows only the candles it trades holds the
engine only for those candles::

    risk, signals[types=candle], strategy[types=candle,order; symbols=AAPL,MSFT]

* ``risk``: every data stream (candles, quotes, orders, fills, ...);
* ``signals[types=candle]``: every candle stream, of every symbol;
* ``strategy[types=candle,order; symbols=AAPL,MSFT]``: streams of those types that are about
  those symbols. ``symbols=`` names market-data streams (``md:{AAPL}:candle:1m``); the per-type
  streams (``md:order``) carry every symbol and are read only through ``types=``.

Groups are created only on the streams they read, and only those streams' entries wait for them.

Where a group starts, in every case (the five rules live here; the registry, the gate and the
toolkit call them):

1. a required group on a stream the connector is about to write first: ``$``, queued just
   before that first entry, so the group gets everything the connector writes and no history
   (:data:`START_NEW`);
2. after Redis lost its data (a restart without persistence): ``0``, since every stream then
   holds only entries written since, which nobody has seen (:data:`START_AFTER_DATA_LOSS`);
3. on the registry: ``0``, so a member that joins late still learns every stream
   (:data:`START_REGISTRY`);
4. recreated by the connector after it disappeared: just below the oldest entry the connector
   still waits for, so nothing it waits for is skipped (:func:`restart_below`);
5. recreated by the toolkit: where this member last confirmed, or the stream's start (entries
   may come again, none is skipped) (:func:`restart_after`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from connector.streams.schema import StreamInfo, StreamKeys, parse_key
from connector.trading.protocol import FRAME_TYPES
from connector.wire.ids import StreamId, id_below

START_NEW = "$"
START_AFTER_DATA_LOSS = "0"
START_REGISTRY = "0"


def restart_below(oldest_waiting: StreamId) -> str:
    """Rule 4: a group created here delivers ``oldest_waiting`` next."""
    return id_below(oldest_waiting)


def restart_after(last_confirmed: str | None) -> str:
    """Rule 5: after what this member last confirmed, or from the stream's start."""
    return last_confirmed or "0"


# Names that may appear in a Redis command and a metric label without quoting.
GROUP_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
GROUP_NAME_RULE = "must be 1-64 characters of letters, digits and _ . : -"
# The types of the data streams (``ping`` is answered, never stored; ``other`` holds unknown ones).
STREAM_TYPES = (*(kind for kind in FRAME_TYPES if kind != "ping"), "other")
SELECTORS = ("types", "symbols")
_ITEM = re.compile(r"\s*([^\[\],\s]+)\s*(?:\[([^\[\]]*)\])?\s*")


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """One required group: its name and what it reads (None: no restriction)."""

    name: str
    types: frozenset[str] | None = None
    symbols: frozenset[str] | None = None

    def reads(self, info: StreamInfo) -> bool:
        if self.types is not None and info.type not in self.types:
            return False
        return self.symbols is None or info.symbol in self.symbols

    def __str__(self) -> str:
        selectors = [
            f"{name}={','.join(sorted(values))}"
            for name, values in (("types", self.types), ("symbols", self.symbols))
            if values is not None
        ]
        return f"{self.name}[{'; '.join(selectors)}]" if selectors else self.name


def parse_groups(text: str) -> tuple[GroupSpec, ...]:
    """Parse a declaration list; raises ValueError with a one-line message for bad input."""
    specs: list[GroupSpec] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _ITEM.match(text, position)
        if match is None or match.end() == position:
            raise ValueError(f"cannot read the group list at {text[position:][:30]!r}")
        specs.append(_spec(match.group(1), match.group(2)))
        position = match.end()
        if position < len(text):
            if text[position] == "[":
                raise ValueError(f"group {match.group(1)}: '[' without a matching ']'")
            if text[position] != ",":
                raise ValueError(
                    f"expected ',' between groups, found {text[position:][:30]!r} "
                    "(selectors go in brackets: name[types=candle; symbols=AAPL])"
                )
            position += 1
    return check_unique(specs)


def specs_of(values: Iterable[str | GroupSpec]) -> tuple[GroupSpec, ...]:
    """Specs from a mix of declarations and specs (settings given as a list)."""
    specs: list[GroupSpec] = []
    for value in values:
        specs.extend(parse_groups(value) if isinstance(value, str) else (value,))
    return check_unique(specs)


def check_unique(specs: Sequence[GroupSpec]) -> tuple[GroupSpec, ...]:
    names = [spec.name for spec in specs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"names group {twice[0]!r} twice")
    return tuple(specs)


def _spec(name: str, selectors: str | None) -> GroupSpec:
    if not GROUP_NAME.fullmatch(name):
        raise ValueError(f"group {name!r} {GROUP_NAME_RULE}")
    found: dict[str, frozenset[str]] = {}
    for part in (selectors or "").split(";"):
        if not part.strip():
            continue
        key, equals, values = part.partition("=")
        key = key.strip()
        if not equals or key not in SELECTORS:
            raise ValueError(
                f"group {name}: {part.strip()!r} is not a selector (use types=... or symbols=...)"
            )
        if key in found:
            raise ValueError(f"group {name}: {key}= given twice")
        items = frozenset(value.strip() for value in values.split(",") if value.strip())
        if not items:
            raise ValueError(f"group {name}: {key}= names nothing")
        if key == "types":
            unknown = sorted(items - set(STREAM_TYPES))
            if unknown:
                raise ValueError(
                    f"group {name}: {unknown[0]!r} is not a stream type "
                    f"(one of {', '.join(STREAM_TYPES)})"
                )
        found[key] = items
    if selectors is not None and not found:
        raise ValueError(f"group {name}: empty brackets (leave them out to read every stream)")
    return GroupSpec(name, found.get("types"), found.get("symbols"))


class Readers:
    """Which required groups read a stream (data streams only), remembered per key."""

    _CACHE_LIMIT = 65_536

    def __init__(self, keys: StreamKeys, specs: Sequence[GroupSpec]) -> None:
        self._keys = keys
        self._specs = tuple(specs)
        self._cache: dict[str, tuple[str, ...]] = {}
        self.names = tuple(spec.name for spec in specs)

    def of(self, key: str) -> tuple[str, ...]:
        """Names of the groups that read ``key`` (none for markers, dead letters, registry)."""
        groups = self._cache.get(key)
        if groups is None:
            groups = self._compute(key)
            if len(self._cache) >= self._CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = groups
        return groups

    def _compute(self, key: str) -> tuple[str, ...]:
        if not self._keys.is_data_stream(key):
            return ()
        info = parse_key(self._keys.prefix, key)
        if info is None:
            return ()
        return tuple(spec.name for spec in self._specs if spec.reads(info))
