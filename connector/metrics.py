"""Every metric the connector exposes, defined in one place.

Each service instance owns its registry (no global state), so tests can run several side by side.
Hot-path code never looks labels up per event: counters for the fixed set of event types are bound
once here, and callers add whole batches at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from connector import __version__
from connector.trading.protocol import FRAME_TYPES

# Bounded label values: every frame type the protocol defines, plus "other" for unknown ones.
EVENT_TYPES = (*FRAME_TYPES, "other")
# What the publisher writes besides those: dead letters and the connector's own markers.
PUBLISHED_TYPES = (*EVENT_TYPES, "deadletter", "system")

INVALID_REASONS = (
    "invalid_json",
    "not_object",
    "missing_type",
    "missing_field",
    "bad_field",
    "bad_decimal",
    "bad_timestamp",
    "bad_event_id",
    "bad_symbol",
    "binary_frame",
    "too_large",
    "too_many_streams",
    "internal_error",
)

FOREIGN_DATA_REASONS = ("clash", "group_name", "lease")

# Sub-millisecond resolution where the ack path lives, seconds where backtests wait on consumers.
LATENCY_BUCKETS = (
    0.0002,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class PlainCounters(Collector):
    """A labelled counter kept in plain ints and read at scrape time.

    prometheus-client's counters take a lock per increment; on the per-frame path that costs more
    than the rest of the bookkeeping, and everything here runs in one event loop anyway.
    """

    def __init__(self, name: str, documentation: str, label: str, values: Iterable[str]):
        self._name = name
        self._documentation = documentation
        self._label = label
        self.counts: dict[str, int] = dict.fromkeys(values, 0)

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self._name, self._documentation, labels=[self._label])

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for value, count in self.counts.items():
            family.add_metric([value], count)
        yield family


class CallbackGauge(Collector):
    """A gauge whose value is read from its owner at scrape time (no per-change bookkeeping)."""

    def __init__(self, name: str, documentation: str, read: Callable[[], float]):
        self._name = name
        self._documentation = documentation
        self.read = read

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self._name, self._documentation)

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self._name, self._documentation, value=self.read())


class Metrics:
    """The connector's metrics, registered in ``self.registry``."""

    def __init__(self, consumer_groups: tuple[str, ...] = (), symbol_labels: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # The standard process_*, python_info and python_gc_* series (memory, CPU, open files,
        # collections): what any Python service's dashboards and alerts expect.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.info = Gauge(
            "connector_info",
            "Build and mode of this connector (always 1).",
            ["version", "mode", "ack_mode"],
            registry=r,
        )
        self.events = PlainCounters(
            "connector_events",
            "Frames received from the Trading API, by type.",
            "type",
            EVENT_TYPES,
        )
        r.register(self.events)
        self.published = Counter(
            "connector_published", "Entries stored in Redis, by type.", ["type"], registry=r
        )
        self.invalid = Counter(
            "connector_invalid_messages", "Frames rejected, by reason.", ["reason"], registry=r
        )
        self.ack_latency = Histogram(
            "connector_ack_latency_seconds",
            "Receipt of an event to the event_ack frame naming it being sent.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.acks_sent = Counter("connector_ack_frames", "event_ack frames sent.", registry=r)
        self.acked_events = Counter("connector_acked_events", "Event ids acknowledged.", registry=r)
        self.pending_acks = CallbackGauge(
            "connector_pending_acks", "Event ids received and not yet acknowledged.", lambda: 0
        )
        r.register(self.pending_acks)
        self.missed_pongs = Counter(
            "connector_missed_pongs", "Protocol pings not answered within the timeout.", registry=r
        )
        self.ping_rtt = Histogram(
            "connector_ping_rtt_seconds",
            "Round trip of answered protocol pings.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.json_pongs = Counter(
            "connector_json_pongs", "JSON pongs sent in answer to JSON pings.", registry=r
        )
        self.reconnects = Counter(
            "connector_reconnects", "Connections re-established after a drop.", registry=r
        )
        self.connect_failures = Counter(
            "connector_connect_failures",
            "Failed connection attempts, by reason.",
            ["reason"],
            registry=r,
        )
        self.connected = Gauge(
            "connector_connected", "1 while the Trading API session is open.", registry=r
        )
        self.redis_up = Gauge("connector_redis_up", "1 while Redis answers.", registry=r)
        self.publish_errors = Counter(
            "connector_publish_errors", "Failed Redis publish round trips.", registry=r
        )
        self.publish_seconds = Histogram(
            "connector_publish_seconds",
            "Duration of one pipelined publish round trip.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "connector_publish_batch_events",
            "Events per pipelined publish.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
            registry=r,
        )
        # Read at scrape time: they must move during an outage too, while no batch completes.
        self.buffered_events = CallbackGauge(
            "connector_buffered_events", "Events received and not yet stored.", lambda: 0
        )
        r.register(self.buffered_events)
        self.buffered_bytes = CallbackGauge(
            "connector_buffered_bytes", "Bytes of events received and not yet stored.", lambda: 0
        )
        r.register(self.buffered_bytes)
        self.dropped = Counter(
            "connector_dropped_events",
            "Events dropped before storage, by reason.",
            ["reason"],
            registry=r,
        )
        self.foreign_data = PlainCounters(
            "connector_foreign_data",
            "Data another Redis client wrote where the connector reads or writes, stepped over "
            "without stopping, by reason: clash (our next entry id taken), group_name (a group "
            "on our streams whose name is not text), lease (a lease value no connector writes).",
            "reason",
            FOREIGN_DATA_REASONS,
        )
        r.register(self.foreign_data)
        self.duplicates = Counter(
            "connector_duplicate_events", "Re-delivered event ids stored only once.", registry=r
        )
        self.last_event = Gauge(
            "connector_last_event_timestamp_seconds",
            "Unix time at which the last market-data event was stored.",
            registry=r,
        )
        self.consumer_confirm = Histogram(
            "connector_consumer_confirm_seconds",
            "Consumer-ack mode: stored in Redis to confirmed by every required group.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.unconfirmed = Gauge(
            "connector_unconfirmed_events",
            "Consumer-ack mode: stored events not yet confirmed by every group.",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "connector_consumer_lag",
            "Entries not yet confirmed, per required group.",
            ["group"],
            registry=r,
        )
        self.consumer_timeouts = Counter(
            "connector_consumer_timeouts",
            "Steps that exceeded CONSUMER_ACK_TIMEOUT, by policy.",
            ["policy"],
            registry=r,
        )
        self.symbol_events = (
            Counter(
                "connector_symbol_events",
                "Market-data events by symbol (opt-in).",
                ["symbol"],
                registry=r,
            )
            if symbol_labels
            else None
        )

        # Bound children: the hot path adds to these without a label lookup.
        self.events_by_type = self.events.counts  # the router adds to these plain ints
        self.published_by_type = {name: self.published.labels(name) for name in PUBLISHED_TYPES}
        self.invalid_by_reason = {name: self.invalid.labels(name) for name in INVALID_REASONS}
        self.lag_by_group = {group: self.consumer_lag.labels(group) for group in consumer_groups}
        for policy in ("hold", "release"):
            self.consumer_timeouts.labels(policy)
        for reason in ("buffer_full", "shutdown", "unstorable"):
            self.dropped.labels(reason)
        for reason in ("auth", "refused", "timeout", "protocol", "other"):
            self.connect_failures.labels(reason)

    def set_info(self, mode: str, ack_mode: str) -> None:
        self.info.labels(__version__, mode, ack_mode).set(1)
