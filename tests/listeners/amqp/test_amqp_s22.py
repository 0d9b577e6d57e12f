"""Session 22, ``[amqp.consumer]`` in mode "commit" against a real RabbitMQ node and the
real test FHIR server: a broker redelivery of a message stored but not acknowledged —
the connection lost in between (recognised in memory), the consumer killed in between
(recognised by the SQLite queue's duplicate key for messages without a control id)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import aiormq.channel
import pytest

from listeners.amqp.envelope import ERROR_HEADERS, H_ATTEMPTS
from listeners.amqp.redeliveries import StoredUnacked
from listeners.amqp.settling import Settler
from listeners.queue.base import Envelope, PutResult
from listeners.queue.sqlite import SqliteQueue
from tests.listeners.amqp.support import (
    AmqpClient,
    Configure,
    Names,
    adt,
    bundle_posts,
    cda_sample,
    eventually,
    running_service,
)
from tests.support.fhirserver import FhirServer
from tests.support.rabbitmq import RabbitMq

pytestmark = pytest.mark.anyio

HL7 = "x-application/hl7-v2+er7"


@pytest.fixture
def acks_lost(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The consumer's acks never reach the broker (as when the process dies right after
    the put): the broker takes the message back when the connection closes, and delivers
    it again, flagged redelivered, to the next consumer."""
    lost: list[str] = []
    settle = Settler.settle

    async def without_ack(self: Settler, message: object, *, requeue: bool | None = None) -> bool:
        if requeue is None:
            # The process dies right after: whatever it would remember dies with it.
            lost.append(str(getattr(message, "message_id", None)))
            return True
        return await settle(self, message, requeue=requeue)  # type: ignore[arg-type]

    monkeypatch.setattr(Settler, "settle", without_ack)
    yield lost
    monkeypatch.setattr(Settler, "settle", settle)


@pytest.mark.parametrize(
    ("body", "content_type", "message_id"),
    [
        # No control id: matched on the AMQP message id and the bytes.
        pytest.param(adt("", mrn="MRN-NOID-1"), HL7, "noid-1", id="msh10-empty"),
        # Nor a message id: on the bytes, the broker flagging the copy redelivered.
        pytest.param(adt("", mrn="MRN-NOID-2"), HL7, None, id="msh10-empty-no-message-id"),
        # A CDA document's id is its control id: a redelivery is a retransmission.
        pytest.param(cda_sample(), "application/hl7-cda+xml", "noid-1", id="cda"),
    ],
)
async def test_a_message_redelivered_after_it_was_stored_is_stored_and_delivered_once(
    broker: RabbitMq,
    fhir: FhirServer,
    names: Names,
    configure: Configure,
    monkeypatch: pytest.MonkeyPatch,
    acks_lost: list[str],
    body: bytes,
    content_type: str,
    message_id: str | None,
) -> None:
    config = configure(consumer={"mode": "commit"})
    async with running_service(config), AmqpClient(broker.url) as client:
        with monkeypatch.context() as patch:
            if message_id is None:
                # aiormq gives every message a random message id; other clients (pika,
                # the Java client, a PHP producer) publish none.
                patch.setattr(aiormq.channel, "UUID", lambda **_: SimpleNamespace(hex=None))
            await client.publish(
                names.ingress, "adt", body, content_type=content_type, message_id=message_id
            )
        await eventually(lambda: len(bundle_posts(fhir)) == 1, what="the first delivery")
        assert acks_lost == [str(message_id)]
    # The consumer "died" before its ack: the broker delivers the message again.
    monkeypatch.undo()
    async with running_service(config) as service:
        # Taken again: either recognised (a duplicate) or stored and delivered again.
        await eventually(
            lambda: (
                service.metrics.duplicates.labels("amqp")._value.get() == 1
                or len(bundle_posts(fhir)) == 2
            ),
            what="the redelivery handled",
        )
    assert len(bundle_posts(fhir)) == 1


