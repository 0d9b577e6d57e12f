"""IHE PCC Severity entry (1.3.6.1.4.1.19376.1.5.3.1.4.1): values H, M, L of HL7 v3
ObservationValue (SeverityObservation, 2.16.840.1.113883.5.1063) reach
AllergyIntolerance.reaction.severity through mappings/codemaps/CdaAllergySeverity.csv, as
French CDA (ANS CI-SIS, IHE PCC based) writes them."""

from __future__ import annotations

import pytest

from converter import Converter, ConverterConfig

from ._support import SAMPLES

VSM = SAMPLES / "VSM_synthese-medicale.xml"
SAMPLE_VALUE = (
    '<value xsi:type="CD" code="M" codeSystem="2.16.840.1.113883.5.1063" '
    'codeSystemName="ObservationValue" displayName="Modérée"/>'
)


def _reaction_severities(code: str | None = None) -> tuple[list[str | None], tuple[str, ...]]:
    xml = VSM.read_text(encoding="utf-8")
    assert xml.count(SAMPLE_VALUE) == 1
    if code is not None:
        xml = xml.replace(SAMPLE_VALUE, SAMPLE_VALUE.replace('code="M"', f'code="{code}"'))
    [conversion] = Converter(ConverterConfig()).convert(xml.encode("utf-8"), input_type="cda")
    allergies = [
        e["resource"]
        for e in conversion.bundle["entry"]
        if e["resource"]["resourceType"] == "AllergyIntolerance"
    ]
    severities = [r.get("severity") for a in allergies for r in a.get("reaction", [])]
    return severities, conversion.warnings


def test_vsm_sample_reaction_is_moderate() -> None:
    assert _reaction_severities() == (["moderate"], ())


@pytest.mark.parametrize(("code", "expected"), [("H", "severe"), ("M", "moderate"), ("L", "mild")])
def test_ihe_severity_codes(code: str, expected: str) -> None:
    assert _reaction_severities(code) == ([expected], ())


def test_other_code_is_still_left_out_with_a_warning() -> None:
    severities, warnings = _reaction_severities("X")
    assert severities == [None]
    [warning] = warnings
    assert "code map CdaAllergySeverity" in warning
