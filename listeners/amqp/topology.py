"""Exchanges and queues Passerelle declares (idempotently, durable) and their names.

* dead letters: ``amqp.dead_letter_exchange`` (topic; routing key = the stage that failed:
  ``intake``, ``conversion``, ``delivery``, ``envelope``) and, unless disabled, the queue
  ``amqp.dead_letter_queue`` bound with ``#``;
* ingress (``[amqp.consumer]``): the exchange, the queue bound with ``binding_key``, and
  one retry queue per delay, ``<queue>.retry.<ms>ms``: ``x-message-ttl`` = the delay, then
  dead-lettered through the default exchange back to ``<queue>``;
* partitions (``queue.backend = "amqp"``): the direct exchange ``amqp.partition_exchange``,
  queues ``<partition_queue_prefix>.<n>`` bound with ``partition.<n>``, n < partitions,
  and the presence queue whose consumer count is the number of live workers.
"""

from __future__ import annotations

from typing import Any

from aio_pika.abc import AbstractChannel, AbstractQueue, ExchangeType

from ..config import AmqpConfig, AmqpConsumerConfig, AmqpPublishConfig

__all__ = [
    "declare_bundles",
    "declare_dead_letters",
    "declare_ingress",
    "declare_partitions",
    "partition_queue",
    "partition_routing_key",
    "retry_queue",
]


def partition_queue(amqp: AmqpConfig, partition: int) -> str:
    return f"{amqp.partition_queue_prefix}.{partition}"


def partition_routing_key(partition: int) -> str:
    return f"partition.{partition}"


def retry_queue(consumer: AmqpConsumerConfig, delay: float) -> str:
    """The retry queue of one delay: its name says its TTL, so changing the delays
    declares new queues instead of clashing with the old ones' arguments."""
    return f"{consumer.queue}.retry.{round(delay * 1000)}ms"


async def declare_dead_letters(channel: AbstractChannel, amqp: AmqpConfig) -> None:
    exchange = await channel.declare_exchange(
        amqp.dead_letter_exchange, ExchangeType.TOPIC, durable=True
    )
    if amqp.dead_letter_queue:
        queue = await channel.declare_queue(amqp.dead_letter_queue, durable=True)
        await queue.bind(exchange, "#")


async def declare_ingress(channel: AbstractChannel, amqp: AmqpConfig) -> AbstractQueue:
    """The ingress exchange, queue, binding and retry queues; returns the queue."""
    consumer = amqp.consumer
    exchange = await channel.declare_exchange(
        consumer.exchange, ExchangeType(consumer.exchange_type), durable=True
    )
    arguments: dict[str, Any] = {}
    if consumer.single_active_consumer:
        arguments["x-single-active-consumer"] = True
    queue = await channel.declare_queue(consumer.queue, durable=True, arguments=arguments or None)
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


async def declare_partitions(channel: AbstractChannel, amqp: AmqpConfig) -> list[str]:
    """The partition exchange and queues (and the presence queue); their names."""
    exchange = await channel.declare_exchange(
        amqp.partition_exchange, ExchangeType.DIRECT, durable=True
    )
    names = []
    for partition in range(amqp.partitions):
        name = partition_queue(amqp, partition)
        queue = await channel.declare_queue(name, durable=True)
        await queue.bind(exchange, partition_routing_key(partition))
        names.append(name)
    await channel.declare_queue(amqp.presence_queue, durable=False, auto_delete=False)
    return names


async def declare_bundles(channel: AbstractChannel, publish: AmqpPublishConfig) -> None:
    """The exchange bundles are published to (and its queue, when configured)."""
    exchange = await channel.declare_exchange(
        publish.exchange, ExchangeType(publish.exchange_type), durable=True
    )
    if publish.queue:
        queue = await channel.declare_queue(publish.queue, durable=True)
        await queue.bind(exchange, publish.routing_key)