async def test_a_message_stored_when_the_broker_went_away_is_not_stored_again(
    broker: RabbitMq,
    fhir: FhirServer,
    names: Names,
    configure: Configure,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Mode "commit", no control id: the message is stored (a slow disk: its fsync takes
    seconds) while the broker restarts. The ack cannot reach the broker, which delivers
    the message again once the consumer is back: it is the one already stored, not a new
    one, and must not be stored and delivered a second time."""
    put = SqliteQueue.put

    async def slow_put(self: SqliteQueue, envelope: Envelope) -> PutResult:
        stored = await put(self, envelope)
        if b"MRN-SLOW-1" in envelope.payload and not slowed:
            slowed.append(envelope)
            await asyncio.sleep(6)  # the broker restarts meanwhile
        return stored

    slowed: list[Envelope] = []
    monkeypatch.setattr(SqliteQueue, "put", slow_put)
    config = configure(consumer={"mode": "commit"})
    async with running_service(config) as service, AmqpClient(broker.url) as client:
        await client.publish(
            names.ingress, "adt", adt("", mrn="MRN-SLOW-1"), content_type=HL7, message_id="slow-1"
        )
        await eventually(lambda: bool(slowed), what="the message stored")
        await asyncio.to_thread(broker.stop_app)
        await asyncio.to_thread(broker.start_app)
        await eventually(
            lambda: (
                service.metrics.duplicates.labels("amqp")._value.get() == 1
                or len(bundle_posts(fhir)) == 2
            ),
            what="the redelivery handled",
        )
    async with AmqpClient(broker.url) as client:
        assert await client.counts(names.ingress) == (0, 0)
    assert len(bundle_posts(fhir)) == 1


def delivered(body: bytes, *, redelivered: bool, message_id: str | None = None) -> Any:
    """What :class:`StoredUnacked` reads of a consumed message."""
    return SimpleNamespace(
        body=body,
        message_id=message_id,
        exchange="ingress",
        routing_key="adt",
        redelivered=redelivered,
    )


def test_only_the_redelivery_of_a_remembered_message_is_taken_and_once() -> None:
    clock = [0.0]
    unacked = StoredUnacked(ttl=60, limit=3, clock=lambda: clock[0])
    unacked.remember(delivered(b"A", redelivered=False, message_id="m1"))
    # A new message (never delivered before) with the same body and id: not taken.
    assert not unacked.take(delivered(b"A", redelivered=False, message_id="m1"))
    # Another body, or another message id: not the same message.
    assert not unacked.take(delivered(b"B", redelivered=True, message_id="m1"))
    assert not unacked.take(delivered(b"A", redelivered=True, message_id="m2"))
    assert unacked.take(delivered(b"A", redelivered=True, message_id="m1"))
    # Taken once: a second identical message redelivered is stored.
    assert not unacked.take(delivered(b"A", redelivered=True, message_id="m1"))
    # Two identical messages stored: two redeliveries taken.
    for _ in range(2):
        unacked.remember(delivered(b"C", redelivered=False))
    assert [unacked.take(delivered(b"C", redelivered=True)) for _ in range(3)] == [
        True,
        True,
        False,
    ]
    # Bounded in time and in number.
    unacked.remember(delivered(b"D", redelivered=False))
    clock[0] = 61
    assert not unacked.take(delivered(b"D", redelivered=True))
    for body in (b"E", b"F", b"G", b"H"):
        unacked.remember(delivered(body, redelivered=False))
    assert len(unacked) == 3
    assert not unacked.take(delivered(b"E", redelivered=True))
    assert unacked.take(delivered(b"H", redelivered=True))


async def _dead_letter_of_a_raising_conversion(
    config: Any, names: Names, broker: RabbitMq, error: BaseException
) -> tuple[int, int, Any]:
    """Publish MEM-1, whose conversion raises ``error`` in the pool each time; how often
    it was raised, the messages left ready in the ingress queue, and its dead letter."""
    async with running_service(config) as service, AmqpClient(broker.url) as client:
        assert service.pool is not None
        real = service.pool.convert
        raised = 0

        async def convert(route: str, payload: bytes, **options: Any) -> Any:
            nonlocal raised
            if b"MEM-1" in payload:
                raised += 1
                raise error
            return await real(route, payload, **options)

        service.pool.convert = convert  # type: ignore[method-assign]
        await client.publish(
            names.ingress, "adt", adt("MEM-1", mrn="MRN-MEM"), content_type=HL7, message_id="mem"
        )
        [letter] = await client.take(names.dead_letters, 1, timeout=15)
        await asyncio.sleep(1)
        ready, _ = await client.counts(names.ingress)
    return raised, ready, letter


async def test_mode_delivery_dead_letters_a_conversion_out_of_memory_as_a_death(
    broker: RabbitMq, names: Names, configure: Configure
) -> None:
    """The converter lets MemoryError through ("memory may come back"): it was returned to
    the queue's head every second for ever, then (session 22) counted toward
    ``max_attempts``; since session 25 it is a death (tests/listeners/amqp/
    test_amqp_memory_errors_s25.py): retried alone, the third a dead letter of its own
    kind, whatever ``max_attempts`` (here 2), its retries not counted as attempts."""
    config = configure(consumer={"mode": "delivery", "max_attempts": 2, "retry_delays": [0.1]})
    raised, ready, letter = await _dead_letter_of_a_raising_conversion(
        config, names, broker, MemoryError()
    )
    assert raised == 3 and ready == 0
    headers = letter.headers or {}
    assert letter.message_id == "mem"
    assert headers[ERROR_HEADERS["kind"]] == "ConversionOutOfMemory"
    assert headers[ERROR_HEADERS["stage"]] == "conversion"
    assert headers.get(H_ATTEMPTS, 0) == 0


async def test_mode_delivery_counts_a_conversion_that_raises_then_dead_letters_it(
    broker: RabbitMq, names: Names, configure: Configure
) -> None:
    """What the conversion pool raises besides a dead process or a MemoryError (a pool
    shut down under it) was returned to the queue's head every second for ever,
    ``max_attempts`` ignored."""
    error = RuntimeError("cannot schedule new futures after shutdown")
    config = configure(consumer={"mode": "delivery", "max_attempts": 3, "retry_delays": [0.1]})
    raised, ready, letter = await _dead_letter_of_a_raising_conversion(config, names, broker, error)
    assert raised == 3 and ready == 0
    headers = letter.headers or {}
    assert letter.message_id == "mem"
    assert headers[H_ATTEMPTS] == 3
    assert headers[ERROR_HEADERS["stage"]] == "delivery"
    assert type(error).__name__ in str(headers[ERROR_HEADERS["reason"]])
