"""``passerelle worker`` (``queue.backend = "amqp"``) pauses a destination that is down:
a real RabbitMQ node, the partition worker on the test's loop, the test FHIR server
answering 503 for a while. The partitions' messages wait at the gate unsent, probe in
turn, all go when the server is back (each patient's in order), and a worker stopping
during a pause gives its waiting messages back at once, counting no attempt for them."""

from __future__ import annotations

import asyncio
import time

import pytest

from listeners.amqp import AmqpWorker
from listeners.amqp.envelope import partition_of
from tests.listeners.amqp.support import (
    AmqpClient,
    Configure,
    Names,
    bundle_posts,
    envelope,
    eventually,
    history_families,
    ordering_key,
    patients,
    store,
)
from tests.support.fhirserver import FhirServer
from tests.support.log_records import log_records
from tests.support.rabbitmq import RabbitMq

pytestmark = pytest.mark.anyio

PARTITIONS = 4
INITIAL = 0.05
MAXIMUM = 0.5


def spread_patients(per_partition: int) -> list[str]:
    """MRNs whose messages land ``per_partition`` in each partition."""
    chosen: dict[int, list[str]] = {n: [] for n in range(PARTITIONS)}
    candidate = 0
    while any(len(mrns) < per_partition for mrns in chosen.values()):
        mrn = f"AMQ-{candidate}"
        candidate += 1
        mrns = chosen[partition_of(ordering_key(mrn), PARTITIONS)]
        if len(mrns) < per_partition:
            mrns.append(mrn)
    return [mrn for mrns in chosen.values() for mrn in mrns]


def most_requests(outage: float) -> int:
    """The partitions' messages in flight when the outage began, then one probe per pause
    (a pause lasts at least half its backoff step)."""
    probes, elapsed, step = 0, 0.0, INITIAL
    while elapsed <= outage:
        elapsed += step / 2
        probes += 1
        step = min(MAXIMUM, step * 2)
    return PARTITIONS + probes


def sample(worker: AmqpWorker, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    return sum(
        each.value
        for metric in worker.metrics.registry.collect()
        for each in metric.samples
        if each.name == name and labels.items() <= each.labels.items()
    )


async def test_partitions_wait_for_a_paused_destination_and_probe_in_turn(
    fhir: FhirServer, configure: Configure
) -> None:
    config = configure(
        backend="amqp",
        amqp={"partitions": PARTITIONS},
        # Each message is the probe about one step in four: five attempts are plenty
        # when waiting is no attempt; retried on their own, they would be dead.
        delivery={"backoff_initial": INITIAL, "backoff_max": MAXIMUM, "max_attempts": 5},
    )
    mrns = spread_patients(2)
    fhir.fail(503, count=1_000_000)
    worker = AmqpWorker(config, use_threads=True)
    await worker.start()
    try:
        await eventually(lambda: len(worker.owned) == PARTITIONS, what="the partitions")
        await store(
            config,
            [envelope(f"{mrn}-{v}", mrn, f"{mrn}-v{v}") for v in (1, 2) for mrn in mrns],
        )
        await eventually(lambda: bundle_posts(fhir), what="the first failure")
        began = time.monotonic()
        await asyncio.sleep(1.5)
        posts = await asyncio.to_thread(bundle_posts, fhir)
        outage = time.monotonic() - began
        paused = sample(worker, "passerelle_destination_available", destination="default")
        readiness = await worker.readiness()
        fhir.control(clearFaults=True)
        await eventually(lambda: worker.processed == 2 * len(mrns), what="every message")
    finally:
        await worker.stop(5)
    assert {p["status"] for p in posts} == {503}
    assert 3 <= len(posts) <= most_requests(outage), len(posts)
    assert sample(worker, "passerelle_messages_dead_lettered_total") == 0
    assert sample(worker, "passerelle_bundles_delivered_total") == 2 * len(mrns)
    for mrn in mrns:
        (patient,) = patients(fhir, mrn)
        assert history_families(fhir, patient["id"]) == [f"{mrn}-v1", f"{mrn}-v2"]
    assert paused == 0
    assert sample(worker, "passerelle_destination_available", destination="default") == 1
    assert "deliveries paused" in (readiness["destination:default"] or "")


async def test_a_worker_stopping_during_a_pause_gives_the_waiting_messages_back(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    config = configure(
        backend="amqp",
        amqp={"partitions": PARTITIONS},
        delivery={"backoff_initial": 20.0, "backoff_max": 20.0, "max_attempts": 1},
    )
    mrns = spread_patients(1)
    fhir.fail(503, count=1_000_000)
    worker = AmqpWorker(config, use_threads=True)
    await worker.start()
    stopped = False
    try:
        await eventually(lambda: len(worker.owned) == PARTITIONS, what="the partitions")
        # The first message fails (max_attempts 1: dead-lettered); the others come after
        # and find the destination paused for 10-20 s.
        await store(config, [envelope(f"{mrns[0]}-1", mrns[0], "first")])
        await eventually(lambda: bundle_posts(fhir), what="the first failure")
        await store(config, [envelope(f"{mrn}-1", mrn, mrn) for mrn in mrns[1:]])
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await worker.stop(30)
        stopped = True
        took = time.monotonic() - started
    finally:
        if not stopped:
            await worker.stop(1)
    assert took < 5.0, took  # not the pause, nor the 30 s grace
    assert len(bundle_posts(fhir)) == 1  # waiting is not sending
    assert sample(worker, "passerelle_messages_dead_lettered_total") == 1
    async with AmqpClient(broker.url) as client:
        counts = [await client.counts(names.partition(n)) for n in range(PARTITIONS)]
    assert sum(ready for ready, _ in counts) == len(mrns) - 1  # back in their queues
    # The next owner, the destination back: attempts are counted per handling, not on the
    # message (no header, no broker delivery limit), so a message given back unsent at a
    # stop is at its first attempt there (with max_attempts 1, not dead-lettered).
    fhir.control(clearFaults=True)
    config = configure(
        backend="amqp",
        amqp={"partitions": PARTITIONS},
        delivery={"backoff_initial": INITIAL, "backoff_max": MAXIMUM, "max_attempts": 1},
    )
    restarted = AmqpWorker(config, use_threads=True)
    with log_records("passerelle.amqp.worker") as records:
        await restarted.start()
        try:
            await eventually(
                lambda: restarted.processed == len(mrns) - 1, what="the messages given back"
            )
        finally:
            await restarted.stop(5)
    delivered = {
        record.__dict__["control_id"]: record.__dict__["attempt"]
        for record in records
        if record.getMessage() == "delivered"
    }
    assert delivered == {f"{mrn}-1": 1 for mrn in mrns[1:]}
    assert sample(restarted, "passerelle_messages_dead_lettered_total") == 0
