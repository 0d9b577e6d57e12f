"""HL7 v2 acknowledgements built from the bytes of the received message.

The received header is read tolerantly (:func:`read_header`): whatever can be read is
used, and a message whose MSH cannot be read at all still gets a well-formed AR with the
default delimiters and an empty MSA-2. The ACK:

* uses the message's own delimiters (MSH-1/MSH-2), version (MSH-12), processing id (MSH-11)
  and character set (MSH-18, copied and used to encode the ACK);
* swaps sending and receiving application/facility (MSH-3/4 ↔ MSH-5/6), byte for byte
  (but for the escapes of :mod:`.writer`);
* has a fresh MSH-10 and ``MSH-9 = ACK^<trigger>^ACK`` (``ACK^<trigger>`` before v2.3.1,
  which added the message structure component; ``ACK`` in v2.1, where MSH-9 is an ID);
* echoes MSH-10 in MSA-2;
* on errors carries an ERR segment: ERR-2 location, ERR-3 code from HL7 table 0357,
  ERR-4 severity and ERR-8 a user message (v2.5+); before v2.5, ERR-1 (ELD) plus MSA-3
  and MSA-6, the fields those versions define (:mod:`.err`).

Values copied from the message are escaped only where they would make the ACK wrong
(control bytes, bytes invalid in MSH-18): see :mod:`.writer`. Reading an ACK
(:func:`parse_ack`) is :mod:`.ack_info`'s.

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
reported by the service itself (logs, metrics, dead letters), not to the sender. A
sender asking for them (MSH-16 AL/ER/SU) is named in a WARNING, once per connection and
at most every 10 minutes per sender (:mod:`.app_ack`).

An original-mode MFN is answered with an MFK instead (:mod:`.mfk`): the same MSH, MSA
and ERR (:class:`AckWriter`, :func:`ack_segments`), then MFI and MFA segments.
"""

from __future__ import annotations

import functools
import itertools
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from .ack_info import AckInfo, parse_ack
from .err import ERR_FIELDS_VERSION, error_segments
from .header import MessageHeader, read_header
from .outcome import TABLE_0357, AckCode, AckOutcome, ErrorLocation, Severity
from .writer import AckWriter

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


_DEFAULT_VERSION = "2.5"


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
        err, msa_fields = error_segments(writer, outcome, _version(header) or ERR_FIELDS_VERSION)
        msa += msa_fields
        segments.append(err)
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


def _local_now() -> datetime:
    return datetime.now().astimezone()


def _timestamp(stamp: datetime) -> str:
    return _format_second(stamp.replace(microsecond=0))


@functools.lru_cache(maxsize=4)
def _format_second(stamp: datetime) -> str:
    # One formatting per second, not per ACK: at thousands of ACKs a second it shows.
    return stamp.strftime("%Y%m%d%H%M%S%z")


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
