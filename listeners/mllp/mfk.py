"""MFK: the application acknowledgement of a master file notification (MFN).

HL7 v2.5 §8.4 (§8.5 in v2.3, alike up to v2.8): in original mode an MFN is answered
with an MFK, not an ACK::

    MSH  MSA  [ERR]  MFI  [{MFA}]

* MSH, MSA and ERR are the ACK's (:func:`.ack.ack_segments`: delimiters, version,
  charset, swapped sender and receiver, MSA-2 = MSH-10, ERR in the version's form), with
  ``MSH-9 = MFK^<trigger>^MFK_M01`` (``MFK^<trigger>`` before v2.3.1, ``MFK`` in v2.1);
* MFI is the message's MFI, echoed;
* one MFA per MFE record, as MFI-6 (response level, HL7 table 0179) asks: ``AL`` every
  record, ``ER`` only records in error, ``SU`` only successful ones, ``NE`` none. An empty
  or unknown MFI-6 is read as ``AL``. MFA-1 = MFE-1 (record-level event code), MFA-2 =
  MFE-2 (MFN control id), MFA-3 = the completion time (MSH-7 of the MFK) for a
  successful record, MFA-4 = ``S`` (successful) or ``U`` (unsuccessful), HL7 table 0181,
  MFA-5 = MFE-4 (primary key value), MFA-6 = MFE-5 (its type; from v2.3.1, which added
  both MFE-5 and MFA-6).

Values come from the message's bytes, split with its own delimiters and copied as the
ACK copies them (escape sequences kept, control bytes and bytes invalid in MSH-18 as
``\\Xhh\\``).

A record's status is the message's: the bundle of an MFN is one FHIR transaction, so its
records are stored, delivered or refused together. With ``ack_after = "commit"`` ``S``
means stored durably (not yet applied by the FHIR server); with ``ack_after =
"delivery"`` it means the FHIR server accepted the bundle, and an AE (refused, or not
confirmed in time) makes every record ``U``. An AR (unsupported event, processing id)
makes them ``U`` as well.

In enhanced mode (MSH-15/16 valued) the reply stays the accept acknowledgement ``ACK``
(accept acknowledgements are ACKs; application acknowledgements are not sent, see
:mod:`.ack`). An MFN whose header cannot be read, or that has no MFI segment, gets the
plain ACK (an AR in the first case).
"""

from __future__ import annotations

import re
from datetime import datetime

from .ack import AckBuilder, AckWriter, ack_segments
from .header import MessageHeader, read_header
from .outcome import AckOutcome

__all__ = ["build_mfk", "build_reply", "wants_mfk"]

_BOM = "\ufeff".encode().decode("latin-1")
_LINES = re.compile(r"\r\n|\r|\n")

#: MFE-5 and MFA-6 (primary key value type) appear in v2.3.1.
_KEY_TYPE_VERSION = (2, 3, 1)

_LEVELS = frozenset({"AL", "ER", "SU", "NE"})


def wants_mfk(header: MessageHeader) -> bool:
    """Whether the reply to this message is an MFK: a readable original-mode MFN (the
    MFI segment still has to be found, see :func:`build_mfk`)."""
    return header.message_code.strip() == "MFN" and header.readable and not header.enhanced_mode


def build_mfk(
    message: bytes,
    outcome: AckOutcome | None = None,
    *,
    header: MessageHeader | None = None,
    control_id: str | None = None,
    timestamp: datetime | None = None,
    default_charset: str = "utf-8",
) -> bytes | None:
    """The MFK for ``message`` (received bytes), ``None`` when it is not a readable
    original-mode MFN with an MFI segment (then the reply is the ACK of
    :func:`.ack.build_ack`). ``header`` saves reading MSH again."""
    header = header or read_header(message, default_charset=default_charset)
    if not wants_mfk(header):
        return None
    sep = header.encoding.field
    mfi: list[str] | None = None
    records: list[list[str]] = []
    text = message.decode("latin-1").removeprefix(_BOM)
    for line in _LINES.split(text):
        if line.startswith("MFI" + sep) and mfi is None:
            mfi = line.split(sep)
        elif line.startswith("MFE" + sep):
            records.append(line.split(sep))
    if mfi is None:
        return None
    outcome = outcome or AckOutcome.accept()
    writer = AckWriter(header)
    segments = ack_segments(
        writer,
        outcome,
        control_id=control_id,
        timestamp=timestamp,
        mode="original",
        message_code=b"MFK",
        structure=b"MFK_M01",
    )
    segments.append([writer.copy(value) for value in mfi])
    if _answers(_field(mfi, 6).strip().upper(), outcome.success):
        completed = segments[0][6] if outcome.success else b""  # MSH-7
        status = b"S" if outcome.success else b"U"
        version = header.version_tuple()
        key_type = version is None or version >= _KEY_TYPE_VERSION
        for mfe in records:
            mfa = [
                b"MFA",
                writer.copy(_field(mfe, 1)),
                writer.copy(_field(mfe, 2)),
                completed,
                status,
                writer.copy(_field(mfe, 4)),
            ]
            if key_type:
                mfa.append(writer.copy(_field(mfe, 5)))
            segments.append(mfa)
    return writer.serialize(segments)


def build_reply(
    builder: AckBuilder,
    header: MessageHeader,
    outcome: AckOutcome,
    message: bytes | None = None,
) -> bytes:
    """The acknowledgement of a received message: its MFK when ``message`` (its bytes)
    is an original-mode MFN with an MFI, with ``builder``'s control ids and clock; else
    ``builder``'s ACK."""
    if message is not None and wants_mfk(header):
        mfk = build_mfk(
            message,
            outcome,
            header=header,
            control_id=builder.control_ids(),
            timestamp=builder.clock(),
        )
        if mfk is not None:
            return mfk
    return builder.build(header, outcome)


def _answers(level: str, success: bool) -> bool:
    """Whether records with this outcome get an MFA at MFI-6 ``level`` (table 0179)."""
    if level not in _LEVELS:
        level = "AL"
    return level == "AL" or (level == "SU" and success) or (level == "ER" and not success)


def _field(fields: list[str], n: int) -> str:
    return fields[n] if n < len(fields) else ""
