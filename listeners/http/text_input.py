"""Text to bytes for ``POST /$convert-data``: its ``inputData`` is a JSON string, already
decoded, while the converter reads bytes in the character set the message declares.

Encoded in UTF-8 whatever it declares, a message saying ``MSH-18 = 8859/1`` (or a CDA
document with ``<?xml … encoding="ISO-8859-1"?>``) was read back as Latin-1, and every
accented name came out garbled (``Lefèvre`` as ``LefÃ¨vre``) in a 200 answer. The text
is therefore encoded in the character set its reader will use: MSH-18 (the default
charset when empty; UTF-8 after a byte order mark, as the parser reads it), or the XML
declaration's encoding. The bytes are then those the sender's file would hold, which is
also what a CDA document's DocumentReference embeds.
"""

from __future__ import annotations

import codecs
import re

from converter.errors import ConfigurationError, ConversionError
from converter.hl7v2.charset import charset_codec, message_codec

__all__ = ["UnencodableText", "encode_input"]

_XML_DECLARATION = re.compile(
    r"\A\ufeff?\s*<\?xml\s[^>]*?\bencoding\s*=\s*[\"']([A-Za-z][A-Za-z0-9._-]*)[\"']"
)
_MSH = re.compile(r"(?:\A\ufeff?|[\r\n])[\x0b\x1c \t]*(MSH[^\r\n]*)")


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
    utf8 = text.encode("utf-8")
    if kind == "cda":
        declared = _XML_DECLARATION.match(text)
        codec = _python_codec(declared.group(1)) if declared else None
        if codec is None or codec == "utf-8" or text.startswith("\ufeff"):
            return utf8
        return text.encode(codec, "xmlcharrefreplace")
    codec = _hl7_codec(text, default_charset)
    if codec is None or codec == "utf-8":
        return utf8
    try:
        return text.encode(codec)
    except UnicodeEncodeError as exc:
        raise UnencodableText(
            f"inputData holds a character (at offset {exc.start}) that its character set "
            f"({codec}, from MSH-18 or the default) cannot represent"
        ) from None


def _hl7_codec(text: str, default_charset: str) -> str | None:
    """The codec the parser will decode the (first) message with (the parser's own rule,
    :func:`~converter.hl7v2.charset.message_codec`), or None to let the converter judge
    (no MSH, an unknown MSH-18)."""
    bom = text.startswith("\ufeff")
    found = _MSH.search(text)
    segment = found.group(1) if found is not None else ""
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
