"""FHIR JSON text of bundles, decimals included.

FHIR decimals keep their precision: ``7.20`` (three significant figures) is not ``7.2``.
The converter therefore carries non-integer numbers as :class:`decimal.Decimal`, read
from template output by :func:`loads`, and writes them back digit for digit with
:func:`dumps`. The standard library's encoder cannot write a Decimal as a number, so
both go through simplejson.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import simplejson

__all__ = ["FhirDecimal", "compact_bundle", "dumps", "loads"]


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


class _NotPlain(Exception):
    """A value the standard library's encoder cannot write as simplejson does."""


# The decimals of a bundle, in the order the encoder meets them (which is text order):
# each is written as the string "\u0000" (no FHIR string holds U+0000) and put back.
_DECIMAL_MARK = "\x00"
_WRITTEN_MARK = '"\\u0000"'


def compact_bundle(bundle: dict[str, Any]) -> str:
    """``dumps(bundle)`` for a bundle of parsed JSON values (dicts, lists, strings,
    numbers, decimals): the same text, written by the standard library's C encoder,
    which is about twice as fast as simplejson's. Anything else, or a text where the
    decimals cannot be put back unambiguously, goes through :func:`dumps`."""
    decimals: list[Decimal] = []

    def default(value: Any) -> Any:
        if isinstance(value, Decimal) and value.is_finite():
            decimals.append(value)
            return _DECIMAL_MARK
        raise _NotPlain

    try:
        text = json.JSONEncoder(
            ensure_ascii=False, separators=(",", ":"), default=default, allow_nan=False
        ).encode(bundle)
    except (_NotPlain, ValueError):  # ValueError: NaN, a cycle… raised by simplejson's words
        return dumps(bundle)
    if not decimals:
        return text
    pieces = text.split(_WRITTEN_MARK)
    if len(pieces) != len(decimals) + 1:  # a string of the bundle held U+0000
        return dumps(bundle)
    out = [pieces[0]]
    for decimal, piece in zip(decimals, pieces[1:], strict=True):
        out.append(str(decimal))  # what simplejson writes for a Decimal (use_decimal)
        out.append(piece)
    return "".join(out)


def loads(text: str | bytes) -> Any:
    """Parse FHIR JSON keeping decimals as Decimal (``parse_float``), as dumps expects."""
    return simplejson.loads(text, parse_float=FhirDecimal)
