"""Prometheus metrics of one service instance (its own registry, no process globals)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
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
    30.0,
)


class Metrics:
    """The counters, gauges and histograms ``GET /metrics`` exposes."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.received = Counter(
            "passerelle_messages_received",
            "Messages received",
            ["listener", "type"],
            registry=registry,
        )
        self.acknowledged = Counter(
            "passerelle_messages_acknowledged",
            "Acknowledgements sent, by code",
            ["listener", "code"],
            registry=registry,
        )
        self.duplicates = Counter(
            "passerelle_messages_duplicate",
            "Retransmissions acknowledged again, not stored",
            ["listener"],
            registry=registry,
        )
        self.converted = Counter(
            "passerelle_messages_converted",
            "Messages converted to a bundle",
            ["type"],
            registry=registry,
        )
        self.delivered = Counter(
            "passerelle_bundles_delivered",
            "Bundles accepted by their destination",
            ["destination", "type"],
            registry=registry,
        )
        self.retried = Counter(
            "passerelle_deliveries_retried",
            "Transient delivery failures scheduled for retry",
            ["destination", "reason"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "passerelle_messages_dead_lettered",
            "Messages moved to the dead letters",
            ["reason", "type"],
            registry=registry,
        )
        self.framing_errors = Counter(
            "passerelle_mllp_framing_errors",
            "MLLP connections closed for bad framing",
            ["listener"],
            registry=registry,
        )
        self.connections = Gauge(
            "passerelle_mllp_connections", "Open MLLP connections", ["listener"], registry=registry
        )
        self.partitions = Gauge(
            "passerelle_worker_partitions",
            "Partition queues this passerelle worker consumes (queue.backend = amqp)",
            registry=registry,
        )
        self.queue_depth = Gauge(
            "passerelle_queue_depth", "Messages stored and not yet delivered", registry=registry
        )
        self.conversion_seconds = Histogram(
            "passerelle_conversion_seconds",
            "Time to convert one message",
            ["type"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.delivery_seconds = Histogram(
            "passerelle_delivery_seconds",
            "Time for a destination to accept one bundle",
            ["destination"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.ack_seconds = Histogram(
            "passerelle_ack_seconds",
            "Time from a complete frame to its acknowledgement",
            ["listener"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )

    def labelled(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, looked up once per label set: prometheus_client's
        own lookup costs several microseconds, paid on every message on the ACK path."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
