"""HL7 v2 acknowledgements built from the bytes of the received message.

The received header is read tolerantly (:func:`read_header`): whatever can be read is
used, and a message whose MSH cannot be read at all still gets a well-formed AR with the
default delimiters and an empty MSA-2. The ACK:

* uses the message's own delimiters (MSH-1/MSH-2), version (MSH-12), processing id (MSH-11)
  and character set (MSH-18, copied and used to encode the ACK);
* swaps sending and receiving application/facility (MSH-3/4 ↔ MSH-5/6), byte for byte
  (but for the escapes below);
* has a fresh MSH-10 and ``MSH-9 = ACK^<trigger>^ACK`` (``ACK^<trigger>`` before v2.3.1,
  which added the message structure component; ``ACK`` in v2.1, where MSH-9 is an ID);
* echoes MSH-10 in MSA-2;
* on errors carries an ERR segment: ERR-2 location, ERR-3 code from HL7 table 0357,
  ERR-4 severity and ERR-8 a user message (v2.5+); before v2.5, ERR-1 (ELD) plus MSA-3
  and MSA-6, the fields those versions define.

Bytes copied from the message are escaped as ``\\Xhh\\`` (with the message's escape
character) where they would make the ACK wrong:

* control bytes (below 0x20, and 0x7F): a VT or an FS CR inside the ACK would cut its MLLP
  frame short on the sender's side. ESC is kept in ISO 2022 charsets, where it is part of
  the character encoding;
* when MSH-18 names a character set, bytes that are not valid in it, so the ACK is valid
  text in the charset it declares;
* when MSH-18 names a character set this service cannot write (AR 103), the ACK is ASCII:
  non-ASCII bytes are escaped and MSH-18 is left empty, which HL7 defines as ASCII.

Everything else is mirrored as received, escape sequences included, so that the sender
finds its own values (MSA-2 = its MSH-10) unchanged.

Acknowledgement modes
---------------------
*Original mode* (MSH-15 and MSH-16 empty): one ACK, AA / AE / AR. With
``ack_after="commit"`` the AA means "durably stored"; with ``ack_after="delivery"`` the
AA/AE carries the delivery outcome (the FHIR server accepted the bundle, or not).

*Enhanced mode* (MSH-15 or MSH-16 valued): the ACK this service sends is the *accept*
acknowledgement, CA / CE / CR, sent after the durable commit and only when MSH-15 asks
for it (:func:`wants_accept_ack`). *Application* acknowledgements (MSH-16) are not sent:
conversion and delivery happen asynchronously after the connection has moved on, and
this service has no return channel to the sender's own receiver. Delivery failures are
reported by the service itself (logs, metrics, dead letters), not to the sender.

An original-mode MFN is answered with an MFK instead (:mod:`.mfk`): the same MSH, MSA
and ERR (:class:`AckWriter`, :func:`ack_segments`), then MFI and MFA segments.
"""

from __future__ import annotations

import functools
import itertools
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from converter.hl7v2.encoding import Encoding

from .header import MessageHeader, field_getter, read_header
from .outcome import TABLE_0357, AckCode, AckOutcome, ErrorLocation, Severity

__all__ = [
    "TABLE_0357",
    "AckBuilder",
    "AckCode",
    "AckInfo",
    "AckMode",
    "AckOutcome",
    "AckWriter",
    "ControlIdGenerator",
    "ErrorLocation",
    "MessageHeader",
    "Severity",
    "ack_segments",
    "build_ack",
    "parse_ack",
    "read_header",
    "wants_accept_ack",
]

AckMode = Literal["auto", "original", "enhanced"]


# Control characters are not HL7 text; VT and FS CR would also break the ACK's MLLP frame.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# ISO 2022 charsets (ISO IR87, JIS X 0202 ...) switch sets with ESC sequences: there ESC
# belongs to the text's encoding (and cannot affect MLLP framing), so it is copied as is.
_CONTROL_BUT_ESC = re.compile(r"[\x00-\x1a\x1c-\x1f\x7f]")


_DEFAULT_VERSION = "2.5"


_ERR_FIELDS_VERSION = (2, 5)


# MSH-9 is an ID (message type only) in v2.1, gains the trigger event in v2.2 and the
# message structure in v2.3.1.
_MSH9_TRIGGER_VERSION = (2, 2)
_MSH9_STRUCTURE_VERSION = (2, 3, 1)


def wants_accept_ack(message: bytes | MessageHeader, *, success: bool) -> bool:
    """Whether to send the (accept) acknowledgement for this outcome.

    Original mode: always. Enhanced mode, by MSH-15: AL always, NE never, ER only on
    error or reject, SU only on success; empty or unknown values are treated as AL.
    Application acknowledgements (MSH-16) are never sent by this service: see the
    module docstring.
    """
    header = message if isinstance(message, MessageHeader) else read_header(message)
    if not header.enhanced_mode:
        return True
    accept = header.accept_ack_type
    if accept == "NE":
        return False
    if accept == "ER":
        return not success
    if accept == "SU":
        return success
    return True


