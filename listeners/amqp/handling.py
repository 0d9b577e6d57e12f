"""One partition message, from its envelope to its ack: the work of ``passerelle worker``.

Decode the envelope, convert it (once), deliver the bundles to the route's destination —
a transient failure is retried in place with backoff and jitter, without acking, so the
partition's later messages wait — then ack. Conversion errors, rejections, exhausted
attempts and messages that are not envelopes are published (confirmed) to the
dead-letter exchange, then acked. A partition released during a retry gives its message
back unacked, to the head of the queue for the next owner. A dead letter the dead-letter
exchange routes to no queue is held (published again, 1 s doubling to 60 s) rather than
given back: the partition used to be released and claimed again for ever.

A conversion process that dies, or a conversion or delivery that runs out of memory
(``MemoryError``), counts toward its own limit (:mod:`listeners.conversion_deaths`), not
toward ``max_attempts``: retried (a conversion alone), the third is a dead letter. A
``MemoryError`` while delivering was taken for a conversion's: the bundles were converted
again and the dead letter said ``ConversionOutOfMemory``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from ..config import DeliveryConfig, RouteConfig
from ..conversion import ConversionFailure, ConversionPool, ConversionResult
from ..conversion_deaths import (
    dead_letter_level,
    delivery_out_of_memory,
    died_too_often,
)
from ..delivery import (
    DestinationWaitInterrupted,
    Sink,
    backoff_delay,
    deliver_results,
    describe_failure,
    record_conversion,
    retry_detail,
)
from ..errors import DeliveryError, RejectedDeliveryError, TransientDeliveryError
from ..logs import error_fields, log_fields
from ..metrics import Metrics
from .broker import ConfirmedPublisher, PublishFailure
from .envelope import (
    AmqpEnvelope,
    EnvelopeError,
    decode_envelope,
    error_headers,
    forwardable_headers,
    persistent_copy,
)
from .unroutable import UNROUTABLE_PAUSE, UNROUTABLE_PAUSE_MAX, HeldDeadLetters

__all__ = ["MessageHandler", "Partition"]

log = logging.getLogger("passerelle.amqp.worker")


@dataclass(eq=False)
class Partition:
    """A partition a worker consumes: its messages arrive in ``inbox``, one at a time."""

    number: int
    queue: str
    channel: AbstractChannel
    inbox: asyncio.Queue[AbstractIncomingMessage | None] = field(default_factory=asyncio.Queue)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    busy: bool = False


class MessageHandler:
    """Handles the messages of a worker's partitions (see the module docstring)."""

    def __init__(
        self,
        *,
        routes: Mapping[str, RouteConfig],
        pool: ConversionPool,
        sinks: Mapping[str, Sink],
        delivery: DeliveryConfig,
        dead_letter_exchange: str,
        metrics: Metrics,
        publisher: Callable[[], ConfirmedPublisher | None],
        release: Callable[[Partition], None],
        rng: random.Random,
    ) -> None:
        self._routes = routes
        self._pool = pool
        self._sinks = sinks
        self._delivery = delivery
        self._dead_letter_exchange = dead_letter_exchange
        self._metrics = metrics
        #: The confirm-mode publisher of the current broker session (None between two).
        self._publisher = publisher
        #: Gives a partition up (after a failed dead-lettering).
        self._release = release
        self._rng = rng
        #: Messages settled (delivered or dead-lettered), for tests and logs.
        self.processed = 0
        self.holds = HeldDeadLetters(metrics, "worker", dead_letter_exchange, log)

    async def handle(self, partition: Partition, message: AbstractIncomingMessage) -> None:
        """Settle one message of ``partition``: acked after delivery or dead-lettering,
        or left unacked (back to the queue) when the partition is released meanwhile."""
        try:
            envelope = decode_envelope(message)
        except EnvelopeError as exc:
            record = {"stage": "envelope", "kind": "EnvelopeError", "reason": str(exc)}
            await self._dead_letter(
                partition,
                message,
                record,
                "envelope",
                "unknown",
                log_fields(message_id=message.message_id),
            )
            return
        route = envelope.route if envelope.route in self._routes else "default"
        message_type = envelope.message_type or "unknown"
        fields = _fields(envelope)
        destination = self._routes[route].destination
        attempt = 0
        # Deaths of the conversion process converting it, and deliveries out of memory:
        # the third of either dead-letters it (:mod:`listeners.conversion_deaths`), and
        # neither spends one of ``max_attempts``; once converted, it converts no more.
        deaths = memory_errors = 0
        outcome: list[ConversionResult] | ConversionFailure | None = None
        while True:
            attempt += 1
            converting = outcome is None
            try:
                if outcome is None:
                    outcome = await self._pool.convert(
                        route, envelope.payload, input_type=envelope.input_type, alone=deaths > 0
                    )
                    converting = False
                    if not isinstance(outcome, ConversionFailure):
                        # Once: a retry delivers the same bundles again.
                        record_conversion(self._metrics, outcome)
                if isinstance(outcome, ConversionFailure):
                    record = outcome.as_record() | {"stage": "conversion"}
                    await self._dead_letter(
                        partition, message, record, "conversion", message_type, fields
                    )
                    return
                await deliver_results(
                    self._sinks[destination], outcome, envelope, destination, self._metrics
                )
            except RejectedDeliveryError as exc:
                record = exc.dead_letter_record(destination, attempt)
                await self._dead_letter(
                    partition, message, record, "rejected", message_type, fields
                )
                return
            except (asyncio.CancelledError, DestinationWaitInterrupted):
                raise  # a released partition hands its message back: no attempt
            except Exception as exc:
                memory = isinstance(exc, MemoryError)
                if converting and (memory or isinstance(exc, BrokenProcessPool)):
                    # Retried alone (maybe the other conversions' doing), up to the third.
                    deaths += 1
                    outcome = died_too_often(deaths, out_of_memory=memory)
                    if outcome is not None:
                        record = outcome.as_record() | {"stage": "conversion"}
                        await self._dead_letter(
                            partition, message, record, "conversion", message_type, fields
                        )
                        return
                elif memory:
                    # Building or sending a request: the bundles stay converted.
                    memory_errors += 1
                    oom = delivery_out_of_memory(memory_errors, destination)
                    if oom is not None:
                        await self._dead_letter(
                            partition, message, oom, "out-of-memory", message_type, fields
                        )
                        return
                stage = "conversion" if converting else "delivery"
                failure = (
                    exc
                    if isinstance(exc, TransientDeliveryError)
                    else TransientDeliveryError(
                        f"{stage} ran out of memory" if memory else f"{type(exc).__name__}",
                        status=getattr(exc, "status", None),
                    )
                )
                if not isinstance(exc, DeliveryError):
                    log.warning(
                        "delivery failed unexpectedly; will retry",
                        extra=fields | log_fields(error_kind=type(exc).__name__),
                    )
                # Why, in safe words (kind and reason; never the server's diagnostics).
                why = describe_failure(failure if memory else exc)
                limit = self._delivery.max_attempts
                if limit and attempt - deaths - memory_errors >= limit:
                    record = failure.dead_letter_record(destination, attempt)
                    await self._dead_letter(
                        partition,
                        message,
                        record,
                        "attempts-exhausted",
                        message_type,
                        fields | log_fields(error_kind=why.kind),
                        why.reason,
                    )
                    return
                delay = backoff_delay(
                    attempt,
                    initial=self._delivery.backoff_initial,
                    maximum=self._delivery.backoff_max,
                    retry_after=failure.retry_after,
                    rng=self._rng,
                )
                self._metrics.retried.labels(destination, str(failure.status or "connection")).inc()
                log.warning(
                    "delivery failed; will retry in place (%s)",
                    retry_detail(
                        why, retry_after=failure.retry_after, maximum=self._delivery.backoff_max
                    ),
                    extra=fields
                    | log_fields(
                        destination=destination,
                        status=failure.status,
                        error_kind=why.kind,
                        attempt=attempt,
                        delay_s=round(delay, 3),
                    ),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(partition.released.wait(), timeout=delay)
                if partition.released.is_set():
                    return  # not acked: back to the queue's head for the next owner
                continue
            if await self._ack(message, fields):
                self.processed += 1
                log.info(
                    "delivered", extra=fields | log_fields(destination=destination, attempt=attempt)
                )
            return

    async def _dead_letter(
        self,
        partition: Partition,
        message: AbstractIncomingMessage,
        record: Mapping[str, Any],
        reason: str,
        message_type: str,
        fields: dict[str, Any],
        why: str | None = None,
    ) -> None:
        """Publish ``message`` to the dead-letter exchange with ``record`` as headers, then
        ack it; ``why``: a safe reason for the log line (attempts exhausted: what failed)."""
        headers = forwardable_headers(message.headers) | error_headers(record)
        copy = persistent_copy(message, headers)
        pause, held = UNROUTABLE_PAUSE, False
        try:
            while True:
                publisher = self._publisher()
                assert publisher is not None, "no broker session"
                try:
                    await publisher.publish(
                        copy,
                        exchange=self._dead_letter_exchange,
                        routing_key=str(record.get("stage", "delivery")),
                    )
                    break
                except PublishFailure as exc:
                    if exc.reason != "unroutable":
                        # Not acked: released with the partition, back to the queue's head.
                        log.warning(
                            "dead-lettering failed; releasing the partition",
                            extra=fields | log_fields(error_kind=exc.reason),
                        )
                        self._release(partition)
                        return
                # Nothing bound to the dead-letter exchange: releasing the partition gave
                # the message back, claimed again at the next rebalance, for ever. Held
                # here instead (the partition waits, as for a retry in place), loudly.
                if not held:
                    held = True
                    self.holds.hold("its partition waiting", fields)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(partition.released.wait(), timeout=pause)
                if partition.released.is_set():
                    return  # not acked: back to the queue's head for the next owner
                pause = min(pause * 2, UNROUTABLE_PAUSE_MAX)
        finally:
            if held:
                self.holds.release()
        self._metrics.dead_lettered.labels(reason, message_type).inc()
        if await self._ack(message, fields):
            self.processed += 1
        # A message killing its conversion process is an ERROR: the host's memory or a
        # library needs looking at, not only the message.
        log.log(
            dead_letter_level(record.get("kind")),
            "message dead-lettered%s",
            f" ({why})" if why else "",
            # ``fields`` last: an error kind it names (what failed) is the more precise.
            extra=error_fields(record) | fields,
        )

    async def _ack(self, message: AbstractIncomingMessage, fields: dict[str, Any]) -> bool:
        try:
            await message.ack()
        except Exception as exc:
            log.warning(
                "could not ack (connection lost?); the message will be delivered again",
                extra=fields | log_fields(error_kind=type(exc).__name__),
            )
            return False
        return True


def _fields(envelope: AmqpEnvelope) -> dict[str, Any]:
    return log_fields(
        control_id=envelope.control_id,
        sender=envelope.sender,
        message_type=envelope.message_type,
        route=envelope.route,
        listener=envelope.listener,
        message_id=envelope.message_id,
        correlation_id=envelope.correlation_id,
        size=len(envelope.payload),
    )
