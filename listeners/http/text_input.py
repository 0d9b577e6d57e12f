"""Text to bytes for ``POST /$convert-data``: its ``inputData`` is a JSON string, already
decoded, while the converter reads bytes in the character set the message declares.

Encoded in UTF-8 whatever it declares, a message saying ``MSH-18 = 8859/1`` (or a CDA
document with ``<?xml … encoding="ISO-8859-1"?>``) was read back as Latin-1, and every
accented name came out garbled (``Lefèvre`` as ``LefÃ¨vre``) in a 200 answer. The text
is therefore encoded in the character set its reader will use: MSH-18 (the default
charset when empty; UTF-8 after a byte order mark, as the parser reads it), or the XML
declaration's encoding. The bytes are then those the sender's file would hold, which is
also what a CDA document's DocumentReference embeds.

Bytes sent with a content type naming a ``charset`` (``POST /convert``, the AMQP
consumer) go the other way: an HL7 v2 message without MSH-18 is decoded in that charset
and encoded again the same way (:func:`apply_content_charset`, :func:`apply_batch_charset`).
Both work on bodies of up to 20 MB in steps (:func:`message_starts`, :func:`_encode`) short
enough not to hold the GIL, and so the event loop, for long.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from typing import AnyStr

from converter.errors import CharsetError, ConfigurationError, ConversionError, ParseError
from converter.hl7v2 import peek_header
from converter.hl7v2.charset import UNKNOWN_CHARSET, charset_codec, decode_message, message_codec

__all__ = [
    "UnencodableText",
    "apply_batch_charset",
    "apply_content_charset",
    "content_charset",
    "encode_input",
    "message_starts",
]

_XML_DECLARATION = re.compile(
    r"\A\ufeff?\s*<\?xml\s[^>]*?\bencoding\s*=\s*[\"']([A-Za-z][A-Za-z0-9._-]*)[\"']"
)
_LINE = re.compile(r"[^\r\n]*")
_CHARSET = re.compile(r";\s*charset\s*=\s*\"?([^\";\s]*)\"?", re.IGNORECASE)
_UTF8_BOM = b"\xef\xbb\xbf"
#: Characters encoded, or bytes searched, in one call (well under a millisecond): see
#: :func:`_encode` and :func:`message_starts`.
_STEP = 256 * 1024


class UnencodableText(Exception):
    """The text holds characters its declared character set cannot represent."""


def encode_input(text: str, kind: str, default_charset: str) -> bytes:
    """``text`` as the bytes the converter expects for ``kind`` (``hl7v2`` or ``cda``).

    Raises :class:`UnicodeEncodeError` for text holding a lone surrogate, and
    :class:`UnencodableText` for an HL7 v2 message holding a character its
    MSH-18 cannot write (a CDA document gets a character reference instead, which XML
    reads as the character). A declared set the converter does not know is left to it:
    the text goes as UTF-8 and the converter names the problem.
    """
    # First as UTF-8: a lone surrogate (``\ud800`` in the JSON) is no text at all, and
    # raises UnicodeEncodeError whatever the declared set.
    utf8 = _encode(text, "utf-8")
    if kind == "cda":
        declared = _XML_DECLARATION.match(text)
        codec = _python_codec(declared.group(1)) if declared else None
        if codec is None or codec == "utf-8" or text.startswith("\ufeff"):
            return utf8
        return _encode(text, codec, "xmlcharrefreplace")
    codec = _hl7_codec(text, default_charset)
    if codec is None or codec == "utf-8":
        return utf8
    try:
        return _encode(text, codec)
    except UnicodeEncodeError as exc:
        raise UnencodableText(
            f"inputData holds a character (at offset {exc.start}) that its character set "
            f"({codec}, from MSH-18 or the default) cannot represent"
        ) from None


def _encode(text: str, codec: str, errors: str = "strict") -> bytes:
    """``text.encode(codec, errors)``, :data:`_STEP` characters at a time: one call for
    20 MB held the GIL (and so the event loop, even from a thread) for tens of ms."""
    if len(text) <= _STEP:
        return text.encode(codec, errors)
    encoder = codecs.getincrementalencoder(codec)(errors)
    pieces = []
    for at in range(0, len(text), _STEP):
        try:
            pieces.append(encoder.encode(text[at : at + _STEP]))
        except UnicodeEncodeError as exc:
            # Where in the whole text, as one call would say.
            raise UnicodeEncodeError(
                exc.encoding, text, at + exc.start, at + exc.end, exc.reason
            ) from None
    pieces.append(encoder.encode("", final=True))
    return b"".join(pieces)


def _hl7_codec(text: str, default_charset: str) -> str | None:
    """The codec the parser will decode the (first) message with (the parser's own rule,
    :func:`~converter.hl7v2.charset.message_codec`), or None to let the converter judge
    (no MSH, an unknown MSH-18)."""
    bom = text.startswith("\ufeff")
    start = next(message_starts(text), None)
    found = _LINE.match(text, start) if start is not None else None
    segment = found.group() if found is not None else ""
    if len(segment) < 4 and not bom:
        return None
    fields = segment.split(segment[3]) if len(segment) >= 4 else []
    try:
        # The default may be an HL7 name (converter.charset = "8859/1"): normalised too.
        return charset_codec(message_codec(fields, default_charset, bom=bom))
    except (ConversionError, ConfigurationError):
        return None


def _python_codec(name: str) -> str | None:
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def message_starts(data: AnyStr) -> Iterator[int]:
    """The offsets of the ``MSH`` segments that start a message in ``data``: at its start
    (after a byte order mark) or a line's, after blanks and MLLP framing bytes, as
    :func:`converter.hl7v2.split_messages` cuts them.

    Found with ``find``, then checked: a regular expression starting with that choice has
    no literal prefix to look for, and was tried at every offset; 1.3 s for a 20 MB body,
    in one call holding the GIL, so on the event loop or in a thread alike every MLLP ACK
    and ``/ready`` answer waited for it.
    """
    if isinstance(data, bytes):
        yield from _starts(data, b"MSH", b" \t\x0b\x1c", b"\r\n", b"\xef\xbb\xbf")
    else:
        yield from _starts(data, "MSH", " \t\x0b\x1c", "\r\n", "\ufeff")


def _starts(
    data: AnyStr, msh: AnyStr, blanks: AnyStr, breaks: AnyStr, bom: AnyStr
) -> Iterator[int]:
    at = _find(data, msh, 0)
    while at >= 0:
        # Each blank is stepped over once: the run before this MSH ends at the one before.
        before = at
        while before > 0 and data[before - 1 : before] in blanks:
            before -= 1
        if (
            before == 0
            or data[before - 1 : before] in breaks
            or (before == len(bom) and data.startswith(bom))
        ):
            yield at
        at = _find(data, msh, at + len(msh))


def _find(data: AnyStr, sought: AnyStr, start: int) -> int:
    """``data.find(sought, start)``, :data:`_STEP` at a time (a message of 20 MB is one
    search of 20 MB for the next MSH: tens of ms holding the GIL)."""
    while start < len(data):
        end = start + _STEP
        found = data.find(sought, start, end)
        if found >= 0 or end >= len(data):
            return found
        start = end - len(sought) + 1
    return -1


# -- a content type's charset ----------------------------------------------------------------
def content_charset(content_type: str | None) -> str | None:
    """The ``charset`` parameter of a content type, if any."""
    found = _CHARSET.search(content_type or "")
    return found.group(1) if found and found.group(1) else None


def apply_content_charset(
    body: bytes, charset: str | None, msh18: str, default_charset: str
) -> bytes:
    """An HL7 v2 message re-encoded the way the converter will read it, when its content
    type names a ``charset`` and neither MSH-18 nor a UTF-8 byte order mark decides;
    ``CharsetError`` for an unknown set or bytes that set cannot read.

    The content type's charset stands for an empty MSH-18: the body is decoded with it and
    encoded again as the converter will read it (:func:`encode_input`, the rule
    ``$convert-data`` uses for its text). MSH-18, when present, still wins, and so does a
    UTF-8 byte order mark (the parser's rule).
    """
    encoded = _recoded(body, charset, msh18, default_charset)
    if encoded is None:
        # The default set lacks a character: UTF-8 behind a byte order mark, which the
        # parser reads as UTF-8 whatever the default.
        return _UTF8_BOM + decode_message(body, _content_codec(charset)).encode("utf-8")
    return encoded


def apply_batch_charset(data: bytes, charset: str | None, default_charset: str) -> bytes:
    """:func:`apply_content_charset` for each message of an HL7 v2 batch (its own MSH-18
    deciding for each). A message after the first whose text the default set cannot
    write is left as it came (a byte order mark goes at the start of a file only): the
    converter refuses it, naming the place."""
    if charset is None or data.startswith(_UTF8_BOM):
        return data
    starts = list(message_starts(data))
    if not starts:
        return data  # no MSH: the converter says so
    _content_codec(charset)  # an unknown name is refused even for a batch of MSH-18s
    pieces = [data[: starts[0]]]
    for start, end in zip(starts, [*starts[1:], len(data)], strict=True):
        message = data[start:end]
        try:
            msh18 = peek_header(message).charset
        except ParseError:
            pieces.append(message)  # the converter reports it
            continue
        if start == 0 and end == len(data):
            pieces.append(apply_content_charset(message, charset, msh18, default_charset))
        else:
            pieces.append(_recoded(message, charset, msh18, default_charset) or message)
    return b"".join(pieces)


def _recoded(body: bytes, charset: str | None, msh18: str, default_charset: str) -> bytes | None:
    """``body`` as :func:`apply_content_charset` gives it, None when the default set
    cannot write its text."""
    if charset is None or msh18.strip() or body.startswith(_UTF8_BOM):
        return body
    codec = _content_codec(charset)
    if codec == _codec_or_none(default_charset):
        return body
    text = decode_message(body, codec)
    try:
        return encode_input(text, "hl7v2", default_charset)
    except UnencodableText:
        return None


def _content_codec(charset: str | None) -> str:
    try:
        return charset_codec(charset or "")
    except ConfigurationError as exc:
        # The name goes to ``detail`` as MSH-18's would (see converter.hl7v2.charset).
        reason = "content type charset: " + (str(exc) or UNKNOWN_CHARSET)
        raise CharsetError(reason, location="content_type", detail=repr(charset)) from None


def _codec_or_none(name: str) -> str | None:
    try:
        return charset_codec(name)
    except ConfigurationError:
        return None
