"""Messages whose conversion process died: counted, dead-lettered at the third death.

A conversion process that dies (the OOM killer on one huge message, a crash in a C
extension) breaks the whole pool: ``ProcessPoolExecutor`` fails *every* conversion in
progress with ``BrokenProcessPool``, not only the one that killed it, and cannot tell
which one did. Retried like a transient failure, the message that kills its process did
it again at every attempt, for ever (``max_attempts = 0``, the default): its patient's
later messages waited behind it for good, and each retry failed the conversions of other
patients in progress at that moment. Like a ``ConversionTimeout``, the same bytes would do
it again: after :data:`DEATHS_TO_DEAD_LETTER` deaths the message is dead-lettered, kind
``ConversionProcessDied`` at stage ``conversion`` (``passerelle dead-letters retry`` once
the cause is found: more memory, a fixed library).

Why 3 and not 1: one death is no proof, since a death caused by *another* message fails
this one's conversion too. So a message whose process died converts *alone* next time,
in a process of its own (:mod:`listeners.conversion_turns`): an innocent one then
converts and its count starts again, while the culprit dies again with nothing else in
progress there. Counting deaths only was
not enough: a slow innocent message (2 s) was in progress at each of a poison message's
retries and dead-lettered with it. Why not 2: a process may also die for reasons of its
own (the OOM killer choosing it for another program's memory, an operator's ``kill``); 3
deaths cost the culprit three retries, the last two failing no other conversion. The count
is kept in memory: a restart of the service starts afresh, at worst three more deaths.
The HTTP API counts by request body (``Service.convert``'s counts, kept at the
limit): its client sends a body that killed the pool again (503, Retry-After), which then
converts alone; from the third death it is a 422.

A conversion that runs out of memory without dying (``MemoryError``: the converter lets it
through, "memory may come back") counts the same way: before, the service's workers
retried it for ever with a traceback each time, its patient's later messages waiting. It
may have been the other conversions' memory: the retry converts alone; the third such
failure is a dead letter of kind ``ConversionOutOfMemory``.

A ``MemoryError`` while *delivering* (building or sending the request of a bundle already
converted) was taken for a conversion's and its count was reset by the next conversion,
which succeeded: retried for ever. It is counted apart (:func:`delivery_out_of_memory`),
per message, until the message is delivered: retried with the delivery's backoff (a
transient failure of the destination stays a retry, and the destination is not paused:
it is not at fault), the third time a dead letter of kind ``DeliveryOutOfMemory`` at
stage ``delivery``, logged as an ERROR like the conversion's.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from typing import Any, Generic, TypeVar

from .conversion import ConversionFailure
from .errors import TransientDeliveryError

__all__ = [
    "CONVERSION_OUT_OF_MEMORY",
    "CONVERSION_PROCESS_DIED",
    "DEATHS_TO_DEAD_LETTER",
    "DELIVERY_OUT_OF_MEMORY",
    "ConversionDeaths",
    "dead_letter_level",
    "delivery_out_of_memory",
    "died_too_often",
    "payload_key",
    "retry_after_death",
]

#: ``ConversionFailure.kind`` of a message whose conversion process died too often.
CONVERSION_PROCESS_DIED = "ConversionProcessDied"
#: ``ConversionFailure.kind`` of a message whose conversion ran out of memory (a
#: ``MemoryError``, the process surviving) as often, the last time alone.
CONVERSION_OUT_OF_MEMORY = "ConversionOutOfMemory"
#: Dead-letter kind of a message whose delivery (the request of its bundles: built or
#: sent) ran out of memory as often.
DELIVERY_OUT_OF_MEMORY = "DeliveryOutOfMemory"
_RESOURCE_KINDS = frozenset(
    {CONVERSION_PROCESS_DIED, CONVERSION_OUT_OF_MEMORY, DELIVERY_OUT_OF_MEMORY}
)


def dead_letter_level(kind: object) -> int:
    """The log level of a dead letter of ``kind``: ERROR for a message killing its
    conversion process or running out of memory (the host's memory or a library needs
    looking at, not only the message), else WARNING."""
    return logging.ERROR if kind in _RESOURCE_KINDS else logging.WARNING


#: Deaths of the conversion process, while converting a message, that dead-letter it.
DEATHS_TO_DEAD_LETTER = 3
#: Messages remembered at most (the oldest forgotten first): a message given back or
#: left in flight by a stop is never settled here.
_REMEMBERED = 10_000

_Key = TypeVar("_Key", bound=Hashable)


def died_too_often(
    deaths: int, limit: int = DEATHS_TO_DEAD_LETTER, *, out_of_memory: bool = False
) -> ConversionFailure | None:
    """The failure to dead-letter a message with after ``deaths`` deaths of its conversion
    process (``out_of_memory``: the last one a ``MemoryError``), once they reach ``limit``;
    else None (retry it)."""
    if deaths < limit:
        return None
    if out_of_memory:
        return ConversionFailure(
            kind=CONVERSION_OUT_OF_MEMORY,
            reason=f"the conversion of this message failed {deaths} times, the last one out"
            " of memory (converting alone)",
            hl7_error_code="207",
        )
    return ConversionFailure(
        kind=CONVERSION_PROCESS_DIED,
        reason=f"the conversion process died {deaths} times converting this message"
        " (killed for lack of memory? a crash? see the system log)",
        hl7_error_code="207",
    )


class ConversionDeaths(Generic[_Key]):
    """How many times each message's conversion process died (module docstring)."""

    def __init__(
        self, limit: int = DEATHS_TO_DEAD_LETTER, *, remembered: int = _REMEMBERED
    ) -> None:
        self._counts: OrderedDict[_Key, int] = OrderedDict()
        self._limit = limit
        self._remembered = remembered

    def died(
        self, key: _Key, *, out_of_memory: bool = False, keep: bool = False
    ) -> ConversionFailure | None:
        """Count a death while converting message ``key`` (``out_of_memory``: a
        ``MemoryError`` instead): the failure to dead-letter it with once it reached the
        limit (the count is then forgotten, unless ``keep``: the HTTP API, whose client may
        send it again), else None (retry)."""
        deaths = self.add(key)
        failure = died_too_often(deaths, self._limit, out_of_memory=out_of_memory)
        if failure is not None and not keep:
            self._counts.pop(key, None)
        return failure

    def add(self, key: _Key) -> int:
        """Count one more failure of message ``key``; its count so far (kept until
        :meth:`converted`)."""
        deaths = self._counts.pop(key, 0) + 1
        self._counts[key] = deaths
        while len(self._counts) > self._remembered:
            self._counts.popitem(last=False)
        return deaths

    def converted(self, key: _Key) -> None:
        """Message ``key`` converted (or is settled): its count starts again."""
        self._counts.pop(key, None)

    def deaths(self, key: _Key) -> int:
        """Deaths counted for message ``key`` so far."""
        return self._counts.get(key, 0)


