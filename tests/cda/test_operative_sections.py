"""Operative and procedure note sections whose entries are Problem Observations."""

from __future__ import annotations

import pytest

from converter import Converter, ConverterConfig

from ._support import cda, resources_of

PROBLEM_OBSERVATION = (
    '<observation classCode="OBS" moodCode="EVN">'
    '<templateId root="2.16.840.1.113883.10.20.22.4.4" extension="2015-08-01"/>'
    '<id root="1.2.250.1.999.5.{n}"/>'
    '<code code="282291009" codeSystem="2.16.840.1.113883.6.96" displayName="Diagnosis"/>'
    '<statusCode code="completed"/><effectiveTime><low value="20240312"/></effectiveTime>'
    '<value xsi:type="CD" code="{code}" codeSystem="2.16.840.1.113883.6.96"/>'
    "</observation>"
)


def _wrapped(act_template: str, n: int, code: str) -> str:
    return (
        f'<entry><act classCode="ACT" moodCode="EVN"><templateId root="{act_template}"/>'
        '<code code="10219-4" codeSystem="2.16.840.1.113883.6.1"/>'
        '<entryRelationship typeCode="SUBJ">'
        + PROBLEM_OBSERVATION.format(n=n, code=code)
        + "</entryRelationship></act></entry>"
    )


def _bare(n: int, code: str) -> str:
    return "<entry>" + PROBLEM_OBSERVATION.format(n=n, code=code) + "</entry>"


SECTIONS = {
    # name: section templateId, LOINC code, entries, the SNOMED codes they hold
    "preoperative diagnosis": (
        "2.16.840.1.113883.10.20.22.2.34",
        "10219-4",
        _wrapped("2.16.840.1.113883.10.20.22.4.65", 1, "74400008"),
        ["74400008"],
    ),
    "postprocedure diagnosis": (
        "2.16.840.1.113883.10.20.22.2.36",
        "59769-0",
        _wrapped("2.16.840.1.113883.10.20.22.4.51", 2, "90458007"),
        ["90458007"],
    ),
    "procedure findings": (
        "2.16.840.1.113883.10.20.22.2.28",
        "59776-5",
        _bare(3, "103679000") + _bare(4, "429430001"),
        ["103679000", "429430001"],
    ),
    "complications": (
        "2.16.840.1.113883.10.20.22.2.37",
        "55109-3",
        _bare(5, "233604007"),
        ["233604007"],
    ),
}


@pytest.mark.parametrize("name", SECTIONS)
def test_each_diagnosis_becomes_an_encounter_diagnosis_condition(name: str) -> None:
    template, loinc, entries, expected_codes = SECTIONS[name]
    body = (
        f'<component><section><templateId root="{template}"/>'
        f'<code code="{loinc}" codeSystem="2.16.840.1.113883.6.1"/>'
        f"<title>{name}</title><text>{name}</text>{entries}</section></component>"
    )
    conversion = Converter(ConverterConfig()).convert_document(cda(body=body).encode())
    conditions = resources_of(conversion.bundle, "Condition")
    assert [c["code"]["coding"][0]["code"] for c in conditions] == expected_codes
    for condition in conditions:
        assert condition["category"][0]["coding"][0]["code"] == "encounter-diagnosis"
    (composition,) = resources_of(conversion.bundle, "Composition")
    (section,) = [s for s in composition["section"] if s["code"]["coding"][0]["code"] == loinc]
    assert [ref["reference"] for ref in section["entry"]] == [
        f"Condition/{c['id']}" for c in conditions
    ]
    assert not any("skipped" in w for w in conversion.warnings), conversion.warnings
