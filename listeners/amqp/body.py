"""A consumed message's body as the converter must read it: its ``content_encoding``
undone and, for HL7 v2, its content type's ``charset`` applied.

*Content encoding.* A producer may compress the body (``content_encoding = "gzip"``, the
AMQP property meant for that). It was handed to the converter compressed and
dead-lettered as neither HL7 v2 nor XML. ``gzip`` and ``deflate`` (zlib-wrapped or raw)
are now undone, never beyond ``amqp.max_message_bytes``: a few kilobytes of gzip can
hold gigabytes (a zip bomb), so decompression stops one byte past the limit and the
message is refused as oversized. ``identity`` (or no property) is the body as it is;
any other encoding is refused (dead letter, kind :class:`ContentEncodingError`), since
guessing would convert garbage.

*Character set.* An HL7 v2 message is read in its MSH-18 character set, else in the
route's ``converter.charset``. A producer publishing ``text/plain; charset=iso-8859-1``
without MSH-18 had its accented names refused (``CharsetError``: not UTF-8). The content
type's charset now stands for an empty MSH-18
(:func:`listeners.http.text_input.apply_content_charset`, which ``POST /convert`` applies
too). CDA documents keep their XML declaration's encoding (the document says what it is;
the parser reads it).
"""

from __future__ import annotations

import zlib

from ..errors import ServiceError
from ..http.text_input import apply_content_charset, content_charset

__all__ = [
    "BodyError",
    "ContentEncodingError",
    "DecodedTooLarge",
    "apply_content_charset",
    "content_charset",
    "decode_content",
]

_IDENTITY = ("", "identity")
#: zlib's ``wbits`` per encoding: 32 + 15 reads a gzip or a zlib header (what HTTP calls
#: ``deflate`` is zlib-wrapped, though some producers send raw deflate: tried next).
_GZIP_OR_ZLIB = 32 + zlib.MAX_WBITS
_RAW_DEFLATE = -zlib.MAX_WBITS
#: Compressed bytes given to zlib at first for a member, doubling up to the largest.
_FIRST_PIECE = 256
_LARGEST_PIECE = 1024 * 1024


class BodyError(ServiceError):
    """A body that cannot be turned into the message it carries: a dead letter."""

    #: The error kind in the dead letter's headers.
    kind = "BodyError"


class ContentEncodingError(BodyError):
    """An unknown ``content_encoding``, or a body that does not decode with it."""

    kind = "ContentEncodingError"


class DecodedTooLarge(BodyError):
    """The decompressed body exceeds ``amqp.max_message_bytes``."""

    kind = "MessageTooLarge"


def decode_content(body: bytes, encoding: str | None, limit: int) -> bytes:
    """``body`` with ``encoding`` (the ``content_encoding`` property) undone, at most
    ``limit`` bytes; :class:`ContentEncodingError` or :class:`DecodedTooLarge`."""
    name = (encoding or "").strip().lower()
    if name in _IDENTITY:
        return body
    if name in ("gzip", "x-gzip"):
        return _inflate(body, _GZIP_OR_ZLIB, name, limit)
    if name == "deflate":
        try:
            return _inflate(body, _GZIP_OR_ZLIB, name, limit)
        except ContentEncodingError:
            return _inflate(body, _RAW_DEFLATE, name, limit)
    # The name is a producer's property, not message content; still bounded in length.
    raise ContentEncodingError(
        f"content encoding {name[:40]!r} is not supported (gzip, deflate or identity)"
    )


def _inflate(body: bytes, wbits: int, name: str, limit: int) -> bytes:
    """``body`` inflated, at most ``limit`` bytes, in time linear in its size whatever
    its members (see :func:`_member`)."""
    # Kept as parts, joined once: adding each member's output to the whole copied it all
    # again (300 KB of small members, 10 MB decoded: 20 s).
    parts: list[bytes] = []
    size = 0
    view = memoryview(body)
    offset = 0
    # Several gzip members one after the other are one body (RFC 1952, as gzip reads it).
    while True:
        offset, size = _member(view, offset, wbits, name, limit, parts, size)
        if offset >= len(body):
            return b"".join(parts)
        if wbits == _RAW_DEFLATE:
            raise ContentEncodingError(f"body is not valid {name} data (trailing bytes)")


def _member(
    view: memoryview, offset: int, wbits: int, name: str, limit: int, parts: list[bytes], size: int
) -> tuple[int, int]:
    """Inflate the member starting at ``offset`` into ``parts``; the offset after it and
    the size inflated so far.

    The input goes in pieces that double from :data:`_FIRST_PIECE` bytes: zlib copies
    the input left after a member (``unused_data``), and given the rest of the body each
    time, a body of empty members (20 bytes each) copied it all once per member: 800 KB
    took 2 s, 10 MB minutes, on the event loop.
    """
    inflater = zlib.decompressobj(wbits)
    piece = _FIRST_PIECE
    while not inflater.eof:
        if offset >= len(view):
            raise ContentEncodingError(f"body is not valid {name} data (truncated)")
        given = view[offset : offset + piece]
        try:
            # One byte past the limit tells "too large" without inflating the rest (and,
            # under it, the output never fills max_length: all the input is taken).
            part = inflater.decompress(given, limit + 1 - size)
        except zlib.error:
            raise ContentEncodingError(f"body is not valid {name} data") from None
        parts.append(part)
        size += len(part)
        if size > limit:
            raise DecodedTooLarge(
                f"message exceeds the maximum of {limit} bytes once {name}-decoded"
                " (amqp.max_message_bytes)"
            )
        offset += len(given) - len(inflater.unused_data)
        piece = min(piece * 2, _LARGEST_PIECE)
    return offset, size
