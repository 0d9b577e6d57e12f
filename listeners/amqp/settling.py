"""How the ``[amqp.consumer]`` settles a consumed message once its outcome is known.

:class:`Settler` acks it, returns it to the queue (``nack`` with requeue), or publishes a
confirmed persistent copy — to a TTL retry queue (:meth:`Settler.retry`, ``max_attempts``
counted in ``x-passerelle-attempts``) or to the dead-letter exchange with error headers
(:meth:`Settler.dead_letter`) — and then acks the original. A copy that could not be
published (broker trouble) sends the original back to the queue after a pause; a message
that cannot be settled at all (connection lost) is delivered again by the broker.

A dead letter the dead-letter exchange routes to no queue (``amqp.dead_letter_queue =
""`` and nothing bound, the binding removed) is not a passing trouble: returned to its
queue, the message came straight back, every second, for ever, with a WARNING only. It
is now held unacknowledged and published again with a growing pause (1 s doubling to
60 s; back to the queue after 10 min, below RabbitMQ's ``consumer_timeout``, to be held
again) until a queue is bound: ERROR ``event`` ``dead_letter_unroutable``,
``passerelle_dead_letters_unroutable_total`` and ``passerelle_dead_letters_held``, and
``/ready`` answers 503 meanwhile. Held, it is never dropped; a stop (or its channel
closed by the broker, ``consumer_timeout``) returns it to the queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, HeadersType

from ..config import AmqpConfig, AmqpConsumerConfig
from ..conversion_deaths import dead_letter_level
from ..delivery import describe_failure
from ..errors import TransientDeliveryError
from ..logs import error_fields, log_fields
from ..metrics import Metrics
from ..retry_in_place import pause_unless
from .broker import ConfirmedPublisher, PublishFailure
from .envelope import (
    H_ATTEMPTS,
    H_ORIGINAL_EXCHANGE,
    H_ORIGINAL_ROUTING_KEY,
    AmqpEnvelope,
    error_headers,
    forwardable_headers,
    header_text,
    persistent_copy,
)
from .ordering import channel_gone
from .topology import retry_queue
from .unroutable import UNROUTABLE_PAUSE, UNROUTABLE_PAUSE_MAX, HeldDeadLetters

__all__ = ["REQUEUE_PAUSE", "Settler", "message_fields"]

log = logging.getLogger("passerelle.amqp.consumer")

#: Pause before returning a message to the queue when its outcome could not be stored.
REQUEUE_PAUSE = 1.0
#: Longest a message is held so: then it goes back to the queue and comes again (held
#: anew). Well under RabbitMQ's consumer_timeout (30 min by default), which would close
#: the channel and return every message in hand with it.
UNROUTABLE_HOLD_MAX = 600.0


class Settler:
    """Settles the messages of one consumer (see the module docstring); :attr:`publisher`
    is set once the consumer is connected."""

    def __init__(
        self,
        amqp: AmqpConfig,
        settings: AmqpConsumerConfig,
        metrics: Metrics,
        listener: str,
        stop_requested: asyncio.Event,
    ) -> None:
        self._amqp = amqp
        self._settings = settings
        self._metrics = metrics
        self._listener = listener
        self._stop_requested = stop_requested
        self._delays = tuple(sorted(set(settings.retry_delays)))
        self.publisher: ConfirmedPublisher | None = None
        self.holds = HeldDeadLetters(metrics, "consumer", amqp.dead_letter_exchange, log)

    async def retry(
        self,
        message: AbstractIncomingMessage,
        exc: TransientDeliveryError,
        destination: str,
        message_type: str,
        fields: dict[str, Any],
        *,
        counted: bool = True,
    ) -> None:
        """Re-publish ``message`` to the retry queue, or dead-letter it at
        ``max_attempts``. ``counted=False``: a death or a ``MemoryError``, which its own
        limit dead-letters with its kind (:mod:`listeners.conversion_deaths`): the
        attempts header is left as it is, and never reaches ``max_attempts``."""
        attempts = self.attempts(message) + (1 if counted else 0)
        record = exc.dead_letter_record(destination, attempts)
        if counted and attempts >= self._settings.max_attempts:
            await self.dead_letter(
                message,
                record,
                reason="attempts-exhausted",
                message_type=message_type,
                fields=fields,
            )
            return
        delay = self._delay(max(attempts, 1), exc.retry_after)
        headers = forwardable_headers(message.headers) | error_headers(record)
        headers.setdefault(H_ORIGINAL_EXCHANGE, message.exchange or "")
        headers.setdefault(H_ORIGINAL_ROUTING_KEY, message.routing_key or "")
        target = retry_queue(self._settings, delay)
        if not await self._republish(
            message, headers, exchange="", routing_key=target, fields=fields
        ):
            return
        self._metrics.retried.labels(destination, str(exc.status or "connection")).inc()
        why = describe_failure(exc)
        log.warning(
            "delivery failed; will retry through the retry queue (%s)",
            why.reason,
            extra=fields
            | log_fields(
                destination=destination,
                status=exc.status,
                error_kind=why.kind,
                attempt=attempts,
                delay_s=delay,
            ),
        )

    async def dead_letter(
        self,
        message: AbstractIncomingMessage,
        record: dict[str, Any],
        *,
        reason: str,
        message_type: str,
        fields: dict[str, Any],
    ) -> None:
        headers = forwardable_headers(message.headers) | error_headers(record)
        headers.setdefault(H_ORIGINAL_EXCHANGE, message.exchange or "")
        headers.setdefault(H_ORIGINAL_ROUTING_KEY, message.routing_key or "")
        if not await self._republish(
            message,
            headers,
            exchange=self._amqp.dead_letter_exchange,
            routing_key=str(record.get("stage", "intake")),
            fields=fields,
        ):
            return
        self._metrics.dead_lettered.labels(reason, message_type).inc()
        log.log(
            dead_letter_level(record.get("kind")),
            "message dead-lettered",
            extra=fields | error_fields(record),
        )

    async def _republish(
        self,
        message: AbstractIncomingMessage,
        headers: HeadersType,
        *,
        exchange: str,
        routing_key: str,
        fields: dict[str, Any],
    ) -> bool:
        """Publish a copy (confirmed), then ack the original; False when the copy failed
        and the original went back to the queue."""
        assert self.publisher is not None
        copy = persistent_copy(message, headers)
        pause, held = UNROUTABLE_PAUSE, False
        deadline = time.monotonic() + UNROUTABLE_HOLD_MAX
        try:
            while True:
                try:
                    await self.publisher.publish(copy, exchange=exchange, routing_key=routing_key)
                    break
                except PublishFailure as exc:
                    if exc.reason != "unroutable" or exchange != self._amqp.dead_letter_exchange:
                        log.warning(
                            "publishing the outcome failed; returning the message to the queue",
                            extra=fields | log_fields(error_kind=exc.reason),
                        )
                        await asyncio.sleep(REQUEUE_PAUSE)
                        await self.settle(message, requeue=True)
                        return False
                if not held:
                    held = True
                    self.holds.hold("not dropped", fields)
                if (
                    self._stop_requested.is_set()
                    or channel_gone(message)
                    or time.monotonic() >= deadline
                ):
                    # Back to the queue unacknowledged (the broker already has it when
                    # its channel is gone): kept, to be dead-lettered once routable.
                    await self.settle(message, requeue=True)
                    return False
                await pause_unless(self._stop_requested, pause)
                pause = min(pause * 2, UNROUTABLE_PAUSE_MAX)
        finally:
            if held:
                self.holds.release()
        if held:
            log.info("held dead letter published", extra=fields)
        await self.settle(message)
        return True

    async def settle(
        self,
        message: AbstractIncomingMessage,
        *,
        requeue: bool | None = None,
    ) -> bool:
        """Ack (or nack with requeue); False when that could not be sent (a lost channel:
        the broker delivers the message again)."""
        try:
            if requeue is None:
                await message.ack()
            else:
                await message.nack(requeue=requeue)
        except Exception as exc:
            log.warning(
                "could not settle the message (connection lost?); the broker will deliver it again",
                extra=message_fields(self._listener, message)
                | log_fields(error_kind=type(exc).__name__),
            )
            return False
        return True

    def attempts(self, message: AbstractIncomingMessage) -> int:
        """Deliveries already tried, as counted in the message's headers."""
        value = header_text(message.headers or {}, H_ATTEMPTS)
        try:
            return max(0, int(value or 0))
        except ValueError:
            return 0

    def _delay(self, attempts: int, retry_after: float | None) -> float:
        wanted = self._delays[min(attempts, len(self._delays)) - 1]
        if retry_after is not None and retry_after > wanted:
            return next((d for d in self._delays if d >= retry_after), self._delays[-1])
        return wanted


def message_fields(
    listener: str, message: AbstractIncomingMessage, envelope: AmqpEnvelope | None = None
) -> dict[str, Any]:
    """The log fields of a consumed message (never its content)."""
    fields = log_fields(
        listener=listener,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        size=len(message.body),
    )
    if envelope is not None:
        fields |= log_fields(
            control_id=envelope.control_id,
            sender=envelope.sender,
            message_type=envelope.message_type,
            route=envelope.route,
        )
    return fields
