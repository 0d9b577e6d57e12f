"""The partitions one ``passerelle worker`` consumes: fair-share claims and releases.

**Fair share.** Every worker also consumes the presence queue; its consumer count is the
number of live workers W. At every rebalance a worker computes its share,
``ceil(N / W)``: holding more, it releases the extra partitions (idle ones first; a busy
one after its message is finished); holding fewer, it claims free partitions (no
consumer), trying them from a random offset. Exclusivity comes from the broker (an
exclusive consumer, prefetch 1), not from the count: a stale count only delays the
balance, it never lets two workers consume one partition.

Each claimed partition has one task taking its messages one at a time to the
:class:`~.handling.MessageHandler`; a partition released (rebalance, stop, its channel
closed or its consumer cancelled by the broker) finishes its message in flight, or gives
it back unacked, then closes its channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Callable, Iterator

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection

from ..config import AmqpConfig
from ..delivery import DestinationWaitInterrupted
from ..logs import log_fields
from .broker import safe_error
from .handling import MessageHandler, Partition
from .topology import declare_partition, partition_queue

__all__ = ["PartitionShare"]

# The same logger as the worker and its handler: one place for an operator to look.
log = logging.getLogger("passerelle.amqp.worker")


class PartitionShare:
    """The partitions a worker holds now, and how it claims and releases them."""

    def __init__(
        self,
        amqp: AmqpConfig,
        *,
        rng: random.Random,
        stopping: asyncio.Event,
        connection: Callable[[], AbstractConnection | None],
        handler: Callable[[], MessageHandler | None],
    ) -> None:
        self._amqp = amqp
        self._stopping = stopping
        self._connection = connection
        self._handler = handler
        self._partitions: dict[int, Partition] = {}
        self._offset = rng.randrange(amqp.partitions)
        #: A channel for passive declares; set by the session, reopened when closed.
        self.probe: AbstractChannel | None = None
        #: Partitions whose queue is gone and could not be declared again (logged once).
        self._unavailable: set[int] = set()

    @property
    def owned(self) -> list[int]:
        """Partitions consumed now (not being released)."""
        return sorted(n for n, p in self._partitions.items() if not p.released.is_set())

    # -- fair share ------------------------------------------------------------------------------
    async def _probe_channel(self) -> AbstractChannel:
        """A channel for passive declares (a missing queue closes it: reopened here)."""
        connection = self._connection()
        assert connection is not None
        if self.probe is None or self.probe.is_closed:
            self.probe = await connection.channel(publisher_confirms=False)
        return self.probe

    async def _consumers(self, queue: str) -> int:
        probe = await self._probe_channel()
        declared = await probe.declare_queue(queue, passive=True, timeout=10)
        return int(declared.declaration_result.consumer_count or 0)

    async def rebalance(self) -> None:
        """Release the partitions over this worker's share, or claim free ones up to it."""
        workers = max(1, await self._consumers(self._amqp.presence_queue))
        share = math.ceil(self._amqp.partitions / workers)
        active = [p for p in self._partitions.values() if not p.released.is_set()]
        if len(active) > share:
            extras = sorted(active, key=lambda p: (p.busy, -p.number))[: len(active) - share]
            for partition in extras:
                self.release(partition)
            log.info(
                "releasing partitions: %d workers, a share of %d",
                workers,
                share,
                extra=log_fields(event="rebalance", count=share),
            )
            return
        for number in self._candidates():
            if len(active) >= share or self._stopping.is_set():
                break
            if number in self._partitions:
                continue
            consumers = await self._consumers_of_partition(number)
            if consumers is None or consumers:
                continue  # gone for now, or another worker's
            claimed = await self.claim(number)
            if claimed is not None:
                active.append(claimed)

    async def _consumers_of_partition(self, number: int) -> int | None:
        """Consumers of a partition queue; None when it is gone and cannot be declared
        again now. A passive declare's NOT_FOUND (the queue deleted; in a cluster, its
        node down) used to end the whole session: every partition released, and
        with the node still down the session could not start again."""
        name = partition_queue(self._amqp, number)
        try:
            return await self._consumers(name)
        except aiormq.exceptions.ChannelNotFoundEntity:
            pass
        connection = self._connection()
        assert connection is not None
        problem = await declare_partition(
            connection, await self._probe_channel(), self._amqp, number
        )
        if problem is not None:
            if number not in self._unavailable:
                log.warning(
                    "partition queue %s is gone and cannot be declared again now (%s);"
                    " the other partitions carry on",
                    name,
                    problem,
                    extra=log_fields(event="partition_unavailable"),
                )
            self._unavailable.add(number)
            return None
        self._unavailable.discard(number)
        log.info("partition queue %s declared again", name, extra=log_fields(event="partition"))
        return await self._consumers(name)

    def _candidates(self) -> Iterator[int]:
        count = self._amqp.partitions
        return ((self._offset + i) % count for i in range(count))

    async def claim(self, number: int) -> Partition | None:
        """Consume partition ``number`` exclusively; None if another worker has it or
        its queue is gone (tried again at a later rebalance)."""
        connection = self._connection()
        assert connection is not None
        name = partition_queue(self._amqp, number)
        channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=1)
        partition = Partition(number, name, channel)
        # A consumer the broker cancels (basic.cancel: the queue deleted, or in a cluster
        # its node going down) receives nothing more while its channel stays open: the
        # partition was held for ever, its patients' messages waiting for a restart.
        underlay = await channel.get_underlay_channel()
        underlay.on_consumer_cancel_callbacks.add(lambda _: self._consumer_cancelled(partition))
        queue = await channel.get_queue(name, ensure=False)
        try:
            await queue.consume(partition.inbox.put, exclusive=True)
        except (aiormq.exceptions.ChannelAccessRefused, aiormq.exceptions.ChannelNotFoundEntity):
            # Another worker took it between our look and our claim; or the queue went
            # away meanwhile (NOT_FOUND ended the whole session: every partition
            # released). Tried again at a later rebalance.
            with contextlib.suppress(Exception):
                await channel.close()
            return None
        # A channel the broker closes (its consumer_timeout, 30 min by default, during a
        # long retry in place) gives the message back and frees the partition for another
        # worker: this one must stop retrying it, or it would deliver it again, perhaps
        # after the patient's later messages delivered by the new owner.
        channel.close_callbacks.add(lambda _, exc=None: self._channel_closed(partition, exc))
        partition.task = asyncio.create_task(self._consume(partition), name=f"partition-{number}")
        self._partitions[number] = partition
        log.info(
            "partition claimed: %s",
            name,
            extra=log_fields(event="partition-claimed", count=len(self.owned)),
        )
        return partition

    def released_event(self) -> asyncio.Event | None:
        """The ``released`` event of the partition the current task consumes, if any: a
        wait for a paused destination ends when it is set (see :class:`GatedSink`)."""
        task = asyncio.current_task()
        for partition in self._partitions.values():
            if partition.task is task:
                return partition.released
        return None

    def _channel_closed(self, partition: Partition, exc: BaseException | None) -> None:
        connection = self._connection()
        if not partition.released.is_set() and connection is not None and not connection.is_closed:
            log.warning(
                "partition channel closed by the broker (%s); its message goes back to the queue",
                safe_error(exc) if exc is not None else "closed",
                extra=log_fields(event="partition-lost"),
            )
        self.release(partition)

    def _consumer_cancelled(self, partition: Partition) -> None:
        if not partition.released.is_set():
            log.warning(
                "partition consumer cancelled by the broker (queue deleted or its node"
                " down); giving the partition up: %s",
                partition.queue,
                extra=log_fields(event="partition-cancelled"),
            )
        self.release(partition)

    def release(self, partition: Partition) -> None:
        """Give ``partition`` up after its message in flight."""
        partition.released.set()
        partition.inbox.put_nowait(None)

    async def release_all(self, *, graceful: bool, grace: float) -> None:
        """Release every partition; ``graceful``: wait up to ``grace`` seconds for the
        messages in flight, then cancel (their messages go back unacked)."""
        partitions = list(self._partitions.values())
        for partition in partitions:
            self.release(partition)
        tasks = {p.task for p in partitions if p.task is not None}
        if tasks and graceful:
            _, pending = await asyncio.wait(tasks, timeout=grace)
        else:
            pending = tasks
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._partitions.clear()

    # -- one partition ---------------------------------------------------------------------------
    async def _consume(self, partition: Partition) -> None:
        try:
            while True:
                message = await partition.inbox.get()
                if message is None or partition.released.is_set():
                    break  # an unprocessed message goes back to the queue with the channel
                partition.busy = True
                handler = self._handler()
                assert handler is not None
                try:
                    await handler.handle(partition, message)
                except DestinationWaitInterrupted:
                    break  # released while waiting for a paused destination: not acked
                finally:
                    partition.busy = False
        finally:
            if self._partitions.get(partition.number) is partition:
                del self._partitions[partition.number]
            with contextlib.suppress(Exception):
                await partition.channel.close()
            log.info(
                "partition released: %s",
                partition.queue,
                extra=log_fields(event="partition-released", count=len(self.owned)),
            )
