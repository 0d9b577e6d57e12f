"""Metrics an operator alerts on: message types labelled as counted, memory bounded."""

from __future__ import annotations

from listeners.metrics import MAX_MESSAGE_TYPES, Metrics


def _types(metrics: Metrics, name: str) -> dict[str, float]:
    return {
        sample.labels["type"]: sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name
    }


def test_dead_letters_are_counted_under_their_event_not_other() -> None:
    # Dead letters are filed with the whole MSH-9 (ADT^A01^ADT_A01): every one of them
    # was counted as type="other", so an alert on ORU^R01 dead letters never fired.
    metrics = Metrics()
    metrics.received.labels("mllp", "ORU^R01").inc()
    metrics.dead_lettered.labels("conversion", "ORU^R01^ORU_R01").inc()
    metrics.dead_lettered.labels("rejected", "ADT^A01^ADT_A01").inc()
    metrics.dead_lettered.labels("unsupported", "ZZZ^Z01").inc()
    assert _types(metrics, "passerelle_messages_dead_lettered_total") == {
        "ORU^R01": 1.0,
        "ADT^A01": 1.0,
        "ZZZ^Z01": 1.0,
    }
    # Through the cached lookup the ACK path uses, the same label.
    metrics.labelled(metrics.received, "mllp", "ORU^R01^ORU_R01").inc()
    assert _types(metrics, "passerelle_messages_received_total") == {"ORU^R01": 2.0}


def test_invented_types_do_not_grow_the_label_cache() -> None:
    # The ingest path looks labels up through Metrics.labelled, which cached every raw
    # MSH-9 a sender wrote: 3,000 messages with distinct 20 kB triggers kept 60 MB in a
    # running service (series capped, memory not).
    metrics = Metrics()
    for n in range(5_000):
        metrics.labelled(metrics.received, "mllp", f"ZZZ^Z{n}" + "Q" * 1_000).inc()
        metrics.labelled(metrics.received, "mllp", f"Z{n % 36:X}^{n:X}"[:7]).inc()
    assert len(metrics._children) <= MAX_MESSAGE_TYPES + 2
    received = _types(metrics, "passerelle_messages_received_total")
    assert received["other"] == 5_000 + 5_000 - (len(received) - 1)
    assert sum(received.values()) == 10_000
