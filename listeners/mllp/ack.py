"""HL7 v2 acknowledgements built from the bytes of the received message.

The received header is read tolerantly (:func:`read_header`): whatever can be read is
used, and a message whose MSH cannot be read at all still gets a well-formed AR with the
default delimiters and an empty MSA-2. The ACK:

* uses the message's own delimiters (MSH-1/MSH-2), version (MSH-12), processing id (MSH-11)
  and character set (MSH-18, copied and used to encode the ACK);
* swaps sending and receiving application/facility (MSH-3/4 ↔ MSH-5/6), byte for byte;
* has a fresh MSH-10 and ``MSH-9 = ACK^<trigger>^ACK``;
* echoes MSH-10 in MSA-2;
* on errors carries an ERR segment: ERR-2 location, ERR-3 code from HL7 table 0357,
  ERR-4 severity and ERR-8 a user message (v2.5+); before v2.5, ERR-1 (ELD) plus MSA-3
  and MSA-6, the fields those versions define.

When MSH-18 names a character set, copied bytes that are not valid in it are written as
``\\Xhh\\`` escapes, so the ACK is valid text in the charset it declares; with MSH-18
empty, the sender's bytes are mirrored as they are.

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
"""

from __future__ import annotations

import enum
import itertools
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Literal

from converter.errors import CharsetError, ConversionError, ParseError, UnsupportedMessageError
from converter.hl7v2.charset import codec_for
from converter.hl7v2.encoding import DEFAULT_ENCODING, Encoding

from ..errors import QueueError

__all__ = [
    "TABLE_0357",
    "AckBuilder",
    "AckCode",
    "AckInfo",
    "AckMode",
    "AckOutcome",
    "ControlIdGenerator",
    "ErrorLocation",
    "MessageHeader",
    "Severity",
    "build_ack",
    "parse_ack",
    "read_header",
    "wants_accept_ack",
]

AckMode = Literal["auto", "original", "enhanced"]

#: HL7 table 0357, message error condition codes.
TABLE_0357: Mapping[str, str] = MappingProxyType(
    {
        "0": "Message accepted",
        "100": "Segment sequence error",
        "101": "Required field missing",
        "102": "Data type error",
        "103": "Table value not found",
        "104": "Value too long",
        "200": "Unsupported message type",
        "201": "Unsupported event code",
        "202": "Unsupported processing id",
        "203": "Unsupported version id",
        "204": "Unknown key identifier",
        "205": "Duplicate key identifier",
        "206": "Application record locked",
        "207": "Application internal error",
    }
)

_BOM = b"\xef\xbb\xbf"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DEFAULT_VERSION = "2.5"
_ERR_FIELDS_VERSION = (2, 5)


class AckCode(enum.StrEnum):
    """MSA-1: original mode AA/AE/AR, enhanced-mode accept level CA/CE/CR."""

    AA = "AA"
    AE = "AE"
    AR = "AR"
    CA = "CA"
    CE = "CE"
    CR = "CR"

    @property
    def success(self) -> bool:
        return self in (AckCode.AA, AckCode.CA)

    def for_mode(self, enhanced: bool) -> AckCode:
        """The same outcome in original (AA/AE/AR) or enhanced (CA/CE/CR) mode."""
        if (self.value[0] == "C") is enhanced:
            return self
        return AckCode(("C" if enhanced else "A") + self.value[1])


class Severity(enum.StrEnum):
    """ERR-4 (HL7 table 0516)."""

    ERROR = "E"
    WARNING = "W"
    INFO = "I"


_LOCATION = re.compile(
    r"(?P<seg>[A-Z][A-Z0-9]{2})(?:\[(?P<seq>\d+)\])?"
    r"(?:-(?P<field>\d+)(?:\((?P<rep>\d+)\))?(?:\.(?P<comp>\d+))?(?:\.(?P<sub>\d+))?)?"
)


