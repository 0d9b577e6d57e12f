"""OBX-5 ranges whose low is above its high (SN ``^10^-^5``, NR ``10^5``).

They were written as a Range breaking FHIR rng-2 (low above high), which a validating
server refuses. They are invalid values now: in strict mode a MappingError at OBX-5 (HL7
error 102, the message answered AE), in lenient mode a warning and no value.
"""

from __future__ import annotations

from typing import Any

import pytest

from converter import Converter, ConverterConfig, MappingError
from tests.conftest import REPO_ROOT
from tests.mappings.test_oru_values import HEADER
from tests.support.hl7_edit import convert_one, message, resources, set_field

SAMPLES = REPO_ROOT / "samples" / "hl7v2"
CASES = {"SN": ("^10^-^5", "^5^-^10"), "NR": ("10^5", "5^10")}


def _obx(value_type: str, value: str) -> bytes:
    return message([*HEADER, f"OBX|1|{value_type}|2951-2^Sodium^LN||{value}|mmol/L|||||F"])


def _value(bundle: dict[str, Any]) -> dict[str, Any]:
    [observation] = resources(bundle, "Observation")
    return {k: v for k, v in observation.items() if k.startswith(("value", "dataAbsent"))}


@pytest.mark.parametrize("value_type", CASES)
def test_an_inverted_range_is_refused_in_strict_mode(value_type: str) -> None:
    inverted, ordered = CASES[value_type]
    strict = Converter(ConverterConfig(default_timezone="Europe/Paris"))
    with pytest.raises(MappingError) as caught:
        strict.convert(_obx(value_type, inverted))
    assert caught.value.location == "OBX-5"
    assert caught.value.hl7_error_code == "102"
    assert "low is above its high" in str(caught.value)
    bundle, _ = convert_one(strict, _obx(value_type, ordered))
    assert _value(bundle)["valueRange"]["low"]["value"] == 5


@pytest.mark.parametrize("value_type", CASES)
def test_an_inverted_range_is_left_out_in_lenient_mode(value_type: str) -> None:
    inverted, _ = CASES[value_type]
    lenient = Converter(ConverterConfig(default_timezone="Europe/Paris", strict_values=False))
    bundle, warnings = convert_one(lenient, _obx(value_type, inverted))  # validated
    assert _value(bundle) == {}
    assert [w for w in warnings if "low is above its high" in w and "OBX-5" in w], warnings


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lenient"])
def test_an_encoded_dose_whose_minimum_is_above_its_maximum(strict: bool) -> None:
    """RXE-3 above RXE-4 was a doseRange breaking rng-2."""
    data = (SAMPLES / "RDE_O11_pharmacy-encoded-orders.hl7").read_bytes()
    inverted = set_field(set_field(data, "RXE", 3, "2"), "RXE", 4, "1")
    converter = Converter(ConverterConfig(default_timezone="Europe/Paris", strict_values=strict))
    if strict:
        with pytest.raises(MappingError) as caught:
            converter.convert(inverted)
        assert caught.value.location == "RXE-3" and "above the maximum" in str(caught.value)
    else:
        bundle, warnings = convert_one(converter, inverted)
        doses = [
            dose
            for request in resources(bundle, "MedicationRequest")
            for dosage in request.get("dosageInstruction", [])
            for dose in dosage.get("doseAndRate", [])
        ]
        assert doses and not [dose for dose in doses if "doseRange" in dose]
        assert [w for w in warnings if "above the maximum at RXE-3" in w], warnings
    ordered = set_field(set_field(data, "RXE", 3, "1"), "RXE", 4, "2")
    bundle, _ = convert_one(converter, ordered)
    assert any(
        "doseRange" in dose
        for request in resources(bundle, "MedicationRequest")
        for dosage in request.get("dosageInstruction", [])
        for dose in dosage.get("doseAndRate", [])
    )
