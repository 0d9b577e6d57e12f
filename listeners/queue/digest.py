"""The content digest that tells a retransmission from a new message reusing a control id.

Duplicate detection keys on (sender, control id, digest): senders do reuse MSH-10 (a
counter reset by a restart or a reinstall, per-day sequences), and a message that only
shares its control id with an earlier one must be stored and delivered, not dropped.

What the digest covers, for HL7 v2 (``input_type = "hl7v2"``): the message bytes with

* segment separators normalised to CR (CR, LF and CRLF all end a segment on the way in,
  and a resend through another engine may turn one into the other);
* blanks (spaces, tabs) at the end of each segment and empty segments (blank lines, a
  trailing line break, a leading BOM) dropped: transport padding, not content;
* **MSH-7 (date/time of message) blanked**: some engines stamp MSH-7 again when they
  resend (HAPI and Mirth resend identical bytes, others rebuild the header). Kept, such a
  retransmission would be delivered twice — and since the converter derives message-scoped
  resource ids (the Bundle's among them) from sender, MSH-10 and MSH-7, twice as *different*
  resources. Ignoring it costs little: two messages identical but for MSH-7 carry the same
  content, so keeping the first loses no clinical fact.

Everything else counts, byte for byte, in the message's own charset (nothing is decoded):
a different patient, event, segment or field value is a different message. A resend that
changes more than the above (another charset, other delimiters, a re-stamped EVN-2) is
taken as a new message and delivered again — the safe direction, since what was
acknowledged must never be lost. Other input types (a CDA document over AMQP) are
digested as they are.
"""

from __future__ import annotations

import hashlib

__all__ = ["content_digest"]

_BOM = b"\xef\xbb\xbf"
_BLANKS = b" \t"


def content_digest(payload: bytes, input_type: str = "hl7v2") -> bytes:
    """SHA-256 of ``payload`` as normalised above (32 bytes)."""
    if input_type != "hl7v2":
        return hashlib.sha256(payload).digest()
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
