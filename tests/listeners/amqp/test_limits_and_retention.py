"""The AMQP consumer's size limit (``amqp.max_message_bytes``) and the retention of the
dead-letter queue (``x-message-ttl`` from ``amqp.dead_letter_retention``, by default
``queue.dead_letter_retention``), against a real RabbitMQ node."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from listeners.amqp.broker import connect, connect_plain
from listeners.amqp.envelope import ERROR_HEADERS
from listeners.amqp.topology import declare_dead_letters, declare_partitions
from listeners.config import Secret
from tests.listeners.amqp.support import (
    AmqpClient,
    Configure,
    Names,
    adt,
    bundle_posts,
    captured_logs,
    eventually,
    log_entries,
    running_service,
)
from tests.support.fhirserver import FhirServer
from tests.support.rabbitmq import RabbitMq

pytestmark = pytest.mark.anyio

HL7 = "x-application/hl7-v2+er7"
LIMIT = 64 * 1024


def oversized_adt() -> bytes:
    """A readable, supported ADT just over :data:`LIMIT`, patient data included."""
    body = adt("BIG-1", mrn="MRN-SECRET-BIG", family="SECRETNAME")
    note = b"NTE|1||" + b"SECRET-NOTE " * ((LIMIT - len(body)) // 12 + 10) + b"\r"
    return body + note


@pytest.mark.parametrize("mode", ["delivery", "commit"])
async def test_a_message_over_max_message_bytes_is_dead_lettered_before_conversion(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure, mode: str
) -> None:
    config = configure(consumer={"mode": mode}, amqp={"max_message_bytes": LIMIT})
    big = oversized_adt()
    assert len(big) > LIMIT
    with captured_logs() as logs:
        async with running_service(config) as service, AmqpClient(broker.url) as client:
            await client.publish(names.ingress, "adt", big, content_type=HL7, message_id="big")
            await client.publish(
                names.ingress, "adt", adt("SMALL-1", mrn="MRN-SMALL"), content_type=HL7
            )
            (letter,) = await client.take(names.dead_letters, 1)
            await eventually(lambda: len(bundle_posts(fhir)) == 1, what="the small message")
            metrics = service.metrics
            assert metrics.dead_lettered.labels("oversized", "unknown")._value.get() == 1
            assert metrics.received.labels("amqp", "oversized")._value.get() == 1
            assert await client.counts(names.ingress) == (0, 1)
    assert letter.message_id == "big"
    assert letter.body == big, "the dead letter keeps the message for a retry"
    headers = letter.headers or {}
    assert headers[ERROR_HEADERS["kind"]] == "MessageTooLarge"
    assert headers[ERROR_HEADERS["stage"]] == "intake"
    assert headers[ERROR_HEADERS["hl7_error_code"]] == "207"
    assert headers[ERROR_HEADERS["reason"]] == (
        f"message of {len(big)} bytes exceeds the maximum of {LIMIT} bytes (amqp.max_message_bytes)"
    )
    assert not any("SECRET" in str(value) for value in headers.values())
    text = logs.getvalue()
    assert "SECRET" not in text
    refused = [e for e in log_entries(logs) if e.get("event") == "oversized_message"]
    assert len(refused) == 1 and refused[0]["size"] == len(big)
    # Nothing of it converted or delivered: one bundle, the small message's.
    assert len(bundle_posts(fhir)) == 1


async def queue_count(client: AmqpClient, queue: str, wanted: int, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (count := (await client.counts(queue))[0]) != wanted:
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"{queue}: {count} message(s) after {timeout:g}s, expected {wanted}")
        await asyncio.sleep(0.05)


async def test_the_dead_letter_queue_deletes_dead_letters_after_the_retention(
    broker: RabbitMq, names: Names, configure: Configure
) -> None:
    config = configure(consumer={"mode": "delivery"}, queue={"dead_letter_retention": "3s"})
    assert config.amqp.dead_letter_retention == 3.0
    async with running_service(config), AmqpClient(broker.url) as client:
        await client.publish(names.ingress, "x", b"not HL7 at all\r", content_type="text/plain")
        await queue_count(client, names.dead_letters, 1, timeout=2.5)
        await queue_count(client, names.dead_letters, 0, timeout=10)
        # Declared with that TTL: the same arguments are taken again, no others.
        channel = await client.channel()
        await channel.declare_queue(
            names.dead_letters, durable=True, arguments={"x-message-ttl": 3000}
        )


async def test_the_retention_off_declares_no_ttl(
    broker: RabbitMq, names: Names, configure: Configure
) -> None:
    config = configure(
        consumer={"mode": "delivery"},
        queue={"dead_letter_retention": "2s"},
        amqp={"dead_letter_retention": "off"},
    )
    assert config.amqp.dead_letter_retention is None
    async with running_service(config), AmqpClient(broker.url) as client:
        await client.publish(names.ingress, "x", b"not HL7 at all\r", content_type="text/plain")
        await queue_count(client, names.dead_letters, 1, timeout=10)
        await asyncio.sleep(3)
        assert (await client.counts(names.dead_letters))[0] == 1
        channel = await client.channel()
        await channel.declare_queue(names.dead_letters, durable=True)


async def test_an_existing_dead_letter_queue_without_ttl_is_used_with_a_warning(
    broker: RabbitMq, names: Names, configure: Configure
) -> None:
    # As earlier versions declared it: no arguments. Redeclaring it with a TTL is refused
    # by the broker (PRECONDITION_FAILED), which used to be a failed start.
    async with AmqpClient(broker.url) as client:
        await (await client.channel()).declare_queue(names.dead_letters, durable=True)
    config = configure(consumer={"mode": "delivery"}, queue={"dead_letter_retention": "2s"})
    with captured_logs() as logs:
        async with running_service(config) as service, AmqpClient(broker.url) as client:
            await client.publish(names.ingress, "x", b"not HL7 at all\r", content_type="text/plain")
            await queue_count(client, names.dead_letters, 1, timeout=10)
            assert service.consumer is not None
            await service.consumer.check()
            await asyncio.sleep(3)
            assert (await client.counts(names.dead_letters))[0] == 1, "used as it was"
    warnings = [e for e in log_entries(logs) if e.get("event") == "dead_letter_queue_arguments"]
    assert len(warnings) == 1, warnings
    assert names.dead_letters in warnings[0]["message"]
    assert "rabbitmqctl set_policy" in warnings[0]["message"]


@pytest.mark.parametrize("robust", [True, False])
async def test_declaring_the_dead_letters_keeps_the_callers_channel_usable(
    broker: RabbitMq, names: Names, configure: Configure, robust: bool
) -> None:
    """The consumer and the queue backend declare on a robust channel, the workers on a
    plain one: a refused TTL must not close it (it declares the partitions next)."""
    async with AmqpClient(broker.url) as client:
        await (await client.channel()).declare_queue(names.dead_letters, durable=True)
    amqp = configure().amqp
    url = Secret(broker.url)
    connection = (
        await connect(url, role="test") if robust else await connect_plain(url, role="test")
    )
    try:
        channel = await connection.channel(publisher_confirms=False)
        await declare_dead_letters(connection, channel, amqp)
        assert len(await declare_partitions(connection, channel, amqp)) == amqp.partitions
        assert not channel.is_closed
        # Bound: a message published to the dead-letter exchange lands in the queue.
        exchange = await channel.get_exchange(amqp.dead_letter_exchange, ensure=False)
        await exchange.publish(aio_pika.Message(b"x"), "intake")
        async with AmqpClient(broker.url) as client:
            await queue_count(client, names.dead_letters, 1, timeout=10)
    finally:
        await connection.close()
