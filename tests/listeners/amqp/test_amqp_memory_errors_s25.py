"""Session 25, ``MemoryError`` on the AMQP paths: the ``[amqp.consumer]`` in mode
``delivery`` and ``passerelle worker`` (the partition worker).

Before: the consumer counted a conversion's ``MemoryError`` toward ``max_attempts``, as a
transient failure (never converting alone), and dead-lettered it "attempts exhausted"
(kind ``TransientDeliveryError``) at the tenth; a ``MemoryError`` while delivering was "delivery
crashed" to the same end. The partition worker took a delivery's ``MemoryError`` for a
conversion's: converted again, dead letter ``ConversionOutOfMemory`` at stage conversion;
and with ``max_attempts`` below 3 either was "attempts exhausted". Now a conversion's is a
death (retried alone, the third a dead letter ``ConversionOutOfMemory``) and a delivery's
is counted apart (the third a dead letter ``DeliveryOutOfMemory``, stage delivery), as the
SQLite worker does (``tests/listeners/test_memory_errors_s25.py``).

A real RabbitMQ node, the real test FHIR server, real conversion processes; the
``MemoryError`` of a conversion is raised in its conversion process
(``tests/listeners/test_poison_s24.py``), a delivery's where the request's body is made.
"""

from __future__ import annotations

import logging

import pytest

from listeners import conversion
from listeners.amqp import AmqpWorker
from listeners.amqp.envelope import ERROR_HEADERS
from listeners.conversion_deaths import CONVERSION_OUT_OF_MEMORY, DELIVERY_OUT_OF_MEMORY
from listeners.delivery import fhir as fhir_delivery
from listeners.service import Service
from tests.listeners.amqp.support import (
    AmqpClient,
    Configure,
    Names,
    adt,
    bundle_posts,
    envelope,
    eventually,
    patients,
    store,
)
from tests.listeners.test_memory_errors_s25 import MARKER, out_of_memory_for_marker
from tests.listeners.test_poison_s24 import memory_error_on_huge
from tests.support.fhirserver import FhirServer
from tests.support.log_records import log_records
from tests.support.rabbitmq import RabbitMq

pytestmark = pytest.mark.anyio


def _dead_letter_lines(records: list[logging.LogRecord]) -> list[int]:
    return [r.levelno for r in records if r.getMessage() == "message dead-lettered"]


