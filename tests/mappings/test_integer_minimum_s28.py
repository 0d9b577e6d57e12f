"""Counts FHIR types as positiveInt or unsignedInt: TQ1-14 / TQ-12 total occurrences
(``Timing.repeat.count``, at least 1), RXE-12 / RXO-13 refills
(``numberOfRepeatsAllowed``, at least 0), XTN-18 preference order (``ContactPoint.rank``,
at least 1). A 0 or -1 there reached the validator: a BundleValidationError naming a FHIR
path and no HL7 field. Now it is bad input at its field, as a word where a number is
due: a MappingError at ``TQ1-14`` (HL7 error 102, the value in ``detail`` only) by
default, dropped with a warning naming the field in lenient mode. Invented order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig, MappingError
from tests.support.hl7_edit import convert_one, resources, set_field
from tests.support.r4validator import R4Validator

SAMPLE = (
    Path(__file__).resolve().parents[2]
    / "samples"
    / "hl7v2"
    / "RDE_O11_pharmacy-encoded-orders.hl7"
)


@pytest.fixture(scope="module")
def lenient() -> Converter:
    return Converter(ConverterConfig(default_timezone="Europe/Paris", strict_values=False))


def _first_request(bundle: dict[str, Any]) -> dict[str, Any]:
    return resources(bundle, "MedicationRequest")[0]


@pytest.mark.parametrize(
    ("segment", "position", "value", "where"),
    [
        ("TQ1", 14, "0", "TQ1-14"),
        ("TQ1", 14, "-1", "TQ1-14"),
        ("RXE", 12, "-1", "RXE-12"),
    ],
)
def test_a_count_below_its_fhir_minimum_is_bad_input_at_its_field(
    converter: Converter,
    lenient: Converter,
    r4validator: R4Validator,
    segment: str,
    position: int,
    value: str,
    where: str,
) -> None:
    data = set_field(SAMPLE.read_bytes(), segment, position, value)
    with pytest.raises(MappingError) as caught:
        converter.convert(data)
    error = caught.value
    assert error.location is not None and error.location.startswith(where)
    assert error.hl7_error_code == "102"
    assert "below" in str(error) and value not in str(error).split(" at ")[0]
    bundle, warnings = convert_one(lenient, data)
    assert any(where in w and "value dropped" in w for w in warnings)
    assert r4validator.validate(bundle) == []


def test_zero_refills_is_a_valid_unsigned_int(converter: Converter) -> None:
    bundle, _ = convert_one(converter, set_field(SAMPLE.read_bytes(), "RXE", 12, "0"))
    assert _first_request(bundle)["dispenseRequest"]["numberOfRepeatsAllowed"] == 0


def test_one_occurrence_is_a_count(converter: Converter) -> None:
    bundle, _ = convert_one(converter, set_field(SAMPLE.read_bytes(), "TQ1", 14, "1"))
    counts = [
        d["timing"]["repeat"]["count"]
        for d in _first_request(bundle)["dosageInstruction"]
        if "count" in d.get("timing", {}).get("repeat", {})
    ]
    assert counts == [1]


ADMISSION = SAMPLE.parent / "ADT_A01_admission-full.hl7"
HUGE = "99999999999999999999"


@pytest.mark.parametrize(("segment", "position"), [("PID", 25), ("DG1", 15)])
def test_an_integer_beyond_32_bits_is_bad_input_at_its_field(
    converter: Converter,
    lenient: Converter,
    r4validator: R4Validator,
    segment: str,
    position: int,
) -> None:
    """FHIR's integers are 32-bit: a 20-digit birth order or diagnosis priority failed
    validation (``multipleBirthInteger``, ``diagnosis.rank``), naming no field."""
    data = set_field(ADMISSION.read_bytes(), segment, position, HUGE)
    with pytest.raises(MappingError) as caught:
        converter.convert(data)
    assert caught.value.location == f"{segment}-{position}"
    assert "integer out of range" in str(caught.value) and HUGE not in str(caught.value)
    bundle, warnings = convert_one(lenient, data)
    assert any(f"{segment}-{position}" in w and "value dropped" in w for w in warnings)
    assert r4validator.validate(bundle) == []


def test_a_coverage_priority_beyond_32_bits_is_not_an_order(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle, warnings = convert_one(converter, set_field(ADMISSION.read_bytes(), "IN1", 22, HUGE))
    assert resources(bundle, "Coverage")
    assert all("order" not in c for c in resources(bundle, "Coverage"))
    assert any(w.startswith("IN1-22") for w in warnings)
    assert r4validator.validate(bundle) == []


def test_a_duration_or_account_priority_beyond_32_bits_is_left_out(
    converter: Converter, r4validator: R4Validator
) -> None:
    """SCH-9 appointment duration (``minutesDuration``) and IN1-22 in an account
    (``Account.coverage.priority``) are positiveInts computed by the templates: a 20-digit
    value is not written, as a zero or a fraction of a minute is not."""
    siu = set_field((SAMPLE.parent / "SIU_S12_new-appointment.hl7").read_bytes(), "SCH", 9, HUGE)
    bundle, _ = convert_one(converter, siu)
    [appointment] = resources(bundle, "Appointment")
    assert "minutesDuration" not in appointment
    assert r4validator.validate(bundle) == []
    bar = set_field((SAMPLE.parent / "BAR_P01_add-account.hl7").read_bytes(), "IN1", 22, HUGE)
    bundle, _ = convert_one(converter, bar)
    [account] = resources(bundle, "Account")
    assert account["coverage"] and "priority" not in account["coverage"][0]
    assert r4validator.validate(bundle) == []
