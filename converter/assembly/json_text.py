"""FHIR JSON text of bundles, decimals included.

FHIR decimals keep their precision: ``7.20`` (three significant figures) is not ``7.2``.
The converter therefore carries non-integer numbers as :class:`decimal.Decimal`, read
from template output by :func:`loads`, and writes them back digit for digit with
:func:`dumps`. The standard library's encoder cannot write a Decimal as a number, so
both go through simplejson.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import simplejson

__all__ = ["FhirDecimal", "dumps", "loads"]


class FhirDecimal(Decimal):
    """A Decimal written in positional notation, as sources write numbers.

    ``Decimal("0.0000000")`` prints as ``0E-7``: valid JSON, but not what the message
    said. The digits (and so the precision) are the same either way.
    """

    __slots__ = ()

    def __str__(self) -> str:
        return format(self, "f")


_COMPACT = simplejson.JSONEncoder(ensure_ascii=False, separators=(",", ":"), use_decimal=True)
_PRETTY = simplejson.JSONEncoder(ensure_ascii=False, indent=2, use_decimal=True)


def dumps(value: Any, *, pretty: bool = False) -> str:
    """JSON text of a bundle (or any JSON value); decimals exactly as they were read."""
    return (_PRETTY if pretty else _COMPACT).encode(value)


def loads(text: str | bytes) -> Any:
    """Parse FHIR JSON keeping decimals as Decimal (``parse_float``), as dumps expects."""
    return simplejson.loads(text, parse_float=FhirDecimal)
