"""A control id (MSH-10) longer than an AMQP short string (255 bytes) as the
``correlation_id``: the message could not be encoded, so the consumer's put (and the MLLP
listener's, with ``queue.backend = "amqp"``) failed for ever and bundles out crashed.
Against a real RabbitMQ node."""

from __future__ import annotations

import dataclasses
import time

import pytest
from aio_pika.abc import AbstractIncomingMessage
from pamqp import frame, header

from listeners.amqp.envelope import H_CONTROL_ID, encode_envelope, header_text
from listeners.queue.base import Envelope
from tests.listeners.amqp.support import (
    AmqpClient,
    Configure,
    Names,
    adt,
    bundle_posts,
    eventually,
    running_service,
)
from tests.support.fhirserver import FhirServer
from tests.support.rabbitmq import RabbitMq

HL7 = "x-application/hl7-v2+er7"
LONG_ID = "LONG" + "9" * 296


def test_a_long_control_id_still_encodes_and_travels_in_its_header() -> None:
    stored = Envelope(
        payload=adt(LONG_ID, mrn="MRN-L"),
        sender="mllp/APP-A^FAC-A",
        listener="mllp",
        received_at=time.time(),
        ordering_key="k",
        control_id=LONG_ID,
    )
    message = encode_envelope(stored, partition=1)
    frame.marshal(header.ContentHeader(0, len(message.body), message.properties), 1)
    assert message.correlation_id is None
    assert header_text(message.headers, H_CONTROL_ID) == LONG_ID
    fits = encode_envelope(dataclasses.replace(stored, control_id="é" * 127))
    assert fits.correlation_id == "é" * 127  # 254 bytes: still the correlation id


@pytest.mark.anyio
async def test_commit_mode_with_the_amqp_backend_stores_a_message_with_a_long_control_id(
    broker: RabbitMq, names: Names, configure: Configure
) -> None:
    config = configure(consumer={"mode": "commit"}, backend="amqp")
    async with running_service(config) as service, AmqpClient(broker.url) as client:
        await client.publish(names.ingress, "adt", adt(LONG_ID, mrn="MRN-L"), content_type=HL7)
        stored: list[AbstractIncomingMessage] = []
        deadline = time.monotonic() + 15
        while not stored and time.monotonic() < deadline:
            for n in range(config.amqp.partitions):
                message = await client.get(names.partition(n))
                if message is not None:
                    stored.append(message)
        assert len(stored) == 1, "stored in its partition"
        assert header_text(stored[0].headers or {}, H_CONTROL_ID) == LONG_ID
        assert await client.counts(names.ingress) == (0, 1)
        assert service.consumer is not None
        await service.consumer.check()


@pytest.mark.anyio
async def test_a_bundle_of_a_message_with_a_long_control_id_is_published(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    config = configure(consumer={"mode": "delivery"}, bundles=True)
    async with running_service(config), AmqpClient(broker.url) as client:
        await client.publish(names.ingress, "adt", adt(LONG_ID, mrn="MRN-L"), content_type=HL7)
        (bundle,) = await client.take(names.bundles, 1)
        assert header_text(bundle.headers or {}, H_CONTROL_ID) == LONG_ID
        assert bundle.correlation_id is None
        await eventually(lambda: len(bundle_posts(fhir)) == 1, what="the FHIR server's copy")
        assert (await client.counts(names.dead_letters))[0] == 0
