"""``[amqp.consumer]``: messages to convert, consumed from a RabbitMQ queue.

A robust connection (``connect_robust``) consumes a durable queue bound to the configured
exchange, ``prefetch`` messages at a time, with manual acknowledgements. A message is
acknowledged only once it is safely handled:

* mode ``"commit"``: stored in the service's durable queue (SQLite, or the partition queues
  with ``queue.backend = "amqp"``); the service's workers deliver it;
* mode ``"delivery"``: converted and delivered to its route's destination.

Poison — unparseable, unsupported type or version, (mode "delivery") conversion errors and
rejections by the destination — is published to the dead-letter exchange with headers
saying why (``x-passerelle-error-kind``, ``-reason``, ``-location``, ``-hl7-error-code``,
``-template``, ``-error-stage``…; never message content) and acknowledged: never requeued
forever. Transient delivery failures (mode "delivery") are re-published to a retry queue
whose TTL sends them back to the main queue later, counting ``x-passerelle-attempts``;
after ``max_attempts`` the message goes to the dead-letter exchange. A message whose
outcome could not be published (broker trouble) is returned to the queue (``nack``) after
a pause, and a connection lost before the ack means the broker delivers it again: at least
once, made harmless by idempotent bundles (and, in mode "commit" with SQLite, by the
duplicate window).

Messages with the same ordering key (sender + patient) are handled one after the other in
the order they arrived on this consumer. Retries through the TTL queue do put a message
behind later ones: mode "delivery" does not keep per-patient order across retries (mode
"commit" does, from the commit on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
    HeadersType,
)

from converter import ConversionError

from ..config import ServiceConfig
from ..conversion import ConversionFailure, ConversionPool
from ..delivery import Sink, deliver_results, describe_failure, record_conversion
from ..errors import DeliveryError, QueueError, RejectedDeliveryError, TransientDeliveryError
from ..ingest import IngestQueue, SupportChecker
from ..logs import error_fields, log_fields
from ..metrics import Metrics
from .broker import ConfirmedPublisher, PublishFailure, connect, describe
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
from .intake import envelope_of
from .topology import declare_dead_letters, declare_ingress, retry_queue

__all__ = ["AmqpConsumer"]

log = logging.getLogger("passerelle.amqp.consumer")

#: Pause before returning a message to the queue when its outcome could not be stored.
_REQUEUE_PAUSE = 1.0


class AmqpConsumer:
    """Consumes ``[amqp.consumer] queue`` (see the module docstring)."""

    def __init__(
        self,
        config: ServiceConfig,
        *,
        support: SupportChecker,
        metrics: Metrics,
        store: IngestQueue | None = None,
        notify: Callable[[], None] | None = None,
        pool: ConversionPool | None = None,
        sinks: Mapping[str, Sink] | None = None,
        destination_of: Callable[[str], str] | None = None,
    ) -> None:
        if config.amqp.url is None:
            raise ValueError("[amqp.consumer] needs [amqp] url")
        self._config = config
        self._amqp = config.amqp
        self._settings = config.amqp.consumer
        self._url = config.amqp.url
        self._listener = self._settings.name
        self._support = support
        self._metrics = metrics
        self._store = store
        self._notify = notify
        self._pool = pool
        self._sinks = sinks or {}
        self._destination_of = destination_of or (lambda route: "default")
        if self._settings.mode == "commit" and store is None:
            raise ValueError('[amqp.consumer] mode "commit" needs the service queue')
        if self._settings.mode == "delivery" and pool is None:
            raise ValueError('[amqp.consumer] mode "delivery" needs a conversion pool')
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._publisher: ConfirmedPublisher | None = None
        #: ordering key → completion of the latest message of that key taken so far.
        self._tails: dict[str, asyncio.Future[None]] = {}
        self._inflight: set[asyncio.Task[Any]] = set()
        self._delays = tuple(sorted(set(self._settings.retry_delays)))

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect, declare, consume; ``ConnectionError`` when the broker is unreachable."""
        connection = await connect(
            self._url,
            role=f"consumer:{self._listener}",
            reconnect_interval=self._amqp.reconnect_interval,
            timeout=self._amqp.confirm_timeout,
        )
        try:
            channel = await connection.channel()
            assert isinstance(channel, aio_pika.RobustChannel)
            await channel.set_qos(prefetch_count=self._settings.prefetch)
            await declare_dead_letters(channel, self._amqp)
            queue = await declare_ingress(channel, self._amqp)
            self._publisher = ConfirmedPublisher(
                connection, timeout=self._amqp.confirm_timeout, url=self._url
            )
            self._tag = await queue.consume(self._on_message)
        except BaseException:
            await connection.close()
            raise
        self._connection, self._channel, self._queue = connection, channel, queue
        log.info(
            "consuming from RabbitMQ",
            extra=log_fields(
                listener=self._listener, peer=describe(self._url), event=self._settings.mode
            ),
        )

    async def stop(self, grace: float = 30.0) -> None:
        """Stop consuming, let messages being handled finish (``grace``), disconnect.
        Messages not acknowledged by then are delivered again by the broker."""
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._tag)
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._publisher is not None:
            await self._publisher.close()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._connection = self._channel = self._queue = None

    async def check(self) -> None:
        """Readiness: raise ``QueueError`` when not connected."""
        if self._connection is None or self._connection.is_closed:
            raise QueueError(f"not connected to RabbitMQ at {describe(self._url)}")

    # -- one message -------------------------------------------------------------------------
    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # aiormq runs one task per delivery, started in delivery order: everything up to
        # the first await (reading the header, taking a place in the key's chain) happens
        # in that order.
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            try:
                envelope = envelope_of(
                    message, listener=self._listener, config=self._config, support=self._support
                )
            except ConversionError as exc:
                await self._poison(message, exc)
                return
            key = envelope.ordering_key
            previous = self._tails.get(key)
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._tails[key] = done
            try:
                if previous is not None:
                    await asyncio.shield(previous)
                if self._settings.mode == "commit":
                    await self._commit(message, envelope)
                else:
                    await self._deliver(message, envelope)
            finally:
                if not done.done():
                    done.set_result(None)
                if self._tails.get(key) is done:
                    del self._tails[key]
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "handling a consumed message failed; returning it to the queue",
                extra=self._fields(message),
            )
            await asyncio.sleep(_REQUEUE_PAUSE)
            await self._settle(message, requeue=True)
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def _commit(self, message: AbstractIncomingMessage, envelope: AmqpEnvelope) -> None:
        assert self._store is not None
        fields = self._fields(message, envelope)
        started = time.perf_counter()
        self._metrics.received.labels(self._listener, envelope.message_type or "unknown").inc()
        try:
            stored = await self._store.put(envelope)
        except QueueError:
            log.warning("storing the message failed; returning it to the queue", extra=fields)
            await asyncio.sleep(_REQUEUE_PAUSE)
            await self._settle(message, requeue=True)
            return
        if stored.duplicate:
            self._metrics.duplicates.labels(self._listener).inc()
            log.info(
                "retransmission acknowledged again, not stored",
                extra=fields | log_fields(seq=stored.seq),
            )
        else:
            if stored.control_id_reused:
                log.warning(
                    "control id reused by the sender for a different message; stored as a new "
                    "message",
                    extra=fields
                    | log_fields(
                        sender=envelope.sender_id, seq=stored.seq, event="control_id_reused"
                    ),
                )
            if self._notify is not None:
                self._notify()
            log.info(
                "stored",
                extra=fields
                | log_fields(
                    seq=stored.seq, duration_ms=round((time.perf_counter() - started) * 1000, 2)
                ),
            )
        await self._settle(message)

    async def _deliver(self, message: AbstractIncomingMessage, envelope: AmqpEnvelope) -> None:
        assert self._pool is not None
        fields = self._fields(message, envelope)
        message_type = envelope.message_type or "unknown"
        self._metrics.received.labels(self._listener, message_type).inc()
        outcome = await self._pool.convert(
            envelope.route, envelope.payload, input_type=envelope.input_type
        )
        if isinstance(outcome, ConversionFailure):
            await self._dead_letter(
                message,
                outcome.as_record() | {"stage": "conversion"},
                reason="conversion",
                message_type=message_type,
                fields=fields,
            )
            return
        destination = self._destination_of(envelope.route)
        sink = self._sinks[destination]
        record_conversion(self._metrics, outcome)
        try:
            await deliver_results(sink, outcome, envelope, destination, self._metrics)
        except RejectedDeliveryError as exc:
            record = exc.dead_letter_record(destination, self._attempts(message) + 1)
            await self._dead_letter(
                message, record, reason="rejected", message_type=message_type, fields=fields
            )
            return
        except DeliveryError as exc:
            transient = (
                exc
                if isinstance(exc, TransientDeliveryError)
                else TransientDeliveryError(str(exc), status=exc.status)
            )
            await self._retry(message, transient, destination, message_type, fields)
            return
        await self._settle(message)
        log.info(
            "delivered",
            extra=fields | log_fields(destination=destination, attempt=self._attempts(message) + 1),
        )

    # -- outcomes ----------------------------------------------------------------------------
    async def _poison(self, message: AbstractIncomingMessage, exc: ConversionError) -> None:
        record = {
            "stage": "intake",
            "kind": type(exc).__name__,
            "reason": exc.reason,
            "location": exc.location,
            "template": exc.template,
            "hl7_error_code": exc.hl7_error_code,
        }
        self._metrics.received.labels(self._listener, "unreadable").inc()
        await self._dead_letter(
            message,
            record,
            reason="unsupported",
            message_type=exc.message_type or "unknown",
            fields=self._fields(message),
        )

    async def _retry(
        self,
        message: AbstractIncomingMessage,
        exc: TransientDeliveryError,
        destination: str,
        message_type: str,
        fields: dict[str, Any],
    ) -> None:
        attempts = self._attempts(message) + 1
        record = exc.dead_letter_record(destination, attempts)
        if attempts >= self._settings.max_attempts:
            await self._dead_letter(
                message,
                record,
                reason="attempts-exhausted",
                message_type=message_type,
                fields=fields,
            )
            return
        delay = self._delay(attempts, exc.retry_after)
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

    async def _dead_letter(
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
        log.warning(
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
        assert self._publisher is not None
        try:
            await self._publisher.publish(
                persistent_copy(message, headers), exchange=exchange, routing_key=routing_key
            )
        except PublishFailure as exc:
            log.warning(
                "publishing the outcome failed; returning the message to the queue",
                extra=fields | log_fields(error_kind=exc.reason),
            )
            await asyncio.sleep(_REQUEUE_PAUSE)
            await self._settle(message, requeue=True)
            return False
        await self._settle(message)
        return True

    async def _settle(
        self,
        message: AbstractIncomingMessage,
        *,
        requeue: bool | None = None,
    ) -> None:
        """Ack (or nack with requeue); a lost channel means the broker redelivers."""
        try:
            if requeue is None:
                await message.ack()
            else:
                await message.nack(requeue=requeue)
        except Exception as exc:
            log.warning(
                "could not settle the message (connection lost?); the broker will deliver it again",
                extra=self._fields(message) | log_fields(error_kind=type(exc).__name__),
            )

    # -- helpers -----------------------------------------------------------------------------
    def _attempts(self, message: AbstractIncomingMessage) -> int:
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

    def _fields(
        self, message: AbstractIncomingMessage, envelope: AmqpEnvelope | None = None
    ) -> dict[str, Any]:
        fields = log_fields(
            listener=self._listener,
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
