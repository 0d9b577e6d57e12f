"""The ``type`` label comes from senders (MSH-9, a CDA document type): bounded."""

from __future__ import annotations

from listeners.metrics import MAX_MESSAGE_TYPES, Metrics


def _series(metrics: Metrics, name: str) -> list[dict[str, str]]:
    return [
        sample.labels
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name
    ]


def test_message_types_a_sender_invents_are_counted_as_other() -> None:
    metrics = Metrics()
    metrics.received.labels("mllp", "ADT^A01").inc()
    metrics.received.labels("mllp", "ADT^" + "X" * 1_000_000).inc()  # a 1 MB trigger
    metrics.received.labels("mllp", "A\nB").inc()
    types = {labels["type"] for labels in _series(metrics, "passerelle_messages_received_total")}
    assert types == {"ADT^A01", "other"}


def test_distinct_message_types_are_capped_across_metrics() -> None:
    # 20,000 invented events once grew /metrics to 43 MB, kept until restart.
    metrics = Metrics()
    metrics.keep_types({"ADT^A08"})  # a routed type
    for n in range(20_000):
        kind = f"Z{n % 36:01X}{n % 10}^{n:03X}"[:7]
        metrics.received.labels("mllp", kind).inc()
        metrics.dead_lettered.labels("unsupported", kind).inc()
    received = _series(metrics, "passerelle_messages_received_total")
    assert len(received) <= MAX_MESSAGE_TYPES + 1
    assert {"other"} <= {labels["type"] for labels in received}
    # A routed type keeps its own series, whatever senders invented before it came.
    metrics.converted.labels("ADT^A08").inc()
    converted = _series(metrics, "passerelle_messages_converted_total")
    assert [labels["type"] for labels in converted] == ["ADT^A08"]
    assert len(metrics.render()) < 200_000
