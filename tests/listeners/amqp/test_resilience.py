"""What the AMQP side does when things break, against the real broker: ``/ready`` while the
broker is away, a message that kills its conversion process in mode "delivery", and a
partition channel the broker closes under a worker retrying in place (consumer_timeout)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

from listeners.amqp import AmqpSink, AmqpWorker
from listeners.amqp.envelope import ERROR_HEADERS, H_ATTEMPTS, H_DROPPED_HEADERS
from listeners.errors import TransientDeliveryError
from tests.listeners.amqp.support import (
    AmqpClient,
    Configure,
    Names,
    adt,
    bundle_posts,
    envelope,
    eventually,
    history_families,
    make_config,
    patients,
    running_service,
    store,
)
from tests.support.fhirserver import FhirServer
from tests.support.rabbitmq import RabbitMq

pytestmark = pytest.mark.anyio


@pytest.fixture
def fast_consumer_timeout(broker: RabbitMq) -> Iterator[None]:
    """The broker's consumer_timeout at 2 s (30 min by default), checked every 0.5 s (the
    channel tick, 60 s by default, read when a channel opens)."""
    broker.ctl("eval", "application:set_env(rabbit, consumer_timeout, 2000).")
    broker.ctl("eval", "application:set_env(rabbit, channel_tick_interval, 500).")
    try:
        yield
    finally:
        broker.ctl("eval", "application:set_env(rabbit, consumer_timeout, 1800000).")
        broker.ctl("eval", "application:set_env(rabbit, channel_tick_interval, 60000).")


async def test_the_consumer_and_an_amqp_destination_are_not_ready_while_the_broker_is_away(
    tmp_path: Path, broker: RabbitMq, names: Names
) -> None:
    config = make_config(
        tmp_path, amqp_url=broker.url, names=names, consumer={"mode": "commit"}, bundles=True
    )
    amqp = config.destinations["default"].amqp
    assert amqp is not None
    sink = AmqpSink("bundles", amqp)
    async with running_service(config) as service:
        try:
            assert (await service.readiness())["amqp-consumer"] is None
            await sink.check()
            await asyncio.to_thread(broker.stop_app)
            # The robust connections are re-establishing themselves: not closed, not ready.
            await asyncio.sleep(1)
            checks = await service.readiness()
            assert (
                checks["amqp-consumer"] == f"not connected to RabbitMQ at 127.0.0.1:{broker.port}/"
            )
            with pytest.raises(Exception, match="not connected to RabbitMQ"):
                await sink.check()
        finally:
            await asyncio.to_thread(broker.start_app)
        # Both reconnect on this loop, each on its own schedule (every 2 s): ready again
        # once each has (under load, the sink can be a round behind the consumer).
        for _ in range(300):
            if (await service.readiness())["amqp-consumer"] is None:
                with contextlib.suppress(TransientDeliveryError):
                    await sink.check()
                    break
            await asyncio.sleep(0.1)
        assert (await service.readiness())["amqp-consumer"] is None
        await sink.check()
    await sink.close()


async def test_mode_delivery_counts_a_dying_conversion_process_then_dead_letters_it(
    broker: RabbitMq, names: Names, configure: Configure
) -> None:
    # max_attempts below the deaths that dead-letter a message as ConversionProcessDied
    # (3, tests/listeners/amqp/test_poison_s24.py): since session 25 a death's retries do
    # not count as attempts, so the death limit, not max_attempts, dead-letters it, with
    # its own kind (it was "attempts exhausted" at the second, stage delivery).
    config = configure(consumer={"mode": "delivery", "max_attempts": 2, "retry_delays": [0.1]})
    async with running_service(config) as service, AmqpClient(broker.url) as client:
        assert service.pool is not None and service.consumer is not None
        real = service.pool.convert
        deaths = 0

        async def convert(route: str, payload: bytes, **options: Any) -> Any:
            nonlocal deaths
            if b"OOM-1" in payload:  # what ProcessPoolExecutor raises when the OOM killer struck
                deaths += 1
                raise BrokenProcessPool("A process in the process pool was terminated abruptly")
            return await real(route, payload, **options)

        service.pool.convert = convert  # type: ignore[method-assign]
        await client.publish(names.ingress, "adt", adt("OOM-1", mrn="MRN-OOM"), message_id="oom")
        [letter] = await client.take(names.dead_letters, 1)
        await asyncio.sleep(1)
        ready, _ = await client.counts(names.ingress)
    # Before: returned to the queue's head every second for ever, max_attempts ignored.
    assert deaths == 3 and ready == 0
    headers = letter.headers or {}
    assert letter.message_id == "oom"
    assert headers.get(H_ATTEMPTS, 0) == 0
    assert headers[ERROR_HEADERS["kind"]] == "ConversionProcessDied"
    assert headers[ERROR_HEADERS["stage"]] == "conversion"


@pytest.mark.usefixtures("fast_consumer_timeout")
async def test_a_worker_stops_retrying_a_message_whose_channel_the_broker_closed(
    fhir: FhirServer, configure: Configure
) -> None:
    """The broker closes the channel of a delivery unacknowledged for consumer_timeout (a
    long FHIR outage with retries in place), requeues the message and frees the partition.
    The worker must give the message up: before, it kept retrying it while the other worker
    took the partition, and after the outage both delivered it — the patient's A01 landing
    after its A08 (history v1, v2, v1)."""
    config = configure(
        backend="amqp",
        amqp={"partitions": 1},
        delivery={"backoff_initial": 0.2, "backoff_max": 0.5},
    )
    fhir.fail(503, count=100_000)
    first = AmqpWorker(config, use_threads=True)
    second = AmqpWorker(config, use_threads=True)
    await first.start()
    try:
        await eventually(lambda: first.owned == [0], what="the first worker to hold it")
        await second.start()
        await store(
            config, [envelope("CT-1", "MRN-CT", "CT-v1"), envelope("CT-2", "MRN-CT", "CT-v2")]
        )
        # Several consumer timeouts: the partition goes from one worker to the other.
        await asyncio.sleep(7)
        assert len(first.owned) + len(second.owned) <= 1, "never two owners of one partition"
        fhir.reset()
        await eventually(lambda: first.processed + second.processed == 2, what="both delivered")
        await asyncio.sleep(2)  # a stale retry would land now
    finally:
        await first.stop(5)
        await second.stop(5)
    assert [post["status"] for post in bundle_posts(fhir)] == [200, 200]
    [patient] = patients(fhir, "MRN-CT")
    assert history_families(fhir, patient["id"]) == ["CT-v1", "CT-v2"]


async def test_a_poison_message_with_headers_near_the_frame_limit_is_dead_lettered_once(
    broker: RabbitMq, fhir: FhirServer, names: Names, configure: Configure
) -> None:
    """Its dead letter, with the error headers added, no longer fitted the broker's frame:
    the broker closed the consumer's connection (FRAME_ERROR) and delivered the message
    again, for ever. The largest headers are left out of the copy, and named."""
    config = configure(consumer={"mode": "commit"})
    async with running_service(config), AmqpClient(broker.url) as client:
        await client.publish(
            names.ingress,
            "k",
            b"garbage, not HL7",
            message_id="huge",
            headers={"x-custom": "x" * 130_900},
        )
        await client.publish(names.ingress, "k", adt("HH-2", mrn="MRN-HH"), message_id="next")
        (letter,) = await client.take(names.dead_letters, 1)
        await eventually(lambda: len(bundle_posts(fhir)) == 1, what="the next message delivered")
        assert await client.counts(names.ingress) == (0, 1)
        await asyncio.sleep(1.0)
        assert await client.counts(names.dead_letters) == (0, 0)
    headers = letter.headers or {}
    assert letter.message_id == "huge" and letter.body == b"garbage, not HL7"
    assert headers[H_DROPPED_HEADERS] == "x-custom" and "x-custom" not in headers
    assert headers[ERROR_HEADERS["kind"]] == "ParseError"
