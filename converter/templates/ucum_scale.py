"""The dimension and scale of common UCUM units, to compare two quantities.

``1 g`` to ``500 mg`` is an inverted interval (FHIR rng-2; a validating server compares
a Range's bounds in UCUM); :func:`magnitude` puts both in one scale. Only what
clinical documents write is known: the metric units of mass, volume, length, amount,
equivalents and time, with SI prefixes (``mg``, ``dL``, ``umol``, ``ms``), the clock
units (``min``, ``h``, ``d``, ``wk``, ``mo``, ``a``), ``[IU]``, ``U``, ``%``, powers of
ten (``10*9/L``), exponents (``m2``) and annotations (``{cells}``, read as 1), joined
by ``.`` and ``/`` as UCUM does (``mL/min/{1.73_m2}``). Any other unit, parentheses
included, is unknown: two quantities are then not compared. Neither are two whose
annotations differ (``5 {tbl}`` and ``2 {capsule}``: UCUM reads both as 1, a reader
does not), nor two of different dimensions.
"""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction

__all__ = ["magnitude"]

#: Exponents of length, mass, time, amount of substance, international units.
Dimension = tuple[int, int, int, int, int]

_ONE: Dimension = (0, 0, 0, 0, 0)
_LENGTH: Dimension = (1, 0, 0, 0, 0)
_MASS: Dimension = (0, 1, 0, 0, 0)
_TIME: Dimension = (0, 0, 1, 0, 0)
_AMOUNT: Dimension = (0, 0, 0, 1, 0)
_IU: Dimension = (0, 0, 0, 0, 1)
_VOLUME: Dimension = (3, 0, 0, 0, 0)
_CATALYTIC: Dimension = (0, 0, -1, 1, 0)
#: What two quantities must share to be compared: a dimension and their annotations.
Kind = tuple[Dimension, tuple[str, ...]]

#: Units that take an SI prefix: dimension and value in the base units (m, g, s, mol).
_METRIC: dict[str, tuple[Dimension, Fraction]] = {
    "m": (_LENGTH, Fraction(1)),
    "g": (_MASS, Fraction(1)),
    "s": (_TIME, Fraction(1)),
    "mol": (_AMOUNT, Fraction(1)),
    "eq": (_AMOUNT, Fraction(1)),  # UCUM defines the equivalent as one mole
    "Eq": (_AMOUNT, Fraction(1)),  # its print symbol, as labs write it (mEq/L)
    "L": (_VOLUME, Fraction("0.001")),
    "l": (_VOLUME, Fraction("0.001")),
    "U": (_CATALYTIC, Fraction(1, 60_000_000)),  # µmol/min
    "[IU]": (_IU, Fraction(1)),
    "[iU]": (_IU, Fraction(1)),
}
#: Units that take no prefix.
_PLAIN: dict[str, tuple[Dimension, Fraction]] = {
    "1": (_ONE, Fraction(1)),
    "%": (_ONE, Fraction("0.01")),
    "min": (_TIME, Fraction(60)),
    "h": (_TIME, Fraction(3_600)),
    "d": (_TIME, Fraction(86_400)),
    "wk": (_TIME, Fraction(604_800)),
    "a": (_TIME, Fraction(31_557_600)),  # the Julian year, 365.25 d
    "mo": (_TIME, Fraction(2_629_800)),  # a twelfth of it
}
_PREFIXES: dict[str, Fraction] = {
    "da": Fraction(10),
    "G": Fraction(1_000_000_000),
    "M": Fraction(1_000_000),
    "k": Fraction(1_000),
    "h": Fraction(100),
    "d": Fraction("0.1"),
    "c": Fraction("0.01"),
    "m": Fraction("0.001"),
    "u": Fraction("0.000001"),
    "n": Fraction("1e-9"),
    "p": Fraction("1e-12"),
    "f": Fraction("1e-15"),
}
#: "da" before "d".
_PREFIXES_LONGEST_FIRST = tuple(sorted(_PREFIXES, key=len, reverse=True))
#: An atom (with its prefix) and an exponent: ``cm3``, ``s-1``, ``m[IU]``.
_TERM = re.compile(r"(?P<atom>[A-Za-z]*\[[A-Za-z]+\]|[A-Za-z%]+)(?P<exponent>[+-]?\d{1,2})?")
_INTEGER = re.compile(r"\d{1,9}")
_POWER_OF_TEN = re.compile(r"10[*^](?P<exponent>[+-]?\d{1,2})")
_ANNOTATION = re.compile(r"\{[^{}]*\}")


def magnitude(value: str, unit: str) -> tuple[Kind, Fraction] | None:
    """``value`` in ``unit`` as (kind, value in base units), two quantities being
    comparable when their kinds are equal; None for a unit this table does not know or a
    value that is no number. An empty unit is ``1``."""
    unit = unit.strip()
    scale = _unit(unit)
    if scale is None:
        return None
    try:
        number = Decimal(value)
    except ArithmeticError:
        return None
    # Exact (fractions: a minute is no finite decimal of an hour), within what a
    # double can hold, as the decimal filter requires.
    if not number.is_finite() or abs(number.adjusted()) > 330:
        return None
    annotations = tuple(sorted(_ANNOTATION.findall(unit)))
    return (scale[0], annotations), Fraction(number) * scale[1]


def _unit(unit: str) -> tuple[Dimension, Fraction] | None:
    if not unit:
        return _ONE, Fraction(1)
    if "(" in unit or ")" in unit:
        return None
    # Annotations are read as 1; emptied first, for the dots they may hold ({1.73_m2}).
    unit = _ANNOTATION.sub("{}", unit)
    # A unit starting with "/" (``/min``) divides one.
    parts = re.split(r"([./])", unit if not unit.startswith("/") else "1" + unit)
    dimension, factor = _ONE, Fraction(1)
    operator = "."
    for index, part in enumerate(parts):
        if index % 2:
            operator = part
            continue
        term = _term(part)
        if term is None or term[1] == 0:  # "0" or "/0": no scale
            return None
        sign = 1 if operator == "." else -1
        dimension = _combine(dimension, term[0], sign)
        factor = factor * term[1] if sign == 1 else factor / term[1]
    return dimension, factor


def _term(text: str) -> tuple[Dimension, Fraction] | None:
    power = _POWER_OF_TEN.fullmatch(text)
    if power:
        return _ONE, Fraction(10) ** int(power["exponent"])
    if _INTEGER.fullmatch(text):
        return _ONE, Fraction(int(text))
    stripped = text.replace("{}", "")
    if not stripped:
        return (_ONE, Fraction(1)) if text else None  # "{cells}" alone is 1
    match = _TERM.fullmatch(stripped)
    if match is None:
        return None
    atom = _atom(match["atom"])
    if atom is None:
        return None
    exponent = int(match["exponent"] or 1)
    dimension = _combine(_ONE, atom[0], exponent)
    return dimension, atom[1] ** exponent


def _atom(text: str) -> tuple[Dimension, Fraction] | None:
    known = _PLAIN.get(text) or _METRIC.get(text)
    if known is not None:
        return known
    # The rest must take a prefix.
    for prefix in _PREFIXES_LONGEST_FIRST:
        if text.startswith(prefix):
            base = _METRIC.get(text[len(prefix) :])
            if base is not None:
                return base[0], base[1] * _PREFIXES[prefix]
    return None


def _combine(left: Dimension, right: Dimension, times: int) -> Dimension:
    a, b, c, d, e = (x + times * y for x, y in zip(left, right, strict=True))
    return a, b, c, d, e
