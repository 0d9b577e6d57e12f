"""What :mod:`.client` (``passerelle send``) needs to read in the messages it sends and
the ACKs it gets back: control ids in the right charset, MSA-2 as sent, and messages
ending the way HL7 ends every segment."""

from __future__ import annotations

import re

from .ack_info import AckInfo
from .header import read_header

__all__ = ["acknowledged_id", "acknowledges", "control_id", "decode_text", "terminated"]

_LINES = re.compile(rb"\r\n|\r|\n")


def terminated(payload: bytes) -> bytes:
    """``payload`` with its last segment ended by a CR, as HL7 ends every segment (v2.5
    §2.5.3): the messages split from a file lose it, and sent without it a message looks
    unfinished to receivers that wait for the last segment's terminator."""
    return payload if payload.endswith(b"\r") else payload + b"\r"


def control_id(payload: bytes) -> bytes:
    """MSH-10 of a message, its bytes as written."""
    return read_header(payload).control_id.encode("latin-1")  # read_header's 1:1 text


def acknowledged_id(reply: bytes) -> bytes | None:
    """MSA-2 of an ACK, its bytes as written; ``None`` without an MSA segment."""
    sep = read_header(reply).encoding.field.encode("latin-1")
    for line in _LINES.split(reply):
        if line.startswith(b"MSA" + sep):
            fields = line.split(sep)
            return fields[2] if len(fields) > 2 else b""
    return None


def decode_text(data: bytes, codec: str | None) -> str:
    """Bytes of a message or an ACK as text in ``codec`` (UTF-8 when ``None``, as
    :func:`.parse_ack` reads an ACK without MSH-18), undecodable bytes replaced."""
    try:
        return data.decode(codec or "utf-8", errors="replace")
    except LookupError:
        return data.decode("latin-1")


def acknowledges(info: AckInfo, sent_id: bytes) -> bool:
    """Whether the ACK's MSA-2 names the control id ``sent_id`` (MSH-10's bytes).

    Compared as text in the ACK's charset, the one :func:`.parse_ack` read MSA-2 in: a
    UTF-8 ``é`` compared as its bytes read as Latin-1 (``Ã©``) made a server echoing
    MSH-10 exactly look like one acknowledging another message. A server writes MSH-10's
    control bytes, and bytes invalid in its MSH-18, as ``\\Xhh\\`` (raw, they could break
    framing or the ACK's charset): unescaped, they are the sender's again.
    """
    codec = info.header.codec or "utf-8"
    expected = decode_text(sent_id, codec)
    got = info.acknowledged_id
    if got == expected:
        return True
    return info.header.encoding.unescape(got, codec, undecodable="replace") == expected
