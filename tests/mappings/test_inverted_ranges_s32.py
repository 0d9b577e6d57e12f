"""OBX-5 ranges whose low is above its high (SN ``^10^-^5``, NR ``10^5``).

They were written as a Range breaking FHIR rng-2 (low above high), which a validating
server refuses. They are invalid values now: in strict mode a MappingError at OBX-5 (HL7
error 102, the message answered AE), in lenient mode a warning and no value.
"""

from __future__ import annotations

from typing import Any

import pytest

from converter import Converter, ConverterConfig, MappingError
from tests.mappings.test_oru_values import HEADER
from tests.support.hl7_edit import convert_one, message, resources

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
