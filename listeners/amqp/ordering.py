"""Per-patient order in the ``[amqp.consumer]``: ordering-key chains, and mode "commit"'s
storing retried in place.

:class:`KeyChains` makes messages with the same ordering key (sender + patient) wait for
the one before them, in the order they arrived on the consumer, and tells each whether that
one reached its outcome or went back to the broker unsettled.

:class:`StoreInPlace` is how mode "commit" keeps that order. A ``put`` the service's queue
refuses (disk full, I/O error, no publisher confirm with ``queue.backend = "amqp"``) is
retried in place, with a capped backoff, while the key's later messages (already
prefetched) wait behind it in its chain: returning it to the broker would let the next one
be stored first (an A08 before its A01). Only when the consumer stops (after its
``basic.cancel``: nothing is delivered to it again), or the message's channel is gone
(:func:`channel_gone`: the broker delivers that channel's messages again, in order), does it
go back to the queue unstored. While puts fail, :meth:`StoreInPlace.problem` says so (for
``/ready``) and ``passerelle_queue_write_failures_total{operation="put"}`` counts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import ChannelInvalidStateError

from ..ingest import IngestQueue
from ..logs import log_fields
from ..metrics import Metrics
from ..queue.base import PutResult
from ..retry_in_place import FailingWrites, retry_in_place, why_failed
from .envelope import AmqpEnvelope

__all__ = ["KeyChains", "StoreInPlace", "Turn", "channel_gone"]

log = logging.getLogger("passerelle.amqp.consumer")


class Turn:
    """A message's place in its key's chain."""

    __slots__ = ("handled", "settled_before")

    def __init__(self) -> None:
        #: Whether the key's previous message reached its outcome (False: it went back to
        #: the broker unsettled).
        self.settled_before = True
        #: Set by the holder once this message reached its outcome.
        self.handled = False


class KeyChains:
    """Ordering key → completion of the latest message of that key taken so far."""

    def __init__(self) -> None:
        #: True once it reached its outcome, False when it went back to the broker unsettled.
        self._tails: dict[str, asyncio.Future[bool]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[Turn]:
        """Take a place in ``key``'s chain (before the first await: in the order of the
        calls), wait for the previous message of the key, and hold the turn until the block
        ends; the next message of the key learns :attr:`Turn.handled`."""
        previous = self._tails.get(key)
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._tails[key] = done
        turn = Turn()
        try:
            turn.settled_before = True if previous is None else await asyncio.shield(previous)
            yield turn
        finally:
            if not done.done():
                done.set_result(turn.handled)
            if self._tails.get(key) is done:
                del self._tails[key]


class StoreInPlace:
    """The service's queue for mode "commit": a ``put`` retried in place while it refuses
    (see the module docstring) until ``stopped`` is set."""

    def __init__(self, store: IngestQueue, metrics: Metrics, stopped: asyncio.Event) -> None:
        self._store = store
        self._metrics = metrics
        self._stopped = stopped
        #: Messages whose storing is being retried, by id.
        self._failing = FailingWrites()

    def problem(self) -> str | None:
        """Why consumed messages are not being stored (for ``/ready``), or None."""
        summary = self._failing.summary()
        if summary is None:
            return None
        seconds, why = summary
        return (
            f"storing consumed messages failing for {seconds:.0f}s"
            f" ({len(self._failing)} retried in place): {why}"
        )

    async def put(
        self, message: AbstractIncomingMessage, envelope: AmqpEnvelope, fields: dict[str, Any]
    ) -> PutResult | None:
        """``put``, retried in place while the service's queue refuses it. None when the
        consumer stops or the message's channel is gone before it is stored."""
        token = id(message)

        def failed(exc: Exception, failures: int) -> bool:
            self._metrics.queue_write_failures.labels("put").inc()
            if failures == 1:
                why = why_failed(exc)
                self._failing.start(token, why)
                log.warning(
                    "storing the message failed (%s); retrying in place, the later"
                    " messages of its ordering key wait behind it",
                    why,
                    extra=fields | log_fields(error_kind=type(exc).__name__),
                )
            if self._stopped.is_set() or channel_gone(message):
                log.warning(
                    "storing the message failed and the consumer is stopping or its"
                    " channel is gone; returning it to the queue",
                    extra=fields | log_fields(count=failures),
                )
                return True
            return False

        if message.redelivered:
            # The broker's word that this copy may have been taken before: what lets the
            # queue recognise a message without any id it stored already (a consumer
            # killed between its commit and its ack).
            envelope = dataclasses.replace(envelope, redelivered=True)
        try:
            _, stored, failures = await retry_in_place(
                lambda: self._store.put(envelope), wake=self._stopped, failed=failed
            )
            if stored is not None and failures:
                log.info(
                    "message stored after %d failed attempt(s)",
                    failures,
                    extra=fields | log_fields(count=failures),
                )
            return stored
        finally:
            self._failing.end(token)


def channel_gone(message: AbstractIncomingMessage) -> bool:
    """Whether the channel ``message`` came on is closed: it can no longer be acked, and the
    broker delivers it again (with the key's later messages, in order) to the next channel."""
    try:
        message.channel  # noqa: B018 - the property raises once the channel is closed
    except ChannelInvalidStateError:
        return True
    return False
