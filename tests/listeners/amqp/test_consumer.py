"""``[amqp.consumer]`` against a real RabbitMQ node and the real test FHIR server: round
trips, poison messages, retries through the TTL queues, the attempts cap; in mode
"commit", a patient's order kept while the service's queue refuses to store (a real
SQLITE_FULL; partitions refusing publishes with ``queue.backend = "amqp"``), and at a stop
during that refusal."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import sqlite3
import time
from pathlib import Path

import aio_pika
import pytest

from listeners.amqp.envelope import ERROR_HEADERS, H_ATTEMPTS, H_MESSAGE_ID
from listeners.queue.sqlite import SqliteQueue
from listeners.service import Service
from tests.listeners.amqp.support import (
    AmqpClient,
    Configure,
    Names,
    adt,
    bundle_posts,
    captured_logs,
    cda_sample,
    eventually,
    history_families,
    log_entries,
    patients,
    running_service,
)
from tests.listeners.service.support import MetricsSnapshot
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


# -- mode "commit" while the service's queue refuses to store ---------------------------------
REFUSED = "storing the message failed"


def long_adt(control_id: str, *, mrn: str, family: str, event: str) -> bytes:
    """An ADT whose stored row needs new pages: a Z segment (which the converter ignores)
    longer than a page of the queue's database."""
    return adt(control_id, mrn=mrn, family=family, event=event) + b"ZPX|1|" + b"x" * 6000 + b"\r"


async def set_growth(service: Service, *, frozen: bool) -> None:
    """Forbid (``frozen``) or allow the queue's database to grow: ``PRAGMA max_page_count``
    on the queue's own write connection, at its current size. A write needing a new page
    then fails in SQLite itself with SQLITE_FULL ("database or disk is full"), as on a
    full disk."""
    queue = service.queue
    assert isinstance(queue, SqliteQueue)

    def pragma(conn: sqlite3.Connection) -> tuple[None, int]:
        limit = conn.execute("PRAGMA page_count").fetchone()[0] if frozen else 1_073_741_823
        # A free page would take the first row: nothing left over from the schema.
        assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
        conn.execute(f"PRAGMA max_page_count = {limit}")
        return None, 0

    await queue._submit(pragma)


