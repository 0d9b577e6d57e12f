"""Bundles out over AMQP: the AMQP sink's confirms and failures, the composite sink."""

from __future__ import annotations

import hashlib
import json
import time

import aio_pika
import pytest

from listeners.amqp.publisher import AmqpSink, CompositeSink
from listeners.config import AmqpPublishConfig, DestinationConfig, Secret
from listeners.delivery import FhirServerSink, build_sink
from listeners.errors import RejectedDeliveryError, TransientDeliveryError
from listeners.queue.base import Envelope
from tests.listeners.amqp.support import AmqpClient, Names, bundle_posts
from tests.support.fhirserver import FhirServer
from tests.support.rabbitmq import RabbitMq

pytestmark = pytest.mark.anyio

BUNDLE = {
    "resourceType": "Bundle",
    "id": "b-1",
    "type": "transaction",
    "entry": [
        {
            "fullUrl": "Patient/p-pub-1",
            "resource": {"resourceType": "Patient", "id": "p-pub-1"},
            "request": {"method": "PUT", "url": "Patient/p-pub-1"},
        }
    ],
}
ENVELOPE = Envelope(
    payload=b"MSH|...",
    sender="mllp/APP^FAC",
    listener="mllp",
    received_at=time.time(),
    ordering_key="k",
    control_id="CTRL-1",
    message_type="ADT^A01^ADT_A01",
)


def publish_config(broker: RabbitMq, names: Names, **changes: object) -> AmqpPublishConfig:
    settings: dict[str, object] = {
        "url": Secret(broker.url),
        "exchange": names.bundles,
        "queue": names.bundles,
        "routing_key": "bundle",
        "confirm_timeout": 3.0,
    }
    settings.update(changes)
    return AmqpPublishConfig(**settings)  # type: ignore[arg-type]


async def test_a_confirmed_bundle_is_in_the_queue_with_stable_ids(
    broker: RabbitMq, names: Names
) -> None:
    sink = AmqpSink("out", publish_config(broker, names))
    try:
        await sink.check()
        receipt = await sink.deliver(BUNDLE, ENVELOPE)
        await sink.deliver(json.dumps(BUNDLE, separators=(",", ":")).encode(), ENVELOPE)
    finally:
        await sink.close()
    assert receipt.destination == "out" and receipt.location == f"amqp:{names.bundles}/bundle"
    async with AmqpClient(broker.url) as client:
        first, second = await client.take(names.bundles, 2)
    assert json.loads(first.body) == BUNDLE
    assert first.content_type == "application/fhir+json"
    assert first.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    # No correlation id came with the message: its control id stands for it.
    assert first.correlation_id == "CTRL-1"
    assert (first.headers or {})["x-passerelle-control-id"] == "CTRL-1"
    # The same bundle published again has the same message id (consumers can dedupe).
    assert first.message_id == second.message_id == hashlib.sha256(second.body).hexdigest()[:32]


async def test_unroutable_and_nacked_publications_are_transient(
    broker: RabbitMq, names: Names
) -> None:
    unbound = AmqpSink("out", publish_config(broker, names, queue=None))
    with pytest.raises(TransientDeliveryError, match="unroutable"):
        await unbound.deliver(BUNDLE, ENVELOPE)
    await unbound.close()
    async with AmqpClient(broker.url) as client:
        channel = await client.channel()
        full = await channel.declare_queue(
            f"{names.prefix}.full", arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
        )
        exchange = await channel.declare_exchange(f"{names.prefix}.to-full", "topic", durable=True)
        await full.bind(exchange, "#")
    nacking = AmqpSink(
        "out", publish_config(broker, names, exchange=f"{names.prefix}.to-full", queue=None)
    )
    with pytest.raises(TransientDeliveryError, match="refused"):
        await nacking.deliver(BUNDLE, ENVELOPE)
    await nacking.close()


async def test_a_bundle_over_the_brokers_size_limit_is_rejected(
    broker: RabbitMq, names: Names
) -> None:
    broker.ctl("eval", "application:set_env(rabbit, max_message_size, 4096).")
    sink = AmqpSink("out", publish_config(broker, names))
    try:
        with pytest.raises(RejectedDeliveryError, match="refused"):
            await sink.deliver(b"{" + b" " * 8192 + b"}", ENVELOPE)
        # The channel was closed by the broker; the next publication works again.
        await sink.deliver(BUNDLE, ENVELOPE)
    finally:
        broker.ctl("eval", "application:set_env(rabbit, max_message_size, 134217728).")
        await sink.close()


async def test_an_unreachable_broker_is_transient_and_not_ready() -> None:
    config = AmqpPublishConfig(url=Secret("amqp://guest:s3cret@127.0.0.1:1/"), confirm_timeout=2.0)
    sink = AmqpSink("out", config)
    with pytest.raises(TransientDeliveryError) as raised:
        await sink.check()
    assert "s3cret" not in str(raised.value)
    with pytest.raises(TransientDeliveryError):
        await sink.deliver(BUNDLE, ENVELOPE)


async def test_the_composite_sink_needs_both_destinations(
    broker: RabbitMq, names: Names, fhir: FhirServer
) -> None:
    destination = DestinationConfig(url=fhir.base_url, amqp=publish_config(broker, names))
    sink = build_sink(destination)
    assert isinstance(sink, CompositeSink)
    assert [type(s) for s in sink.sinks] == [FhirServerSink, AmqpSink]
    assert isinstance(build_sink(DestinationConfig(amqp=publish_config(broker, names))), AmqpSink)
    try:
        fhir.fail(503)
        with pytest.raises(TransientDeliveryError):
            await sink.deliver(BUNDLE, ENVELOPE)
        receipt = await sink.deliver(BUNDLE, ENVELOPE)
        assert receipt.status == 200
        await sink.check()
    finally:
        await sink.close()
    assert [post["status"] for post in bundle_posts(fhir)] == [503, 200]
    async with AmqpClient(broker.url) as client:
        assert len(await client.take(names.bundles, 1)) == 1
        assert await client.counts(names.bundles) == (0, 0)
