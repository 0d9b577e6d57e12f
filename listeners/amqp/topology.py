"""Exchanges and queues Passerelle declares (idempotently, durable) and their names.

* dead letters: ``amqp.dead_letter_exchange`` (topic; routing key = the stage that failed:
  ``intake``, ``conversion``, ``delivery``, ``envelope``) and, unless disabled, the queue
  ``amqp.dead_letter_queue`` bound with ``#``, its ``x-message-ttl`` the dead letters'
  retention (``amqp.dead_letter_retention``, by default ``queue.dead_letter_retention``);
* ingress (``[amqp.consumer]``): the exchange, the queue bound with ``binding_key``, and
  one retry queue per delay, ``<queue>.retry.<ms>ms``: ``x-message-ttl`` = the delay, then
  dead-lettered through the default exchange back to ``<queue>``;
* partitions (``queue.backend = "amqp"``): the direct exchange ``amqp.partition_exchange``,
  queues ``<partition_queue_prefix>.<n>`` bound with ``partition.<n>``, n < partitions,
  and the presence queue whose consumer count is the number of live workers.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractQueue,
    ExchangeType,
)

from ..config import AmqpConfig, AmqpConsumerConfig, AmqpPublishConfig
from ..logs import log_fields

__all__ = [
    "dead_letter_queue_arguments",
    "declare_bundles",
    "declare_dead_letters",
    "declare_ingress",
    "declare_partition",
    "declare_partitions",
    "partition_queue",
    "partition_routing_key",
    "retry_queue",
]

log = logging.getLogger("passerelle.amqp")


def partition_queue(amqp: AmqpConfig, partition: int) -> str:
    return f"{amqp.partition_queue_prefix}.{partition}"


def partition_routing_key(partition: int) -> str:
    return f"partition.{partition}"


def retry_queue(consumer: AmqpConsumerConfig, delay: float) -> str:
    """The retry queue of one delay: its name says its TTL, so changing the delays
    declares new queues instead of clashing with the old ones' arguments."""
    return f"{consumer.queue}.retry.{round(delay * 1000)}ms"


def dead_letter_queue_arguments(amqp: AmqpConfig) -> dict[str, Any]:
    """``x-message-ttl`` = ``amqp.dead_letter_retention`` (at least 1 ms: 0 would drop
    every dead letter at once), or nothing when the retention is off."""
    if amqp.dead_letter_retention is None:
        return {}
    return {"x-message-ttl": max(1, round(amqp.dead_letter_retention * 1000))}


async def declare_dead_letters(
    connection: AbstractConnection, channel: AbstractChannel, amqp: AmqpConfig
) -> None:
    """The dead-letter exchange and queue, the queue with its retention as a TTL.

    A queue that exists with other arguments (declared by an earlier version without a
    TTL, or with another retention) cannot be declared again with these: the broker
    closes the channel (PRECONDITION_FAILED). That is found out on a throwaway channel of
    ``connection``: the queue is then used as it is, with a warning, instead of failing
    the start (its retention is the operator's: a policy, or deleting the queue)."""
    exchange = await channel.declare_exchange(
        amqp.dead_letter_exchange, ExchangeType.TOPIC, durable=True
    )
    if not amqp.dead_letter_queue:
        return
    name = amqp.dead_letter_queue
    arguments = dead_letter_queue_arguments(amqp)
    refusal = await _try_declare(connection, name, arguments=arguments)
    if refusal is None:
        queue = await channel.declare_queue(name, durable=True, arguments=arguments or None)
    elif await _try_declare(connection, name, passive=True) is None:
        log.warning(
            "dead-letter queue %s exists with other arguments than x-message-ttl = %s"
            " (amqp.dead_letter_retention): used as it is, its dead letters are not deleted"
            " after that period; give it a message-ttl policy (rabbitmqctl set_policy) and"
            ' set amqp.dead_letter_retention = "off", or delete the queue once emptied (%s)',
            name,
            arguments.get("x-message-ttl", "none"),
            refusal,
            extra=log_fields(event="dead_letter_queue_arguments"),
        )
        queue = await channel.declare_queue(name, passive=True)
    else:
        # Missing, yet the declaration was refused: the broker does not take the TTL.
        log.warning(
            "the broker refused x-message-ttl = %s for dead-letter queue %s"
            " (amqp.dead_letter_retention): declared without it, its dead letters are not"
            " deleted; give it a message-ttl policy (rabbitmqctl set_policy) (%s)",
            arguments.get("x-message-ttl"),
            name,
            refusal,
            extra=log_fields(event="dead_letter_queue_arguments"),
        )
        queue = await channel.declare_queue(name, durable=True)
    await queue.bind(exchange, "#")


async def _try_declare(
    connection: AbstractConnection,
    name: str,
    *,
    arguments: dict[str, Any] | None = None,
    passive: bool = False,
) -> str | None:
    """Declare ``name`` on a plain channel of its own (not restored after a reconnection,
    and closed by a refusal without harm); None, or the broker's refusal."""
    probe = aio_pika.Channel(connection, publisher_confirms=False)
    await probe.initialize()
    try:
        await probe.declare_queue(name, durable=True, passive=passive, arguments=arguments or None)
    except (
        aiormq.exceptions.ChannelPreconditionFailed,
        aiormq.exceptions.ChannelNotFoundEntity,
    ) as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    finally:
        with contextlib.suppress(Exception):
            await probe.close()
    return None