@dataclass(frozen=True, slots=True)
class ErrorLocation:
    """Where an error is: segment, its occurrence, field, repetition, component."""

    segment: str
    sequence: int = 1
    field: int | None = None
    repetition: int | None = None
    component: int | None = None
    subcomponent: int | None = None

    @classmethod
    def parse(cls, text: str | None) -> ErrorLocation | None:
        """Read the converter's notation (``OBX[2]-5.1``, ``PID-3(2).4``); else ``None``."""
        match = _LOCATION.fullmatch(text.strip()) if text else None
        if match is None:
            return None

        def num(name: str) -> int | None:
            value = match.group(name)
            return int(value) if value else None

        return cls(
            segment=match.group("seg"),
            sequence=num("seq") or 1,
            field=num("field"),
            repetition=num("rep"),
            component=num("comp"),
            subcomponent=num("sub"),
        )

    def parts(self) -> list[str]:
        """The ERL components as text, trailing empty ones dropped."""
        rep = self.repetition
        if rep is None and self.component is not None:
            rep = 1
        values = [self.segment, self.sequence, self.field, rep, self.component, self.subcomponent]
        parts = ["" if value is None else str(value) for value in values]
        while parts and not parts[-1]:
            parts.pop()
        return parts

    def erl(self, enc: Encoding) -> str:
        """ERR-2 (ERL): ``segment^sequence^field^repetition^component^subcomponent``."""
        return enc.component.join(self.parts())


@dataclass(frozen=True, slots=True)
class AckOutcome:
    """What to acknowledge: the code and, on errors, what went wrong and where.

    ``text`` becomes ERR-8 (MSA-3 before v2.5): a short reason for a person, which must
    never contain patient data (the converter's ``error.reason`` is safe; its
    ``detail`` is not). CA/CE/CR and AA/AE/AR are interchangeable: the builder writes the
    form that matches the message's acknowledgement mode.
    """

    code: AckCode = AckCode.AA
    error_code: str | None = None
    severity: Severity | None = None
    text: str | None = None
    location: ErrorLocation | None = None

    def __post_init__(self) -> None:
        if type(self.code) is not AckCode:
            object.__setattr__(self, "code", AckCode(self.code))
        if self.severity is not None and type(self.severity) is not Severity:
            object.__setattr__(self, "severity", Severity(self.severity))
        if self.error_code is not None and not self.error_code.isdigit():
            raise ValueError(f"error_code must be a table 0357 number, got {self.error_code!r}")

    @property
    def success(self) -> bool:
        return self.code.success

    @property
    def effective_severity(self) -> Severity:
        """ERR-4: as given, else E for an error or reject, I for an accept."""
        if self.severity is not None:
            return self.severity
        return Severity.INFO if self.success else Severity.ERROR

    @property
    def has_error(self) -> bool:
        """Whether the ACK carries an ERR segment."""
        return not self.success or self.error_code is not None or bool(self.text)

    @classmethod
    def accept(cls) -> AckOutcome:
        return _ACCEPT

    @classmethod
    def error(
        cls,
        error_code: str = "207",
        text: str | None = None,
        *,
        location: ErrorLocation | None = None,
    ) -> AckOutcome:
        """AE / CE: the message was readable but could not be processed."""
        return cls(AckCode.AE, error_code, Severity.ERROR, text, location)

    @classmethod
    def reject(
        cls,
        error_code: str = "207",
        text: str | None = None,
        *,
        location: ErrorLocation | None = None,
    ) -> AckOutcome:
        """AR / CR: the message is not acceptable (unreadable, unsupported type/version)."""
        return cls(AckCode.AR, error_code, Severity.ERROR, text, location)

    @classmethod
    def from_error(cls, exc: BaseException) -> AckOutcome:
        """Map an exception: parse and unsupported errors → AR, anything else → AE 207.

        Only the converter's ``reason`` and location are used (never ``detail``); any
        other exception's message is not used, since it may quote message content.
        """
        if isinstance(exc, ConversionError):
            location = ErrorLocation.parse(exc.location)
            if isinstance(exc, ParseError | UnsupportedMessageError):
                return cls.reject(exc.hl7_error_code, exc.reason, location=location)
            return cls.error(exc.hl7_error_code, exc.reason, location=location)
        if isinstance(exc, QueueError):
            return cls.error("207", "the message could not be stored")
        return cls.error("207", "application internal error")


_ACCEPT = AckOutcome()


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
        """MSH-15 (AL, NE, ER, SU or "")."""
        return self.component(15, 1).strip().upper()

    @property
    def application_ack_type(self) -> str:
        """MSH-16 (AL, NE, ER, SU or "")."""
        return self.component(16, 1).strip().upper()

    @property
    def enhanced_mode(self) -> bool:
        """MSH-15 or MSH-16 valued: enhanced acknowledgement mode."""
        return bool(self.accept_ack_type or self.application_ack_type)

    def version_tuple(self) -> tuple[int, ...] | None:
        parts = self.version.split(".")
        if not all(part.isdigit() for part in parts):
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


