"""Envelopes in AMQP messages, error headers, input types, partitions (no broker)."""

from __future__ import annotations

import collections
import dataclasses
from types import SimpleNamespace
from typing import Any

import aio_pika
import pytest

from listeners.amqp.envelope import (
    ERROR_HEADERS,
    FORWARDED_HEADERS_BUDGET,
    H_DROPPED_HEADERS,
    H_FAILED_AT,
    AmqpEnvelope,
    EnvelopeError,
    decode_envelope,
    encode_envelope,
    error_headers,
    forwardable_headers,
    input_type_of,
    ordering_token,
    partition_of,
)
from listeners.queue.base import Envelope


def incoming(**fields: Any) -> Any:
    """A stand-in for a consumed message (the attributes decode_envelope reads)."""
    return SimpleNamespace(**fields)


def received(message: aio_pika.Message) -> Any:
    """What a consumer gets back for ``message`` (the fields decode_envelope reads)."""
    return incoming(
        body=message.body,
        headers=dict(message.headers),
        message_id=message.message_id,
        correlation_id=message.correlation_id,
    )


def test_every_field_of_the_envelope_travels() -> None:
    original = Envelope(
        payload=b"MSH|^~\\&|\xc3\xa9\r",
        sender="mllp/APP^FAC",
        listener="mllp",
        received_at=1710405312.123456789,
        ordering_key="mllp/APP^FAC|M^H&1&ISO",
        control_id="C-1",
        message_type="ADT^A08^ADT_A01",
        input_type="hl7v2",
        route="lyon",
    )
    message = encode_envelope(original, partition=3)
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.content_type == "x-application/hl7-v2+er7"
    assert message.correlation_id == "C-1" and message.message_id
    assert message.headers["x-passerelle-partition"] == 3
    decoded = decode_envelope(received(message))
    assert isinstance(decoded, AmqpEnvelope)
    for name in Envelope.__dataclass_fields__:
        if name not in ("message_id", "correlation_id", "ordering_key"):
            assert getattr(decoded, name) == getattr(original, name), name
    # The ordering key names the patient: only its digest travels, in the same partition.
    assert decoded.ordering_key == ordering_token(original.ordering_key)
    assert "M^H" not in str(message.headers)
    assert partition_of(decoded.ordering_key, 16) == partition_of(original.ordering_key, 16)
    # Without ids of its own, the envelope gets a fresh message id and its control id as
    # the correlation id; both come back as the AMQP properties say.
    assert decoded.message_id == message.message_id
    assert decoded.correlation_id == "C-1"


def test_optional_fields_and_ids_are_kept() -> None:
    original = AmqpEnvelope(
        payload=b"<x/>",
        sender="amqp/^org",
        listener="amqp",
        received_at=1.5,
        ordering_key="k",
        input_type="cda",
        message_id="m-1",
        correlation_id="corr-1",
    )
    message = encode_envelope(original)
    assert message.content_type == "application/hl7-cda+xml"
    decoded = decode_envelope(received(message))
    assert decoded == dataclasses.replace(original, ordering_key=ordering_token("k"))


def test_a_message_without_envelope_headers_is_refused() -> None:
    with pytest.raises(EnvelopeError, match="x-passerelle-sender"):
        decode_envelope(incoming(body=b"x", headers={}, message_id=None, correlation_id=None))
    headers = dict(encode_envelope(Envelope(b"x", "s", "l", 1.0, "k")).headers)
    headers["x-passerelle-received-at"] = "yesterday"
    with pytest.raises(EnvelopeError, match="received-at"):
        decode_envelope(incoming(body=b"x", headers=headers, message_id=None, correlation_id=None))