def stored_control_ids(database: Path) -> list[str]:
    """Control ids of the rows of the SQLite queue, in storing order (seq)."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        return [row[0] for row in db.execute("SELECT control_id FROM messages ORDER BY seq")]


def refusals(stream: io.StringIO) -> int:
    """Lines saying that a put was refused (one per message, whatever its attempts)."""
    return sum(1 for e in log_entries(stream) if e["message"].startswith(REFUSED))


def control_id_of(body: bytes) -> str:
    return body.split(b"\r", 1)[0].split(b"|")[9].decode()


async def test_commit_mode_keeps_a_patients_order_when_storing_fails_for_a_while(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    """The A01's put is refused; the A08, prefetched behind it, must not be stored first
    once the queue takes writes again (it was, when the A01 went back to the broker)."""
    config = configure(consumer={"mode": "commit"})
    with captured_logs() as stream:
        async with running_service(config) as service, AmqpClient(broker.url) as client:
            await set_growth(service, frozen=True)
            for n, event in ((1, "A01"), (2, "A08")):
                body = long_adt(f"ORD-{n}", mrn="MRN-ORD", family=f"Ord-v{n}", event=event)
                await client.publish(names.ingress, "adt", body, content_type=HL7)
            await eventually(lambda: refusals(stream) >= 1, what="a refused put")
            await asyncio.sleep(0.5)  # a few attempts, within the former 1 s pause
            during = await service.readiness()
            failures = MetricsSnapshot.parse(service.metrics.render().decode()).value(
                "passerelle_queue_write_failures_total", operation="put"
            )
            assert stored_control_ids(config.queue.path) == []
            await set_growth(service, frozen=False)
            await eventually(lambda: len(bundle_posts(fhir)) == 2, what="both deliveries")
            after = await service.readiness()
    # Stored, then delivered, in the order sent.
    assert stored_control_ids(config.queue.path) == ["ORD-1", "ORD-2"]
    [patient] = patients(fhir, "MRN-ORD")
    assert history_families(fhir, patient["id"]) == ["Ord-v1", "Ord-v2"]
    # Retried in place (the A08 waited, was never tried), visible meanwhile.
    assert failures >= 2
    assert refusals(stream) == 1  # one line per message, not per attempt
    assert "storing consumed messages failing for" in str(during["amqp-consumer"])
    assert "database or disk is full" in str(during["amqp-consumer"])
    assert after["amqp-consumer"] is None
    stored = [e for e in log_entries(stream) if e["message"].startswith("message stored after")]
    assert [e["control_id"] for e in stored] == ["ORD-1"]


async def test_commit_mode_at_stop_returns_the_refused_message_and_its_patients_later_ones(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    """Stopping while a put is refused: that message goes back to the broker unstored, and
    so do the patient's later ones (none stored before it), in order; promptly, not after
    the stop's grace. A restart then stores and delivers them in order."""
    config = configure(consumer={"mode": "commit"})
    sent = [f"STOP-{n}" for n in (1, 2, 3)]
    with captured_logs() as stream:
        async with AmqpClient(broker.url) as client:
            async with running_service(config, grace=10.0) as service:
                await set_growth(service, frozen=True)
                for n, control_id in enumerate(sent, start=1):
                    body = long_adt(control_id, mrn="MRN-STOP", family=f"Stop-v{n}", event="A08")
                    await client.publish(names.ingress, "adt", body, content_type=HL7)
                await eventually(lambda: refusals(stream) >= 1, what="a refused put")
                await asyncio.sleep(0.3)
                began = time.monotonic()
            took = time.monotonic() - began
            assert stored_control_ids(config.queue.path) == []
            assert took < 5.0, took
            assert await client.counts(names.ingress) == (3, 0)
            # A restart (storing works again): stored and delivered in the order sent.
            async with running_service(config):
                await eventually(lambda: len(bundle_posts(fhir)) == 3, what="three deliveries")
    assert stored_control_ids(config.queue.path) == sent
    [patient] = patients(fhir, "MRN-STOP")
    assert history_families(fhir, patient["id"]) == ["Stop-v1", "Stop-v2", "Stop-v3"]


async def test_amqp_backend_keeps_a_patients_order_when_the_partitions_refuse_publishes(
    broker: RabbitMq, names: Names, configure: Configure
) -> None:
    """``queue.backend = "amqp"``: the partitions refuse publishes for a while (a policy
    ``max-length`` 0, ``overflow`` reject-publish: the broker nacks them, as when it is out
    of resources); the consumer retries in place and the A08 lands after the A01."""
    config = configure(consumer={"mode": "commit"}, backend="amqp")
    policy = f"{names.prefix}-full"
    pattern = f"^{re.escape(names.prefix)}\\.partition\\."
    with captured_logs() as stream:
        async with running_service(config), AmqpClient(broker.url) as client:
            broker.ctl(
                "set_policy",
                "--apply-to",
                "queues",
                policy,
                pattern,
                '{"max-length": 0, "overflow": "reject-publish"}',
            )
            try:
                for n, event in ((1, "A01"), (2, "A08")):
                    body = adt(f"PART-{n}", mrn="MRN-PART", family=f"Part-v{n}", event=event)
                    await client.publish(names.ingress, "adt", body, content_type=HL7)
                await eventually(lambda: refusals(stream) >= 1, what="a refused publish")
                await asyncio.sleep(0.5)
            finally:
                broker.ctl("clear_policy", policy)

            async def holding() -> list[str]:
                for partition in range(config.amqp.partitions):
                    if (await client.counts(names.partition(partition)))[0] == 2:
                        return [names.partition(partition)]
                return []

            deadline = time.monotonic() + 20
            while not (found := await holding()):
                assert time.monotonic() < deadline, "the two messages never reached a partition"
                await asyncio.sleep(0.1)
            out = await client.take(found[0], 2)
    assert [control_id_of(m.body) for m in out] == ["PART-1", "PART-2"]
    assert refusals(stream) == 1