def delivery_out_of_memory(
    failures: int, destination: str, limit: int = DEATHS_TO_DEAD_LETTER
) -> dict[str, Any] | None:
    """The dead-letter record of a message whose delivery to ``destination`` ran out of
    memory ``failures`` times, once they reach ``limit``; else None (retry it)."""
    if failures < limit:
        return None
    return {
        "kind": DELIVERY_OUT_OF_MEMORY,
        "reason": f"delivering this message's bundles to {destination} ran out of memory"
        f" {failures} times (building or sending the request; see the service's memory)",
        "stage": "delivery",
        "destination": destination,
    }


def payload_key(route: str, payload: bytes) -> bytes:
    """A message's key where it has no stable id (the AMQP consumer: a retry is another
    delivery): its route and bytes, what would kill the process again."""
    return hashlib.sha256(route.encode("utf-8") + b"\0" + payload).digest()


def retry_after_death(
    log: logging.Logger, *, out_of_memory: bool, fields: Mapping[str, Any]
) -> TransientDeliveryError:
    """The failure a conversion that died (or ran out of memory) short of the limit is
    retried with, its WARNING logged on ``log`` (the worker's or the consumer's): the
    retry converts alone."""
    log.warning(
        "conversion ran out of memory; will retry alone"
        if out_of_memory
        else "conversion process died during the conversion; will retry",
        extra=fields,
    )
    return TransientDeliveryError(
        "conversion ran out of memory" if out_of_memory else "conversion process died"
    )
