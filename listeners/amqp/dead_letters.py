"""RabbitMQ's dead-letter queue, for ``passerelle dead-letters``.

Every dead letter of the AMQP side lands in ``amqp.dead_letter_queue``: the workers'
(``queue.backend = "amqp"``), the consumer's, and the listeners' own when storing to the
partitions failed for good. This reads, re-sends and removes them.

RabbitMQ cannot peek: reading *takes* messages without acknowledging them (``basic.get``),
and closing the channel gives them back to the queue, where they were (a classic queue
keeps their position). A dead letter is removed only by its acknowledgement, after what
replaced it (a re-sent copy) was confirmed by the broker; an interrupted command leaves
every message in the queue.

A retry sends the message where it failed: a consumer's dead letter back to the exchange
and routing key it was consumed from; an envelope from the partitions to the partition of
its ordering key. A message that is not a Passerelle envelope and has no origin header
cannot be retried. Ids are the AMQP message ids (every envelope has one); a message
without one is named by its position, ``@3``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)

from ..config import AmqpConfig, ConfigError
from ..queue.base import Envelope
from .broker import ConfirmedPublisher, connect_plain
from .envelope import (
    ERROR_HEADERS,
    H_FAILED_AT,
    H_ORIGINAL_EXCHANGE,
    H_ORIGINAL_ROUTING_KEY,
    H_PARTITION,
    EnvelopeError,
    decode_envelope,
    forwardable_headers,
    header_text,
    partition_of,
    persistent_copy,
)
from .topology import partition_routing_key

__all__ = ["AmqpDeadLetter", "AmqpDeadLetters"]


@dataclass(frozen=True, slots=True)
class AmqpDeadLetter:
    """One message of the dead-letter queue (its body only in :attr:`body`)."""

    id: str
    #: 1-based position in the queue when it was read.
    position: int
    #: None when the message is not a Passerelle envelope.
    envelope: Envelope | None
    failed_at: float | None
    #: Error kind, reason, location, stage, status… from the error headers (no content).
    error: dict[str, Any]
    attempts: int
    body: bytes
    #: (exchange, routing key) a retry publishes to; None when it cannot be retried.
    target: tuple[str, str] | None


_ERROR_KEYS = {header: key for key, header in ERROR_HEADERS.items() if key != "attempts"}
_RETRY_DROPPED = {H_ORIGINAL_EXCHANGE, H_ORIGINAL_ROUTING_KEY}


class AmqpDeadLetters:
    """The dead-letter queue of ``config`` (``async with``: one connection)."""

    def __init__(self, config: AmqpConfig) -> None:
        if config.url is None:
            raise ConfigError("the RabbitMQ dead-letter queue needs [amqp] url")
        if not config.dead_letter_queue:
            raise ConfigError("amqp.dead_letter_queue is empty: RabbitMQ keeps no dead letters")
        self._config = config
        self._url = config.url
        self._connection: AbstractConnection | None = None

    async def __aenter__(self) -> AmqpDeadLetters:
        self._connection = await connect_plain(
            self._url, role="dead-letters", timeout=self._config.confirm_timeout
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def count(self) -> int:
        """Messages in the queue now (0 when nothing declared it yet)."""
        async with self._channel() as channel:
            found = await self._declared(channel)
            return 0 if found is None else found[1]

    async def read(self, limit: int | None = None, offset: int = 0) -> list[AmqpDeadLetter]:
        """Dead letters ``offset+1 … offset+limit`` in queue order; all are given back."""
        out: list[AmqpDeadLetter] = []
        async with self._channel() as channel, contextlib.aclosing(self._scan(channel)) as scan:
            async for _, letter in scan:
                if letter.position > offset:
                    out.append(letter)
                if limit is not None and len(out) >= limit:
                    break
        return out

    async def find(self, id: str) -> AmqpDeadLetter | None:
        async with self._channel() as channel, contextlib.aclosing(self._scan(channel)) as scan:
            async for _, letter in scan:
                if letter.id == id:
                    return letter
        return None

    async def retry(self, select: Callable[[AmqpDeadLetter], bool]) -> tuple[int, int]:
        """Re-send the selected dead letters where they failed, then remove them.

        Returns (re-sent, selected but not retriable). Stops at the first publication
        the broker does not confirm (``PublishFailure``); what was not re-sent stays.
        """
        sent = skipped = 0
        assert self._connection is not None
        publisher = ConfirmedPublisher(
            self._connection, timeout=self._config.confirm_timeout, url=self._url
        )
        try:
            async with (
                self._channel() as channel,
                contextlib.aclosing(self._scan(channel)) as scan,
            ):
                async for message, letter in scan:
                    if not select(letter):
                        continue
                    if letter.target is None:
                        skipped += 1
                        continue
                    exchange, routing_key = letter.target
                    partition = (
                        self._partition(letter.envelope)
                        if exchange == self._config.partition_exchange and letter.envelope
                        else None
                    )
                    await publisher.publish(
                        persistent_copy(message, _retry_headers(message, partition)),
                        exchange=exchange,
                        routing_key=routing_key,
                    )
                    await message.ack()
                    sent += 1
        finally:
            await publisher.close()
        return sent, skipped

    async def purge(self, older_than: float | None = None) -> int:
        """Remove the dead letters that failed more than ``older_than`` seconds ago (all
        when None; one without a failure time counts from when it was received)."""
        removed = 0
        now = time.time()
        async with self._channel() as channel, contextlib.aclosing(self._scan(channel)) as scan:
            async for message, letter in scan:
                when = letter.failed_at
                if when is None and letter.envelope is not None:
                    when = letter.envelope.received_at
                if older_than is not None and (when is None or now - when < older_than):
                    continue
                await message.ack()
                removed += 1
        return removed

    # -- scanning --------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _channel(self) -> AsyncIterator[AbstractChannel]:
        assert self._connection is not None, "use `async with AmqpDeadLetters(...)`"
        channel = await self._connection.channel(publisher_confirms=False)
        try:
            yield channel
        finally:
            # Closing gives back every message taken and not acknowledged.
            with contextlib.suppress(Exception):
                await channel.close()

    async def _scan(
        self, channel: AbstractChannel
    ) -> AsyncGenerator[tuple[AbstractIncomingMessage, AmqpDeadLetter], None]:
        # Only the messages there at the start: a retried message that fails again comes
        # back behind them and is not retried twice by one command.
        found = await self._declared(channel)
        if found is None:
            return
        queue, present = found
        for position in range(1, present + 1):
            message = await queue.get(
                no_ack=False, fail=False, timeout=self._config.confirm_timeout
            )
            if message is None:
                return
            yield message, self._letter(message, position)

    async def _declared(self, channel: AbstractChannel) -> tuple[AbstractQueue, int] | None:
        """The queue and its message count; None when it does not exist (yet)."""
        try:
            queue = await channel.declare_queue(self._config.dead_letter_queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None
        return queue, int(queue.declaration_result.message_count or 0)

    def _letter(self, message: AbstractIncomingMessage, position: int) -> AmqpDeadLetter:
        headers = message.headers or {}
        try:
            envelope: Envelope | None = decode_envelope(message)
        except EnvelopeError:
            envelope = None
        error = {
            key: value for header, key in _ERROR_KEYS.items() if (value := headers.get(header))
        }
        for key, value in error.items():
            if isinstance(value, bytes | bytearray):
                error[key] = bytes(value).decode("utf-8", "replace")
        attempts = headers.get(ERROR_HEADERS["attempts"])
        return AmqpDeadLetter(
            id=message.message_id or f"@{position}",
            position=position,
            envelope=envelope,
            failed_at=_float(header_text(headers, H_FAILED_AT)),
            error=error,
            attempts=attempts if isinstance(attempts, int) else 0,
            body=message.body,
            target=self._target(headers, envelope),
        )

    def _target(self, headers: dict[str, Any], envelope: Envelope | None) -> tuple[str, str] | None:
        exchange = header_text(headers, H_ORIGINAL_EXCHANGE)
        if exchange is not None:
            return exchange, header_text(headers, H_ORIGINAL_ROUTING_KEY) or ""
        if envelope is None:
            return None
        return self._config.partition_exchange, partition_routing_key(self._partition(envelope))

    def _partition(self, envelope: Envelope) -> int:
        return partition_of(envelope.ordering_key, self._config.partitions)


def _retry_headers(message: AbstractIncomingMessage, partition: int | None) -> dict[str, Any]:
    """The headers of a re-sent copy: no error, broker or origin headers; the partition
    recomputed (the number of partitions may have changed since)."""
    headers = {
        name: value
        for name, value in forwardable_headers(message.headers).items()
        if name not in _RETRY_DROPPED
    }
    if partition is not None:
        headers[H_PARTITION] = partition
    return headers


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