def read_header(data: bytes, *, default_charset: str = "utf-8") -> MessageHeader:
    """Read MSH tolerantly: never raises; problems are reported on the result."""
    default_codec = _safe_codec("", default_charset)
    body = data[len(_BOM) :] if data.startswith(_BOM) else data
    body = body.lstrip(b" \t\r\n")
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
    return MessageHeader(enc, fields, codec, valid, *(problem or (None, None, None)))


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
    outcome = outcome or _ACCEPT
    enc = header.encoding
    codec = header.codec or "ascii"
    enhanced = header.enhanced_mode if mode == "auto" else mode == "enhanced"
    code = outcome.code.for_mode(enhanced)
    stamp = timestamp or datetime.now().astimezone()
    ctrl = control_id if control_id is not None else uuid.uuid4().hex[:20].upper()

    # Received bytes are copied as they are, unless MSH-18 declares a charset they are
    # not valid in: the ACK must be valid text in the charset it declares.
    copy_codec = header.codec if header.field(18).strip() else None

    def copy(n: int) -> bytes:
        return _copy(header.field(n), copy_codec, enc)

    def text(value: str) -> bytes:
        return _text(value, enc, codec)

    comp = enc.component.encode("latin-1")
    trigger = _copy(header.component(9, 2), copy_codec, enc)
    msh: list[bytes] = [
        b"MSH",
        (header.field(2) if header.delimiters_valid else enc.msh2).encode("latin-1"),
        copy(5),
        copy(6),
        copy(3),
        copy(4),
        _timestamp(stamp).encode("ascii"),
        b"",
        b"ACK" + comp + trigger + comp + b"ACK",
        text(ctrl),
        copy(11) or b"P",
        copy(12) or _DEFAULT_VERSION.encode("ascii"),
        b"",
        b"",
        b"",
        b"",
        b"",
        copy(18),
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
        version = header.version_tuple() or _ERR_FIELDS_VERSION
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
                    sub.join([error_code.encode("ascii"), text(label), b"HL70357"]),
                ]
            )
            segments.append([b"ERR", eld])
            msa += [message_text, b"", b""]
            if version >= (2, 2):
                msa.append(cwe)
    sep = enc.field.encode("latin-1")
    return b"".join(sep.join(_trim(segment)) + b"\r" for segment in segments)


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
        get = _getter(fields)
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
                    errors.append(eld[3].split(enc.subcomponent)[0])
            if get(8):
                texts.append(enc.unescape(get(8)))
    unique = tuple(dict.fromkeys(e for e in errors if e))
    return AckInfo(header, code, acknowledged, unique, tuple(texts), segments)


def _getter(fields: list[str]) -> Callable[[int], str]:
    return lambda n: fields[n] if n < len(fields) else ""


def _safe_codec(msh18: str, default: str) -> str | None:
    try:
        return codec_for(msh18, default)
    except CharsetError:
        return None


def _local_now() -> datetime:
    return datetime.now().astimezone()


def _timestamp(stamp: datetime) -> str:
    return stamp.strftime("%Y%m%d%H%M%S%z")


def _trim(fields: list[bytes]) -> list[bytes]:
    end = len(fields)
    while end > 1 and not fields[end - 1]:
        end -= 1
    return fields[:end]


def _copy(raw: str, codec: str | None, enc: Encoding) -> bytes:
    """Received bytes (as Latin-1 text) to copy; bytes invalid in ``codec`` → ``\\Xhh\\``."""
    data = raw.encode("latin-1")
    if codec is None:
        return data
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
        # Other control characters (VT and FS would break MLLP framing) as \Xhh\.
        escaped = _CONTROL.sub(lambda m: f"{enc.escape}X{ord(m.group()):02X}{enc.escape}", escaped)
    else:
        delimiters = set(enc.field + enc.msh2 + "\r\n")
        escaped = "".join(" " if char in delimiters else char for char in value)
        escaped = _CONTROL.sub(" ", escaped)
    try:
        return escaped.encode(codec, errors="replace")
    except LookupError:
        return escaped.encode("ascii", errors="replace")
