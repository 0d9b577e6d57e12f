"""Character sets named in MSH-18 (HL7 table 0211) and decoding with error positions."""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence

from ..errors import CharsetError, ConfigurationError

__all__ = [
    "UNKNOWN_CHARSET",
    "UNSUPPORTED_CHARSET",
    "charset_codec",
    "codec_for",
    "decode_message",
    "message_codec",
]

# HL7 table 0211 → Python codec. Multi-byte ISO 2022 sets are mapped to the codec
# Python offers for that family.
_TABLE_0211: dict[str, str] = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "iso-8859-1",
    "ISO IR100": "iso-8859-1",
    "8859/2": "iso-8859-2",
    "ISO IR101": "iso-8859-2",
    "8859/3": "iso-8859-3",
    "ISO IR109": "iso-8859-3",
    "8859/4": "iso-8859-4",
    "ISO IR110": "iso-8859-4",
    "8859/5": "iso-8859-5",
    "ISO IR144": "iso-8859-5",
    "8859/6": "iso-8859-6",
    "ISO IR127": "iso-8859-6",
    "8859/7": "iso-8859-7",
    "ISO IR126": "iso-8859-7",
    "8859/8": "iso-8859-8",
    "ISO IR138": "iso-8859-8",
    "8859/9": "iso-8859-9",
    "ISO IR148": "iso-8859-9",
    "8859/15": "iso-8859-15",
    "UNICODE": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "ISO IR192": "utf-8",
    "GB 18030-2000": "gb18030",
    "BIG-5": "big5",
    "KS X 1001": "euc-kr",
    "ISO IR87": "iso2022-jp",
    "ISO IR159": "iso2022-jp-2",
    "JAS2020": "iso2022-jp",
    "JIS X 0202": "iso2022-jp",
    "CNS 11643-1992": "big5",
}

# Sets that are not ASCII-compatible: segment and field delimiters cannot be found
# in their bytes without decoding first, which this parser does not support.
_UNSUPPORTED = {"UNICODE UTF-16", "UNICODE UTF-32"}


#: Why a name is refused. Reasons never quote the name itself: MSH-18 is message content,
#: so errors carry it in ``detail`` (see :mod:`converter.errors`).
UNKNOWN_CHARSET = "unknown character set"
UNSUPPORTED_CHARSET = (
    "character set is not supported (it must read and write ASCII as ASCII: "
    "not UTF-16, UTF-32, EBCDIC or a bytes-to-bytes codec)"
)


def charset_codec(name: str) -> str:
    """The Python codec for a character set name: an HL7 table 0211 value (``8859/1``) or
    a Python/IANA name (``latin-1``, ``windows-1252``).

    The one rule for MSH-18 and for the default charset settings (``--charset``,
    ``converter.charset``), so a setting is refused at start-up for the same reasons a
    message would be. Raises :class:`ConfigurationError` with :data:`UNKNOWN_CHARSET` or
    :data:`UNSUPPORTED_CHARSET` as its text.
    """
    key = name.strip().upper()
    if key in _UNSUPPORTED:
        raise ConfigurationError(UNSUPPORTED_CHARSET)
    codec = _TABLE_0211.get(key)
    if codec is not None:
        return codec
    try:
        codec = codecs.lookup(key.lower()).name
    except (LookupError, ValueError):  # ValueError: a NUL byte in the name
        raise ConfigurationError(UNKNOWN_CHARSET) from None
    if not _ascii_compatible(codec):
        # bytes-to-bytes codecs (base64, hex) and sets such as UTF-16 or EBCDIC.
        raise ConfigurationError(UNSUPPORTED_CHARSET)
    return codec


def codec_for(msh18: str, default: str) -> str:
    """The Python codec for an MSH-18 value; ``default`` (a codec name already checked
    with :func:`charset_codec`) when MSH-18 is empty or HL7's explicit null ``""``
    (engines that write ``""`` in every empty field got an AR 103, "unsupported
    character set", for a message in the default charset)."""
    if msh18.strip() in ("", '""'):
        return default
    try:
        return charset_codec(msh18)
    except ConfigurationError as exc:
        raise CharsetError(str(exc), location="MSH-18", detail=repr(msh18)) from None


