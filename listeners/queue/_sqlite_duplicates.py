"""Duplicate detection of the SQLite queue: which stored row a new message repeats.

With a control id (MSH-10, a CDA document's id): (``sender_id``, control id, content
digest — :mod:`.digest`); the same control id on other content is a new message, flagged
``control_id_reused``.

Without one (an AMQP message with MSH-10 empty) nothing in the message tells a
retransmission from a new message, yet the broker does retransmit: a consumer killed
between its commit and its ack leaves the message stored *and* unacknowledged, and the
broker delivers it again to the next consumer. Such a row keeps the SHA-256 of its exact
bytes (a redelivery or a publisher's retransmission is byte-identical; the HL7 digest of
:mod:`.digest` ignores MSH-7, which is all that may set two genuine messages apart) and
matches, among rows without control id of the same sender:

* with an AMQP ``message_id``: a row with that message id and those bytes — the
  publisher's own id for the message, redelivered or published again;
* without one: a row without message id and with those bytes, but only when the broker
  flags the delivery ``redelivered`` (:attr:`~.base.Envelope.redelivered`). Two identical
  messages sent on purpose without any id are both stored: nothing else is the evidence.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass

from .base import Envelope
from .digest import content_digest

__all__ = ["DUPLICATE_SQL", "REUSED_SQL", "UNCONTROLLED_SQL", "Match", "find_duplicate"]

# Run per message; tests check their plans use their partial index (messages_duplicate,
# messages_uncontrolled).
DUPLICATE_SQL = (
    "SELECT seq FROM messages WHERE sender_id = ? AND control_id = ? AND digest = ?"
    " AND stored_at >= ? ORDER BY stored_at, seq LIMIT 1"
)
# Only when DUPLICATE_SQL found nothing: was the control id used for another message?
REUSED_SQL = "SELECT 1 FROM messages WHERE sender_id = ? AND control_id = ? AND stored_at >= ?"
# ``message_id IS ?``: equal, or both NULL (the redelivered case).
UNCONTROLLED_SQL = (
    "SELECT seq FROM messages WHERE control_id IS NULL AND sender_id = ? AND digest = ?"
    " AND message_id IS ? AND stored_at >= ? ORDER BY stored_at, seq LIMIT 1"
)


@dataclass(frozen=True, slots=True)
class Match:
    """What :func:`find_duplicate` found."""

    #: The row repeated; None: a new message.
    seq: int | None
    #: The digest a new row is stored with.
    digest: bytes
    #: A new message whose control id the sender used for another one in the window.
    reused: bool = False


def find_duplicate(
    conn: sqlite3.Connection, envelope: Envelope, sender_id: str, since: float
) -> Match:
    """The row ``envelope`` repeats among those stored since ``since`` (module doc)."""
    if envelope.control_id is not None:
        digest = content_digest(envelope.payload, envelope.input_type)
        key = (sender_id, envelope.control_id)
        row = conn.execute(DUPLICATE_SQL, (*key, digest, since)).fetchone()
        if row is not None:
            return Match(row[0], digest)
        reused = conn.execute(REUSED_SQL, (*key, since)).fetchone() is not None
        return Match(None, digest, reused)
    digest = hashlib.sha256(envelope.payload).digest()
    if not envelope.message_id and not envelope.redelivered:
        return Match(None, digest)
    row = conn.execute(UNCONTROLLED_SQL, (sender_id, digest, envelope.message_id, since)).fetchone()
    return Match(None if row is None else row[0], digest)
