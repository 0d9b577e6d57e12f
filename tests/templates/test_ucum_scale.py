"""UCUM scales behind ``range_inverted`` for bounds in two units (FHIR rng-2)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from converter.templates.filters import ValueFilters
from converter.templates.ucum_scale import magnitude

range_inverted = ValueFilters.range_inverted

#: Powers of ten of the SI prefixes, written apart from the module's table.
PREFIX_EXPONENTS = {"": 0, "k": 3, "h": 2, "da": 1, "d": -1, "c": -2, "m": -3, "u": -6, "n": -9}
METRIC_ATOMS = ("g", "L", "mol", "m", "[IU]", "eq")


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (("1", "g"), ("1000", "mg")),
        (("200", "mg/dL"), ("2", "g/L")),
        (("5", "10*3/uL"), ("5", "10*9/L")),
        (("90", "min"), ("1.5", "h")),
        (("1", "/min"), ("60", "/h")),
        (("1", "mL"), ("1", "cm3")),
        (("1", "d"), ("24", "h")),
        (("2", "wk"), ("14", "d")),
        (("1", "a"), ("12", "mo")),
        (("50", "%"), ("0.5", "1")),
        (("0.5", ""), ("50", "%")),
        (("1", "U/L"), ("1000", "mU/L")),
        (("3", "m[IU]/mL"), ("3", "[IU]/L")),
        (("1", "kg/m2"), ("0.1", "g/cm2")),
        (("1", "mEq/L"), ("1", "mmol/L")),
        (("2", "{cells}/uL"), ("2000", "{cells}/mL")),
        (("60", "mL/min/{1.73_m2}"), ("1", "mL/s/{1.73_m2}")),
    ],
)
def test_equal_quantities_in_two_units_have_one_magnitude(
    one: tuple[str, str], other: tuple[str, str]
) -> None:
    first, second = magnitude(*one), magnitude(*other)
    assert first is not None and second is not None
    assert first == second


@pytest.mark.parametrize(
    "unit",
    ["tablet", "mg(as base)", "Xg", "m999", "g/0", "0", "{", "mg}", "", " ", "kg.", "/", "10*"],
)
def test_units_the_table_does_not_know(unit: str) -> None:
    """Unknown units give None; an empty one is 1 (CDA's default unit)."""
    found = magnitude("1", unit)
    if unit.strip():
        assert found is None
    else:
        assert found == (((0, 0, 0, 0, 0), ()), Fraction(1))


@pytest.mark.parametrize("value", ["", "abc", "1,5", "NaN", "Infinity", "1e400", "1e-400"])
def test_values_that_are_no_usable_number(value: str) -> None:
    assert magnitude(value, "mg") is None


@pytest.mark.parametrize(
    ("low", "high", "inverted"),
    [
        (("1", "g"), ("500", "mg"), True),
        (("1", "g"), ("1000", "mg"), False),  # equal: no inversion
        (("500", "mg"), ("1", "g"), False),
        (("2", "h"), ("90", "min"), True),
        (("5", "g"), ("2", "mL"), False),  # two dimensions
        (("5", "{tbl}"), ("2", "{capsule}"), False),  # two annotations
        (("5", "{tbl}"), ("2", "{tbl}"), True),  # one unit: compared as numbers
        (("5", "tablet"), ("2", "mg"), False),  # unknown unit
        (("5", "tablet"), ("2", "tablet"), True),  # one unit, known or not
        (("5", ""), ("2", "1"), True),  # CDA's default unit is 1
    ],
)
def test_range_inverted_in_units(
    low: tuple[str, str], high: tuple[str, str], inverted: bool
) -> None:
    assert range_inverted(low[0], high[0], low[1], high[1]) is inverted


_SMALL = st.decimals(min_value=-(10**9), max_value=10**9, allow_nan=False, places=4)


@given(
    low=_SMALL,
    high=_SMALL,
    atom=st.sampled_from(METRIC_ATOMS),
    prefixes=st.tuples(*[st.sampled_from(sorted(PREFIX_EXPONENTS))] * 2),
    denominator=st.sampled_from(["", "/L", "/dL", "/min", "/h"]),
)
def test_range_inverted_compares_prefixed_bounds(
    low: Decimal, high: Decimal, atom: str, prefixes: tuple[str, str], denominator: str
) -> None:
    units = tuple(prefix + atom + denominator for prefix in prefixes)
    expected = (
        Fraction(low) * Fraction(10) ** PREFIX_EXPONENTS[prefixes[0]]
        > Fraction(high) * Fraction(10) ** PREFIX_EXPONENTS[prefixes[1]]
    )
    assert range_inverted(str(low), str(high), *units) is expected


@given(unit=st.text(max_size=12), value=st.text(max_size=8))
def test_magnitude_never_raises(unit: str, value: str) -> None:
    found: Any = magnitude(value, unit)
    assert found is None or isinstance(found[1], Fraction)


@given(
    unit=st.text(alphabet="mgLdu/.{}[]IU10*^hin%as-2", max_size=10),
    low=_SMALL,
    high=_SMALL,
)
def test_one_unit_is_compared_as_numbers(unit: str, low: Decimal, high: Decimal) -> None:
    """Bounds in one unit, known or not, compare as numbers, as before units counted."""
    assert range_inverted(str(low), str(high), unit, f" {unit} ") is (low > high)
