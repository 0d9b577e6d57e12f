"""``passerelle serve`` with ``[amqp.consumer]`` stopped (SIGTERM) while RabbitMQ is away:
the stop is prompt and the rest of the service drains, instead of the consumer's
``basic.cancel`` waiting for a reconnection that may never come (the stop hung until the
orchestrator's SIGKILL, the MLLP listener, the delivery workers and the queue never
closed); once the broker is back, the message consumed before is not lost."""

from __future__ import annotations

import asyncio
import time

import pytest

from listeners.service import Service
from tests.listeners.amqp.support import (
    AmqpClient,
    Configure,
    Names,
    adt,
    bundle_posts,
    eventually,
    patients,
)
from tests.support.fhirserver import FhirServer
from tests.support.rabbitmq import RabbitMq

pytestmark = pytest.mark.anyio

HL7 = "x-application/hl7-v2+er7"


@pytest.mark.parametrize("mode", ["commit", "delivery"])
async def test_a_stop_while_the_broker_is_away_is_prompt(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure, mode: str
) -> None:
    config = configure(consumer={"mode": mode})
    service = Service(config, use_threads=True)
    await service.start()
    stopped = False
    try:
        async with AmqpClient(broker.url) as client:
            await client.publish(
                names.ingress, "adt", adt("AWAY-1", mrn="MRN-AWAY-1"), content_type=HL7
            )
        await eventually(lambda: patients(fhir, "MRN-AWAY-1"), what="the delivery")
        await asyncio.to_thread(broker.stop_app)
        await asyncio.sleep(1)  # the robust connection is re-establishing itself
        started = time.monotonic()
        await asyncio.wait_for(service.stop(10.0), timeout=30)
        stopped = True
        assert time.monotonic() - started < 5
    finally:
        if not stopped:
            service_stop = asyncio.ensure_future(service.stop(1.0))
            await asyncio.to_thread(broker.start_app)
            await asyncio.gather(service_stop, return_exceptions=True)
        else:
            await asyncio.to_thread(broker.start_app)
    async with AmqpClient(broker.url) as client:
        # Acked before the outage: nothing back in the queue, nothing delivered twice.
        assert await client.counts(names.ingress) == (0, 0)
    assert len(bundle_posts(fhir)) == 1
