"""What makes two HL7 v2 messages the same message: a digest of their content.

Two uses, one rule. The converter derives the ids of message-scoped resources (the
Bundle, MessageHeader, Provenance, and any resource without a business identifier) from
the sender, MSH-10 and this digest, so two different messages never share an id even
when a sender reuses a control id within the same minute (MSH-7 is often that coarse).
The service's duplicate window keys on the same digest to tell a retransmission from a
new message that reuses a control id.

The digest covers the message bytes with

* segment separators normalised to CR (CR, LF and CRLF all end a segment, and a resend
  through another engine may turn one into the other);
* blanks at the end of each segment and empty segments (blank lines, a trailing line
  break, a leading BOM) dropped: transport padding, not content;
* MSH-7 (date/time of message) blanked: some engines stamp it again when they resend.
  Two messages identical but for MSH-7 carry the same facts, so they are one message.

Everything else counts, byte for byte, in the message's own charset (nothing is decoded).
"""

from __future__ import annotations

import hashlib

__all__ = ["message_digest"]

_BOM = b"\xef\xbb\xbf"
_BLANKS = b" \t"


def message_digest(payload: bytes) -> bytes:
    """SHA-256 of one HL7 v2 message's content, as normalised above (32 bytes)."""
    body = payload.removeprefix(_BOM).replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    segments = [segment.rstrip(_BLANKS) for segment in body.split(b"\r")]
    segments = [segment for segment in segments if segment]
    if segments and segments[0].startswith(b"MSH") and len(segments[0]) > 3:
        # fields[0] is "MSH", fields[1] MSH-2, fields[n - 1] MSH-n: MSH-7 is fields[6].
        fields = segments[0].split(segments[0][3:4])
        if len(fields) > 6:
            fields[6] = b""
            segments[0] = segments[0][3:4].join(fields)
    return hashlib.sha256(b"\r".join(segments)).digest()
