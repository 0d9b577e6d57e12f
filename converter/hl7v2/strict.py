"""Optional strict validation of a message against its version's definition (hl7apy).

Off by default: hl7apy parses a message in tens of milliseconds, and many real feeds
bend the standard in ways a conversion tolerates. When a deployment wants messages that
break the standard refused (HL7 AR, error 101/102/100), it turns this on
(``ConverterConfig(strict_hl7=True)``, ``passerelle convert --strict-hl7``).

Known limit: hl7apy 1.3 models ORM_O01's choice of order detail segments as a sequence,
so every ORM^O01 fails strict validation ("Missing required child … RQD").
"""

from __future__ import annotations

import re

from ..errors import ParseError

__all__ = ["validate_strictly"]

_CHILD = re.compile(r"(?:child|element) ([A-Z0-9]{3})[._]([A-Z0-9]{3})_(\d+)")


def validate_strictly(text: str, control_id: str | None) -> None:
    """Raise :class:`ParseError` (AR) naming the segment and field hl7apy objects to."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.exceptions import HL7apyException
    from hl7apy.parser import parse_message

    try:
        message = parse_message(
            text.replace("\n", "\r").strip("\r"),
            validation_level=VALIDATION_LEVEL.STRICT,
            find_groups=True,
        )
        message.validate()
    except HL7apyException as exc:
        reason = str(exc)
        found = _CHILD.search(reason)
        location = f"{found[2]}-{int(found[3])}" if found else None
        code = "101" if "Missing required" in reason else "102"
        error = ParseError(
            f"not valid for its HL7 version (strict mode): {_without_values(reason)}",
            location=location,
            control_id=control_id,
        )
        error.hl7_error_code = code
        raise error from None


def _without_values(reason: str) -> str:
    """hl7apy quotes offending values in some messages: keep the message, drop quotes."""
    return re.sub(r"'[^']*'|\"[^\"]*\"", "…", reason)[:200]
