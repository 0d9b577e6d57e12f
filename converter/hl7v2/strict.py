"""Optional strict validation of a message against its version's definition (hl7apy).

Off by default: hl7apy parses a message in tens of milliseconds, and many real feeds
bend the standard in ways a conversion tolerates. When a deployment wants messages that
break the standard refused (HL7 AR, error 101/102/100), it turns this on
(``ConverterConfig(strict_hl7=True)``, ``passerelle convert --strict-hl7``).

hl7apy checks datatypes while it parses and reports a bad one as a bare ``ValueError``
that quotes the value (a date of birth, a phone number) but not its place: the value is
dropped, and the segment and field are found by parsing the message again piece by piece.

hl7apy 1.3 misreads some order structures: it models ORM_O01's choice of order detail
segment (OBR, RXO, …) as a sequence, so it refused every ORM^O01 ("Missing required child
… RQD"); and it reads OML_O21's (and OMG_O19's) ambiguous grammar greedily, filing an ORC
after an OBR as the ORDER_PRIOR of a prior result, so it refused an OML^O21 with more than
one order ("Missing required child … OBSERVATION_PRIOR"). For those structures
(:data:`_OWN_GROUPING`) the segment order and groups are checked by
:mod:`converter.hl7v2.strict_structure` against hl7apy's own table of the structure, read
as the converter's grouping reads it, and hl7apy checks each segment alone (required
fields, datatypes): what it knows of fields is kept, its grouping is not used. That check
also refuses a segment out of order within its group, which hl7apy's grouping does not
see (it files each segment by name: a DG1 before its OBR passed). Other structures are
still parsed and validated by hl7apy as whole messages; a structure or version hl7apy
does not define goes that way too.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import ParseError
from .strict_structure import StructureProblem, check_structure, knows_structure

__all__ = ["validate_strictly"]

#: Structures whose groups hl7apy misreads (see the module docstring): checked segment by
#: segment, their order by :mod:`converter.hl7v2.strict_structure`. OML_O33 (orders by
#: specimen) and OML_O35 (by specimen container) nest OML_O21's ORDER, PRIOR_RESULT and
#: all, and hl7apy misreads them the same way: a second ORC under one SPM (or SAC) was
#: refused ("Missing required child … OBSERVATION_PRIOR"), a DG1 before its OBR passed.
_OWN_GROUPING = frozenset({"ORM_O01", "OML_O21", "OMG_O19", "OML_O33", "OML_O35"})

_CHILD = re.compile(r"(?:child|element) ([A-Z0-9]{3})[._]([A-Z0-9]{3})_(\d+)")
# hl7apy's wordings: "Invalid value for TN data", "… is not an HL7 valid date value".
_DATATYPE = re.compile(r"for ([A-Za-z]{2,3}) data|valid ([A-Za-z]+) value")


def validate_strictly(text: str, control_id: str | None) -> None:
    """Raise :class:`ParseError` (AR) naming the segment and field hl7apy objects to."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.exceptions import HL7apyException
    from hl7apy.parser import get_message_info, parse_message

    text = text.replace("\n", "\r").strip("\r")
    try:
        _, structure, version = get_message_info(text)
        if (
            structure in _OWN_GROUPING
            and version is not None
            and knows_structure(version, structure)
        ):
            _validate_by_segment(text, structure, version, control_id)
        else:
            message = parse_message(
                text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True
            )
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


def _validate_by_segment(text: str, structure: str, version: str, control_id: str | None) -> None:
    """The segment order and groups by :func:`check_structure`, then each segment by
    hl7apy (required fields, datatypes); hl7apy's errors go to the caller."""
    from hl7apy.parser import parse_segment

    segments = [line for line in text.split("\r") if line]
    problem = check_structure(version, structure, [line[:3] for line in segments])
    if problem is not None:
        raise _structure_error(problem, structure, control_id)
    strict = _reading(segments[0])
    if strict is None:
        raise ParseError(
            "not valid for its HL7 version (strict mode): no encoding characters",
            location="MSH-2",
            control_id=control_id,
            hl7_error_code="102",
        )
    for line in segments:
        segment = parse_segment(line, **strict)
        segment.validate()


def _structure_error(
    problem: StructureProblem, structure: str, control_id: str | None
) -> ParseError:
    where = f" (segment {problem.index})" if problem.index is not None else " (at the end)"
    if problem.missing:
        reason = f"required {problem.segment} missing in {problem.group}{where}"
    else:
        reason = f"segment {problem.segment}{where} out of place in {problem.group}"
    if problem.group != structure:
        reason += f" of {structure}"
    # HL7 table 0357: 100, segment sequence error (a segment missing or out of place).
    return ParseError(
        f"not valid for its HL7 version (strict mode): {reason}",
        location=problem.segment if "|" not in problem.segment else problem.group,
        control_id=control_id,
        hl7_error_code="100",
    )


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
    from hl7apy.exceptions import HL7apyException
    from hl7apy.parser import parse_field, parse_segment

    segments = text.split("\r")
    strict = _reading(segments[0])
    if strict is None:
        return None
    separator = strict["encoding_chars"]["FIELD"]
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


def _reading(msh: str) -> dict[str, Any] | None:
    """hl7apy's keyword arguments to read the message's segments strictly (version,
    encoding characters from MSH); None when MSH is too short to give them."""
    from hl7apy.consts import VALIDATION_LEVEL

    if len(msh) < 8:
        return None
    separator = msh[3]
    fields = msh.split(separator)
    delimiters = fields[1] if len(fields) > 1 else ""
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
    version = fields[11].split(delimiters[0], 1)[0] if len(fields) > 11 else None
    return {
        "version": version,
        "encoding_chars": encoding,
        "validation_level": VALIDATION_LEVEL.STRICT,
    }
