"""An ingress queue the operator declared beforehand, with arguments of their own: a
quorum queue (replicated, RabbitMQ's recommended type, ``x-delivery-limit`` against
poison) is used as it is — messages delivered, retried through the TTL queues,
dead-lettered — instead of ``passerelle serve`` failing to start on the broker's
PRECONDITION_FAILED (``inequivalent arg 'x-queue-type'``)."""

from __future__ import annotations

import aio_pika
import pytest

from listeners.amqp.envelope import ERROR_HEADERS
from tests.listeners.amqp.support import (
    AmqpClient,
    Configure,
    Names,
    adt,
    bundle_posts,
    captured_logs,
    eventually,
    log_entries,
    patients,
    running_service,
)
from tests.support.fhirserver import FhirServer
from tests.support.rabbitmq import RabbitMq

pytestmark = pytest.mark.anyio

HL7 = "x-application/hl7-v2+er7"


async def test_a_quorum_ingress_queue_declared_by_the_operator_is_consumed(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    connection = await aio_pika.connect(broker.url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(
            names.ingress,
            durable=True,
            arguments={"x-queue-type": "quorum", "x-delivery-limit": 5},
        )
    finally:
        await connection.close()
    config = configure(consumer={"mode": "delivery", "retry_delays": [0.2]})
    with captured_logs() as logs:
        async with running_service(config) as service, AmqpClient(broker.url) as client:
            assert (await service.readiness())["amqp-consumer"] is None
            fhir.fail(503)
            await client.publish(
                names.ingress, "adt", adt("QQ-1", mrn="MRN-QQ-1"), content_type=HL7
            )
            await client.publish(
                names.ingress, "junk", b"not HL7\r", content_type="text/plain", message_id="junk"
            )
            [letter] = await client.take(names.dead_letters, 1)
            await eventually(lambda: patients(fhir, "MRN-QQ-1"), what="the retried delivery")
            assert await client.counts(names.ingress) == (0, 1)
    assert letter.message_id == "junk"
    assert (letter.headers or {})[ERROR_HEADERS["kind"]] == "ParseError"
    assert [r["status"] for r in bundle_posts(fhir)] == [503, 200]
    [warning] = [e for e in log_entries(logs) if e.get("event") == "ingress_queue_arguments"]
    assert "x-queue-type" in warning["message"] and warning["level"] == "warning"
