"""Messages the ``[amqp.consumer]`` stored (mode "commit") but could not acknowledge.

A connection to the broker lost between the put and the ack (a broker restart, a network
cut, a slow fsync outlasting the heartbeat) leaves the message stored *and* unacked: the
broker delivers it again, flagged ``redelivered``, once the consumer is back. With a
control id the SQLite queue's duplicate window drops that copy; without one (MSH-10
empty, blank), or with ``queue.backend = "amqp"`` (no duplicate window), it used to be
stored and delivered a second time.

:class:`StoredUnacked` remembers such messages in memory — a digest of their AMQP
identity and body, never the body — and recognises their redelivery: only a message the
broker flags ``redelivered``, with the same ``message_id``, exchange, routing key and
body, and each remembered message once (two identical messages published twice are two
records, and a genuinely new message is never flagged redelivered). A consumer killed
between the put and the ack forgets them with its memory: then the SQLite queue's
duplicate key for messages without a control id recognises the copy (the AMQP
``message_id`` and bytes, or the bytes of a copy flagged ``redelivered``:
:mod:`listeners.queue._sqlite_duplicates`); ``queue.backend = "amqp"`` has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from ..queue.base import PutResult
from .envelope import AmqpEnvelope
from .ordering import StoreInPlace

__all__ = ["REMEMBERED_MAX", "REMEMBERED_SECONDS", "StoredUnacked", "put_remembered"]

#: How long a stored, unacknowledged message is remembered: the broker delivers it again as
#: soon as the consumer is back, so this only has to outlast an outage.
REMEMBERED_SECONDS = 24 * 3600.0
#: At most so many records (oldest forgotten first): each lost connection leaves at most
#: ``prefetch`` of them.
REMEMBERED_MAX = 10_000


class StoredUnacked:
    """Stored messages whose ack did not reach the broker (see the module docstring)."""

    def __init__(
        self,
        *,
        ttl: float = REMEMBERED_SECONDS,
        limit: int = REMEMBERED_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._limit = limit
        self._clock = clock
        #: identity digest -> the times it was remembered (one per stored copy), oldest first.
        self._records: OrderedDict[bytes, list[float]] = OrderedDict()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def remember(self, message: AbstractIncomingMessage) -> None:
        """``message`` is stored but the broker did not get its ack."""
        self._expire()
        key = _identity(message)
        self._records.setdefault(key, []).append(self._clock())
        self._records.move_to_end(key)
        self._count += 1
        while self._count > self._limit:
            oldest = next(iter(self._records))
            self._drop(oldest)

    def take(self, message: AbstractIncomingMessage) -> bool:
        """Whether ``message`` is the redelivery of a remembered one (forgotten then)."""
        if not message.redelivered or not self._records:
            return False
        self._expire()
        key = _identity(message)
        if key not in self._records:
            return False
        self._drop(key)
        return True

    def _drop(self, key: bytes) -> None:
        times = self._records[key]
        times.pop(0)
        self._count -= 1
        if not times:
            del self._records[key]

    def _expire(self) -> None:
        horizon = self._clock() - self._ttl
        for key in list(self._records):
            times = self._records[key]
            while times and times[0] < horizon:
                times.pop(0)
                self._count -= 1
            if not times:
                del self._records[key]


async def put_remembered(
    store: StoreInPlace,
    unacked: StoredUnacked,
    message: AbstractIncomingMessage,
    envelope: AmqpEnvelope,
    fields: dict[str, Any],
) -> PutResult | None:
    """:meth:`StoreInPlace.put`, seen through when the calling task is cancelled (aiormq
    cancels a consumer's tasks when its channel closes with the connection: the broker
    takes the message back). A put under way still commits, so it is awaited and the
    message remembered as stored before the cancellation goes on, and before the key's
    next message — maybe its own redelivery — takes its turn."""
    put = asyncio.ensure_future(store.put(message, envelope, fields))
    try:
        return await asyncio.shield(put)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await asyncio.wait({put})
        if not put.cancelled() and put.exception() is None and put.result() is not None:
            unacked.remember(message)
        raise


def _identity(message: AbstractIncomingMessage) -> bytes:
    """A digest of what a redelivery keeps: the AMQP ids, where it was published, the body."""
    digest = hashlib.sha256()
    for part in (message.message_id, message.exchange, message.routing_key):
        text = (part or "").encode("utf-8", "surrogateescape")
        digest.update(len(text).to_bytes(4, "big") + text)
    digest.update(message.body)
    return digest.digest()
