"""The header of a received message, read tolerantly for acknowledging it: whatever can
be read is used, and an MSH that cannot be read yields the AR to send instead."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from converter.errors import CharsetError
from converter.hl7v2.charset import codec_for
from converter.hl7v2.encoding import DEFAULT_ENCODING, Encoding
from converter.hl7v2.peek import header_decoder

from .outcome import AckOutcome, ErrorLocation

__all__ = ["MessageHeader", "field_getter", "read_header"]

_BOM = b"\xef\xbb\xbf"
_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_Problem = tuple[str | None, str | None, str | None]
_MISSING_ID: tuple[str, str, str] = ("the message control id (MSH-10) is missing", "101", "MSH-10")


@dataclass(frozen=True, slots=True)
class MessageHeader:
    """The received MSH, raw: each field as its bytes (decoded as Latin-1, 1:1).

    ``problem``/``problem_code``/``problem_location`` say why the header is not fully
    readable; :meth:`rejection` turns that into an AR outcome.
    """

    encoding: Encoding
    #: fields[0] is "MSH", fields[1] MSH-2, fields[n - 1] MSH-n (n ≥ 2).
    fields: tuple[str, ...]
    #: Python codec of MSH-18 (the default when empty); ``None`` when unknown.
    codec: str | None
    delimiters_valid: bool = True
    problem: str | None = None
    problem_code: str | None = None
    problem_location: str | None = None
    #: Behind a UTF-8 byte order mark: read as UTF-8 whatever the default charset.
    bom: bool = False
    #: A second MSH in the block (:func:`_second_message`), found whatever MSH-10 holds:
    #: the problem left when MSH-10, read in a route's charset, is not blank after all.
    second_message: tuple[str, str, str] | None = None

    def field(self, n: int) -> str:
        """Raw MSH-n ("" when absent); MSH-1 is the field separator."""
        if n == 1:
            return self.encoding.field
        return self.fields[n - 1] if 1 < n <= len(self.fields) else ""

    def component(self, n: int, c: int) -> str:
        """Raw component ``c`` of the first repetition of MSH-n."""
        value = self.field(n)
        if n > 2:
            value = value.split(self.encoding.repetition, 1)[0]
        parts = value.split(self.encoding.component)
        return parts[c - 1] if c <= len(parts) else ""

    @property
    def readable(self) -> bool:
        return self.problem is None

    @property
    def control_id(self) -> str:
        """MSH-10, raw."""
        return self.field(10)

    @property
    def message_code(self) -> str:
        return self.component(9, 1)

    @property
    def trigger_event(self) -> str:
        return self.component(9, 2)

    @property
    def version(self) -> str:
        """MSH-12.1 ("" when absent)."""
        return self.component(12, 1).strip()

    @property
    def accept_ack_type(self) -> str:
        """MSH-15 (AL, NE, ER, SU or ""; HL7's explicit null ``""`` reads as "")."""
        return _ack_type(self.component(15, 1))

    @property
    def application_ack_type(self) -> str:
        """MSH-16 (AL, NE, ER, SU or ""; HL7's explicit null ``""`` reads as "")."""
        return _ack_type(self.component(16, 1))

    @property
    def enhanced_mode(self) -> bool:
        """MSH-15 or MSH-16 valued: enhanced acknowledgement mode."""
        return bool(self.accept_ack_type or self.application_ack_type)

    def with_default_charset(self, default_charset: str) -> MessageHeader:
        """This header as :func:`read_header` reads it with ``default_charset`` (a codec
        name, as the settings hold it): a message whose MSH-18 is empty is answered, and
        its MSH-10 judged, in that set; one naming its own set is unchanged.

        For a route whose ``converter.charset`` is not the service's: its converter reads
        such a message in that set, its sender writes and reads in it, and an ACK written
        in the service's default garbled the text of our own (ERR-8 quoting MSH-9: ``€``
        written as UTF-8's three bytes for an ISO 8859-15 sender). Received bytes (MSA-2)
        are copied as sent either way. MSH-10 is judged again, as the id stored is read
        in that set: C2 A0 is a no-break space (no id) in UTF-8 but ``Â`` and one in
        Latin-1, 0x80 a control character (no id) in Latin-1 but ``€`` in windows-1252.
        """
        codec = _safe_codec(self.field(18).split(self.encoding.repetition, 1)[0], default_charset)
        problem = self._problem_in(default_charset)
        if codec == self.codec and problem == self._problem:
            return self
        return replace(
            self,
            codec=codec,
            problem=problem[0],
            problem_code=problem[1],
            problem_location=problem[2],
        )

    @property
    def _problem(self) -> _Problem:
        return (self.problem, self.problem_code, self.problem_location)

    def _problem_in(self, default_charset: str) -> _Problem:
        """What the header is refused for when ``default_charset`` reads a message
        without MSH-18: only whether MSH-10 is blank can change."""
        if not self.delimiters_valid or self.codec is None:
            # Unreadable, or MSH-18 names a set this service cannot read: in any charset.
            return self._problem
        if _blank_control_id(self.fields, self.encoding, default_charset, bom=self.bom):
            return _MISSING_ID
        return self.second_message or (None, None, None)

    def version_tuple(self) -> tuple[int, ...] | None:
        parts = self.version.split(".")
        if not all(part.isdecimal() for part in parts):
            return None
        return tuple(int(part) for part in parts)

    def rejection(self) -> AckOutcome | None:
        """The AR an unreadable header deserves, ``None`` when the header is fine."""
        if self.problem is None:
            return None
        return AckOutcome.reject(
            self.problem_code or "100",
            self.problem,
            location=ErrorLocation.parse(self.problem_location),
        )

    def rejection_before_routing(self) -> AckOutcome | None:
        """:meth:`rejection`, but ``None`` for an MSH-10 blank only as the default
        charset reads it (MSH-18 empty, no byte order mark): the message's route may read
        it in a charset of its own (:meth:`with_default_charset`), where it is an id."""
        if (
            self.problem_location == "MSH-10"
            and not self.bom
            and _names_no_charset(self.field(18).split(self.encoding.repetition, 1)[0])
        ):
            return None
        return self.rejection()


def read_header(data: bytes, *, default_charset: str = "utf-8") -> MessageHeader:
    """Read MSH tolerantly: never raises; problems are reported on the result."""
    default_codec = _safe_codec("", default_charset)
    body = data[len(_BOM) :] if data.startswith(_BOM) else data
    body = body.lstrip(b" \t\r\n")
    if body[:3] in (b"FHS", b"BHS"):
        # Named as a batch: "does not start with an MSH segment" sent the sender's team
        # looking for a broken message, not at its batching to a one-message-per-block peer.
        return MessageHeader(
            DEFAULT_ENCODING,
            ("MSH",),
            default_codec,
            False,
            "a batch (FHS/BHS) is not accepted over MLLP: send one message per block",
            "100",
            body[:3].decode("ascii"),
        )
    if not body.startswith(b"MSH"):
        return MessageHeader(
            DEFAULT_ENCODING,
            ("MSH",),
            default_codec,
            False,
            "the message does not start with an MSH segment",
            "100",
            "MSH",
        )
    end = len(body)
    for terminator in (b"\r", b"\n"):
        found = body.find(terminator)
        if 0 <= found < end:
            end = found
    line = body[:end].decode("latin-1")
    if len(line) < 4:
        return MessageHeader(
            DEFAULT_ENCODING,
            ("MSH",),
            default_codec,
            False,
            "the MSH segment is truncated",
            "101",
            "MSH-1",
        )
    sep = line[3]
    if sep.isalnum() or sep.isspace():
        return MessageHeader(
            DEFAULT_ENCODING,
            ("MSH",),
            default_codec,
            False,
            "invalid field separator",
            "102",
            "MSH-1",
        )
    fields = tuple(line.split(sep))
    chars = fields[1] if len(fields) > 1 else ""
    problem: tuple[str, str, str] | None = None
    if (
        2 <= len(chars) <= 5
        and len(set(chars)) == len(chars)
        and not any(char.isalnum() or char.isspace() for char in chars)
    ):
        enc = Encoding.from_msh(sep, chars)
        valid = True
    else:
        spare = [char for char in DEFAULT_ENCODING.msh2 if char != sep] + ["#"]
        enc = Encoding(sep, *spare[:4])
        valid = False
        problem = ("invalid encoding characters", "102", "MSH-2")
    msh18 = fields[17].split(enc.repetition, 1)[0] if len(fields) > 17 else ""
    codec: str | None
    try:
        codec = codec_for(msh18, default_charset)
    except CharsetError:
        codec = None
        problem = problem or ("unsupported character set", "103", "MSH-18")
    bom = data.startswith(_BOM)
    second: tuple[str, str, str] | None = None
    if problem is None:
        second = _second_message(body, sep)
        # MSH-10 is required (R): without it MSA-2 cannot name what is acknowledged, and
        # the sender could not match the ACK — nor could a retransmission be recognised.
        # Blank, or HL7's explicit null (""), is not a value either.
        blank = _blank_control_id(fields, enc, default_charset, bom=bom)
        problem = _MISSING_ID if blank else second
    judged: _Problem = problem or (None, None, None)
    return MessageHeader(
        enc,
        fields,
        codec,
        valid,
        problem=judged[0],
        problem_code=judged[1],
        problem_location=judged[2],
        bom=bom,
        second_message=second,
    )


def _second_message(body: bytes, sep: str) -> tuple[str, str, str] | None:
    """The problem of a block holding a second message (a second MSH segment): one ACK
    would name the first only, the second's control id never acknowledged, its failure
    never reported, its resend never recognised. Located at ``MSH[2]``, ERR-2
    ``MSH^2``: ERL.2 is the occurrence of the segment in the message, so an interface
    engineer is pointed at where the second message starts (``MSH^1`` named the
    block's own, valid, header)."""
    marker = b"MSH" + sep.encode("latin-1")
    # One pass over the block (a 5 MB one takes milliseconds, on the event loop): "MSH|"
    # elsewhere than at a segment's start is text, and is passed over.
    found = body.find(marker, 3)
    while found >= 0 and body[found - 1 : found] not in (b"\r", b"\n"):
        found = body.find(marker, found + 1)
    if found < 0:
        return None
    # Blank lines are no segments: the count is the one an editor's segment list shows.
    segment = sum(1 for line in _LINE_ENDS.split(body[:found]) if line.strip()) + 1
    return (
        f"one message per MLLP block: a second MSH at segment {segment} (send batches and "
        "multi-message files with passerelle convert or POST /convert)",
        "100",  # segment sequence error
        "MSH[2]",
    )


def _blank_control_id(
    fields: tuple[str, ...], enc: Encoding, default_charset: str, *, bom: bool
) -> bool:
    """Whether MSH-10 holds no usable id: empty, HL7's explicit null (``""``), or only
    blanks and control characters once unescaped. ``\\H\\`` (a formatting command) or
    ``\\X20\\`` is not blank as written, but the id the service files the message
    under is the unescaped one: it read "", so such messages were stored with no control
    id at all (never recognised when re-sent), or " " (one sender's messages taken for
    each other's reuse of one id).

    Read as :func:`~converter.hl7v2.peek_header` reads the id the message is stored
    under: the line decoded in the message's charset, a byte invalid there as Latin-1
    (with U+FFFD for it, 0xA0 under UTF-8 was an id here and stored as a no-break space),
    then split (a multi-byte set's second byte may be a delimiter's). Not as Latin-1
    alone: a multi-byte charset's bytes may all read as C1 controls."""
    codec, decode = header_decoder(fields, default_charset, bom=bom)
    line = decode(enc.field.join(fields).encode("latin-1")).split(enc.field)
    raw = line[9] if len(line) > 9 else ""
    if raw.strip() == '""':
        return True
    value = enc.unescape(raw, codec)
    return all(char.isspace() or not char.isprintable() for char in value)


def _ack_type(raw: str) -> str:
    """MSH-15 or MSH-16, upper case. ``""`` is HL7's explicit null, not a value: engines
    that write it in every empty field are in original mode, and answered CA (enhanced
    mode's commit accept) instead of AA, many take the ACK for a failure and resend."""
    value = raw.strip().upper()
    return "" if value == '""' else value


def field_getter(fields: list[str]) -> Callable[[int], str]:
    return lambda n: fields[n] if n < len(fields) else ""


def _names_no_charset(msh18: str) -> bool:
    """Whether MSH-18 leaves the message to the default charset (:func:`codec_for`'s
    rule: empty, or HL7's explicit null)."""
    try:
        return codec_for(msh18, "") == ""
    except CharsetError:
        return False


def _safe_codec(msh18: str, default: str) -> str | None:
    try:
        return codec_for(msh18, default)
    except CharsetError:
        return None
