"""What the listeners store and what the delivery workers take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..config.model import DEFAULT_DEAD_LETTER_RETENTION

__all__ = [
    "DEFAULT_DEAD_LETTER_RETENTION",
    "DeadLetter",
    "Envelope",
    "Job",
    "MessageQueue",
    "PutResult",
]


@dataclass(frozen=True, slots=True)
class Envelope:
    """A received message and the facts needed to route and order it, without parsing."""

    payload: bytes
    #: "application^facility" from MSH-3/MSH-4 (CDA: the custodian/author organization).
    sender: str
    #: The listener that received it (MLLP listener name, "http", "amqp").
    listener: str
    received_at: float
    #: Messages with the same key are delivered in arrival order (sender + patient).
    ordering_key: str
    control_id: str | None = None
    message_type: str | None = None
    input_type: str = "hl7v2"
    #: Name of the configured route (destination, template overrides, settings).
    route: str = "default"
    #: AMQP message and correlation ids of a message consumed from RabbitMQ: carried to
    #: the bundles published for it and to the logs.
    message_id: str | None = None
    correlation_id: str | None = None
    #: The sender's full identity for duplicate detection: the listener and every HD
    #: component of MSH-3/MSH-4 (``sender`` keeps HD.1 only, which routes match and which
    #: orders delivery, but which two facilities may share). None: ``sender`` is used.
    #: A key of the SQLite queue's duplicate detection, not read back with the message.
    sender_id: str | None = None
    #: The transport says this copy may have been received before (AMQP's ``redelivered``
    #: flag): the SQLite queue then matches a message without control id nor message id
    #: on its bytes (:mod:`._sqlite_duplicates`). Not stored, not read back.
    redelivered: bool = False


@dataclass(frozen=True, slots=True)
class PutResult:
    seq: int
    #: A retransmission (same sender, same control id, same content: see
    #: :mod:`listeners.queue.digest`; without control id, see
    #: :mod:`listeners.queue._sqlite_duplicates`) already stored: not stored again.
    duplicate: bool = False
    #: Stored as a new message although the sender used its control id for *another*
    #: message within the duplicate window (a reset counter): worth a warning.
    control_id_reused: bool = False


@dataclass(frozen=True, slots=True)
class Job:
    """A stored message handed to a delivery worker."""

    seq: int
    envelope: Envelope
    attempts: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    envelope: Envelope
    attempts: int
    failed_at: float
    #: Error kind, reason, location, template, HTTP status, server diagnostics — never
    #: message content.
    error: dict[str, Any]


class MessageQueue(Protocol):
    """A durable, ordered-per-key queue. ``put`` returns only once the message is on
    disk (fsync'd); a crash at any point afterwards loses nothing."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def put(self, envelope: Envelope) -> PutResult: ...

    async def claim(self, limit: int) -> list[Job]:
        """Up to ``limit`` jobs that may run now: the oldest pending message of each
        ordering key that has nothing in flight and is not waiting for a retry."""
        ...

    async def complete(self, seq: int) -> None: ...

    async def retry_later(self, seq: int, delay: float, error: dict[str, Any]) -> None: ...

    async def give_back(
        self, seq: int, delay: float = 0.0, error: dict[str, Any] | None = None
    ) -> None:
        """Put claimed job ``seq`` back unsent, due in ``delay`` seconds, and take back the
        attempt its claim counted, in one durable write. ``error``: stored as its last
        error (None: keep the last one). Only an in-flight job: otherwise a no-op."""
        ...

    async def dead_letter(self, seq: int, error: dict[str, Any]) -> None: ...

    async def depth(self) -> int: ...
