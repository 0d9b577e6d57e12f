"""Optional strict validation of a message against its version's definition (hl7apy).

Off by default: hl7apy parses a message in tens of milliseconds, and many real feeds
bend the standard in ways a conversion tolerates. When a deployment wants messages that
break the standard refused (HL7 AR, error 101/102/100), it turns this on
(``ConverterConfig(strict_hl7=True)``, ``passerelle convert --strict-hl7``).

hl7apy checks datatypes while it parses and reports a bad one as a bare ``ValueError``
that quotes the value (a date of birth, a phone number) but not its place: the value is
dropped, and the segment and field are found by parsing the message again piece by piece.

Known limit: hl7apy 1.3 models ORM_O01's choice of order detail segments as a sequence,
so every ORM^O01 fails strict validation ("Missing required child … RQD"); and hl7apy
reads OML_O21's (and OMG_O19's) ambiguous grammar greedily, filing every ORC after an
OBR as the ORDER_PRIOR of a prior result, so an OML^O21 / OMG^O19 with more than one
order fails it ("Missing required child … OBSERVATION_PRIOR"). The converter's own
grouping (structure.py) reads those ORCs as new orders; hl7apy's cannot be told to.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import ParseError

__all__ = ["validate_strictly"]

_CHILD = re.compile(r"(?:child|element) ([A-Z0-9]{3})[._]([A-Z0-9]{3})_(\d+)")
# hl7apy's wordings: "Invalid value for TN data", "… is not an HL7 valid date value".
_DATATYPE = re.compile(r"for ([A-Za-z]{2,3}) data|valid ([A-Za-z]+) value")


def validate_strictly(text: str, control_id: str | None) -> None:
    """Raise :class:`ParseError` (AR) naming the segment and field hl7apy objects to."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.exceptions import HL7apyException
    from hl7apy.parser import parse_message

    text = text.replace("\n", "\r").strip("\r")
    try:
        message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        message.validate()
    except ValueError as exc:
        found = _DATATYPE.search(str(exc))
        kind = f"a valid {found[1] or found[2]} value" if found else "valid for its datatype"
        raise ParseError(
            f"not valid for its HL7 version (strict mode): a value is not {kind}",
            location=_locate_bad_value(text, str(exc)),
            control_id=control_id,
            hl7_error_code="102",
        ) from None
    except HL7apyException as exc:
        reason = str(exc)
        found = _CHILD.search(reason)
        location = f"{found[2]}-{int(found[3])}" if found else None
        raise ParseError(
            f"not valid for its HL7 version (strict mode): {_without_values(exc)}",
            location=location,
            control_id=control_id,
            hl7_error_code="101" if "Missing required" in reason else "102",
            detail=reason[:300],
        ) from None


def _without_values(exc: Exception) -> str:
    """hl7apy's text without the values it quotes: some messages quote them, and a
    value too long (an identifier, a name) or an invalid date offset is written bare."""
    from hl7apy.exceptions import InvalidDateOffset, InvalidHighlightRange, MaxLengthReached

    if isinstance(exc, MaxLengthReached):
        return f"a value exceeds the maximum length of its datatype ({exc.limit})"
    if isinstance(exc, InvalidDateOffset):
        return "invalid time zone offset in a date"
    if isinstance(exc, InvalidHighlightRange):
        return "invalid highlight range"
    return re.sub(r"'[^']*'|\"[^\"]*\"", "…", str(exc))[:200]


def _locate_bad_value(text: str, reason: str) -> str | None:
    """``SEG-n`` of the first field hl7apy refuses with ``reason`` (the segment when no
    field alone is; None when parsing segment by segment does not reproduce it).

    Only the same refusal counts: a field parsed out of its message can fail for other
    reasons (hl7apy reads some datatypes differently without the message's context).
    """
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.exceptions import HL7apyException
    from hl7apy.parser import parse_field, parse_segment

    segments = text.split("\r")
    if len(segments[0]) < 8:
        return None
    separator = segments[0][3]
    msh = segments[0].split(separator)
    delimiters = msh[1] if len(msh) > 1 else ""
    if len(delimiters) < 4:
        return None
    encoding = {
        "FIELD": separator,
        "COMPONENT": delimiters[0],
        "REPETITION": delimiters[1],
        "ESCAPE": delimiters[2],
        "SUBCOMPONENT": delimiters[3],
        "GROUP": "\r",
        "SEGMENT": "\r",
    }
    version = msh[11].split(delimiters[0], 1)[0] if len(msh) > 11 else None
    strict: dict[str, Any] = {
        "version": version,
        "encoding_chars": encoding,
        "validation_level": VALIDATION_LEVEL.STRICT,
    }
    for line in segments:
        name = line[:3]
        try:
            parse_segment(line, **strict)
            continue
        except HL7apyException:
            continue
        except ValueError as exc:
            if str(exc) != reason:
                continue
        # MSH-1 is the separator itself: MSH's split fields sit one position lower.
        shift = 1 if name == "MSH" else 0
        for position, field in enumerate(line.split(separator)[1:], start=1 + shift):
            if not field or (name == "MSH" and position == 2):
                continue
            try:
                parse_field(field, name=f"{name}_{position}", **strict)
            except HL7apyException:
                continue
            except ValueError as exc:
                if str(exc) == reason:
                    return f"{name}-{position}"
        return name
    return None
