"""``queue.backend = "amqp"``: the durable queue is RabbitMQ, the workers are elsewhere.

:class:`AmqpQueue` is what the MLLP listener (and the AMQP consumer in mode "commit")
stores into: ``put`` publishes the envelope as a persistent message to partition
``hash(ordering_key) mod N`` and returns only once the broker confirmed it — only then is
the sender acknowledged. Any failure (broker down, reconnecting, no confirm in time,
nack, unroutable) raises :class:`~listeners.errors.QueueError`: no ACK, connection closed,
the sender sends again. ``put_dead_letter`` publishes to the dead-letter exchange with the
error headers. ``passerelle worker`` processes consume the partitions
(:mod:`listeners.amqp.worker`).

There is no duplicate window here: a retransmission is stored again and delivered
again, which the idempotent bundles (PUT with stable ids) make harmless.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractRobustChannel, AbstractRobustConnection

from ..config import AmqpConfig
from ..errors import QueueError
from ..logs import log_fields
from ..queue.base import DeadLetter, Envelope, PutResult
from .broker import (
    ConfirmedPublisher,
    PublishFailure,
    connect,
    describe,
    is_connected,
    safe_error,
)
from .envelope import encode_envelope, error_headers, partition_of
from .topology import (
    declare_dead_letters,
    declare_partitions,
    partition_queue,
    partition_routing_key,
)

__all__ = ["AmqpQueue"]

log = logging.getLogger("passerelle.queue.amqp")


class AmqpQueue:
    """Envelopes published to RabbitMQ partition queues with publisher confirms."""

    def __init__(self, config: AmqpConfig, *, role: str = "ingest") -> None:
        if config.url is None:
            raise QueueError('queue.backend = "amqp" needs [amqp] url')
        self._config = config
        self._url = config.url
        self._role = role
        self._connection: AbstractRobustConnection | None = None
        self._publisher: ConfirmedPublisher | None = None
        self._probe: AbstractRobustChannel | None = None
        self._setup: AbstractChannel | None = None
        self._seq = itertools.count(1)

    @property
    def connected(self) -> bool:
        """Whether the connection to RabbitMQ is open now (for a gauge; False while the
        robust connection is being re-established)."""
        return is_connected(self._connection)

    @property
    def config(self) -> AmqpConfig:
        return self._config

    async def start(self) -> None:
        """Connect and declare the partitions; ``ConnectionError`` when the broker is down."""
        connection = await connect(
            self._url,
            role=self._role,
            reconnect_interval=self._config.reconnect_interval,
            timeout=self._config.confirm_timeout,
        )
        try:
            # Kept open: a robust channel declares its exchanges, queues and bindings again
            # after a reconnection (a broker that lost its definitions gets them back).
            self._setup = await connection.channel()
            await declare_dead_letters(connection, self._setup, self._config)
            await declare_partitions(connection, self._setup, self._config)
        except BaseException:
            await connection.close()
            raise
        self._connection = connection
        self._publisher = ConfirmedPublisher(
            connection, timeout=self._config.confirm_timeout, url=self._url
        )
        log.info(
            "queue on RabbitMQ ready",
            extra=log_fields(peer=describe(self._url), count=self._config.partitions),
        )

    async def close(self) -> None:
        if self._publisher is not None:
            await self._publisher.close()
            self._publisher = None
        self._setup = self._probe = None
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None

    def partition(self, envelope: Envelope) -> int:
        return partition_of(envelope.ordering_key, self._config.partitions)

    async def put(self, envelope: Envelope) -> PutResult:
        """Publish to the envelope's partition; return once the broker confirmed it."""
        partition = self.partition(envelope)
        await self._publish(
            encode_envelope(envelope, partition=partition),
            self._config.partition_exchange,
            partition_routing_key(partition),
        )
        return PutResult(seq=next(self._seq))

    async def put_dead_letter(self, envelope: Envelope, error: dict[str, Any]) -> PutResult:
        """Publish to the dead-letter exchange with the error headers (confirmed)."""
        message = encode_envelope(envelope)
        message.headers.update(error_headers(error))
        await self._publish(
            message, self._config.dead_letter_exchange, str(error.get("stage") or "ingest")
        )
        return PutResult(seq=next(self._seq))

    def get_dead_letter(self, id: int) -> DeadLetter | None:
        """Dead letters live in RabbitMQ here: none to look up by id."""
        del id
        return None

    def state(self, seq: int) -> str | None:
        """Delivery state is the workers' (elsewhere): unknown here."""
        del seq
        return None

    async def _publish(self, message: Any, exchange: str, routing_key: str) -> None:
        if self._publisher is None:
            raise QueueError("the AMQP queue is not started")
        try:
            await self._publisher.publish(message, exchange=exchange, routing_key=routing_key)
        except PublishFailure as exc:
            raise QueueError(f"RabbitMQ did not confirm the message: {exc}") from None

    async def depth(self) -> int:
        """Messages waiting in the partition queues (ready, not yet taken by a worker)."""
        if self._connection is None:
            raise QueueError("the AMQP queue is not started")
        try:
            if self._probe is None or self._probe.is_closed:
                self._probe = await self._connection.channel(publisher_confirms=False)
            total = 0
            for partition in range(self._config.partitions):
                # robust=False: a robust channel answers a passive declare of a queue it
                # knows from its cache, with the counts of the first declare.
                queue = await self._probe.declare_queue(
                    partition_queue(self._config, partition),
                    passive=True,
                    timeout=5,
                    robust=False,
                )
                total += queue.declaration_result.message_count or 0
            return total
        except Exception as exc:
            raise QueueError(f"cannot read the partition queues: {safe_error(exc)}") from None