@pytest.mark.parametrize(
    ("content_type", "headers", "expected"),
    [
        ("x-application/hl7-v2+er7", {}, "hl7v2"),
        ("application/hl7-v2; charset=utf-8", {}, "hl7v2"),
        ("text/plain", {}, "hl7v2"),
        ("application/xml", {}, "cda"),
        ("text/xml", {}, "cda"),
        ("application/hl7-cda+xml", {}, "cda"),
        ("application/octet-stream", {}, "auto"),
        (None, {}, "auto"),
        ("text/plain", {"x-passerelle-input-type": "cda"}, "cda"),
        (None, {"x-passerelle-input-type": b"hl7v2"}, "hl7v2"),
    ],
)
def test_input_type_from_the_header_then_the_content_type(
    content_type: str | None, headers: dict[str, Any], expected: str
) -> None:
    assert input_type_of(content_type, headers) == expected


def test_error_headers_carry_no_content() -> None:
    record = {
        "kind": "MappingError",
        "reason": "invalid timestamp",
        "location": "PID-7",
        "template": "Patient.j2:33",
        "hl7_error_code": "207",
        "stage": "conversion",
        "detail": "20241341 SECRET",
        "outcome": {"issue": []},
        "issues": ["SECRET"],
        "status": 503,
        "attempts": 2,
        "control_id": "C-1",
    }
    headers = error_headers(record, failed_at=1700000000.5)
    assert set(headers) <= {*ERROR_HEADERS.values(), H_FAILED_AT}
    assert headers[H_FAILED_AT] == "1700000000.5"
    assert not any("SECRET" in str(value) for value in headers.values())
    assert headers["x-passerelle-error-status"] == 503 and headers["x-passerelle-attempts"] == 2
    assert len(str(error_headers({"reason": "x" * 5000})["x-passerelle-error-reason"])) == 1000


def test_forwarded_headers_drop_broker_and_old_error_headers() -> None:
    headers = {
        "x-death": [{}],
        "x-first-death-queue": "q",
        "x-passerelle-error-kind": "Old",
        "x-passerelle-failed-at": "1700000000.5",
        "x-passerelle-sender": "s",
        "custom": "kept",
    }
    assert forwardable_headers(headers) == {"x-passerelle-sender": "s", "custom": "kept"}


def test_partitions_are_stable_and_spread() -> None:
    # Pinned values: a salted hash (Python's ``hash``) would agree with itself inside
    # one process and still spread, but would send a patient to another partition
    # after a restart.
    assert partition_of("mllp/APP^FAC|MRN-1^HOSP", 16) == 13
    assert partition_of("mllp/APP^FAC|MRN-2^HOSP", 16) == 15
    assert partition_of("mllp/APP^FAC|MRN-1^HOSP", 1024) == 605
    counts = collections.Counter(partition_of(f"sender|MRN-{n}", 16) for n in range(16000))
    assert set(counts) == set(range(16))
    assert min(counts.values()) > 800  # about 1000 each


def test_forwarded_headers_stay_within_their_budget_largest_foreign_ones_left_out() -> None:
    """A producer's headers just under the broker's frame limit, plus the error headers,
    no longer fit: the broker closed the connection and the message came back for ever."""
    headers = {
        "x-custom": "x" * 130_900,
        "x-other": "y" * 20_000,
        "x-small": "keep me",
        "x-passerelle-sender": "mllp/LAB^CHU",
        "x-passerelle-envelope": 1,
    }
    forwarded = forwardable_headers(headers)
    assert forwarded[H_DROPPED_HEADERS] == "x-custom"
    assert forwarded["x-other"] == headers["x-other"] and forwarded["x-small"] == "keep me"
    assert forwarded["x-passerelle-sender"] == "mllp/LAB^CHU"
    assert len(str(forwarded)) < FORWARDED_HEADERS_BUDGET
    # Passerelle's own headers go last, and an earlier note is not carried over.
    ours = {"x-passerelle-sender": "s" * 40_000, "x-big": "b" * 10_000, H_DROPPED_HEADERS: "old"}
    assert forwardable_headers(ours)[H_DROPPED_HEADERS] == "x-big,x-passerelle-sender"
    assert forwardable_headers({"x-small": "a"}) == {"x-small": "a"}
