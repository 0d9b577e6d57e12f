"""Helpers of the AMQP tests where one message ends as a dead letter (poison, out of memory).

Their runs share one shape: the partition worker (:func:`running_worker`) or the
``[amqp.consumer]`` (:func:`~tests.listeners.amqp.support.running_service`) on the test's
loop with real conversion processes, messages in (:func:`stored_dead_letter`,
:func:`consumed_dead_letter`), the one dead letter out, and the level of the line that
logged it (:func:`dead_letter_levels`). The failures they inject are
:mod:`tests.listeners.support`'s.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Sequence

from aio_pika.abc import AbstractIncomingMessage

from listeners.amqp import AmqpWorker
from listeners.config import ServiceConfig
from listeners.queue.base import Envelope
from tests.listeners.amqp.support import AmqpClient, Names, eventually, store


@contextlib.asynccontextmanager
async def running_worker(config: ServiceConfig, *, partitions: int) -> AsyncIterator[AmqpWorker]:
    """``passerelle worker`` on the test's loop with real conversion processes, holding
    its ``partitions``; stopped on the way out (5 s of grace)."""
    worker = AmqpWorker(config)
    await worker.start()
    try:
        await eventually(lambda: len(worker.owned) == partitions, what="the partitions")
        yield worker
    finally:
        await worker.stop(5)


async def take_dead_letter(url: str, names: Names) -> AbstractIncomingMessage:
    """The test's one dead letter (waited for), taken from its queue."""
    async with AmqpClient(url) as client:
        [letter] = await client.take(names.dead_letters, 1)
    return letter


async def stored_dead_letter(
    worker: AmqpWorker,
    config: ServiceConfig,
    url: str,
    names: Names,
    envelopes: Sequence[Envelope],
) -> AbstractIncomingMessage:
    """Store ``envelopes`` in the partitions, wait until ``worker`` has settled them all,
    then take the one dead letter."""
    await store(config, envelopes)
    await eventually(lambda: worker.processed >= len(envelopes), timeout=60, what="all settled")
    return await take_dead_letter(url, names)


async def consumed_dead_letter(
    url: str, names: Names, messages: Iterable[bytes]
) -> AbstractIncomingMessage:
    """Publish ``messages`` to the consumer's queue, then take the one dead letter."""
    async with AmqpClient(url) as client:
        for message in messages:
            await client.publish(names.ingress, "adt", message)
        [letter] = await client.take(names.dead_letters, 1)
    return letter


def dead_letter_levels(records: Iterable[logging.LogRecord]) -> list[int]:
    """The levels of the "message dead-lettered" lines, in order."""
    return [r.levelno for r in records if r.getMessage() == "message dead-lettered"]
