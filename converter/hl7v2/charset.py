"""Character sets named in MSH-18 (HL7 table 0211) and decoding with error positions."""

from __future__ import annotations

import codecs

from ..errors import CharsetError

__all__ = ["codec_for", "decode_message"]

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


def codec_for(msh18: str, default: str) -> str:
    """The Python codec for an MSH-18 value; ``default`` when MSH-18 is empty."""
    name = msh18.strip().upper()
    if not name:
        return default
    if name in _UNSUPPORTED:
        raise CharsetError(f"character set {msh18!r} is not supported", location="MSH-18")
    codec = _TABLE_0211.get(name)
    if codec is None:
        # Senders also write Python/IANA names (utf-8, latin-1, windows-1252): accept them.
        try:
            codec = codecs.lookup(name.lower()).name
        except (LookupError, ValueError):  # ValueError: a NUL byte in the name
            raise CharsetError(f"unknown character set {msh18!r}", location="MSH-18") from None
        if not _ascii_compatible(codec):
            # bytes-to-bytes codecs (base64, hex) and sets such as UTF-16 or EBCDIC.
            raise CharsetError(f"character set {msh18!r} is not supported", location="MSH-18")
    return codec


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
    """Decode one message; undecodable bytes raise :class:`CharsetError` naming the position."""
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        raise CharsetError(
            f"byte 0x{data[exc.start]:02X} at offset {exc.start} is not valid {codec}",
            location=_position(data, exc.start),
        ) from None


def _position(data: bytes, offset: int) -> str:
    """HL7 location (segment name, occurrence and field) of a byte offset."""
    line_start = max(data.rfind(b"\r", 0, offset), data.rfind(b"\n", 0, offset)) + 1
    line = data[line_start:offset]
    name = data[line_start : line_start + 3].decode("ascii", "replace")
    # Every segment uses the field separator the message declares in MSH-1.
    field_sep = data[3:4] if data.startswith(b"MSH") and len(data) > 3 else b"|"
    field = line.count(field_sep) + (1 if name == "MSH" else 0)
    before = data[:line_start].replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    occurrence = sum(1 for seg in before.split(b"\r") if seg[:3] == name.encode("ascii", "replace"))
    label = name if occurrence == 0 else f"{name}[{occurrence + 1}]"
    return f"{label}-{field}"
