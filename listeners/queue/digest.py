"""The content digest that tells a retransmission from a new message reusing a control id.

Duplicate detection keys on (sender, control id, digest): senders do reuse MSH-10 (a
counter reset by a restart or a reinstall, per-day sequences), and a message that only
shares its control id with an earlier one must be stored and delivered, not dropped.

For HL7 v2 the digest is the converter's :func:`converter.hl7v2.message_digest`, the
rule that also keeps two such messages' resource ids apart (see there for what it
covers: MSH-7 and line-end differences are ignored, everything else counts). Other input
types (a CDA document over AMQP) are digested as they are.
"""

from __future__ import annotations

import hashlib

from converter.hl7v2 import message_digest

__all__ = ["content_digest"]


def content_digest(payload: bytes, input_type: str = "hl7v2") -> bytes:
    """SHA-256 of ``payload`` (32 bytes), normalised as above for HL7 v2."""
    if input_type != "hl7v2":
        return hashlib.sha256(payload).digest()
    return message_digest(payload)
