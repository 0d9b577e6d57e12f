"""Helpers of the AMQP tests where one message ends as a dead letter (poison, out of memory).

Their runs share one shape: the partition worker (:func:`running_worker`) or the
``[amqp.consumer]`` (:func:`running_consumer`) on the test's loop with real conversion
processes, messages in (:func:`stored_dead_letter`, :func:`consumed_dead_letter`), the one
dead letter out, and the level of the line that logged it (:func:`dead_letter_levels`).
The failures they inject are :mod:`tests.listeners.support`'s. A dead letter takes three
new conversion processes, each loading the FHIR models and the templates: tens of seconds
on a loaded host (they run at nice 10). So the templates are compiled first
(:func:`prepare`), the deadline is far beyond the waits, and the waits are minutes
(:data:`~tests.listeners.support.PATIENCE`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Sequence

from aio_pika.abc import AbstractIncomingMessage

from listeners.amqp import AmqpWorker
from listeners.config import ServiceConfig
from listeners.queue.base import Envelope
from listeners.service import Service
from tests.listeners.amqp.support import (
    AmqpClient,
    Names,
    adt,
    eventually,
    running_service,
    store,
)
from tests.listeners.service.support import compile_templates
from tests.listeners.support import CONVERSION_DEADLINE, PATIENCE

#: The ``[delivery]`` setting of the consumer's configurations (see :func:`prepare`).
DEADLINE: dict[str, float] = {"conversion_timeout": CONVERSION_DEADLINE}
#: How long the worker may take to hold its partitions (no conversion in it).
CLAIM_TIMEOUT = 60.0


def prepare(config: ServiceConfig) -> None:
    """The ADT^A08 templates compiled into ``config``'s template cache
    (``data_dir/template-cache``, which the service's and the worker's conversion processes
    load them from): a new conversion process (one per death) then does not compile them,
    seconds of CPU at nice 10, tens of seconds on a loaded host. The configuration must
    set ``delivery.conversion_timeout`` to :data:`CONVERSION_DEADLINE` (its default, 60 s,
    would stop a slow first conversion: checked here)."""
    assert config.delivery.conversion_timeout >= CONVERSION_DEADLINE
    compile_templates(config, [adt("COMPILE-0", mrn="MRN-COMPILE")])


@contextlib.asynccontextmanager
async def running_worker(config: ServiceConfig, *, partitions: int) -> AsyncIterator[AmqpWorker]:
    """``passerelle worker`` on the test's loop with real conversion processes, holding
    its ``partitions``; stopped on the way out (5 s of grace). Templates compiled first
    (:func:`prepare`)."""
    prepare(config)
    worker = AmqpWorker(config)
    await worker.start()
    try:
        await eventually(
            lambda: len(worker.owned) == partitions, timeout=CLAIM_TIMEOUT, what="the partitions"
        )
        yield worker
    finally:
        await worker.stop(5)


@contextlib.asynccontextmanager
async def running_consumer(config: ServiceConfig) -> AsyncIterator[Service]:
    """The service with its ``[amqp.consumer]``, real conversion processes, templates
    compiled first (:func:`prepare`)."""
    prepare(config)
    async with running_service(config, use_threads=False) as service:
        yield service


async def take_dead_letter(url: str, names: Names) -> AbstractIncomingMessage:
    """The test's one dead letter (waited for), taken from its queue."""
    async with AmqpClient(url) as client:
        # Published before the message was counted as settled: there at once.
        [letter] = await client.take(names.dead_letters, 1, timeout=CLAIM_TIMEOUT)
    return letter


async def stored_dead_letter(
    worker: AmqpWorker,
    config: ServiceConfig,
    url: str,
    names: Names,
    envelopes: Sequence[Envelope],
) -> AbstractIncomingMessage:
    """Store ``envelopes`` in the partitions, wait until ``worker`` has settled them all
    (:data:`PATIENCE`: a poison's settling takes three new conversion processes), then take
    the one dead letter."""
    await store(config, envelopes)
    await eventually(
        lambda: worker.processed >= len(envelopes), timeout=PATIENCE, what="all settled"
    )
    return await take_dead_letter(url, names)


async def consumed_dead_letter(
    url: str, names: Names, messages: Iterable[bytes]
) -> AbstractIncomingMessage:
    """Publish ``messages`` to the consumer's queue, then take the one dead letter (waited
    for :data:`PATIENCE`, as :func:`stored_dead_letter` waits)."""
    async with AmqpClient(url) as client:
        for message in messages:
            await client.publish(names.ingress, "adt", message)
        [letter] = await client.take(names.dead_letters, 1, timeout=PATIENCE)
    return letter


def dead_letter_levels(records: Iterable[logging.LogRecord]) -> list[int]:
    """The levels of the "message dead-lettered" lines, in order."""
    return [r.levelno for r in records if r.getMessage() == "message dead-lettered"]
