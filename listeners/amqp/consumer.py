"""``[amqp.consumer]``: messages to convert, consumed from a RabbitMQ queue.

A robust connection (``connect_robust``) consumes a durable queue bound to the configured
exchange, ``prefetch`` messages at a time, with manual acknowledgements. A message is
acknowledged only once it is safely handled:

* mode ``"commit"``: stored in the service's durable queue (SQLite, or the partition queues
  with ``queue.backend = "amqp"``); the service's workers deliver it;
* mode ``"delivery"``: converted and delivered to its route's destination
  (:mod:`.delivery_mode`).

A compressed body (``content_encoding`` gzip or deflate) is decompressed, at most to
``amqp.max_message_bytes``, and an HL7 v2 message without MSH-18 is read in its content
type's ``charset`` (:mod:`.body`); in a worker thread for a compressed or large body, not
on the event loop (:func:`.intake.read_envelope`).

Poison — larger than ``amqp.max_message_bytes`` (compressed or not), an unknown content
encoding, unparseable, unsupported type or version, (mode "delivery") conversion errors
and rejections by the destination — is published to the dead-letter exchange with
headers saying why (``x-passerelle-error-kind``, ``-reason``, ``-location``, ``-hl7-error-code``,
``-template``, ``-error-stage``…; never message content) and acknowledged
(:mod:`.settling`): never requeued forever. Transient delivery failures (mode "delivery")
are re-published to a retry queue whose TTL sends them back to the main queue later, counting
``x-passerelle-attempts``; after ``max_attempts`` the message goes to the dead-letter
exchange. A conversion process that dies, or a conversion that runs out of memory, is a
death (:mod:`listeners.conversion_deaths`): retried alone, the third is a dead letter (a
``MemoryError`` was a transient failure, never converted alone, ending "attempts
exhausted"); a delivery out of memory likewise, counted apart. A message whose outcome
could not be published (broker trouble) is returned to the queue (``nack``) after a
pause, and a connection lost before the ack means the broker delivers it again: at
least once, made harmless by idempotent bundles (and, in mode "commit" with SQLite, by
the duplicate window). In mode "commit", a message stored whose
ack the lost connection swallowed is recognised when the broker delivers it again
(:mod:`.redeliveries`), with or without a control id: acked, not stored twice.

Messages with the same ordering key (sender + patient) are handled one after the other in
the order they arrived on this consumer. Retries through the TTL queue do put a message
behind later ones: mode "delivery" does not keep per-patient order across retries.

Mode "commit" keeps it (:mod:`.ordering`): a ``put`` the service's queue refuses is
retried in place while the key's later messages wait behind it. Only when the consumer
stops, or the message's channel is gone, does it go back to the queue unstored; so do the
key's later messages held in the same situation, each after the one before it, instead of
being stored. While puts fail, :meth:`AmqpConsumer.check` (``/ready``) says so.
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
)

from converter import ConversionError

from ..config import ServiceConfig
from ..conversion import ConversionPool
from ..delivery import Sink
from ..errors import QueueError
from ..ingest import IngestQueue, SupportChecker
from ..logs import log_fields
from ..metrics import Metrics
from ..retry_in_place import pause_unless
from .body import BodyError, DecodedTooLarge
from .broker import ConfirmedPublisher, connect, describe, is_connected
from .delivery_mode import DeliveryMode
from .envelope import AmqpEnvelope
from .intake import IntakeOrder, read_envelope
from .ordering import KeyChains, StoreInPlace, channel_gone
from .redeliveries import StoredUnacked, put_remembered
from .refusals import oversized_record, unreadable_record
from .settling import REQUEUE_PAUSE, Settler, message_fields
from .topology import declare_dead_letters, declare_ingress

__all__ = ["AmqpConsumer"]

log = logging.getLogger("passerelle.amqp.consumer")


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
        self._notify = notify
        if self._settings.mode == "commit" and store is None:
            raise ValueError('[amqp.consumer] mode "commit" needs the service queue')
        if self._settings.mode == "delivery" and pool is None:
            raise ValueError('[amqp.consumer] mode "delivery" needs a conversion pool')
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._chains = KeyChains()
        self._intake_order = IntakeOrder()
        self._stopping = False
        self._stop_requested = asyncio.Event()
        self._settler = Settler(
            self._amqp, self._settings, metrics, self._listener, self._stop_requested
        )
        self._store = (
            StoreInPlace(store, metrics, self._stop_requested) if store is not None else None
        )
        self._inflight: set[asyncio.Task[Any]] = set()
        self._stored_unacked = StoredUnacked()
        #: Mode "delivery": converts, delivers and settles each message.
        self._delivery = (
            DeliveryMode(
                pool,
                sinks or {},
                destination_of or (lambda route: "default"),
                self._settler,
                metrics,
                self._listener,
            )
            if pool is not None
            else None
        )
        # Read at each scrape: 0 while the robust connection is being re-established.
        metrics.amqp_connected.labels("consumer").set_function(
            lambda: float(is_connected(self._connection))
        )

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
            await declare_dead_letters(connection, channel, self._amqp)
            queue = await declare_ingress(connection, channel, self._amqp)
            self._settler.publisher = ConfirmedPublisher(
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
        storing is being retried goes back to the queue unstored (after one last try). With
        the broker away, the connection is closed at once (nothing can be acked), and the
        drain only lets the messages in hand finish."""
        if self._queue is not None and self._tag is not None:
            if is_connected(self._connection):
                # Bounded: a broker that stops answering now must not hold the drain.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(min(grace, self._amqp.confirm_timeout)):
                        await self._queue.cancel(self._tag)
            elif self._connection is not None:
                # The broker is away: the cancel would wait for the reconnection, for ever
                # (a stop during an outage hung until SIGKILL, the rest of the service's
                # drain never reached). The broker took back every unacked message with
                # the connection, and none can be acked any more: close it now, so that
                # no reconnection brings the consumer back during the drain.
                with contextlib.suppress(Exception):
                    await self._connection.close()
        # After the cancel: a message returned now is not delivered to this consumer again.
        self._stopping = True
        self._stop_requested.set()
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._settler.publisher is not None:
            await self._settler.publisher.close()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._connection = self._channel = self._queue = None

    async def check(self) -> None:
        """Readiness: raise ``QueueError`` when not connected (reconnecting included)."""
        if not is_connected(self._connection):
            raise QueueError(f"not connected to RabbitMQ at {describe(self._url)}")
        problem = self._store.problem() if self._store is not None else None
        if problem is not None:
            raise QueueError(problem)
        held = self._settler.holds.problem()
        if held is not None:
            raise QueueError(held)

    # -- one message -------------------------------------------------------------------------
    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # aiormq runs one task per delivery, started in delivery order: everything up to
        # the first await (taking a ticket) happens in that order. The body may then be
        # read in a thread (compressed, large); the ticket makes the deliveries take their
        # places in their keys' chains in delivery order all the same.
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        previous, ticket = self._intake_order.take()
        try:
            if len(message.body) > self._amqp.max_message_bytes:
                self._intake_order.pass_on(previous, ticket)
                await self._oversized(message)
                return
            try:
                envelope = await read_envelope(
                    message,
                    limit=self._amqp.max_message_bytes,
                    listener=self._listener,
                    config=self._config,
                    support=self._support,
                )
            except DecodedTooLarge as exc:
                self._intake_order.pass_on(previous, ticket)
                await self._oversized(message, str(exc))
                return
            except (BodyError, ConversionError) as exc:
                self._intake_order.pass_on(previous, ticket)
                await self._poison(message, exc)
                return
            await self._intake_order.wait(previous)
            # No await from here to the chain's place taken in _in_key_order.
            self._intake_order.pass_on(previous, ticket)
            await self._in_key_order(message, envelope)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._intake_order.pass_on(previous, ticket)  # not after the pause
            log.exception(
                "handling a consumed message failed; returning it to the queue",
                extra=self._fields(message),
            )
            await asyncio.sleep(REQUEUE_PAUSE)
            await self._settler.settle(message, requeue=True)
        finally:
            self._intake_order.pass_on(previous, ticket)
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
        async with self._chains.turn(envelope.ordering_key) as turn:
            if self._settings.mode != "commit":
                assert self._delivery is not None
                await self._delivery.deliver(message, envelope)
                turn.handled = True
                return
            if not turn.settled_before and (self._stopping or channel_gone(message)):
                log.info(
                    "returning the message to the queue behind its ordering key's previous"
                    " message, not stored",
                    extra=self._fields(message, envelope),
                )
                await self._settler.settle(message, requeue=True)
                return
            try:
                turn.handled = await self._commit(message, envelope)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Not the put (retried in place): what follows it. Stored, so the key's
                # next message may go; this one is returned (a duplicate, dropped by the
                # duplicate window with SQLite) rather than left unacknowledged.
                turn.handled = True
                log.exception(
                    "handling a consumed message failed after it was stored; returning it"
                    " to the queue",
                    extra=self._fields(message, envelope),
                )
                await pause_unless(self._stop_requested, REQUEUE_PAUSE)
                await self._settler.settle(message, requeue=True)

    async def _commit(self, message: AbstractIncomingMessage, envelope: AmqpEnvelope) -> bool:
        """Store, then ack; False when the message went back to the queue unstored."""
        fields = self._fields(message, envelope)
        started = time.perf_counter()
        self._metrics.received.labels(self._listener, envelope.message_type or "unknown").inc()
        assert self._store is not None
        if self._stored_unacked.take(message):
            # Stored by this consumer, but its ack was lost with the connection: the same
            # message again, not a new one (without a control id nothing else tells).
            self._metrics.duplicates.labels(self._listener).inc()
            log.info(
                "redelivered after it was stored (its ack was lost with the connection);"
                " acknowledged, not stored again",
                extra=fields | log_fields(event="redelivered_stored"),
            )
            if not await self._settler.settle(message):
                self._stored_unacked.remember(message)
            return True
        stored = await put_remembered(self._store, self._stored_unacked, message, envelope, fields)
        if stored is None:
            await self._settler.settle(message, requeue=True)
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
        if not await self._settler.settle(message):
            self._stored_unacked.remember(message)
        return True

    # -- outcomes ----------------------------------------------------------------------------
    async def _poison(
        self, message: AbstractIncomingMessage, exc: ConversionError | BodyError
    ) -> None:
        record, message_type = unreadable_record(exc)
        self._metrics.received.labels(self._listener, "unreadable").inc()
        await self._settler.dead_letter(
            message,
            record,
            reason="unsupported",
            message_type=message_type,
            fields=self._fields(message),
        )

    async def _oversized(self, message: AbstractIncomingMessage, reason: str | None = None) -> None:
        """A message over ``amqp.max_message_bytes`` (``reason``: once decompressed):
        dead-lettered before anything reads it (no MSH peek, no XML parse, no
        conversion), as the MLLP listener refuses a frame over ``mllp.max_frame_bytes``
        (same HL7 error code, 207)."""
        limit = self._amqp.max_message_bytes
        self._metrics.received.labels(self._listener, "oversized").inc()
        log.warning(
            "oversized message refused, not converted (amqp.max_message_bytes = %d)",
            limit,
            extra=self._fields(message) | log_fields(event="oversized_message"),
        )
        await self._settler.dead_letter(
            message,
            oversized_record(len(message.body), limit, reason),
            reason="oversized",
            message_type="unknown",
            fields=self._fields(message),
        )

    # -- helpers -----------------------------------------------------------------------------
    def _fields(
        self, message: AbstractIncomingMessage, envelope: AmqpEnvelope | None = None
    ) -> dict[str, Any]:
        return message_fields(self._listener, message, envelope)