def build_ack(
    message: bytes | MessageHeader,
    outcome: AckOutcome | None = None,
    *,
    control_id: str | None = None,
    timestamp: datetime | None = None,
    mode: AckMode = "auto",
    default_charset: str = "utf-8",
) -> bytes:
    """The ACK for ``message`` (received bytes, or its header), segments ending in CR.

    ``control_id`` defaults to 20 random hex digits; use an :class:`AckBuilder` for
    time-ordered ids. ``mode="auto"`` follows the message (enhanced when MSH-15/16 is
    valued); the outcome's code is written in that mode's form (AA ↔ CA ...).
    """
    header = (
        message
        if isinstance(message, MessageHeader)
        else read_header(message, default_charset=default_charset)
    )
    writer = AckWriter(header)
    segments = ack_segments(writer, outcome, control_id=control_id, timestamp=timestamp, mode=mode)
    return writer.serialize(segments)


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


def ack_segments(
    writer: AckWriter,
    outcome: AckOutcome | None = None,
    *,
    control_id: str | None = None,
    timestamp: datetime | None = None,
    mode: AckMode = "auto",
    message_code: bytes = b"ACK",
    structure: bytes = b"ACK",
) -> list[list[bytes]]:
    """MSH, MSA and (on errors) ERR of an acknowledgement, as :func:`build_ack` writes
    them; MSH-9 is ``<message_code>^<trigger>^<structure>`` in the version's form (the
    MFK of :mod:`.mfk` appends its own segments)."""
    header = writer.header
    outcome = outcome or AckOutcome.accept()
    enc = header.encoding
    enhanced = header.enhanced_mode if mode == "auto" else mode == "enhanced"
    code = outcome.code.for_mode(enhanced)
    stamp = timestamp or datetime.now().astimezone()
    ctrl = control_id if control_id is not None else uuid.uuid4().hex[:20].upper()
    text = writer.text

    def copy(n: int) -> bytes:
        return writer.copy(header.field(n))

    comp = enc.component.encode("latin-1")
    trigger = writer.copy(header.component(9, 2))
    msh: list[bytes] = [
        b"MSH",
        (header.field(2) if header.delimiters_valid else enc.msh2).encode("latin-1"),
        copy(5),
        copy(6),
        copy(3),
        copy(4),
        _timestamp(stamp).encode("ascii"),
        b"",
        _message_type(header, comp, trigger, message_code, structure),
        text(ctrl),
        copy(11) or b"P",
        copy(12) or _DEFAULT_VERSION.encode("ascii"),
        b"",
        b"",
        b"",
        b"",
        b"",
        b"" if header.codec is None else copy(18),
    ]
    msa: list[bytes] = [b"MSA", code.value.encode("ascii"), copy(10)]
    segments = [msh, msa]
    if outcome.has_error:
        error_code = outcome.error_code or ("0" if outcome.success else "207")
        label = TABLE_0357.get(error_code, "")
        severity = outcome.effective_severity.value.encode("ascii")
        cwe = comp.join([error_code.encode("ascii"), text(label), b"HL70357"])
        message_text = text(outcome.text or label)
        location = outcome.location
        version = _version(header) or _ERR_FIELDS_VERSION
        if version >= _ERR_FIELDS_VERSION:
            erl = comp.join(text(part) for part in location.parts()) if location else b""
            segments.append([b"ERR", b"", erl, cwe, severity, b"", b"", b"", message_text])
        else:
            sub = enc.subcomponent.encode("latin-1")
            where = location.parts()[:3] if location else []
            where += [""] * (3 - len(where))
            eld = comp.join(
                [
                    *(text(part) for part in where),
                    # Without a sub-component separator (a 3-character MSH-2) the
                    # code alone: its label and table cannot be told apart from it.
                    sub.join([error_code.encode("ascii"), text(label), b"HL70357"])
                    if sub
                    else error_code.encode("ascii"),
                ]
            )
            segments.append([b"ERR", eld])
            msa += [message_text, b"", b""]
            if version >= (2, 2):
                msa.append(cwe)
    return segments


