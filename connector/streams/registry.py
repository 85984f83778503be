"""Announcing new streams, and creating the required consumer groups before their first entry.

Both ride in the same pipeline as the first XADD to a stream, so they cost no extra round trip:
``XGROUP CREATE <stream> <group> $ MKSTREAM`` for every required group that reads the stream
(queued before the entry, so ``$`` places the group just before it: the group receives everything
this connector writes), then one registry entry naming the stream. ``BUSYGROUP`` (the group
exists) is expected and ignored.
"""

from __future__ import annotations

from connector.streams.groups import START_NEW, Readers
from connector.streams.schema import StreamKeys, parse_key
from connector.wire.resp import Arg

REGISTRY_MAXLEN = 100_000  # above CONNECTOR_MAX_STREAMS, with room for restarts


class StreamProvisioner:
    """The writer's ``provision`` hook: groups and a registry entry for each new stream."""

    def __init__(self, keys: StreamKeys, readers: Readers, run_id: str = "") -> None:
        self._keys = keys
        self._readers = readers
        self._run_id = run_id
        # Where new groups start (see connector.streams.groups, rules 1 and 2): START_NEW,
        # or START_AFTER_DATA_LOSS once Redis lost its data.
        self.start_id = START_NEW

    def __call__(self, key: str) -> list[list[Arg]]:
        if not self._keys.is_data_stream(key):
            return []
        commands: list[list[Arg]] = [
            ["XGROUP", "CREATE", key, group, self.start_id, "MKSTREAM"]
            for group in self._readers.of(key)  # a group only where it reads
        ]
        info = parse_key(self._keys.prefix, key)
        entry: list[Arg] = ["stream", key, "type", info.type if info else ""]
        if info is not None and info.symbol is not None:
            entry += ["symbol", info.symbol]
        if info is not None and info.timeframe is not None:
            entry += ["timeframe", info.timeframe]
        if self._run_id:
            entry += ["run", self._run_id]  # which run wrote the stream (runs share a prefix)
        commands.append(["XADD", self._keys.registry, "MAXLEN", "~", REGISTRY_MAXLEN, "*", *entry])
        return commands
