"""``[amqp.consumer]`` against a real RabbitMQ node and the real test FHIR server: round
trips, poison messages, retries through the TTL queues, the attempts cap."""

from __future__ import annotations

import json

import aio_pika
import pytest

from listeners.amqp.envelope import ERROR_HEADERS, H_ATTEMPTS, H_MESSAGE_ID
from tests.listeners.amqp.support import (
    AmqpClient,
    Configure,
    Names,
    adt,
    bundle_posts,
    captured_logs,
    cda_sample,
    eventually,
    log_entries,
    patients,
    running_service,
)
from tests.support.fhirserver import FhirServer
from tests.support.rabbitmq import RabbitMq

pytestmark = pytest.mark.anyio

CDA_PATIENT = ("urn:oid:1.2.250.1.999.2.1", "IPP7700321")
HL7 = "x-application/hl7-v2+er7"


async def test_hl7v2_and_cda_round_trip_to_the_fhir_server_and_the_output_exchange(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    config = configure(
        consumer={"mode": "delivery"},
        bundles=True,
    )
    async with running_service(config), AmqpClient(broker.url) as client:
        await client.publish(
            names.ingress,
            "adt.a08",
            adt("RT-1", mrn="MRN-RT-1"),
            content_type=HL7,
            message_id="msg-hl7",
            correlation_id="corr-hl7",
        )
        # No content type: detected from the first bytes.
        await client.publish(
            names.ingress, "cda.ccd", cda_sample(), message_id="msg-cda", correlation_id="corr-cda"
        )
        out = await client.take(names.bundles, 2)
        assert await client.counts(names.ingress) == (0, 1)
    by_correlation = {message.correlation_id: message for message in out}
    assert set(by_correlation) == {"corr-hl7", "corr-cda"}
    for correlation, source in (("corr-hl7", "msg-hl7"), ("corr-cda", "msg-cda")):
        message = by_correlation[correlation]
        assert message.content_type == "application/fhir+json"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert (message.headers or {})[H_MESSAGE_ID] == source
        bundle = json.loads(message.body)
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    assert patients(fhir, "MRN-RT-1")
    assert fhir.search_by_identifier("Patient", *CDA_PATIENT)
    assert [post["status"] for post in bundle_posts(fhir)] == [200, 200]


async def test_commit_mode_stores_in_the_sqlite_queue_before_the_ack(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    config = configure(
        consumer={"mode": "commit"},
    )
    async with running_service(config) as service, AmqpClient(broker.url) as client:
        for n in range(3):
            await client.publish(
                names.ingress,
                "adt",
                adt(f"CM-{n}", mrn=f"MRN-CM-{n}"),
                content_type=HL7,
                message_id=f"cm-{n}",
            )
        await eventually(lambda: len(bundle_posts(fhir)) == 3, what="three deliveries")
        # Redelivered by the broker (same sender, same control id): the duplicate window.
        await client.publish(names.ingress, "adt", adt("CM-0", mrn="MRN-CM-0"), content_type=HL7)
        await eventually(
            lambda: service.metrics.duplicates.labels("amqp")._value.get() == 1,
            what="the duplicate",
        )
        # Same control id, another message (a sender's counter reset): stored and
        # delivered, not dropped as a retransmission.
        await client.publish(names.ingress, "adt", adt("CM-1", mrn="MRN-CM-R"), content_type=HL7)
        await eventually(lambda: len(bundle_posts(fhir)) == 4, what="the reused control id")
        assert service.metrics.duplicates.labels("amqp")._value.get() == 1
    async with AmqpClient(broker.url) as client:
        # Service stopped, connection closed: anything unacked would be back in the queue.
        assert await client.counts(names.ingress) == (0, 0)
    assert all(patients(fhir, f"MRN-CM-{n}") for n in ("0", "1", "2", "R"))
    assert len(bundle_posts(fhir)) == 4


async def test_commit_mode_keeps_message_and_correlation_ids_through_the_sqlite_queue(
    broker: RabbitMq, names: Names, configure: Configure
) -> None:
    config = configure(
        consumer={"mode": "commit"},
        bundles=True,
    )
    async with running_service(config), AmqpClient(broker.url) as client:
        await client.publish(
            names.ingress,
            "adt",
            adt("CI-1", mrn="MRN-CI-1"),
            content_type=HL7,
            message_id="msg-ci-1",
            correlation_id="corr-ci-1",
        )
        [out] = await client.take(names.bundles, 1)
    # Stored in SQLite between consumption and delivery, the ids still reach the output.
    assert out.correlation_id == "corr-ci-1"
    assert (out.headers or {})[H_MESSAGE_ID] == "msg-ci-1"


async def test_poison_messages_go_to_the_dead_letter_exchange_with_error_headers(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    config = configure(consumer={"mode": "delivery"}, top={"processing_ids": ["P"]})
    poison = {
        "no-msh": (b"SECRET-PAYLOAD not HL7 at all\r", {"content_type": "text/plain"}),
        "unsupported": (
            adt("PZ-2", mrn="MRN-SECRET", family="SECRETNAME", message_type="ZZZ^Z01^ZZZ_Z01"),
            {"content_type": HL7},
        ),
        "undetectable": (b"\x00\x01SECRET-BINARY", {}),
        "bad-xml": (
            b"<ClinicalDocument xmlns='urn:hl7-org:v3'><title>SECRET-XML",
            {"content_type": "application/xml"},
        ),
        "mapping": (adt("PZ-5", mrn="MRN-SECRET-5", birth_date="20241341"), {"content_type": HL7}),
        "training": (adt("PZ-6", mrn="MRN-SECRET-6", processing_id="T"), {"content_type": HL7}),
    }
    with captured_logs() as logs:
        async with running_service(config), AmqpClient(broker.url) as client:
            for key, (body, properties) in poison.items():
                await client.publish(names.ingress, key, body, message_id=key, **properties)
            letters = await client.take(names.dead_letters, len(poison))
            assert await client.counts(names.ingress) == (0, 1)
    by_id = {str(letter.message_id): letter for letter in letters}
    assert set(by_id) == set(poison)
    for key, letter in by_id.items():
        headers = letter.headers or {}
        assert letter.body == poison[key][0], "the dead letter keeps the message for replay"
        assert headers[ERROR_HEADERS["kind"]] and headers[ERROR_HEADERS["reason"]]
        assert headers["x-passerelle-original-routing-key"] == key
        assert not any("SECRET" in str(value) for value in headers.values()), headers
    assert by_id["no-msh"].headers[ERROR_HEADERS["kind"]] == "ParseError"
    unsupported = by_id["unsupported"].headers
    assert unsupported[ERROR_HEADERS["kind"]] == "UnsupportedMessageError"
    assert unsupported[ERROR_HEADERS["hl7_error_code"]] in ("200", "201")
    assert unsupported[ERROR_HEADERS["stage"]] == "intake"
    training = by_id["training"].headers
    assert training[ERROR_HEADERS["kind"]] == "UnsupportedMessageError"
    assert training[ERROR_HEADERS["hl7_error_code"]] == "202"
    assert training[ERROR_HEADERS["location"]] == "MSH-11"
    assert by_id["undetectable"].headers[ERROR_HEADERS["kind"]] == "ParseError"
    assert by_id["bad-xml"].headers[ERROR_HEADERS["kind"]] == "ParseError"
    mapping = by_id["mapping"].headers
    assert mapping[ERROR_HEADERS["kind"]] == "MappingError"
    assert mapping[ERROR_HEADERS["stage"]] == "conversion"
    assert str(mapping[ERROR_HEADERS["location"]]).startswith("PID-7")
    assert mapping[ERROR_HEADERS["template"]]
    text = logs.getvalue()
    assert "SECRET" not in text and "20241341" not in text
    dead = [e for e in log_entries(logs) if e["message"] == "message dead-lettered"]
    assert {e["message_id"] for e in dead} == set(poison)
    assert bundle_posts(fhir) == []


async def test_transient_failures_are_retried_through_the_ttl_queue_then_delivered(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    config = configure(
        consumer={"mode": "delivery", "retry_delays": [0.3, 0.6]},
    )
    fhir.fail(503, count=2)
    with captured_logs() as logs:
        async with running_service(config) as service, AmqpClient(broker.url) as client:
            await client.publish(
                names.ingress,
                "adt",
                adt("TR-1", mrn="MRN-TR-1"),
                content_type=HL7,
                correlation_id="corr-tr",
            )
            await eventually(lambda: patients(fhir, "MRN-TR-1"), what="the delivery")
            retried = service.metrics.retried.labels("default", "503")._value.get()
            assert await client.counts(names.dead_letters) == (0, 0)
    assert [post["status"] for post in bundle_posts(fhir)] == [503, 503, 200]
    assert retried == 2
    retries = [
        e
        for e in log_entries(logs)
        if e["message"].startswith("delivery failed; will retry through the retry queue")
    ]
    assert [(e["attempt"], e["delay_s"]) for e in retries] == [(1, 0.3), (2, 0.6)]
    # Why, in words an operator can act on (the status, never the server's text).
    assert all(e["message"].endswith("(HTTP 503 Service Unavailable)") for e in retries), retries
    assert all(e["error_kind"] == "TransientDeliveryError" for e in retries), retries
    assert all(e["correlation_id"] == "corr-tr" for e in retries)
    delivered = [e for e in log_entries(logs) if e["message"] == "delivered"]
    assert [e["attempt"] for e in delivered] == [3]


async def test_after_max_attempts_the_message_goes_to_the_dead_letter_exchange(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    config = configure(
        consumer={"mode": "delivery", "retry_delays": [0.2], "max_attempts": 3},
    )
    fhir.fail(503, count=10)
    async with running_service(config), AmqpClient(broker.url) as client:
        await client.publish(
            names.ingress,
            "adt",
            adt("CAP-1", mrn="MRN-CAP-1"),
            content_type=HL7,
            message_id="cap-1",
        )
        [letter] = await client.take(names.dead_letters, 1)
        assert await client.counts(names.ingress) == (0, 1)
    headers = letter.headers or {}
    assert letter.message_id == "cap-1"
    assert headers[H_ATTEMPTS] == 3
    assert headers[ERROR_HEADERS["status"]] == 503
    assert headers[ERROR_HEADERS["kind"]] == "TransientDeliveryError"
    assert headers[ERROR_HEADERS["stage"]] == "delivery"
    assert headers["x-passerelle-original-exchange"] == names.ingress
    assert "x-death" not in headers
    assert [post["status"] for post in bundle_posts(fhir)] == [503, 503, 503]


async def test_a_rejection_by_the_server_is_dead_lettered_at_once(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    config = configure(
        consumer={"mode": "delivery"},
    )
    fhir.fail(422)
    async with running_service(config), AmqpClient(broker.url) as client:
        await client.publish(names.ingress, "adt", adt("REJ-1", mrn="MRN-REJ-1"), content_type=HL7)
        [letter] = await client.take(names.dead_letters, 1)
    headers = letter.headers or {}
    assert headers[ERROR_HEADERS["kind"]] == "RejectedDeliveryError"
    assert headers[ERROR_HEADERS["status"]] == 422
    assert headers[H_ATTEMPTS] == 1
    assert len(bundle_posts(fhir)) == 1
