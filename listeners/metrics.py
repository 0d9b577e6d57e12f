"""Prometheus metrics of one service instance (its own registry, no process globals)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
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


#: Message types as label values: an HL7 event (``ADT^A01``), a CDA document type
#: (``Continuity of Care Document``) or one of ours (``unreadable``). Anything else a
#: sender writes in MSH-9 is counted as ``other``.
_TYPE_SHAPE = re.compile(r"[A-Z0-9]{2,3}(?:\^[A-Z0-9]{1,3})?|[A-Za-z][A-Za-z ()-]{0,59}")
#: Distinct message types kept as labels; later ones are counted as ``other``.
MAX_MESSAGE_TYPES = 200

#: A FHIR resource type as a label value (``Patient``); anything else counts as ``other``.
_RESOURCE_TYPE_SHAPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
#: Distinct resource types kept as labels (R4 has 145; the mappings delete a few).
MAX_RESOURCE_TYPES = 50


class _TypeLabels:
    """A metric whose ``type`` label comes from senders, bounded: every value a sender
    invents (a 1 MB trigger event, 20,000 distinct ones) would be a series kept until
    restart, in memory and in every scrape."""

    def __init__(self, metric: Any, position: int, known: set[str], reserved: set[str]) -> None:
        self._metric = metric
        self._position = position
        self._known = known
        self._reserved = reserved

    def _cap(self) -> int:
        # The routed types are labelled whatever senders invent: they do not use the cap.
        return MAX_MESSAGE_TYPES + len(self._reserved)

    def label_values(self, values: tuple[str, ...]) -> tuple[str, ...]:
        """``values`` with the type as it is labelled: an HL7 MSH-9 reduced to its event
        (``ADT^A01^ADT_A01`` → ``ADT^A01``, as ``received`` and ``converted`` count it:
        dead letters are filed with the whole MSH-9, which once made every one of them
        ``other``), and ``other`` for the values beyond the cap or of no known shape."""
        kind = values[self._position]
        if kind.count("^") > 1:
            kind = "^".join(kind.split("^", 2)[:2])
        if kind not in self._known:
            if len(self._known) < self._cap() and _TYPE_SHAPE.fullmatch(kind):
                self._known.add(kind)
            else:
                kind = "other"
        return (*values[: self._position], kind, *values[self._position + 1 :])

    def labels(self, *values: str) -> Any:
        return self._metric.labels(*self.label_values(values))


class Metrics:
    """The counters, gauges and histograms ``GET /metrics`` exposes."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._clock = clock
        self._oldest_stored_at: float | None = None
        #: Component → why it stopped for good, or None (see :meth:`watch_vital`).
        self._vital: dict[str, Callable[[], str | None]] = {}
        self._message_types: set[str] = set()
        self._routed_types: set[str] = set()
        self.received = _TypeLabels(
            Counter(
                "passerelle_messages_received",
                "Messages received",
                ["listener", "type"],
                registry=registry,
            ),
            1,
            self._message_types,
            self._routed_types,
        )
        self.acknowledged = Counter(
            "passerelle_messages_acknowledged",
            "Acknowledgements sent, by code",
            ["listener", "code"],
            registry=registry,
        )
        # No sender label: MSH-3/MSH-4 are whatever a peer writes, and each invented
        # value would be a series kept until restart; the WARNING names the sender.
        self.unmatched = Counter(
            "passerelle_messages_unmatched",
            "Messages no configured route matched (counted when routes are configured):"
            " outcome default, delivered to the default destination (unmatched_senders ="
            " default); outcome refused, refused before storage (unmatched_senders ="
            " reject: MLLP AR, AMQP dead letter). The sender is named in a WARNING",
            ["listener", "outcome"],
            registry=registry,
        )
        self.duplicates = Counter(
            "passerelle_messages_duplicate",
            "Retransmissions acknowledged again, not stored",
            ["listener"],
            registry=registry,
        )
        self.converted = _TypeLabels(
            Counter(
                "passerelle_messages_converted",
                "Conversions of a message to a bundle (a message whose delivery is retried is"
                " converted again at each attempt)",
                ["type"],
                registry=registry,
            ),
            0,
            self._message_types,
            self._routed_types,
        )
        self.delivered = _TypeLabels(
            Counter(
                "passerelle_bundles_delivered",
                "Bundles accepted by their destination",
                ["destination", "type"],
                registry=registry,
            ),
            1,
            self._message_types,
            self._routed_types,
        )
        self.deletes_not_found = Counter(
            "passerelle_deletes_not_found",
            "DELETE entries (ADT^A29, A23...) whose target the destination did not hold:"
            " left out, the rest of the bundle delivered (deleted before, or never written"
            " there)",
            ["destination", "resource_type"],
            registry=registry,
        )
        self._resource_types: set[str] = set()
        self.retried = Counter(
            "passerelle_deliveries_retried",
            "Transient delivery failures scheduled for retry",
            ["destination", "reason"],
            registry=registry,
        )
        self.dead_lettered = _TypeLabels(
            Counter(
                "passerelle_messages_dead_lettered",
                "Messages moved to the dead letters",
                ["reason", "type"],
                registry=registry,
            ),
            1,
            self._message_types,
            self._routed_types,
        )
        self.dead_letters_expired = Counter(
            "passerelle_dead_letters_expired",
            "Dead letters the service deleted because they failed longer ago than"
            " queue.dead_letter_retention (SQLite queue; purges by hand are not counted)",
            registry=registry,
        )
        self.framing_errors = Counter(
            "passerelle_mllp_framing_errors",
            "MLLP framing errors: frames over mllp.max_frame_bytes (refused, not stored)",
            ["listener"],
            registry=registry,
        )
        self.connections = Gauge(
            "passerelle_mllp_connections", "Open MLLP connections", ["listener"], registry=registry
        )
        self.connections_refused = Counter(
            "passerelle_mllp_connections_refused",
            "MLLP connections refused at accept (reason max_connections: the listener had"
            " that many open) or closed by a limit (frame_timeout: a frame not ended in"
            " time; max_unfinished_bytes: unfinished frames of all connections over it;"
            " tls_handshake: a failed TLS handshake, or a TLS client on a plain listener;"
            " write_timeout: an ACK the peer did not take in time, connection aborted)",
            ["listener", "reason"],
            registry=registry,
        )
        self.commit_acks = Counter(
            "passerelle_mllp_commit_acks",
            "MLLP release 2 commit acknowledgements (blocks holding only 0x06 or 0x15)"
            " received from the peer, not answered",
            ["listener"],
            registry=registry,
        )
        self.commit_blocks_sent = Counter(
            "passerelle_mllp_commit_blocks_sent",
            "MLLP release 2 commit blocks sent by listeners with release = 2 (kind: ack"
            " before a reply, nak for a message not taken)",
            ["listener", "kind"],
            registry=registry,
        )
        self.keepalives = Counter(
            "passerelle_mllp_keepalives",
            "Empty MLLP blocks (keep-alives, only blanks and line ends) received, not answered",
            ["listener"],
            registry=registry,
        )
        self.partitions = Gauge(
            "passerelle_worker_partitions",
            "Partition queues this passerelle worker consumes (queue.backend = amqp)",
            registry=registry,
        )
        self.amqp_connected = Gauge(
            "passerelle_amqp_connected",
            "1 while the connection to RabbitMQ is open, 0 while it is lost or being"
            " re-established (connection: consumer for [amqp.consumer], worker for"
            " passerelle worker, queue for queue.backend = amqp, destination:<name> for an"
            " AMQP destination)",
            ["connection"],
            registry=registry,
        )
        self.dead_letters_unroutable = Counter(
            "passerelle_dead_letters_unroutable",
            "Dead letters amqp.dead_letter_exchange routed to no queue (nothing bound to it):"
            " the message is held unacknowledged and published again later, never dropped"
            " (component: consumer or worker)",
            ["component"],
            registry=registry,
        )
        self.dead_letters_held = Gauge(
            "passerelle_dead_letters_held",
            "Messages held unacknowledged now because amqp.dead_letter_exchange routes"
            " their dead letter to no queue (bind a queue to it)",
            ["component"],
            registry=registry,
        )
        self.destination_available = Gauge(
            "passerelle_destination_available",
            "1 while deliveries to the destination flow, 0 while they are paused after a"
            " transient failure of the destination (until a delivery succeeds again)",
            ["destination"],
            registry=registry,
        )
        self.queue_write_failures = Counter(
            "passerelle_queue_write_failures",
            "Writes the service's queue refused (disk full, I/O error, locked file): outcomes"
            " of deliveries (operation complete, retry_later, dead_letter; retried in place)"
            " and received messages (put: the MLLP listener's, no ACK sent, the sender sends"
            " again; the AMQP consumer's in mode commit, retried in place); claims of stored"
            " messages for delivery (claim: retried every second)",
            ["operation"],
            registry=registry,
        )
        self.outcomes_unrecorded = Gauge(
            "passerelle_outcomes_unrecorded",
            "Messages whose delivery outcome was reached but is not written to the queue yet"
            " (the write failing and retried in place; the patient's later messages wait)",
            registry=registry,
        )
        self.component_up = Gauge(
            "passerelle_component_up",
            "1 while a part the process cannot work without runs, 0 once it has stopped for"
            " good (component queue: the SQLite queue's writer thread, the only way to the"
            " queue file): GET /health then answers 503, the process must be restarted",
            ["component"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "passerelle_queue_depth", "Messages stored and not yet delivered", registry=registry
        )
        # The depth alone does not tell a busy queue from a stuck one: 50 messages moving
        # look like 50 messages waiting for hours behind a retried head.
        self.queue_oldest_age = Gauge(
            "passerelle_queue_oldest_age_seconds",
            "Seconds the oldest message stored and not yet delivered (nor dead-lettered) has"
            " waited, retries included; 0 when there is none (SQLite queue)",
            registry=registry,
        )
        self.queue_oldest_age.set_function(self._oldest_age)
        self.dead_letters = Gauge(
            "passerelle_dead_letters",
            "Dead letters kept in the queue now, until retried, purged or expired by"
            " queue.dead_letter_retention (SQLite queue)",
            registry=registry,
        )
        self.conversion_seconds = _TypeLabels(
            Histogram(
                "passerelle_conversion_seconds",
                "Time to convert one message",
                ["type"],
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
            0,
            self._message_types,
            self._routed_types,
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

    def show_oldest(self, stored_at: float | None) -> None:
        """When the oldest message not yet delivered was stored (None: no such message);
        ``passerelle_queue_oldest_age_seconds`` is its age at each scrape."""
        self._oldest_stored_at = stored_at

    def _oldest_age(self) -> float:
        stored_at = self._oldest_stored_at
        return 0.0 if stored_at is None else max(0.0, self._clock() - stored_at)

    def watch_connection(self, label: str, source: object) -> None:
        """Let ``passerelle_amqp_connected{connection=label}`` read ``source.connected``
        (an AMQP queue or sink) at each scrape."""
        self.amqp_connected.labels(label).set_function(
            lambda: float(bool(getattr(source, "connected", False)))
        )

    def watch_vital(self, component: str, failure: Callable[[], str | None]) -> None:
        """``failure()`` says why ``component`` stopped for good (None while it runs):
        read by ``GET /health`` (:meth:`stopped`) and ``passerelle_component_up`` at each
        scrape. For what no retry mends and only a restart does."""
        self._vital[component] = failure
        self.component_up.labels(component).set_function(lambda: float(failure() is None))

    def stopped(self) -> dict[str, str]:
        """Component → why it stopped for good, for the components that have."""
        reasons = {component: failure() for component, failure in self._vital.items()}
        return {component: reason for component, reason in reasons.items() if reason}

    def keep_types(self, types: Iterable[str]) -> None:
        """Label these message types (the routed ones) even once senders' inventions
        have used up the cap on distinct types."""
        for kind in types:
            if kind not in self._routed_types:
                self._routed_types.add(kind)
                self._message_types.add(kind)

    def count_deletes_not_found(self, destination: str, resource_types: Iterable[str]) -> None:
        """One per DELETE entry left out of a delivery because its target was absent
        (:attr:`~listeners.delivery.DeliveryReceipt.absent_deletes`), by resource type."""
        for kind in resource_types:
            if kind not in self._resource_types:
                if len(self._resource_types) < MAX_RESOURCE_TYPES and (
                    _RESOURCE_TYPE_SHAPE.fullmatch(kind)
                ):
                    self._resource_types.add(kind)
                else:
                    kind = "other"
            self.labelled(self.deletes_not_found, destination, kind).inc()

    def labelled(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, looked up once per label set: prometheus_client's
        own lookup costs several microseconds, paid on every message on the ACK path."""
        if isinstance(metric, _TypeLabels):
            # Keyed by the label as counted, not as sent: every type a sender invents
            # (a 1 MB MSH-9, a counter in the trigger) would otherwise be a key kept
            # until restart, memory without bound although the series are capped.
            values = metric.label_values(values)
            metric = metric._metric
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