async def test_the_consumer_counts_a_conversion_memory_error_as_a_death(
    broker: RabbitMq, names: Names, configure: Configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = configure(consumer={"mode": "delivery", "retry_delays": [0.1]})
    assert config.amqp.consumer.max_attempts == 10
    monkeypatch.setattr(conversion, "_convert", memory_error_on_huge)
    service = Service(config)  # real conversion processes
    with log_records("passerelle") as records:
        await service.start()
        try:
            async with AmqpClient(broker.url) as client:
                await client.publish(names.ingress, "adt", adt("HUGE-1", mrn="MRN-H1"))
                [letter] = await client.take(names.dead_letters, 1)
            pool = service.pool
            assert pool is not None and pool.restarts == 0  # the process survived
        finally:
            await service.stop(10)
    headers = letter.headers or {}
    assert headers[ERROR_HEADERS["kind"]] == CONVERSION_OUT_OF_MEMORY
    assert headers[ERROR_HEADERS["stage"]] == "conversion"
    assert "3 times" in str(headers[ERROR_HEADERS["reason"]])
    assert b"HUGE-1" in letter.body
    retries = [r.getMessage() for r in records if getattr(r, "control_id", None) == "HUGE-1"]
    assert retries.count("conversion ran out of memory; will retry alone") == 2
    assert _dead_letter_lines(records) == [logging.ERROR]


async def test_the_consumer_dead_letters_a_delivery_out_of_memory_at_the_third(
    fhir: FhirServer,
    broker: RabbitMq,
    names: Names,
    configure: Configure,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = configure(consumer={"mode": "delivery", "retry_delays": [0.1]})
    monkeypatch.setattr(fhir_delivery, "request_body", out_of_memory_for_marker)
    service = Service(config)
    with log_records("passerelle") as records:
        await service.start()
        try:
            async with AmqpClient(broker.url) as client:
                await client.publish(
                    names.ingress, "adt", adt("OOM-2", mrn="MRN-O2", family=MARKER)
                )
                await client.publish(names.ingress, "adt", adt("FINE-3", mrn="MRN-F3"))
                [letter] = await client.take(names.dead_letters, 1)
            await eventually(lambda: patients(fhir, "MRN-F3"), what="FINE-3 delivered")
        finally:
            await service.stop(10)
    headers = letter.headers or {}
    assert headers[ERROR_HEADERS["kind"]] == DELIVERY_OUT_OF_MEMORY
    assert headers[ERROR_HEADERS["stage"]] == "delivery"
    assert "ran out of memory 3 times" in str(headers[ERROR_HEADERS["reason"]])
    assert b"OOM-2" in letter.body
    assert not patients(fhir, "MRN-O2")
    assert not [r for r in records if r.getMessage().startswith("delivery crashed")]
    assert _dead_letter_lines(records) == [logging.ERROR]


async def test_the_worker_counts_a_delivery_memory_error_apart_from_max_attempts(
    fhir: FhirServer,
    broker: RabbitMq,
    names: Names,
    configure: Configure,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # max_attempts 2, below the limit of 3: the kind of the dead letter says what failed.
    config = configure(
        fhir_url=fhir.base_url,
        backend="amqp",
        amqp={"partitions": 1},
        delivery={"backoff_initial": 0.05, "backoff_max": 0.2, "max_attempts": 2},
    )
    monkeypatch.setattr(fhir_delivery, "request_body", out_of_memory_for_marker)
    worker = AmqpWorker(config)
    with log_records("passerelle") as records:
        await worker.start()
        try:
            await eventually(lambda: len(worker.owned) == 1, what="the partition")
            await store(
                config,
                [envelope("OOM-4", "AMQ-O", MARKER), envelope("NEXT-5", "AMQ-O", "Next")],
            )
            await eventually(lambda: worker.processed >= 2, timeout=60, what="both settled")
            async with AmqpClient(broker.url) as client:
                [letter] = await client.take(names.dead_letters, 1)
            converted = sum(
                sample.value
                for metric in worker.metrics.registry.collect()
                for sample in metric.samples
                if sample.name == "passerelle_messages_converted_total"
            )
        finally:
            await worker.stop(5)
    headers = letter.headers or {}
    assert headers[ERROR_HEADERS["kind"]] == DELIVERY_OUT_OF_MEMORY
    assert headers[ERROR_HEADERS["stage"]] == "delivery"
    assert b"OOM-4" in letter.body
    assert converted == 2  # once each: a retry delivers the same bundles again
    assert [p["name"][0]["family"] for p in patients(fhir, "AMQ-O")] == ["Next"]
    assert len(bundle_posts(fhir)) == 1
    assert _dead_letter_lines(records) == [logging.ERROR]


async def test_the_worker_dead_letters_a_conversion_memory_error_as_such_below_max_attempts(
    fhir: FhirServer,
    broker: RabbitMq,
    names: Names,
    configure: Configure,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = configure(
        fhir_url=fhir.base_url,
        backend="amqp",
        amqp={"partitions": 1},
        delivery={"backoff_initial": 0.05, "backoff_max": 0.2, "max_attempts": 2},
    )
    monkeypatch.setattr(conversion, "_convert", memory_error_on_huge)
    worker = AmqpWorker(config)
    await worker.start()
    try:
        await eventually(lambda: len(worker.owned) == 1, what="the partition")
        await store(config, [envelope("HUGE-6", "AMQ-H", "Huge")])
        await eventually(lambda: worker.processed >= 1, timeout=60, what="settled")
        async with AmqpClient(broker.url) as client:
            [letter] = await client.take(names.dead_letters, 1)
    finally:
        await worker.stop(5)
    headers = letter.headers or {}
    assert headers[ERROR_HEADERS["kind"]] == CONVERSION_OUT_OF_MEMORY
    assert headers[ERROR_HEADERS["stage"]] == "conversion"


async def test_the_consumer_dead_letters_a_death_by_its_own_limit_below_max_attempts(
    broker: RabbitMq, names: Names, configure: Configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    # max_attempts 2, below the limit of 3 deaths: the retries of a death do not count in
    # x-passerelle-attempts, so the dead letter names the cause, not "attempts exhausted".
    config = configure(consumer={"mode": "delivery", "retry_delays": [0.1], "max_attempts": 2})
    assert config.amqp.consumer.max_attempts == 2
    monkeypatch.setattr(conversion, "_convert", memory_error_on_huge)
    service = Service(config)
    await service.start()
    try:
        async with AmqpClient(broker.url) as client:
            await client.publish(names.ingress, "adt", adt("HUGE-7", mrn="MRN-H7"))
            [letter] = await client.take(names.dead_letters, 1)
    finally:
        await service.stop(10)
    headers = letter.headers or {}
    assert headers[ERROR_HEADERS["kind"]] == CONVERSION_OUT_OF_MEMORY
    assert "3 times" in str(headers[ERROR_HEADERS["reason"]])
