"""The validator's rng-2 check (a Range's low is not above its high) in two UCUM units.

It compared bounds written in one unit only: 1 g to 500 mg passed. Bounds with two UCUM
codes are now converted with @lhncbc/ucum-lhc, the NLM's UCUM library, independently of
the converter's own table (converter/templates/ucum_scale.py). Bounds it cannot convert
into each other are not compared, nor bounds whose annotations differ (see rangeInverted
in tests/r4validator/validate.mjs).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from tests.cda._support import CCD_SAMPLE
from tests.support.r4validator import R4Validator

UCUM = "http://unitsofmeasure.org"
RNG_2 = "Constraint rng-2 not met"


def _quantity(text: str, system: str = UCUM) -> dict[str, Any]:
    """``"1 g"`` as a Quantity, its code the unit as written."""
    value, code = text.split()
    number = float(value)
    return {
        "value": int(number) if number.is_integer() else number,
        "unit": code,
        "system": system,
        "code": code,
    }


def _observation(value_range: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "valueRange": value_range,
    }


def _range(low: str, high: str) -> dict[str, Any]:
    return {"low": _quantity(low), "high": _quantity(high)}


def _rng2(issues: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(i["severity"], i["path"]) for i in issues if i["message"].startswith(RNG_2)]


INVERTED = [
    pytest.param("1 g", "500 mg", id="1g-500mg"),
    pytest.param("1 mg", "500 ug", id="1mg-500ug"),
    pytest.param("2 /min", "60 /h", id="2-per-min-60-per-h"),
    pytest.param("5 mg", "3 mg", id="same-unit"),
    pytest.param("1.5 h", "80 min", id="1.5h-80min"),
    pytest.param("200 mg/dL", "1 g/L", id="200mg/dL-1g/L"),
    pytest.param("38 Cel", "100 [degF]", id="38Cel-100degF"),  # 100 °F is 37.8 °C
    pytest.param("90 mL/min/{1.73_m2}", "3 L/h/{1.73_m2}", id="same-annotation"),
]


@pytest.mark.parametrize(("low", "high"), INVERTED)
def test_a_range_inverted_in_ucum_breaks_rng_2(
    r4validator: R4Validator, low: str, high: str
) -> None:
    issues = r4validator.validate(_observation(_range(low, high)))
    assert _rng2(issues) == [("error", "Observation.value[x]")], issues
    assert len(issues) == 1, issues


@pytest.mark.parametrize(
    ("low", "high"),
    [
        pytest.param("500 mg", "1 g", id="500mg-1g"),
        pytest.param("500 ug", "1 mg", id="500ug-1mg"),
        pytest.param("1 g", "1000 mg", id="equal-1g-1000mg"),
        # Equal: 60 /h is 1 /min in floats too, and 3 10*3/uL is 2.9999999999999996 10*9/L.
        pytest.param("1 /min", "60 /h", id="equal-1-per-min-60-per-h"),
        pytest.param("3 10*9/L", "3 10*3/uL", id="equal-10*9/L-10*3/uL"),
        # Equal across the offset of the temperature scales (each way, within float rounding).
        pytest.param("0 Cel", "273.15 K", id="equal-0Cel-273.15K"),
        pytest.param("0 Cel", "32 [degF]", id="equal-0Cel-32degF"),
        pytest.param("50 [degF]", "10 Cel", id="equal-50degF-10Cel"),
        # 0 °F in Cel to a double's precision: converted back, -5.7e-14 °F, below 0 by far
        # more than 1e-9 of it; low converted into high's unit shows the bounds equal.
        pytest.param("0 [degF]", "-17.77777777777778 Cel", id="equal-0degF-in-Cel"),
        # Not comparable: not compared, as before.
        pytest.param("1000 mg", "1 mL", id="mass-volume"),
        pytest.param("5 tablet", "2 mg", id="unknown-code"),
        pytest.param("5 foo", "3 bar", id="two-unknown-codes"),
        pytest.param("5 [IU]", "2 m[IU]", id="arbitrary-units"),
        pytest.param("5 meq", "2 mmol", id="equivalents-moles"),
        # UCUM reads annotations as 1 (ucum-lhc converts 5 {tbl} into 5 {capsule}); the
        # converter writes such bounds as a Range, not compared: neither does the validator.
        pytest.param("5 {tbl}", "2 {capsule}", id="two-annotations"),
        pytest.param("5 mg{tbl}", "2 mg", id="annotation-and-none"),
    ],
)
def test_an_ordered_or_incomparable_range_is_valid(
    r4validator: R4Validator, low: str, high: str
) -> None:
    assert r4validator.validate(_observation(_range(low, high))) == []


def test_bounds_outside_ucum_are_compared_only_in_one_unit(r4validator: R4Validator) -> None:
    other = "http://example.org/units"
    two_systems = {"low": _quantity("1 g"), "high": _quantity("500 mg", other)}
    assert r4validator.validate(_observation(two_systems)) == []
    not_ucum = {"low": _quantity("1 g", other), "high": _quantity("500 mg", other)}
    assert r4validator.validate(_observation(not_ucum)) == []
    one_unit = {"low": _quantity("5 g", other), "high": _quantity("3 g", other)}
    assert _rng2(r4validator.validate(_observation(one_unit))) == [
        ("error", "Observation.value[x]")
    ]


def test_ranges_in_a_bundle_are_checked_in_their_entries(r4validator: R4Validator) -> None:
    """A doseRange and a valueRange, each Range in two units, inside a transaction."""
    request = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": "amoxicillin"},
        "subject": {"display": "Marie Durand"},
        "dosageInstruction": [{"doseAndRate": [{"doseRange": _range("1 g", "500 mg")}]}],
    }
    ordered = _observation(_range("500 mg", "1 g"))
    inverted = _observation(_range("1 mg", "500 ug"))
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:00000000-0000-4000-8000-{i:012d}",
                "resource": resource,
                "request": {"method": "POST", "url": resource["resourceType"]},
            }
            for i, resource in enumerate((request, ordered, inverted), start=1)
        ],
    }
    issues = r4validator.validate(bundle)
    assert sorted(_rng2(issues)) == [
        ("error", "Bundle.entry[0].resource.dosageInstruction[0].doseAndRate[0].dose[x]"),
        ("error", "Bundle.entry[2].resource.value[x]"),
    ], issues
    assert len(issues) == 2, issues


# -- what the converter writes ------------------------------------------------------------
_FIRST_RESULT_VALUE = re.compile(
    rb'(<observation classCode="OBS" moodCode="EVN">\s*'
    rb'<templateId root="2.16.840.1.113883.10.20.22.4.2".*?)(<value [^>]*/>)',
    re.DOTALL,
)


def _cda_with_interval(low: str, high: str) -> bytes:
    """The CCD sample whose first result's value is an IVL_PQ from ``low`` to ``high``."""
    ivl = (
        f'<value xsi:type="IVL_PQ"><low value="{low.split()[0]}" unit="{low.split()[1]}"/>'
        f'<high value="{high.split()[0]}" unit="{high.split()[1]}"/></value>'
    )
    document = CCD_SAMPLE.read_bytes()
    found = _FIRST_RESULT_VALUE.search(document)
    assert found is not None
    return document[: found.start(2)] + ivl.encode() + document[found.end(2) :]


@pytest.mark.parametrize(
    ("low", "high"),
    [
        ("500 mg", "1 g"),
        ("1 mg", "1500 mcg"),  # written ug
        ("1 g", "1000 mg"),
        ("60 min", "1 h"),
        ("1 /min", "60 /h"),
        ("5 g", "2 mL"),
        ("5 {tbl}", "2 {capsule}"),
        ("5 tablet", "2 mg"),  # written without a code
    ],
)
def test_the_converters_ranges_in_two_units_are_valid(
    r4validator: R4Validator, low: str, high: str
) -> None:
    """The IVL_PQ values the converter writes as a Range (ordered, or not comparable in its
    UCUM table) raise no rng-2 error in ucum-lhc's."""
    converter = Converter(ConverterConfig(default_timezone="Europe/Paris"))
    [conversion] = converter.convert(_cda_with_interval(low, high), input_type="cda")
    ranges = [
        entry["resource"]["valueRange"]
        for entry in conversion.bundle["entry"]
        if "valueRange" in entry["resource"]
    ]
    assert len(ranges) == 1 and ranges[0]["low"]["unit"] != ranges[0]["high"]["unit"], ranges
    assert r4validator.validate(conversion.bundle) == []
