"""A partition whose consumer the broker cancels (``basic.cancel``: the queue deleted, or,
in a cluster, the node holding the classic queue going down for a restart) is given up and
claimed again once the queue is back, instead of being held for ever by a worker that no
longer receives anything from it (its patients' messages waited until the worker
restarted)."""

from __future__ import annotations

import pytest

from listeners.amqp import AmqpWorker
from listeners.amqp.topology import declare_partitions
from tests.listeners.amqp.support import (
    AmqpClient,
    Configure,
    Names,
    captured_logs,
    envelope,
    eventually,
    log_entries,
    patients,
    store,
)
from tests.support.fhirserver import FhirServer
from tests.support.rabbitmq import RabbitMq

pytestmark = pytest.mark.anyio


async def test_a_partition_whose_consumer_the_broker_cancelled_is_claimed_again(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    config = configure(backend="amqp", amqp={"partitions": 1})
    worker = AmqpWorker(config, use_threads=True)
    with captured_logs() as logs:
        await worker.start()
        try:
            await eventually(lambda: worker.owned == [0], what="the worker to claim partition 0")
            async with AmqpClient(broker.url) as client:
                channel = await client.channel()
                await channel.queue_delete(names.partition(0))
                # Back, as the MLLP listener's robust channel declares it again.
                assert client._connection is not None
                await declare_partitions(client._connection, channel, config.amqp)
            await store(config, [envelope("CANCEL-1", "MRN-CANCEL-1", "Cancelled")])
            await eventually(
                lambda: patients(fhir, "MRN-CANCEL-1"), timeout=15, what="the delivery"
            )
            assert worker.owned == [0]
        finally:
            await worker.stop(5)
    lost = [e for e in log_entries(logs) if e.get("event") == "partition-cancelled"]
    assert len(lost) == 1 and lost[0]["level"] == "warning"
