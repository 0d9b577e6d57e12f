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
behind later ones: mode "delivery" does not keep per-patient order across retries.

Mode "commit" keeps it. A ``put`` the service's queue refuses (disk full, I/O error, no
publisher confirm with ``queue.backend = "amqp"``) is retried in place, with a capped
backoff, while the key's later messages (already prefetched) wait behind it: returning it
to the broker would let the next one be stored first (an A08 before its A01). Only when
the consumer stops (after its ``basic.cancel``: nothing is delivered to it again), or the
message's channel is gone (the broker delivers that channel's messages again, in order),
does it go back to the queue unstored; so do the key's later messages held in the same
situation, each after the one before it, instead of being stored. While puts fail,
:meth:`AmqpConsumer.check` (``/ready``) says so and
``passerelle_queue_write_failures_total{operation="put"}`` counts them.
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
from aio_pika.exceptions import ChannelInvalidStateError

from converter import ConversionError

from ..config import ServiceConfig
from ..conversion import ConversionFailure, ConversionPool
from ..delivery import Sink, deliver_results, describe_failure, record_conversion
from ..errors import DeliveryError, QueueError, RejectedDeliveryError, TransientDeliveryError
from ..ingest import IngestQueue, SupportChecker
from ..logs import describe_exception, error_fields, log_fields
from ..metrics import Metrics
from ..queue.base import PutResult
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
#: Pauses between the attempts to store a message the service's queue refused (mode
#: "commit"): doubling, capped.
_STORE_RETRY_INITIAL = 0.1
_STORE_RETRY_MAX = 5.0


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
        #: ordering key → completion of the latest message of that key taken so far: True
        #: once it reached its outcome, False when it went back to the broker unsettled.
        self._tails: dict[str, asyncio.Future[bool]] = {}
        self._stopping = False
        self._stop_requested = asyncio.Event()
        #: Messages whose storing is being retried (mode "commit"): id → (since, why).
        self._store_failing: dict[int, tuple[float, str]] = {}
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
        Messages not acknowledged by then are delivered again by the broker. A message whose
        storing is being retried goes back to the queue unstored (after one last try)."""
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._tag)
        # After the cancel: a message returned now is not delivered to this consumer again.
        self._stopping = True
        self._stop_requested.set()
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
        if self._store_failing:
            since = min(first for first, _ in self._store_failing.values())
            why = next(reason for _, reason in self._store_failing.values())
            raise QueueError(
                f"storing consumed messages failing for {time.monotonic() - since:.0f}s"
                f" ({len(self._store_failing)} retried in place): {why}"
            )

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
            await self._in_key_order(message, envelope)
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

    async def _in_key_order(self, message: AbstractIncomingMessage, envelope: AmqpEnvelope) -> None:
        """Handle ``message`` after the previous message of its ordering key.

        In mode "commit" a message goes back to the broker unstored only when the consumer
        stops or its channel is gone (the broker then delivers it again with the rest of
        that channel's messages, in order). A message whose predecessor went back so, and
        which is in the same situation (stopping, or its own channel gone too), goes back
        as well, right after it: storing it would put it before its predecessor. One that
        came on a new channel was delivered again in the queue's order: it is stored."""
        key = envelope.ordering_key
        previous = self._tails.get(key)
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._tails[key] = done
        handled = False
        try:
            settled_before = True if previous is None else await asyncio.shield(previous)
            if self._settings.mode != "commit":
                await self._deliver(message, envelope)
                handled = True
                return
            if not settled_before and (self._stopping or _channel_gone(message)):
                log.info(
                    "returning the message to the queue behind its ordering key's previous"
                    " message, not stored",
                    extra=self._fields(message, envelope),
                )
                await self._settle(message, requeue=True)
                return
            try:
                handled = await self._commit(message, envelope)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Not the put (retried in place): what follows it. Stored, so the key's
                # next message may go; this one is returned (a duplicate, dropped by the
                # duplicate window with SQLite) rather than left unacknowledged.
                handled = True
                log.exception(
                    "handling a consumed message failed after it was stored; returning it"
                    " to the queue",
                    extra=self._fields(message, envelope),
                )
                await self._pause(_REQUEUE_PAUSE)
                await self._settle(message, requeue=True)
        finally:
            if not done.done():
                done.set_result(handled)
            if self._tails.get(key) is done:
                del self._tails[key]

    async def _commit(self, message: AbstractIncomingMessage, envelope: AmqpEnvelope) -> bool:
        """Store, then ack; False when the message went back to the queue unstored."""
        fields = self._fields(message, envelope)
        started = time.perf_counter()
        self._metrics.received.labels(self._listener, envelope.message_type or "unknown").inc()
        stored = await self._put_in_place(message, envelope, fields)
        if stored is None:
            await self._settle(message, requeue=True)
            return False
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
        return True

    async def _put_in_place(
        self, message: AbstractIncomingMessage, envelope: AmqpEnvelope, fields: dict[str, Any]
    ) -> PutResult | None:
        """``put``, retried in place while the service's queue refuses it (the key's later
        messages wait meanwhile: see the module docstring). None when the consumer stops
        or the message's channel is gone before it is stored."""
        assert self._store is not None
        pause = _STORE_RETRY_INITIAL
        failures = 0
        token = id(message)
        try:
            while True:
                try:
                    stored = await self._store.put(envelope)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failures += 1
                    self._metrics.queue_write_failures.labels("put").inc()
                    if failures == 1:
                        why = str(exc) if isinstance(exc, QueueError) else describe_exception(exc)
                        self._store_failing[token] = (time.monotonic(), why)
                        log.warning(
                            "storing the message failed (%s); retrying in place, the later"
                            " messages of its ordering key wait behind it",
                            why,
                            extra=fields | log_fields(error_kind=type(exc).__name__),
                        )
                    if self._stopping or _channel_gone(message):
                        log.warning(
                            "storing the message failed and the consumer is stopping or its"
                            " channel is gone; returning it to the queue",
                            extra=fields | log_fields(count=failures),
                        )
                        return None
                    await self._pause(pause)
                    pause = min(pause * 2, _STORE_RETRY_MAX)
                    continue
                if failures:
                    log.info(
                        "message stored after %d failed attempt(s)",
                        failures,
                        extra=fields | log_fields(count=failures),
                    )
                return stored
        finally:
            self._store_failing.pop(token, None)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or until :meth:`stop` is called."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_requested.wait(), seconds)

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


def _channel_gone(message: AbstractIncomingMessage) -> bool:
    """Whether the channel ``message`` came on is closed: it can no longer be acked, and the
    broker delivers it again (with the key's later messages, in order) to the next channel."""
    try:
        message.channel  # noqa: B018 - the property raises once the channel is closed
    except ChannelInvalidStateError:
        return True
    return False