class ControlIdGenerator:
    """Unique MSH-10 values: milliseconds since the epoch and a 6-digit counter.

    19 digits (within the 20 characters of MSH-10 before v2.7) plus ``prefix``. Ids of
    one generator never repeat (unless a million are made in one millisecond); the
    counter starts at a random value so that two generators rarely collide either. Give
    each process of a multi-process deployment its own ``prefix`` to rule that out.
    """

    def __init__(
        self, *, prefix: str = "", clock: Callable[[], float] = time.time, start: int | None = None
    ) -> None:
        self._prefix = prefix
        self._clock = clock
        self._counter = itertools.count(secrets.randbelow(1_000_000) if start is None else start)

    def __call__(self) -> str:
        millis = int(self._clock() * 1000)
        return f"{self._prefix}{millis}{next(self._counter) % 1_000_000:06d}"


@dataclass
class AckBuilder:
    """Builds ACKs with unique, time-ordered MSH-10 values and an injectable clock."""

    control_ids: Callable[[], str] = field(default_factory=ControlIdGenerator)
    clock: Callable[[], datetime] = field(default_factory=lambda: _local_now)
    default_charset: str = "utf-8"

    def build(
        self,
        message: bytes | MessageHeader,
        outcome: AckOutcome | None = None,
        *,
        mode: AckMode = "auto",
    ) -> bytes:
        """See :func:`build_ack`."""
        return build_ack(
            message,
            outcome,
            control_id=self.control_ids(),
            timestamp=self.clock(),
            mode=mode,
            default_charset=self.default_charset,
        )


@dataclass(frozen=True, slots=True)
class AckInfo:
    """What an acknowledgement says (read by the client and the tests)."""

    header: MessageHeader
    #: MSA-1 ("" when there is no MSA).
    code: str
    #: MSA-2: the control id of the acknowledged message, raw.
    acknowledged_id: str
    #: ERR-3.1 codes (ERR-1.4.1 before v2.5, MSA-6.1).
    error_codes: tuple[str, ...]
    #: ERR-8 (or MSA-3) texts, decoded.
    texts: tuple[str, ...]
    segments: tuple[str, ...]

    @property
    def success(self) -> bool:
        return self.code in ("AA", "CA")


def parse_ack(data: bytes) -> AckInfo:
    """Read an ACK leniently (never raises); missing parts are empty."""
    header = read_header(data)
    enc = header.encoding
    text = data.decode(header.codec or "utf-8", errors="replace").lstrip("\ufeff")
    segments = tuple(s for s in re.split(r"\r\n|\r|\n", text) if s.strip())
    code = acknowledged = ""
    errors: list[str] = []
    texts: list[str] = []
    for segment in segments:
        fields = segment.split(enc.field)
        get = field_getter(fields)
        if fields[0] == "MSA":
            code = get(1).strip().upper()
            acknowledged = get(2)
            if get(3):
                texts.append(enc.unescape(get(3)))
            if get(6):
                errors.append(get(6).split(enc.component)[0])
        elif fields[0] == "ERR":
            if get(3):
                errors.append(get(3).split(enc.component)[0])
            elif get(1):
                eld = get(1).split(enc.repetition)[0].split(enc.component)
                if len(eld) > 3:
                    # ELD.4 (the error code of ERR-1 before v2.5), not the MSA code.
                    error = eld[3]
                    errors.append(error.split(enc.subcomponent)[0] if enc.subcomponent else error)
            if get(8):
                texts.append(enc.unescape(get(8)))
    unique = tuple(dict.fromkeys(e for e in errors if e))
    return AckInfo(header, code, acknowledged, unique, tuple(texts), segments)


def _local_now() -> datetime:
    return datetime.now().astimezone()


def _timestamp(stamp: datetime) -> str:
    return _format_second(stamp.replace(microsecond=0))


@functools.lru_cache(maxsize=4)
def _format_second(stamp: datetime) -> str:
    # One formatting per second, not per ACK: at thousands of ACKs a second it shows.
    return stamp.strftime("%Y%m%d%H%M%S%z")


def _trim(fields: list[bytes]) -> list[bytes]:
    end = len(fields)
    while end > 1 and not fields[end - 1]:
        end -= 1
    return fields[:end]


def _message_type(
    header: MessageHeader, comp: bytes, trigger: bytes, code: bytes, structure: bytes
) -> bytes:
    """MSH-9 of the reply, with the components the message's version defines."""
    version = _version(header)
    if version is None or version >= _MSH9_STRUCTURE_VERSION:
        # An unreadable version is answered as the default (v2.5) one.
        return code + comp + trigger + comp + structure
    if version >= _MSH9_TRIGGER_VERSION and trigger:
        return code + comp + trigger
    return code


def _version(header: MessageHeader) -> tuple[int, ...] | None:
    """MSH-12 as numbers, ``None`` when it is not a version number."""
    try:
        return header.version_tuple()
    except ValueError:
        # "2.²" (byte 0xB2 read as Latin-1) passes str.isdigit() but not int(): an ACK
        # that cannot be built means no ACK at all, and the message re-sent forever.
        return None


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
