"""The dead-letter records of messages the AMQP consumer refuses at intake (unreadable,
oversized): what the dead letter's headers say, with the HL7 error code an MLLP sender
would get for the same refusal."""

from __future__ import annotations

from typing import Any

from converter import ConversionError

from .body import BodyError

__all__ = ["oversized_record", "unreadable_record"]


def unreadable_record(exc: ConversionError | BodyError) -> tuple[dict[str, Any], str]:
    """The record of a message that cannot be read, and its message type (or "unknown")."""
    if isinstance(exc, BodyError):
        # No HL7 error code of its own: 207 (application internal error), as for an
        # oversized message.
        body: dict[str, Any] = {
            "stage": "intake",
            "kind": exc.kind,
            "reason": str(exc),
            "hl7_error_code": "207",
        }
        return body, "unknown"
    record: dict[str, Any] = {
        "stage": "intake",
        "kind": type(exc).__name__,
        "reason": exc.reason,
        "location": exc.location,
        "template": exc.template,
        "hl7_error_code": exc.hl7_error_code,
    }
    return record, exc.message_type or "unknown"


def oversized_record(size: int, limit: int, reason: str | None = None) -> dict[str, Any]:
    """The record of a message over ``amqp.max_message_bytes`` (``reason``: once
    decompressed)."""
    return {
        "stage": "intake",
        "kind": "MessageTooLarge",
        "reason": reason
        or f"message of {size} bytes exceeds the maximum of {limit} bytes (amqp.max_message_bytes)",
        "hl7_error_code": "207",
    }
