"""Writing a reply's fields in the received message's terms: its delimiters, its charset.

Bytes copied from the message are escaped as ``\\Xhh\\`` (with the message's escape
character) where they would make the reply wrong:

* control bytes (below 0x20, and 0x7F): a VT or an FS CR inside the ACK would cut its MLLP
  frame short on the sender's side. ESC is kept in ISO 2022 charsets, where it is part of
  the character encoding;
* when MSH-18 names a character set, bytes that are not valid in it, so the ACK is valid
  text in the charset it declares;
* when MSH-18 names a character set this service cannot write (AR 103), the ACK is ASCII:
  non-ASCII bytes are escaped and MSH-18 is left empty, which HL7 defines as ASCII.

Everything else is mirrored as received, escape sequences included, so that the sender
finds its own values (MSA-2 = its MSH-10) unchanged. Text of the service's own (ERR-8, a
location) is escaped with the message's delimiters and encoded in its charset.
"""

from __future__ import annotations

import re

from converter.hl7v2.encoding import Encoding

from .header import MessageHeader

__all__ = ["AckWriter"]

# Control characters are not HL7 text; VT and FS CR would also break the ACK's MLLP frame.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# ISO 2022 charsets (ISO IR87, JIS X 0202 ...) switch sets with ESC sequences: there ESC
# belongs to the text's encoding (and cannot affect MLLP framing), so it is copied as is.
_CONTROL_BUT_ESC = re.compile(r"[\x00-\x1a\x1c-\x1f\x7f]")


class AckWriter:
    """Writes a reply's fields for one received message (see the module docstring).

    :meth:`copy` copies received bytes, escaped only where they would make the reply
    wrong; :meth:`text` writes text of our own, escaped with the message's delimiters, in
    its charset.
    """

    def __init__(self, header: MessageHeader) -> None:
        self.header = header
        self.enc = header.encoding
        self.codec = header.codec or "ascii"
        # Received bytes are copied as they are, unless MSH-18 declares a charset they are
        # not valid in: the ACK must be valid text in the charset it declares. A charset we
        # cannot write (codec None) makes the ACK ASCII, and MSH-18 empty says so.
        self._copy_codec: str | None = None
        if header.codec is None:
            self._copy_codec = "ascii"
        elif header.field(18).strip():
            self._copy_codec = header.codec
        self._controls = _CONTROL_BUT_ESC if _is_iso2022(self.codec) else _CONTROL

    def copy(self, raw: str) -> bytes:
        """Received bytes (as Latin-1 text, as :class:`MessageHeader` holds them)."""
        return _copy(raw, self._copy_codec, self.enc, self._controls)

    def text(self, value: str) -> bytes:
        return _text(value, self.enc, self.codec)

    def serialize(self, segments: list[list[bytes]]) -> bytes:
        """Segments of fields, empty trailing fields dropped, each ending in CR."""
        sep = self.enc.field.encode("latin-1")
        return b"".join(sep.join(_trim(segment)) + b"\r" for segment in segments)


def _trim(fields: list[bytes]) -> list[bytes]:
    end = len(fields)
    while end > 1 and not fields[end - 1]:
        end -= 1
    return fields[:end]


def _copy(raw: str, codec: str | None, enc: Encoding, controls: re.Pattern[str]) -> bytes:
    """Received bytes (as Latin-1 text) to copy into the ACK.

    Bytes invalid in ``codec`` and the ``controls`` become ``\\Xhh\\``; nothing else is
    touched, escape sequences the sender wrote included, so its values come back as sent.
    """
    data = raw.encode("latin-1")
    if codec is not None:
        data = _escape_invalid(data, codec, enc)
    if controls.search(raw) is None:
        return data
    # After the charset pass: escaping first could pair a stray lead byte with the
    # escape character into a valid (Big5, GBK) character, corrupting the sequence.
    return _escape_controls(data.decode("latin-1"), enc, controls).encode("latin-1")


def _escape_invalid(data: bytes, codec: str, enc: Encoding) -> bytes:
    """``data`` with the bytes that are invalid in ``codec`` as ``\\Xhh\\``."""
    out = bytearray()
    while data:
        try:
            data.decode(codec)
        except UnicodeDecodeError as exc:
            out += data[: exc.start]
            bad = data[exc.start : exc.end]
            out += (
                f"{enc.escape}X{bad.hex().upper()}{enc.escape}".encode("ascii")
                if enc.escape
                else b"?" * len(bad)
            )
            data = data[exc.end :]
            continue
        except LookupError:
            pass
        out += data
        break
    return bytes(out)


def _text(value: str, enc: Encoding, codec: str) -> bytes:
    """Text of our own, escaped with the message's delimiters, in its charset."""
    if value.isascii() and value.isalnum():
        return value.encode("ascii")
    if enc.escape:
        escaped = enc.escape_text(value)
    else:
        delimiters = set(enc.field + enc.msh2 + "\r\n")
        escaped = "".join(" " if char in delimiters else char for char in value)
    escaped = _escape_controls(escaped, enc, _CONTROL)
    try:
        return escaped.encode(codec, errors="replace")
    except LookupError:
        return escaped.encode("ascii", errors="replace")


def _escape_controls(value: str, enc: Encoding, controls: re.Pattern[str]) -> str:
    """``controls`` in ``value`` as ``\\Xhh\\`` (spaces when there is no escape character).

    ``value`` is text, or received bytes as Latin-1 where a character's code is its byte:
    either way ``hh`` is the byte the reader gets back by unescaping. The message's own
    delimiters are kept even when a sender chose control characters for them: there they
    are structure (and the escape character starts the very sequences written here).
    """
    esc = enc.escape
    delimiters = enc.field + enc.msh2

    def escape(match: re.Match[str]) -> str:
        char = match.group()
        if char in delimiters:
            return char
        return f"{esc}X{ord(char):02X}{esc}" if esc else " "

    return controls.sub(escape, value)


def _is_iso2022(codec: str) -> bool:
    return codec.replace("-", "_").lower().startswith("iso2022")
