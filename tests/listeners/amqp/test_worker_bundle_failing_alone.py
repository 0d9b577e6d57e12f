"""``passerelle worker`` and a bundle the server fails alone (a 500 on that payload only,
every other bundle taken): a real RabbitMQ node, the partition worker on the test's loop,
the real test FHIR server behind a small real proxy that answers 500 to the POSTs carrying
one patient's name (tests/listeners/delivery/proxies.py).

Before, each retry in place of that message paused the whole destination (a WARNING
"unavailable" each time, every partition's deliveries held); now, as with the service's
workers, only its first failure does: once the destination took other bundles, its retries
back off on their own and the other partitions keep delivering.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from listeners.amqp import AmqpWorker
from listeners.amqp.envelope import partition_of
from tests.listeners.amqp.support import (
    Configure,
    envelope,
    eventually,
    ordering_key,
    patients,
    store,
)
from tests.listeners.delivery.proxies import failing_proxy
from tests.support.fhirserver import FhirServer
from tests.support.log_records import log_records

pytestmark = pytest.mark.anyio

PARTITIONS = 4
FAILING_NAME = "FAILSALONE"
INITIAL = 0.2
RUN = 5.0


def sample(worker: AmqpWorker, name: str, **labels: str) -> float:
    return sum(
        each.value
        for metric in worker.metrics.registry.collect()
        for each in metric.samples
        if each.name == name and labels.items() <= each.labels.items()
    )


async def test_a_bundle_failing_alone_backs_off_without_pausing_the_destination(
    fhir: FhirServer, configure: Configure
) -> None:
    with failing_proxy(fhir.base_url, FAILING_NAME.encode()) as proxy:
        config = configure(
            fhir_url=proxy.url,
            backend="amqp",
            amqp={"partitions": PARTITIONS},
            delivery={"backoff_initial": INITIAL, "backoff_max": 30.0},
        )
        bad = "AMQ-BAD"
        bad_partition = partition_of(ordering_key(bad), PARTITIONS)
        # Good patients in the other partitions: never queued behind the failing message.
        good = [
            mrn
            for mrn in (f"AMQ-OK-{n}" for n in range(200))
            if partition_of(ordering_key(mrn), PARTITIONS) != bad_partition
        ]
        worker = AmqpWorker(config, use_threads=True)
        with log_records("passerelle") as records:
            await worker.start()
            try:
                await eventually(lambda: len(worker.owned) == PARTITIONS, what="the partitions")
                await store(config, [envelope("BAD-1", bad, FAILING_NAME)])
                # The window opens at the first failure (a busy machine converts slowly).
                await eventually(lambda: proxy.failed_posts, timeout=60, what="the failure")
                began = time.monotonic()
                sent = 0
                while time.monotonic() - began < RUN:
                    mrn = good[sent]
                    await store(config, [envelope(f"OK-{sent}", mrn, f"Ok{sent}")])
                    sent += 1
                    await asyncio.sleep(0.1)
                attempts = len(proxy.failed_posts)
                await eventually(
                    lambda: worker.processed >= sent, timeout=30, what="the good messages"
                )
            finally:
                await worker.stop(5)
    unavailable = [
        r.getMessage()
        for r in records
        if r.levelno == logging.WARNING and "unavailable" in r.getMessage()
    ]
    # The first failure paused the destination (it might have been an outage); the later
    # ones, once other bundles had gone through, did not.
    assert len(unavailable) == 1, unavailable
    # Its own backoff (0.2 s doubling, full jitter) allows about 6 attempts in 5 s.
    assert 2 <= attempts <= 14, attempts
    assert sample(worker, "passerelle_messages_dead_lettered_total") == 0
    assert all(patients(fhir, mrn) for mrn in good[:sent])
