"""Rows of the queue's ``messages`` table, read back as envelopes and dead letters.

The column lists here and the tuples the functions unpack are one contract: a query
selects ``ENVELOPE_COLUMNS`` (or ``DEAD_LETTER_COLUMNS``) and hands the row over as is.
"""

from __future__ import annotations

import json
from typing import Any

from .base import DeadLetter, Envelope

__all__ = [
    "DEAD_LETTER_COLUMNS",
    "ENVELOPE_COLUMNS",
    "dead_letter_from_row",
    "envelope_from_row",
    "error_text",
]

#: The columns an :class:`Envelope` is stored in, in :func:`envelope_from_row` order.
ENVELOPE_COLUMNS = (
    "payload, sender, listener, received_at, ordering_key, control_id, "
    "message_type, input_type, route, message_id, correlation_id"
)
#: A dead letter's columns (its payload apart), in :func:`dead_letter_from_row` order.
DEAD_LETTER_COLUMNS = (
    "seq, attempts, updated_at, last_error, sender, listener, received_at, "
    "ordering_key, control_id, message_type, input_type, route, message_id, correlation_id"
)


def error_text(error: dict[str, Any]) -> str:
    """An error's details as stored in ``last_error``."""
    return json.dumps(error, ensure_ascii=False, default=str, sort_keys=True)


def envelope_from_row(row: tuple[Any, ...]) -> Envelope:
    """The envelope of a row selected as ``ENVELOPE_COLUMNS``."""
    (
        payload,
        sender,
        listener,
        received_at,
        key,
        control_id,
        message_type,
        input_type,
        route,
        message_id,
        correlation_id,
    ) = row
    return Envelope(
        message_id=message_id,
        correlation_id=correlation_id,
        payload=bytes(payload or b""),
        sender=sender,
        listener=listener,
        received_at=received_at,
        ordering_key=key,
        control_id=control_id,
        message_type=message_type,
        input_type=input_type,
        route=route,
    )


def dead_letter_from_row(row: tuple[Any, ...], payload: bytes) -> DeadLetter:
    """The dead letter of a row selected as ``DEAD_LETTER_COLUMNS``."""
    seq, attempts, failed_at, error, *envelope = row
    try:
        details = json.loads(error) if error else {}
    except ValueError:
        details = {"error": error}
    return DeadLetter(
        id=seq,
        envelope=envelope_from_row((payload, *envelope)),
        attempts=attempts,
        failed_at=failed_at,
        error=details if isinstance(details, dict) else {"error": details},
    )
