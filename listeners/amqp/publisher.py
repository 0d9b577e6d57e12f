"""Bundles out over AMQP: :class:`AmqpSink`, and :class:`CompositeSink` for "both".

Each bundle is one persistent message, ``application/fhir+json``, published to the
destination's exchange and routing key with ``mandatory`` and a publisher confirm:

* confirmed → delivered;
* ``basic.nack``, unroutable (no queue bound), no confirm in time, connection lost →
  :class:`~listeners.errors.TransientDeliveryError` (retried like a 503: a missing binding
  is a problem of the broker's set-up, not of the bundle);
* ``PRECONDITION_FAILED`` (the broker's ``max_message_size``) →
  :class:`~listeners.errors.RejectedDeliveryError` (dead letter).

Properties: ``correlation_id`` = the source message's correlation id (its control id when
it came without one), ``message_id`` = a digest of the bundle (stable: a re-delivered
bundle has the same id, so consumers can drop the copy), and headers with the source's
message id (``x-passerelle-message-id``), control id, message type, sender and route.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractRobustConnection, HeadersType

from ..config import AmqpPublishConfig
from ..delivery.base import BundleInput, DeliveryReceipt, Sink, bundle_bytes
from ..errors import DeliveryError, RejectedDeliveryError, TransientDeliveryError
from ..logs import log_fields
from ..queue.base import Envelope
from .broker import ConfirmedPublisher, PublishFailure, connect, describe, is_connected
from .envelope import (
    FHIR_JSON,
    H_CONTROL_ID,
    H_MESSAGE_ID,
    H_MESSAGE_TYPE,
    H_ROUTE,
    H_SENDER,
    short_property,
)
from .topology import declare_bundles

__all__ = ["AmqpSink", "CompositeSink"]

log = logging.getLogger("passerelle.delivery.amqp")

#: Readiness probes give up sooner than deliveries (like the FHIR server sink's).
_CHECK_TIMEOUT = 5.0


class AmqpSink:
    """A :class:`~listeners.delivery.base.Sink` publishing bundles to RabbitMQ."""

    def __init__(self, name: str, config: AmqpPublishConfig) -> None:
        if config.url is None:
            raise ValueError(f"destinations.{name}.amqp has no url")
        self._name = name
        self._config = config
        self._url = config.url
        self._connection: AbstractRobustConnection | None = None
        self._publisher: ConfirmedPublisher | None = None
        self._setup: AbstractChannel | None = None
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        """Whether the connection to RabbitMQ is open now (for a gauge)."""
        return is_connected(self._connection)

    @property
    def name(self) -> str:
        return self._name

    async def _ready(self, timeout: float | None = None) -> ConfirmedPublisher:
        async with self._lock:
            if self._publisher is not None:
                return self._publisher
            try:
                connection = await connect(
                    self._url,
                    role=f"publisher:{self._name}",
                    reconnect_interval=self._config.reconnect_interval,
                    timeout=timeout or self._config.confirm_timeout,
                )
            except ConnectionError as exc:
                raise TransientDeliveryError(str(exc)) from None
            try:
                # Kept open: a robust channel declares them again after a reconnection.
                self._setup = await connection.channel()
                await declare_bundles(self._setup, self._config)
            except Exception as exc:
                self._setup = None
                await connection.close()
                raise TransientDeliveryError(
                    f"cannot declare exchange {self._config.exchange!r}: {type(exc).__name__}"
                ) from None
            self._connection = connection
            self._publisher = ConfirmedPublisher(
                connection, timeout=self._config.confirm_timeout, url=self._url
            )
            log.info(
                "publishing bundles to RabbitMQ",
                extra=log_fields(destination=self._name, peer=describe(self._url)),
            )
            return self._publisher

    async def deliver(self, bundle: BundleInput, envelope: Envelope) -> DeliveryReceipt:
        started = time.perf_counter()
        body = bundle_bytes(bundle)
        publisher = await self._ready()
        headers: HeadersType = {H_SENDER: envelope.sender, H_ROUTE: envelope.route}
        source_id = envelope.message_id
        if source_id:
            headers[H_MESSAGE_ID] = source_id
        if envelope.control_id is not None:
            headers[H_CONTROL_ID] = envelope.control_id
        if envelope.message_type is not None:
            headers[H_MESSAGE_TYPE] = envelope.message_type
        message = aio_pika.Message(
            body,
            content_type=FHIR_JSON,
            content_encoding="utf-8",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=hashlib.sha256(body).hexdigest()[:32],
            correlation_id=short_property(envelope.correlation_id or envelope.control_id),
            headers=headers,
            app_id="passerelle",
        )
        try:
            await publisher.publish(
                message, exchange=self._config.exchange, routing_key=self._config.routing_key
            )
        except PublishFailure as exc:
            if exc.permanent:
                raise RejectedDeliveryError(f"RabbitMQ refused the bundle: {exc}") from None
            raise TransientDeliveryError(f"RabbitMQ did not confirm the bundle: {exc}") from None
        return DeliveryReceipt(
            destination=self._name,
            status=None,
            location=f"amqp:{self._config.exchange}/{self._config.routing_key}",
            elapsed=time.perf_counter() - started,
        )

    async def check(self) -> None:
        """Ready when connected (connecting now if needed) and the connection is open, not
        being re-established."""
        await self._ready(timeout=min(_CHECK_TIMEOUT, self._config.confirm_timeout))
        if not is_connected(self._connection):
            raise TransientDeliveryError(f"not connected to RabbitMQ at {describe(self._url)}")

    async def close(self) -> None:
        async with self._lock:
            if self._publisher is not None:
                await self._publisher.close()
                self._publisher = None
            self._setup = None
            if self._connection is not None:
                with contextlib.suppress(Exception):
                    await self._connection.close()
                self._connection = None


class CompositeSink:
    """Several destinations for one route: a bundle is delivered when each took it.

    A failure anywhere fails the whole delivery; the retry sends the bundle to every
    destination again, which is harmless (PUT with stable ids; a stable AMQP message id).
    """

    def __init__(self, name: str, sinks: Sequence[Sink]) -> None:
        if not sinks:
            raise ValueError("a composite sink needs at least one sink")
        self._name = name
        self._sinks = tuple(sinks)

    @property
    def name(self) -> str:
        return self._name

    @property
    def sinks(self) -> tuple[Sink, ...]:
        return self._sinks

    async def deliver(self, bundle: BundleInput, envelope: Envelope) -> DeliveryReceipt:
        receipts = [await sink.deliver(bundle, envelope) for sink in self._sinks]
        first = receipts[0]
        return DeliveryReceipt(
            destination=self._name,
            status=first.status,
            location=first.location,
            entries=first.entries,
            elapsed=sum(receipt.elapsed for receipt in receipts),
            # The FHIR server's DELETEs of absent targets (metrics): an AMQP sink has none.
            absent_deletes=tuple(kind for receipt in receipts for kind in receipt.absent_deletes),
        )

    async def check(self) -> None:
        problems = []
        for sink in self._sinks:
            try:
                await sink.check()
            except DeliveryError as exc:
                problems.append(f"{sink.name}: {exc}")
        if problems:
            raise TransientDeliveryError("; ".join(problems))

    async def close(self) -> None:
        for sink in self._sinks:
            with contextlib.suppress(Exception):
                await sink.close()