def message_codec(msh_fields: Sequence[str], default: str, *, bom: bool) -> str:
    """The codec a message is read with, from its MSH segment split on the field
    separator (``msh_fields[1]`` is MSH-2, ``msh_fields[17]`` MSH-18).

    Behind a UTF-8 byte order mark, UTF-8 whatever MSH-18 says: the mark is unambiguous
    (its bytes read as ISO 8859-1 would be the text ``ï»¿``, which no message opens
    with), and an editor writes it with the text it encodes. Otherwise MSH-18's first
    repetition (:func:`codec_for`: ``default`` when it is empty). The parser and
    ``$convert-data``'s text input (which encodes a text the way the parser will read it)
    share this rule.
    """
    if bom:
        return "utf-8"
    msh18 = msh_fields[17] if len(msh_fields) > 17 else ""
    encoding_chars = msh_fields[1] if len(msh_fields) > 1 else ""
    # MSH-2's second character; "~" when MSH-2 is too short to declare one (the parser
    # refuses such a message; the text input reads it as the converter would refuse it).
    repetition = encoding_chars[1] if len(encoding_chars) > 1 else "~"
    return codec_for(msh18.split(repetition, 1)[0], default)


_ASCII_SAMPLE = bytes(range(0x20, 0x7F)) + b"\r\n"
_ASCII_TEXT = _ASCII_SAMPLE.decode("ascii")
# Python source-literal escapes, not character sets (probing them warns about "\]").
_PYTHON_LITERAL_CODECS = {"unicode-escape", "raw-unicode-escape"}


def _ascii_compatible(codec: str) -> bool:
    """Whether ``codec`` is a text codec that reads and writes ASCII as ASCII (delimiters
    too: an ACK is written in the message's charset). Mac Arabic, for one, reads ``|``
    from 0x7C but writes it as 0xFC."""
    if codec in _PYTHON_LITERAL_CODECS:
        return False
    try:
        return (
            _ASCII_SAMPLE.decode(codec) == _ASCII_TEXT
            and _ASCII_TEXT.encode(codec) == _ASCII_SAMPLE
        )
    except (LookupError, UnicodeError):  # Python's "undefined" codec refuses everything
        return False


def decode_message(data: bytes, codec: str) -> str:
    """Decode one message; undecodable bytes raise :class:`CharsetError` naming the position.

    The byte itself goes to ``detail`` only: it is part of a field's content.
    """
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        raise CharsetError(
            f"byte at offset {exc.start} is not valid {codec}",
            location=_position(data, exc.start),
            detail=f"byte 0x{data[exc.start]:02X}",
        ) from None


_SEGMENT_NAME = re.compile(rb"[A-Z][A-Z0-9]{2}")


def _position(data: bytes, offset: int) -> str:
    """HL7 location (segment name, occurrence and field) of a byte offset.

    A line that does not open with a segment name and the field separator (a field
    broken across lines) is named by its number, ``segment 4``: its first characters
    are field content (a surname), not a name that may be shown.
    """
    line_start = max(data.rfind(b"\r", 0, offset), data.rfind(b"\n", 0, offset)) + 1
    line = data[line_start:offset]
    # Every segment uses the field separator the message declares in MSH-1.
    field_sep = data[3:4] if data.startswith(b"MSH") and len(data) > 3 else b"|"
    before = data[:line_start].replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    earlier = [seg for seg in before.split(b"\r") if seg.strip()]
    name = data[line_start : line_start + 3]
    after_name = data[line_start + 3 : line_start + 4]
    if not _SEGMENT_NAME.fullmatch(name) or after_name not in (field_sep, b"\r", b"\n", b""):
        return f"segment {len(earlier) + 1}"
    field = line.count(field_sep) + (1 if name == b"MSH" else 0)
    occurrence = sum(1 for seg in earlier if seg[:3] == name)
    label = name.decode("ascii") if occurrence == 0 else f"{name.decode('ascii')}[{occurrence + 1}]"
    return f"{label}-{field}"
