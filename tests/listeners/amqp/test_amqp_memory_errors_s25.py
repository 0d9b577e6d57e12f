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
``MemoryError`` of a conversion is raised in its conversion process, a delivery's where
the request's body is made (:mod:`tests.listeners.support`). Templates compiled first and
waits of minutes, for a loaded host: :func:`.poison_support.prepare`.
"""

from __future__ import annotations

import logging

import pytest

from listeners import conversion
from listeners.amqp.envelope import ERROR_HEADERS
from listeners.conversion_deaths import CONVERSION_OUT_OF_MEMORY, DELIVERY_OUT_OF_MEMORY
from listeners.delivery import fhir as fhir_delivery
from tests.listeners.amqp.poison_support import (
    CONVERSION_DEADLINE,
    DEADLINE,
    PATIENCE,
    consumed_dead_letter,
    dead_letter_levels,
    running_consumer,
    running_worker,
    stored_dead_letter,
)
from tests.listeners.amqp.support import (
    Configure,
    Names,
    adt,
    bundle_posts,
    envelope,
    eventually,
    patients,
)
from tests.listeners.support import MARKER, memory_error_on_huge, out_of_memory_for_marker
from tests.support.fhirserver import FhirServer
from tests.support.log_records import log_records
from tests.support.rabbitmq import RabbitMq

pytestmark = pytest.mark.anyio


async def test_the_consumer_counts_a_conversion_memory_error_as_a_death(
    broker: RabbitMq, names: Names, configure: Configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = configure(consumer={"mode": "delivery", "retry_delays": [0.1]}, delivery=DEADLINE)
    assert config.amqp.consumer.max_attempts == 10
    monkeypatch.setattr(conversion, "_convert", memory_error_on_huge)
    with log_records("passerelle") as records:
        # Real conversion processes.
        async with running_consumer(config) as service:
            letter = await consumed_dead_letter(broker.url, names, [adt("HUGE-1", mrn="MRN-H1")])
            pool = service.pool
            assert pool is not None and pool.restarts == 0  # the process survived
    headers = letter.headers or {}
    assert headers[ERROR_HEADERS["kind"]] == CONVERSION_OUT_OF_MEMORY
    assert headers[ERROR_HEADERS["stage"]] == "conversion"
    assert "3 times" in str(headers[ERROR_HEADERS["reason"]])
    assert b"HUGE-1" in letter.body
    retries = [r.getMessage() for r in records if getattr(r, "control_id", None) == "HUGE-1"]
    assert retries.count("conversion ran out of memory; will retry alone") == 2
    assert dead_letter_levels(records) == [logging.ERROR]


async def test_the_consumer_dead_letters_a_delivery_out_of_memory_at_the_third(
    fhir: FhirServer,
    broker: RabbitMq,
    names: Names,
    configure: Configure,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = configure(consumer={"mode": "delivery", "retry_delays": [0.1]}, delivery=DEADLINE)
    monkeypatch.setattr(fhir_delivery, "request_body", out_of_memory_for_marker)
    with log_records("passerelle") as records:
        async with running_consumer(config):
            letter = await consumed_dead_letter(
                broker.url,
                names,
                [adt("OOM-2", mrn="MRN-O2", family=MARKER), adt("FINE-3", mrn="MRN-F3")],
            )
            await eventually(
                lambda: patients(fhir, "MRN-F3"), timeout=PATIENCE, what="FINE-3 delivered"
            )
    headers = letter.headers or {}
    assert headers[ERROR_HEADERS["kind"]] == DELIVERY_OUT_OF_MEMORY
    assert headers[ERROR_HEADERS["stage"]] == "delivery"
    assert "ran out of memory 3 times" in str(headers[ERROR_HEADERS["reason"]])
    assert b"OOM-2" in letter.body
    assert not patients(fhir, "MRN-O2")
    assert not [r for r in records if r.getMessage().startswith("delivery crashed")]
    assert dead_letter_levels(records) == [logging.ERROR]


async def test_the_worker_counts_a_delivery_memory_error_apart_from_max_attempts(
    fhir: FhirServer,
    broker: RabbitMq,
    names: Names,
    configure_worker: Configure,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # max_attempts 2, below the limit of 3: the kind of the dead letter says what failed.
    config = configure_worker(
        1,
        backoff_initial=0.05,
        backoff_max=0.2,
        max_attempts=2,
        conversion_timeout=CONVERSION_DEADLINE,
    )
    monkeypatch.setattr(fhir_delivery, "request_body", out_of_memory_for_marker)
    with log_records("passerelle") as records:
        async with running_worker(config, partitions=1) as worker:
            letter = await stored_dead_letter(
                worker,
                config,
                broker.url,
                names,
                [envelope("OOM-4", "AMQ-O", MARKER), envelope("NEXT-5", "AMQ-O", "Next")],
            )
            converted = sum(
                sample.value
                for metric in worker.metrics.registry.collect()
                for sample in metric.samples
                if sample.name == "passerelle_messages_converted_total"
            )
    headers = letter.headers or {}
    assert headers[ERROR_HEADERS["kind"]] == DELIVERY_OUT_OF_MEMORY
    assert headers[ERROR_HEADERS["stage"]] == "delivery"
    assert b"OOM-4" in letter.body
    assert converted == 2  # once each: a retry delivers the same bundles again
    assert [p["name"][0]["family"] for p in patients(fhir, "AMQ-O")] == ["Next"]
    assert len(bundle_posts(fhir)) == 1
    assert dead_letter_levels(records) == [logging.ERROR]


async def test_the_worker_dead_letters_a_conversion_memory_error_as_such_below_max_attempts(
    broker: RabbitMq, names: Names, configure_worker: Configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = configure_worker(
        1,
        backoff_initial=0.05,
        backoff_max=0.2,
        max_attempts=2,
        conversion_timeout=CONVERSION_DEADLINE,
    )
    monkeypatch.setattr(conversion, "_convert", memory_error_on_huge)
    async with running_worker(config, partitions=1) as worker:
        letter = await stored_dead_letter(
            worker, config, broker.url, names, [envelope("HUGE-6", "AMQ-H", "Huge")]
        )
    headers = letter.headers or {}
    assert headers[ERROR_HEADERS["kind"]] == CONVERSION_OUT_OF_MEMORY
    assert headers[ERROR_HEADERS["stage"]] == "conversion"


async def test_the_consumer_dead_letters_a_death_by_its_own_limit_below_max_attempts(
    broker: RabbitMq, names: Names, configure: Configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    # max_attempts 2, below the limit of 3 deaths: the retries of a death do not count in
    # x-passerelle-attempts, so the dead letter names the cause, not "attempts exhausted".
    config = configure(
        consumer={"mode": "delivery", "retry_delays": [0.1], "max_attempts": 2}, delivery=DEADLINE
    )
    assert config.amqp.consumer.max_attempts == 2
    monkeypatch.setattr(conversion, "_convert", memory_error_on_huge)
    async with running_consumer(config):
        letter = await consumed_dead_letter(broker.url, names, [adt("HUGE-7", mrn="MRN-H7")])
    headers = letter.headers or {}
    assert headers[ERROR_HEADERS["kind"]] == CONVERSION_OUT_OF_MEMORY
    assert "3 times" in str(headers[ERROR_HEADERS["reason"]])
