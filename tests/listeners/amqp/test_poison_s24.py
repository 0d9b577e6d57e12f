"""Session 24, ``passerelle worker`` and a poison message: one whose conversion kills its
conversion process (the OOM killer on one huge message, a crash in a C extension).

Before: retried in place like a transient failure, for ever (``max_attempts = 0``), the
pool killed at each retry and the partition's later messages waiting behind it for good.
Now the third death while converting it dead-letters it (kind ``ConversionProcessDied``,
stage conversion). A real RabbitMQ node, the partition worker on the test's loop with
real conversion processes that SIGKILL themselves, the real test FHIR server. Templates
compiled first and waits of minutes, for a loaded host: :func:`.poison_support.prepare`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from listeners import conversion
from listeners.amqp.envelope import ERROR_HEADERS, partition_of
from listeners.conversion_deaths import CONVERSION_PROCESS_DIED, DEATHS_TO_DEAD_LETTER
from tests.listeners.amqp.poison_support import (
    CONVERSION_DEADLINE,
    DEADLINE,
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
    envelope,
    ordering_key,
    patients,
)
from tests.listeners.support import die_on_poison, marker_dir, slow_innocent_and_poison
from tests.support.fhirserver import FhirServer
from tests.support.log_records import log_records
from tests.support.rabbitmq import RabbitMq

pytestmark = pytest.mark.anyio


async def test_a_message_killing_its_conversion_process_is_dead_lettered_at_the_third_death(
    fhir: FhirServer,
    broker: RabbitMq,
    names: Names,
    configure_worker: Configure,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = configure_worker(
        1, backoff_initial=0.05, backoff_max=0.5, conversion_timeout=CONVERSION_DEADLINE
    )
    assert config.delivery.max_attempts == 0  # the default: retried for ever before
    monkeypatch.setattr(conversion, "_convert", die_on_poison)
    with log_records("passerelle") as records:
        async with running_worker(config, partitions=1) as worker:
            # Same patient: NEXT-2 waits behind POISON-1 in its partition.
            letter = await stored_dead_letter(
                worker,
                config,
                broker.url,
                names,
                [envelope("POISON-1", "AMQ-P", "Poison"), envelope("NEXT-2", "AMQ-P", "Next")],
            )
            pool = worker.pool
            assert pool is not None and pool.restarts == DEATHS_TO_DEAD_LETTER
    headers = letter.headers or {}
    assert headers[ERROR_HEADERS["kind"]] == CONVERSION_PROCESS_DIED
    assert headers[ERROR_HEADERS["stage"]] == "conversion"
    assert b"POISON-1" in letter.body
    assert patients(fhir, "AMQ-P"), "NEXT-2 was not delivered"
    assert dead_letter_levels(records) == [logging.ERROR]


async def test_mode_delivery_dead_letters_a_message_killing_its_process_at_the_third_death(
    broker: RabbitMq, names: Names, configure: Configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    # [amqp.consumer] mode "delivery" (the service converts and delivers what it consumes):
    # before, counted as attempts (max_attempts, 10 by default), each one killing the pool
    # and the conversions in progress, then dead-lettered as "attempts exhausted".
    config = configure(consumer={"mode": "delivery", "retry_delays": [0.1]}, delivery=DEADLINE)
    assert config.amqp.consumer.max_attempts > DEATHS_TO_DEAD_LETTER
    monkeypatch.setattr(conversion, "_convert", die_on_poison)
    with log_records("passerelle") as records:
        # Real conversion processes.
        async with running_consumer(config) as service:
            letter = await consumed_dead_letter(broker.url, names, [adt("POISON-3", mrn="MRN-P3")])
            pool = service.pool
            assert pool is not None and pool.restarts == DEATHS_TO_DEAD_LETTER
    headers = letter.headers or {}
    assert headers[ERROR_HEADERS["kind"]] == CONVERSION_PROCESS_DIED
    assert headers[ERROR_HEADERS["stage"]] == "conversion"
    assert b"POISON-3" in letter.body
    # An ERROR, as the SQLite backend and the worker log it (was a WARNING here).
    assert dead_letter_levels(records) == [logging.ERROR]


async def test_a_message_of_another_partition_failed_by_the_poison_is_still_delivered(
    tmp_path: Path,
    fhir: FhirServer,
    broker: RabbitMq,
    names: Names,
    configure_worker: Configure,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # SLOW-2 converts in the other process when POISON-1 kills its own: failed with it,
    # retried alone, delivered. Without the turn alone it was in progress at each of the
    # poison's retries and dead-lettered with it.
    config = configure_worker(
        2,
        backoff_initial=0.05,
        backoff_max=0.5,
        convert_processes=2,
        conversion_timeout=CONVERSION_DEADLINE,
    )
    poison = "AMQ-P1"
    slow = next(
        mrn
        for mrn in (f"AMQ-S{n}" for n in range(100))
        if partition_of(ordering_key(mrn), 2) != partition_of(ordering_key(poison), 2)
    )
    monkeypatch.setattr(conversion, "_convert", slow_innocent_and_poison)
    with log_records("passerelle") as records:
        async with running_worker(config, partitions=2) as worker:
            letter = await stored_dead_letter(
                worker,
                config,
                broker.url,
                names,
                [
                    envelope("SLOW-2", slow, marker_dir(tmp_path)),
                    envelope("POISON-1", poison, marker_dir(tmp_path)),
                ],
            )
    assert b"POISON-1" in letter.body
    assert (letter.headers or {})[ERROR_HEADERS["kind"]] == CONVERSION_PROCESS_DIED
    assert patients(fhir, slow), "SLOW-2 was not delivered"
    retried = [
        r
        for r in records
        if r.getMessage() == "delivery failed unexpectedly; will retry"
        and getattr(r, "control_id", None) == "SLOW-2"
    ]
    assert retried, "SLOW-2 was not failed by the poison's death: the test proves nothing"
