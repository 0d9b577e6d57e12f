"""``[amqp.consumer] mode = "delivery"``: convert a consumed message, deliver it, settle it.

:class:`DeliveryMode` converts the message (in the conversion pool), delivers its bundles
to its route's destination and settles it through the consumer's
:class:`~listeners.amqp.settling.Settler`: acked once delivered; conversion errors and
rejections by the destination dead-lettered; transient failures (and, counted as such,
what else the pool or a delivery raises) re-published to the retry queue, toward
``max_attempts``.

A conversion process that dies, or a conversion that runs out of memory, is a death
(:mod:`listeners.conversion_deaths`): retried alone through the retry queue, the third
is a dead letter; a delivery out of memory likewise, counted apart. Neither counts in
``x-passerelle-attempts``. A retry comes back as another delivery, so both counts are
kept by route and bytes (:func:`~listeners.conversion_deaths.payload_key`), in memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from concurrent.futures.process import BrokenProcessPool

from aio_pika.abc import AbstractIncomingMessage

from ..conversion import ConversionFailure, ConversionPool
from ..conversion_deaths import (
    ConversionDeaths,
    delivery_out_of_memory,
    payload_key,
    retry_after_death,
)
from ..delivery import Sink, deliver_results, record_conversion
from ..errors import DeliveryError, RejectedDeliveryError, TransientDeliveryError
from ..logs import log_fields
from ..metrics import Metrics
from .envelope import AmqpEnvelope
from .settling import Settler, message_fields

__all__ = ["DeliveryMode"]

# The consumer's logger: these lines are the consumer's, wherever they are written.
log = logging.getLogger("passerelle.amqp.consumer")


class DeliveryMode:
    """Converts, delivers and settles the messages of one consumer in mode "delivery"
    (module docstring)."""

    def __init__(
        self,
        pool: ConversionPool,
        sinks: Mapping[str, Sink],
        destination_of: Callable[[str], str],
        settler: Settler,
        metrics: Metrics,
        listener: str,
    ) -> None:
        self._pool = pool
        self._sinks = sinks
        self._destination_of = destination_of
        self._settler = settler
        self._metrics = metrics
        self._listener = listener
        # Deaths of the conversion process per message, by route and bytes (it comes back
        # from the retry queue as another delivery): the third dead-letters it.
        self._deaths: ConversionDeaths[bytes] = ConversionDeaths()
        #: Deliveries of a message that ran out of memory, by the same key.
        self._memory_errors: ConversionDeaths[bytes] = ConversionDeaths()

    async def deliver(self, message: AbstractIncomingMessage, envelope: AmqpEnvelope) -> None:
        """Convert ``message``, deliver its bundles, then settle it (module docstring)."""
        fields = message_fields(self._listener, message, envelope)
        message_type = envelope.message_type or "unknown"
        self._metrics.received.labels(self._listener, message_type).inc()
        destination = self._destination_of(envelope.route)
        key = payload_key(envelope.route, envelope.payload)
        try:
            outcome = await self._pool.convert(
                envelope.route,
                envelope.payload,
                input_type=envelope.input_type,
                alone=self._deaths.deaths(key) > 0,
            )
        except (BrokenProcessPool, MemoryError) as exc:
            # The conversion process died (OOM killer, a C-extension crash) or ran out of
            # memory (which the converter lets through), maybe for another message: retried
            # alone through the retry queue, up to the third death.
            memory = isinstance(exc, MemoryError)
            died = self._deaths.died(key, out_of_memory=memory)
            if died is not None:
                record = died.as_record() | {"stage": "conversion"}
                await self._settler.dead_letter(
                    message, record, reason="conversion", message_type=message_type, fields=fields
                )
                return
            failure = retry_after_death(log, out_of_memory=memory, fields=fields)
            await self._settler.retry(
                message, failure, destination, message_type, fields, counted=False
            )
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # What else the pool raises — a pool shut down under it — was returned to the
            # queue's head every second for ever: counted as a transient failure instead
            # (max_attempts, then a dead letter). The type only: never the text.
            log.warning(
                "conversion failed unexpectedly; will retry",
                extra=fields | log_fields(error_kind=type(exc).__name__),
            )
            failure = TransientDeliveryError(f"conversion raised {type(exc).__name__}")
            await self._settler.retry(message, failure, destination, message_type, fields)
            return
        self._deaths.converted(key)
        if isinstance(outcome, ConversionFailure):
            await self._settler.dead_letter(
                message,
                outcome.as_record() | {"stage": "conversion"},
                reason="conversion",
                message_type=message_type,
                fields=fields,
            )
            return
        sink = self._sinks[destination]
        record_conversion(self._metrics, outcome)
        try:
            await deliver_results(sink, outcome, envelope, destination, self._metrics)
        except MemoryError:
            # Building or sending a request: counted apart (the conversion succeeded).
            oom = delivery_out_of_memory(self._memory_errors.add(key), destination)
            if oom is not None:
                self._memory_errors.converted(key)
                await self._settler.dead_letter(
                    message, oom, reason="out-of-memory", message_type=message_type, fields=fields
                )
                return
            failure = TransientDeliveryError("delivery ran out of memory")
            await self._settler.retry(
                message, failure, destination, message_type, fields, counted=False
            )
            return
        except RejectedDeliveryError as exc:
            record = exc.dead_letter_record(destination, self._settler.attempts(message) + 1)
            await self._settler.dead_letter(
                message, record, reason="rejected", message_type=message_type, fields=fields
            )
            return
        except DeliveryError as exc:
            transient = (
                exc
                if isinstance(exc, TransientDeliveryError)
                else TransientDeliveryError(str(exc), status=exc.status)
            )
            await self._settler.retry(message, transient, destination, message_type, fields)
            return
        except Exception as exc:
            # A bug: counted like a transient failure (max_attempts, then a dead letter)
            # rather than returned to the queue's head for ever.
            log.exception("delivery crashed; will retry", extra=fields)
            failure = TransientDeliveryError(f"internal error: {type(exc).__name__}")
            await self._settler.retry(message, failure, destination, message_type, fields)
            return
        self._memory_errors.converted(key)
        await self._settler.settle(message)
        log.info(
            "delivered",
            extra=fields
            | log_fields(destination=destination, attempt=self._settler.attempts(message) + 1),
        )
