"""Allergy severity: every code of the C-CDA Problem Severity value set reaches
AllergyIntolerance.reaction.severity (mappings/codemaps/CdaAllergySeverity.csv), on the reaction
or on the allergy; a code outside the table leaves the severity out with a warning."""

from __future__ import annotations

from typing import Any

import pytest

from converter import Converter, ConverterConfig

from ._support import cda

#: Severity Observation value (SNOMED CT) → FHIR reaction severity. The first three are
#: the C-CDA on FHIR IG's; the codes between them take their upper bound; Fatal the
#: highest FHIR value.
SEVERITIES = {
    "255604002": "mild",
    "6736007": "moderate",
    "24484000": "severe",
    "371923003": "moderate",  # Mild to moderate
    "371924009": "severe",  # Moderate to severe
    "399166001": "severe",  # Fatal
}

SEVERITY = (
    '<entryRelationship typeCode="SUBJ" inversionInd="true">'
    '<observation classCode="OBS" moodCode="EVN">'
    '<templateId root="2.16.840.1.113883.10.20.22.4.8" extension="2014-06-09"/>'
    '<code code="SEV" codeSystem="2.16.840.1.113883.5.4"/><statusCode code="completed"/>'
    '<value xsi:type="CD" code="{code}" codeSystem="2.16.840.1.113883.6.96"/>'
    "</observation></entryRelationship>"
)


def _allergy(reaction_severity: str = "", allergy_severity: str = "") -> bytes:
    reaction = (
        '<entryRelationship typeCode="MFST" inversionInd="true">'
        '<observation classCode="OBS" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.9" extension="2014-06-09"/>'
        '<id root="1.2.250.1.999.11" extension="R1"/>'
        '<code code="ASSERTION" codeSystem="2.16.840.1.113883.5.4"/>'
        '<statusCode code="completed"/>'
        '<value xsi:type="CD" code="247472004" codeSystem="2.16.840.1.113883.6.96" '
        'displayName="Hives"/>'
        + (SEVERITY.format(code=reaction_severity) if reaction_severity else "")
        + "</observation></entryRelationship>"
    )
    body = (
        '<component><section><templateId root="2.16.840.1.113883.10.20.22.2.6.1"/>'
        '<code code="48765-2" codeSystem="2.16.840.1.113883.6.1"/><title>Allergies</title>'
        "<text>Penicillin: hives</text>"
        '<entry><act classCode="ACT" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.30" extension="2015-08-01"/>'
        '<id root="1.2.250.1.999.11" extension="A1"/>'
        '<code code="CONC" codeSystem="2.16.840.1.113883.5.6"/><statusCode code="active"/>'
        '<entryRelationship typeCode="SUBJ"><observation classCode="OBS" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.7" extension="2014-06-09"/>'
        '<id root="1.2.250.1.999.11" extension="O1"/>'
        '<code code="ASSERTION" codeSystem="2.16.840.1.113883.5.4"/>'
        '<statusCode code="completed"/><effectiveTime><low value="2019"/></effectiveTime>'
        '<value xsi:type="CD" code="416098002" codeSystem="2.16.840.1.113883.6.96"/>'
        '<participant typeCode="CSM"><participantRole classCode="MANU"><playingEntity '
        'classCode="MMAT"><code code="7980" codeSystem="2.16.840.1.113883.6.88" '
        'displayName="Penicillin G"/></playingEntity></participantRole></participant>'
        + reaction
        + (SEVERITY.format(code=allergy_severity) if allergy_severity else "")
        + "</observation></entryRelationship></act></entry></section></component>"
    )
    return cda(body=body).encode()


def _convert(data: bytes) -> tuple[dict[str, Any], tuple[str, ...]]:
    conversion = Converter(ConverterConfig()).convert_document(data)
    [allergy] = [
        e["resource"]
        for e in conversion.bundle["entry"]
        if e["resource"]["resourceType"] == "AllergyIntolerance"
    ]
    return allergy, conversion.warnings


@pytest.mark.parametrize(("code", "expected"), SEVERITIES.items())
def test_reaction_severity_code(code: str, expected: str) -> None:
    allergy, warnings = _convert(_allergy(reaction_severity=code))
    assert [r.get("severity") for r in allergy["reaction"]] == [expected]
    assert warnings == ()


@pytest.mark.parametrize(("code", "expected"), SEVERITIES.items())
def test_allergy_level_severity_applies_to_the_reaction(code: str, expected: str) -> None:
    allergy, warnings = _convert(_allergy(allergy_severity=code))
    assert [r.get("severity") for r in allergy["reaction"]] == [expected]
    assert warnings == ()


def test_the_reaction_own_severity_wins() -> None:
    allergy, _ = _convert(_allergy(reaction_severity="255604002", allergy_severity="371924009"))
    assert [r.get("severity") for r in allergy["reaction"]] == ["mild"]


def test_unknown_severity_code_is_left_out_with_a_warning() -> None:
    allergy, warnings = _convert(_allergy(reaction_severity="442452003"))  # life threatening
    assert "severity" not in allergy["reaction"][0]
    [warning] = warnings
    assert "code map CdaAllergySeverity" in warning and "/value" in warning
    assert "442452003" not in warning  # the place, not the value
