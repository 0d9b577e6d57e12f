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
type's charset now stands for an empty MSH-18: the body is decoded with it and encoded
again the way the converter will read it (:func:`listeners.http.text_input.encode_input`,
the rule ``$convert-data`` uses for its text). MSH-18, when present, still wins, and so
does a UTF-8 byte order mark (the parser's rule); CDA documents keep their XML
declaration's encoding (the document says what it is; the parser reads it).
"""

from __future__ import annotations

import re
import zlib

from converter.errors import CharsetError, ConfigurationError
from converter.hl7v2.charset import UNKNOWN_CHARSET, charset_codec, decode_message

from ..errors import ServiceError
from ..http.text_input import UnencodableText, encode_input

__all__ = [
    "BodyError",
    "ContentEncodingError",
    "DecodedTooLarge",
    "apply_content_charset",
    "content_charset",
    "decode_content",
]

_CHARSET = re.compile(r";\s*charset\s*=\s*\"?([^\";\s]*)\"?", re.IGNORECASE)
_IDENTITY = ("", "identity")
#: zlib's ``wbits`` per encoding: 32 + 15 reads a gzip or a zlib header (what HTTP calls
#: ``deflate`` is zlib-wrapped, though some producers send raw deflate: tried next).
_GZIP_OR_ZLIB = 32 + zlib.MAX_WBITS
_RAW_DEFLATE = -zlib.MAX_WBITS
_UTF8_BOM = b"\xef\xbb\xbf"


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
    out = b""
    rest = body
    # Several gzip members one after the other are one body (RFC 1952, as gzip reads it).
    while True:
        inflater = zlib.decompressobj(wbits)
        try:
            # One byte past the limit tells "too large" without inflating the rest.
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error:
            raise ContentEncodingError(f"body is not valid {name} data") from None
        if len(out) > limit:
            raise DecodedTooLarge(
                f"message exceeds the maximum of {limit} bytes once {name}-decoded"
                " (amqp.max_message_bytes)"
            )
        if not inflater.eof:
            raise ContentEncodingError(f"body is not valid {name} data (truncated)")
        rest = inflater.unused_data
        if not rest:
            return out
        if wbits == _RAW_DEFLATE:
            raise ContentEncodingError(f"body is not valid {name} data (trailing bytes)")


def content_charset(content_type: str | None) -> str | None:
    """The ``charset`` parameter of a content type, if any."""
    found = _CHARSET.search(content_type or "")
    return found.group(1) if found and found.group(1) else None


def apply_content_charset(
    body: bytes, charset: str | None, msh18: str, default_charset: str
) -> bytes:
    """An HL7 v2 ``body`` re-encoded the way the converter will read it, when its content
    type names a ``charset`` and neither MSH-18 nor a UTF-8 byte order mark decides;
    ``CharsetError`` for an unknown set or bytes that set cannot read."""
    if charset is None or msh18.strip() or body.startswith(_UTF8_BOM):
        return body
    try:
        codec = charset_codec(charset)
    except ConfigurationError as exc:
        # The name goes to ``detail`` as MSH-18's would (see converter.hl7v2.charset).
        reason = "content type charset: " + (str(exc) or UNKNOWN_CHARSET)
        raise CharsetError(reason, location="content_type", detail=repr(charset)) from None
    if codec == _codec_or_none(default_charset):
        return body
    text = decode_message(body, codec)
    try:
        return encode_input(text, "hl7v2", default_charset)
    except UnencodableText:
        # The default set lacks a character: UTF-8 behind a byte order mark, which the
        # parser reads as UTF-8 whatever the default.
        return _UTF8_BOM + text.encode("utf-8")


def _codec_or_none(name: str) -> str | None:
    try:
        return charset_codec(name)
    except ConfigurationError:
        return None
