"""Reading an acknowledgement leniently: what ``passerelle send`` and the tests check."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .header import MessageHeader, field_getter, read_header

__all__ = ["AckInfo", "parse_ack"]


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
