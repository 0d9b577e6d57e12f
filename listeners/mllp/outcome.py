"""What an acknowledgement says: its code, and on errors the HL7 table 0357 code, severity,
user text and location (ERR segment)."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from converter.errors import ConversionError, ParseError, UnsupportedMessageError
from converter.hl7v2.encoding import Encoding

from ..errors import QueueError

__all__ = ["TABLE_0357", "AckCode", "AckOutcome", "ErrorLocation", "Severity"]

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