async def declare_ingress(
    connection: AbstractConnection, channel: AbstractChannel, amqp: AmqpConfig
) -> AbstractQueue:
    """The ingress exchange, queue, binding and retry queues; returns the queue.

    A queue the operator declared beforehand with arguments of their own — a quorum queue
    (``x-queue-type``, the replicated type RabbitMQ recommends, with its ``x-delivery-limit``
    against poison), a length limit — cannot be declared again with Passerelle's: the
    broker closed the channel (PRECONDITION_FAILED) and ``passerelle serve`` could not
    start. As for the dead-letter queue, the refusal is found out on a throwaway channel and
    the queue is then used as it is, with a warning naming what differs."""
    consumer = amqp.consumer
    exchange = await channel.declare_exchange(
        consumer.exchange, ExchangeType(consumer.exchange_type), durable=True
    )
    arguments: dict[str, Any] = {}
    if consumer.single_active_consumer:
        arguments["x-single-active-consumer"] = True
    refusal = await _try_declare(connection, consumer.queue, arguments=arguments)
    if refusal is not None and await _try_declare(connection, consumer.queue, passive=True) is None:
        log.warning(
            "ingress queue %s exists with other arguments than Passerelle's (%s): used as it"
            " is%s (%s)",
            consumer.queue,
            ", ".join(f"{k} = {v}" for k, v in arguments.items()) or "none",
            ", amqp.consumer.single_active_consumer not applied"
            if consumer.single_active_consumer
            else "",
            refusal,
            extra=log_fields(event="ingress_queue_arguments"),
        )
        queue = await channel.declare_queue(consumer.queue, passive=True)
    else:
        queue = await channel.declare_queue(
            consumer.queue, durable=True, arguments=arguments or None
        )
    await queue.bind(exchange, consumer.binding_key)
    for delay in sorted(set(consumer.retry_delays)):
        await channel.declare_queue(
            retry_queue(consumer, delay),
            durable=True,
            arguments={
                "x-message-ttl": round(delay * 1000),
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": consumer.queue,
            },
        )
    return queue


async def declare_partitions(
    connection: AbstractConnection, channel: AbstractChannel, amqp: AmqpConfig
) -> list[str]:
    """The partition exchange and queues (and the presence queue); the names of the
    partition queues declared and bound (one that cannot be declared now is left out,
    with a warning: :func:`declare_partition`)."""
    exchange = await channel.declare_exchange(
        amqp.partition_exchange, ExchangeType.DIRECT, durable=True
    )
    names = []
    for partition in range(amqp.partitions):
        problem = await declare_partition(connection, channel, amqp, partition, exchange)
        if problem is None:
            names.append(partition_queue(amqp, partition))
        else:
            log.warning(
                "partition queue %s cannot be declared now (%s); its messages wait until it"
                " is back",
                partition_queue(amqp, partition),
                problem,
                extra=log_fields(event="partition_unavailable"),
            )
    await channel.declare_queue(amqp.presence_queue, durable=False, auto_delete=False)
    return names


async def declare_partition(
    connection: AbstractConnection,
    channel: AbstractChannel,
    amqp: AmqpConfig,
    partition: int,
    exchange: AbstractExchange | None = None,
) -> str | None:
    """Declare and bind one partition queue; None, or why it cannot be now.

    A queue the operator declared beforehand with arguments of their own (a quorum queue,
    replicated, as a policy may demand) is used as it is, with a warning: declared again
    as a classic queue it was refused (PRECONDITION_FAILED), which ended the worker's
    session at every reconnection and kept ``passerelle serve`` from starting. A queue
    that is not there and cannot be declared either (in a cluster, a classic queue whose
    node is down: NOT_FOUND) is reported, not raised: the other partitions carry on."""
    name = partition_queue(amqp, partition)
    refusal = await _try_declare(connection, name)
    if refusal is None:
        queue = await channel.declare_queue(name, durable=True)
    elif await _try_declare(connection, name, passive=True) is None:
        log.warning(
            "partition queue %s exists with other arguments than Passerelle's (a quorum"
            " queue?): used as it is (%s)",
            name,
            refusal,
            extra=log_fields(event="partition_queue_arguments"),
        )
        queue = await channel.declare_queue(name, passive=True)
    else:
        return refusal
    if exchange is None:
        exchange = await channel.declare_exchange(
            amqp.partition_exchange, ExchangeType.DIRECT, durable=True
        )
    await queue.bind(exchange, partition_routing_key(partition))
    return None


async def declare_bundles(channel: AbstractChannel, publish: AmqpPublishConfig) -> None:
    """The exchange bundles are published to (and its queue, when configured)."""
    exchange = await channel.declare_exchange(
        publish.exchange, ExchangeType(publish.exchange_type), durable=True
    )
    if publish.queue:
        queue = await channel.declare_queue(publish.queue, durable=True)
        await queue.bind(exchange, publish.routing_key)
