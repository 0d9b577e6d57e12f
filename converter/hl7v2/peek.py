"""A cheap look at a message's header, for routing and acknowledging before conversion.

Reads MSH and the first PID only (no decoding of the rest, no structure): enough to know
the sender, the control id, the type and version, the acknowledgement options, and the
patient the message is about, which orders delivery.

A sender is named two ways. :attr:`Header.sender` (HD.1 of MSH-3 and MSH-4) is what routes
match and what orders delivery; :attr:`Header.sender_identity` (every HD component) tells
apart facilities that share a namespace id but not a universal id, for duplicate detection.

Header values are text in the message's character set, as the converter reads it: MSH-18
(UTF-8 behind a byte order mark), else the default charset the caller passes. Read as
Latin-1 whatever MSH-18 said, a UTF-8 ``CTRL-é`` was stored as ``CTRL-Ã©`` and an
``ERR-8`` quoting MSH-9 was double-encoded.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from ..errors import CharsetError, ParseError
from .charset import message_codec
from .encoding import DEFAULT_ENCODING, Encoding

__all__ = ["Header", "full_hd", "header_decoder", "peek_header"]


@dataclass(frozen=True, slots=True)
class Header:
    """What MSH (and PID-3) say, as decoded text."""

    encoding: Encoding
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    control_id: str
    message_code: str
    trigger: str
    structure: str
    version: str
    processing_id: str
    accept_ack_type: str
    application_ack_type: str
    charset: str
    #: First PID-3 identifier with its assigning authority ("" when there is no PID).
    patient_key: str
    #: MSH-3 and MSH-4 whole (every HD component) in canonical form: see :func:`full_hd`.
    sending_application_hd: str = ""
    sending_facility_hd: str = ""

    @property
    def event(self) -> str:
        return f"{self.message_code}^{self.trigger}"

    @property
    def message_type(self) -> str:
        """MSH-9 as sent, e.g. ``ADT^A01^ADT_A01``."""
        return "^".join(part for part in (self.message_code, self.trigger, self.structure) if part)

    @property
    def sender(self) -> str:
        """``application^facility``, HD.1 of each: what routes match, and what orders."""
        return f"{self.sending_application}^{self.sending_facility}"

    @property
    def sender_identity(self) -> str:
        """``MSH-3|MSH-4`` with every HD component (``APP|FAC^1.2.3^ISO``).

        HD.1 alone is ambiguous: two facilities may share a namespace id and differ by
        their universal id (HD.2/HD.3). Components are escaped with the standard
        delimiters, so no value can forge the separators (``X\\S\\Y`` + ``Z`` differs
        from ``X`` + ``Y^Z``).
        """
        return f"{self.sending_application_hd}|{self.sending_facility_hd}"

    @property
    def enhanced_mode(self) -> bool:
        """MSH-15 or MSH-16 valued: enhanced acknowledgement mode."""
        return bool(self.accept_ack_type or self.application_ack_type)


#: The byte order mark behind which a message is UTF-8 whatever MSH-18 says (as parsed).
_BOM = b"\xef\xbb\xbf"


def peek_header(data: bytes, *, default_charset: str = "utf-8") -> Header:
    """Read the header of one message; :class:`ParseError` when there is no usable MSH.

    ``default_charset`` (a codec name checked with
    :func:`~.charset.charset_codec`, as the converter's) reads a message whose MSH-18 is
    empty. Never a :class:`CharsetError`: see :func:`header_decoder`.
    """
    start = data.find(b"MSH")
    if start < 0 or len(data) < start + 8:
        raise ParseError("no MSH segment", location="MSH")
    bom = data.startswith(_BOM)
    data = data[start:]
    field_sep = chr(data[3])
    if field_sep.isalnum() or field_sep in "\r\n ":
        # What stands there may be message text: it goes to detail, shown on request.
        raise ParseError("invalid field separator", location="MSH-1", detail=repr(field_sep))
    # Only MSH and the first PID are read (this runs for every received message, before
    # its ACK), so the rest of the message is never decoded. MSH-2 and MSH-18 are ASCII
    # in every supported charset: read from the line as Latin-1 (bytes 1:1), they name
    # the codec the values are then read with.
    end = _line_end(data, 0)
    msh = data[:end].decode("latin-1").split(field_sep)
    chars = msh[1] if len(msh) > 1 else ""
    if (
        not 2 <= len(chars) <= 5
        or len(set(chars)) != len(chars)
        or any(c.isalnum() or c.isspace() for c in chars)
    ):
        raise ParseError("invalid encoding characters", location="MSH-2", detail=repr(chars[:10]))
    enc = Encoding.from_msh(field_sep, chars)
    codec, decode = header_decoder(msh, default_charset, bom=bom)
    msh = decode(data[:end]).split(field_sep)

    def field(fields: list[str], n: int) -> str:
        return fields[n] if n < len(fields) else ""

    def first(value: str) -> str:
        value = value.split(enc.repetition, 1)[0].split(enc.component, 1)[0]
        if enc.subcomponent:  # none when MSH-2 declares only "^~\\"
            value = value.split(enc.subcomponent, 1)[0]
        return enc.unescape(value, codec)

    def hd(value: str) -> str:
        # HD.1, the namespace (as Message.sending_application); HD.2 when it is empty.
        parts = value.split(enc.repetition, 1)[0].split(enc.component)
        return enc.unescape(parts[0] or (parts[1] if len(parts) > 1 else ""), codec)

    msh9 = field(msh, 8).split(enc.component)
    patient_key = ""
    pid_start = _segment_start(data, b"PID" + field_sep.encode("latin-1"))
    if pid_start >= 0:
        pid = decode(data[pid_start : _line_end(data, pid_start)]).split(field_sep)
        cx = _patient_identifier(field(pid, 3), field(pid, 2), field(pid, 4), enc)
        if cx is not None:
            authority = cx[3] if len(cx) > 3 else ""
            patient_key = f"{enc.unescape(cx[0], codec)}^{authority}"
    return Header(
        encoding=enc,
        sending_application=hd(field(msh, 2)),
        sending_facility=hd(field(msh, 3)),
        receiving_application=hd(field(msh, 4)),
        receiving_facility=hd(field(msh, 5)),
        control_id=enc.unescape(field(msh, 9), codec),
        message_code=enc.unescape(msh9[0], codec) if msh9 else "",
        trigger=enc.unescape(msh9[1], codec) if len(msh9) > 1 else "",
        structure=enc.unescape(msh9[2], codec) if len(msh9) > 2 else "",
        version=first(field(msh, 11)),
        processing_id=first(field(msh, 10)),
        accept_ack_type=first(field(msh, 14)),
        application_ack_type=first(field(msh, 15)),
        charset=first(field(msh, 17)),
        patient_key=patient_key,
        sending_application_hd=full_hd(field(msh, 2), enc, codec),
        sending_facility_hd=full_hd(field(msh, 3), enc, codec),
    )


def header_decoder(
    msh: Sequence[str], default_charset: str, *, bom: bool
) -> tuple[str, Callable[[bytes], str]]:
    """The codec of a message (:func:`~.charset.message_codec`, as the parser's) and how
    its MSH and PID lines are read as text (:func:`_decode_line`); ``msh`` is the MSH
    line split on the field separator (as Latin-1: only MSH-18 is read from it).

    A message whose MSH-18 names no set known here reads as Latin-1, as every message
    once did: a peek never raises (the parser refuses the message later, with the place).
    The parser names the message its errors are about with it too
    (:func:`~.er7.parse_message`), so that an error and the queue give one control id.
    """
    try:
        codec = message_codec(msh, default_charset, bom=bom)
        codecs.lookup(codec)
    except (CharsetError, LookupError):
        return "latin-1", _latin1
    return codec, partial(_decode_line, codec=codec)


#: A byte ``surrogateescape`` could not decode (U+DC80 to U+DCFF) → that byte as Latin-1.
_ESCAPED_AS_LATIN1 = {0xDC00 + byte: byte for byte in range(0x80, 0x100)}


def _decode_line(line: bytes, *, codec: str) -> str:
    """``line`` in ``codec``; a byte not valid there reads as Latin-1, alone.

    Not U+FFFD (``errors="replace"``): two control ids that differ by such a byte would
    read as one, and a message sent in Latin-1 under a UTF-8 MSH-18 keeps the control id
    it was stored under before. Not the whole line as Latin-1 either: a stray byte in the
    patient's name would change the MRN of the ordering key, or one in MSH-4 the MSH-10,
    from what the patient's or sender's other messages give. A line no byte-wise
    fallback can read (a byte below 0x80 a multi-byte set refuses) reads as Latin-1 whole.
    """
    try:
        return line.decode(codec, errors="surrogateescape").translate(_ESCAPED_AS_LATIN1)
    except UnicodeDecodeError:
        return line.decode("latin-1")


def _latin1(line: bytes) -> str:
    return line.decode("latin-1")


def full_hd(value: str, enc: Encoding, codec: str = "utf-8") -> str:
    """An HD field (raw, in ``enc``) in canonical form: the first repetition, each
    component unescaped then escaped again with the standard delimiters, trailing empty
    components dropped (``FAC^^`` is ``FAC``), joined with ``^``.

    Canonical so that one sender stays one identity whatever delimiters or escapes a
    message uses, and so that the result can be split back without ambiguity.
    ``codec`` reads the bytes of ``\\Xhh..\\`` escapes: the message's character set.
    """
    parts = [
        DEFAULT_ENCODING.escape_text(enc.unescape(part, codec))
        for part in value.split(enc.repetition, 1)[0].split(enc.component)
    ]
    while parts and not parts[-1]:
        parts.pop()
    return "^".join(parts)


def _line_end(data: bytes, start: int) -> int:
    """End of the segment starting at ``start`` (CR, LF or the end of the data)."""
    ends = [i for i in (data.find(b"\r", start), data.find(b"\n", start)) if i >= 0]
    return min(ends) if ends else len(data)


def _segment_start(data: bytes, prefix: bytes) -> int:
    """Offset of the first segment starting with ``prefix`` after a line break, or -1."""
    found = [i + 1 for i in (data.find(b"\r" + prefix), data.find(b"\n" + prefix)) if i >= 0]
    return min(found) if found else -1


def _patient_identifier(pid3: str, pid2: str, pid4: str, enc: Encoding) -> list[str] | None:
    """The components of the identifier the Patient's id derives from, by the rule of
    ``Patient.j2``: PID-3's first MR repetition with an ID number (CX.1), else its first
    such PI, else the first repetition with an ID number of PID-3, then of PID-2, then
    of PID-4 (a repetition naming only an authority or a type, ``^^^^MR``, names no one).

    Every message converted to one Patient must share one ordering key: an A08 whose
    PID-3 lists an INS before the MR of the A01 names the same Patient, and a first
    repetition would have made it another key, delivered alongside, not after, the A01.
    """

    def with_text(field: str) -> list[list[str]]:
        reps = []
        for rep in field.split(enc.repetition):
            cx = rep.split(enc.component)
            number = cx[0].split(enc.subcomponent, 1)[0] if enc.subcomponent else cx[0]
            if number.strip() and number != '""':
                reps.append(cx)
        return reps

    def type_code(cx: list[str]) -> str:
        code = cx[4] if len(cx) > 4 else ""
        return code.split(enc.subcomponent, 1)[0] if enc.subcomponent else code

    candidates = with_text(pid3)
    for wanted in ("MR", "PI"):
        for cx in candidates:
            if type_code(cx) == wanted:
                return cx
    for reps in (candidates, with_text(pid2), with_text(pid4)):
        if reps:
            return reps[0]
    return None
