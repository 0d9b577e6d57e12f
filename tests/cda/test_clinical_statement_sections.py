"""Sections whose entries are the common clinical statements (operative and procedure
notes' Anesthesia, Planned Procedure and Procedure Indications; the Physical Exam and its
subsections; a Diagnostic Imaging Report's Findings): each entry becomes the resource its
template gives everywhere else, listed in its Composition section, whose narrative stays
the section text. Each section is found by its templateId and, without one, by its code."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from tests.support.r4validator import R4Validator

from ._support import cda

LOINC = "2.16.840.1.113883.6.1"
DCM = "1.2.840.10008.2.16.4"

PROCEDURE = (
    '<entry><procedure classCode="PROC" moodCode="EVN">'
    '<templateId root="2.16.840.1.113883.10.20.22.4.14" extension="2014-06-09"/>'
    '<id root="1.2.250.1.999.12" extension="AN-1"/>'
    '<code code="50697003" codeSystem="2.16.840.1.113883.6.96" displayName="General anesthesia"/>'
    '<statusCode code="completed"/><effectiveTime value="20240312"/></procedure></entry>'
)
MEDICATION = (
    '<entry><substanceAdministration classCode="SBADM" moodCode="EVN">'
    '<templateId root="2.16.840.1.113883.10.20.22.4.16" extension="2014-06-09"/>'
    '<id root="1.2.250.1.999.12" extension="AN-2"/><statusCode code="completed"/>'
    '<effectiveTime xsi:type="IVL_TS" value="20240312"/>'
    '<consumable><manufacturedProduct classCode="MANU">'
    '<templateId root="2.16.840.1.113883.10.20.22.4.23" extension="2014-06-09"/>'
    '<manufacturedMaterial><code code="153475" codeSystem="2.16.840.1.113883.6.88" '
    'displayName="Propofol 20 MG/ML Injectable Suspension"/></manufacturedMaterial>'
    "</manufacturedProduct></consumable></substanceAdministration></entry>"
)
PLANNED = (
    '<entry><procedure classCode="PROC" moodCode="RQO">'
    '<templateId root="2.16.840.1.113883.10.20.22.4.41" extension="2014-06-09"/>'
    '<id root="1.2.250.1.999.12" extension="PP-1"/>'
    '<code code="274025005" codeSystem="2.16.840.1.113883.6.96" '
    'displayName="Colonic polypectomy"/><statusCode code="new"/></procedure></entry>'
)
INDICATION = (
    '<entry><observation classCode="OBS" moodCode="EVN">'
    '<templateId root="2.16.840.1.113883.10.20.22.4.19" extension="2014-06-09"/>'
    '<id root="1.2.250.1.999.12" extension="IN-1"/>'
    '<code code="75321-0" codeSystem="2.16.840.1.113883.6.1" displayName="Clinical finding"/>'
    '<statusCode code="completed"/><effectiveTime><low value="20240301"/></effectiveTime>'
    '<value xsi:type="CD" code="414992000" codeSystem="2.16.840.1.113883.6.96" '
    'displayName="Painless rectal bleeding"/></observation></entry>'
)
WOUND = (
    '<entry><observation classCode="OBS" moodCode="EVN">'
    '<templateId root="2.16.840.1.113883.10.20.22.4.114"/>'
    '<id root="1.2.250.1.999.12" extension="WO-1"/>'
    '<code code="ASSERTION" codeSystem="2.16.840.1.113883.5.4"/><statusCode code="completed"/>'
    '<effectiveTime><low value="20240312"/></effectiveTime>'
    '<value xsi:type="CD" code="421076008" codeSystem="2.16.840.1.113883.6.96" '
    'displayName="Pressure ulcer stage 2"/>'
    '<targetSiteCode code="182295001" codeSystem="2.16.840.1.113883.6.96"/>'
    '<entryRelationship typeCode="COMP"><observation classCode="OBS" moodCode="EVN">'
    '<templateId root="2.16.840.1.113883.10.20.22.4.133"/>'
    '<id root="1.2.250.1.999.12" extension="WO-2"/>'
    '<code code="401239006" codeSystem="2.16.840.1.113883.6.96" displayName="Width of wound"/>'
    '<statusCode code="completed"/><effectiveTime value="20240312"/>'
    '<value xsi:type="PQ" value="2" unit="cm"/></observation></entryRelationship>'
    "</observation></entry>"
)
TEXT_OBSERVATION = (
    '<entry><observation classCode="OBS" moodCode="EVN">'
    '<templateId root="2.16.840.1.113883.10.20.6.2.12"/>'
    '<code code="121071" codeSystem="1.2.840.10008.2.16.4" displayName="Finding"/>'
    '<value xsi:type="ED"><reference value="#finding-1"/></value></observation></entry>'
)


@dataclass(frozen=True)
class Case:
    template: str
    code: str
    code_system: str
    narrative: str
    entries: str
    #: resource type → the code (or value code) each listed resource carries
    expected: dict[str, list[str]]


CASES = {
    "anesthesia": Case(
        "2.16.840.1.113883.10.20.22.2.25",
        "59774-0",
        LOINC,
        "General anesthesia, propofol",
        PROCEDURE + MEDICATION,
        {"Procedure": ["50697003"], "MedicationRequest": ["153475"]},
    ),
    "planned procedure": Case(
        "2.16.840.1.113883.10.20.22.2.30",
        "59772-4",
        LOINC,
        "Polypectomy planned",
        PLANNED,
        {"ServiceRequest": ["274025005"]},
    ),
    "procedure indications": Case(
        "2.16.840.1.113883.10.20.22.2.29",
        "59768-2",
        LOINC,
        "Painless rectal bleeding",
        INDICATION,
        {"Condition": ["414992000"]},
    ),
    "physical exam": Case(
        "2.16.840.1.113883.10.20.2.10",
        "29545-1",
        LOINC,
        "Stage 2 pressure ulcer, left knee",
        WOUND,
        {"Observation": ["421076008", "401239006"]},
    ),
    "imaging findings": Case(
        "2.16.840.1.113883.10.20.6.1.2",
        "121070",
        DCM,
        '<paragraph ID="finding-1">No acute cardiopulmonary process.</paragraph>',
        TEXT_OBSERVATION,
        {"Observation": ["121071"]},
    ),
}


def _section(case: Case, *, with_template: bool) -> str:
    template = f'<templateId root="{case.template}"/>' if with_template else ""
    return (
        f'<component><section>{template}<code code="{case.code}" codeSystem="{case.code_system}"/>'
        f"<title>Section {case.code}</title><text>{case.narrative}</text>{case.entries}"
        "</section></component>"
    )


def _by_reference(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"]
        for e in bundle["entry"]
    }


def _code(resource: dict[str, Any]) -> str:
    if resource["resourceType"] == "MedicationRequest":
        return ""  # compared through its Medication
    if resource["resourceType"] == "Observation" and resource["code"]["coding"][0]["code"] == (
        "ASSERTION"
    ):
        return str(resource["valueCodeableConcept"]["coding"][0]["code"])
    return str(resource["code"]["coding"][0]["code"])


@pytest.mark.parametrize("with_template", [True, False], ids=["by templateId", "by code"])
@pytest.mark.parametrize("name", CASES)
def test_section_entries_become_their_resources(
    name: str, with_template: bool, r4validator: R4Validator
) -> None:
    case = CASES[name]
    conversion = Converter(ConverterConfig()).convert_document(
        cda(body=_section(case, with_template=with_template)).encode()
    )
    assert conversion.warnings == ()
    bundle = conversion.bundle
    index = _by_reference(bundle)
    [composition] = [r for r in index.values() if r["resourceType"] == "Composition"]
    [section] = composition["section"]
    listed = [ref["reference"] for ref in section["entry"]]
    kinds = sorted({ref.split("/")[0] for ref in listed})
    assert kinds == sorted(case.expected)
    for kind, codes in case.expected.items():
        found = [_code(index[ref]) for ref in listed if ref.startswith(kind + "/")]
        if kind == "MedicationRequest":
            found = [
                index[index[ref]["medicationReference"]["reference"]]["code"]["coding"][0]["code"]
                for ref in listed
                if ref.startswith(kind + "/")
            ]
        if kind == "Observation" and name == "physical exam":
            # the wound and, as its hasMember, its measurement
            [wound] = [index[ref] for ref in listed]
            members = [index[m["reference"]] for m in wound["hasMember"]]
            found = [_code(wound)] + [_code(m) for m in members]
        assert found == codes
    # The narrative is still the section's text.
    assert section["text"]["status"] == "generated"
    text = case.narrative.split(">")[1].split("<")[0] if "<" in case.narrative else case.narrative
    assert text in section["text"]["div"]
    assert r4validator.validate(bundle) == [], json.dumps(r4validator.validate(bundle)[:3])


def test_entry_facts() -> None:
    """What each section gives its resources beyond the code."""
    body = "".join(_section(case, with_template=True) for case in CASES.values())
    bundle = Converter(ConverterConfig()).convert_document(cda(body=body).encode()).bundle
    index = _by_reference(bundle)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in index.values():
        by_type.setdefault(resource["resourceType"], []).append(resource)
    [request] = by_type["ServiceRequest"]
    assert request["intent"] == "order"  # moodCode RQO
    assert "CarePlan" not in by_type  # a planned procedure is not a plan of treatment
    [condition] = by_type["Condition"]
    assert condition["category"][0]["coding"][0]["code"] == "encounter-diagnosis"
    observations = {o["code"]["coding"][0]["code"]: o for o in by_type["Observation"]}
    exam = [c["coding"][0]["code"] for c in observations["ASSERTION"]["category"]]
    assert exam == ["exam"]
    assert observations["401239006"]["category"][0]["coding"][0]["code"] == "exam"
    finding = observations["121071"]
    assert finding["category"][0]["coding"][0]["code"] == "imaging"
    assert finding["valueString"] == "No acute cardiopulmonary process."


def test_physical_exam_subsections_are_converted_each_in_place() -> None:
    """A Physical Findings of Skin subsection's entries are listed in the nested section,
    the Physical Exam keeping its own narrative."""
    body = (
        '<component><section><templateId root="2.16.840.1.113883.10.20.2.10"/>'
        '<code code="29545-1" codeSystem="2.16.840.1.113883.6.1"/><title>Physical exam</title>'
        "<text>See below</text>"
        '<component><section><templateId root="2.16.840.1.113883.10.20.22.2.63"/>'
        '<code code="8709-8" codeSystem="2.16.840.1.113883.6.1"/><title>Skin</title>'
        f"<text>Pressure ulcer</text>{WOUND}</section></component>"
        "</section></component>"
    )
    conversion = Converter(ConverterConfig()).convert_document(cda(body=body).encode())
    assert conversion.warnings == ()
    [composition] = [
        e["resource"]
        for e in conversion.bundle["entry"]
        if e["resource"]["resourceType"] == "Composition"
    ]
    [exam] = composition["section"]
    assert "entry" not in exam and "See below" in exam["text"]["div"]
    [skin] = exam["section"]
    assert [ref["reference"].split("/")[0] for ref in skin["entry"]] == ["Observation"]
    assert "Pressure ulcer" in skin["text"]["div"]


def test_an_entry_these_sections_do_not_convert_is_named_in_a_warning() -> None:
    act = (
        '<entry><act classCode="ACT" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.6.2.5"/>'
        '<code code="70548" codeSystem="2.16.840.1.113883.6.12"/></act></entry>'
    )
    case = CASES["imaging findings"]
    body = _section(
        Case(case.template, case.code, case.code_system, case.narrative, act, {}),
        with_template=True,
    )
    conversion = Converter(ConverterConfig()).convert_document(cda(body=body).encode())
    [warning] = conversion.warnings
    assert "2.16.840.1.113883.10.20.6.2.5" in warning and "not converted" in warning


def test_an_imaging_report_history_is_not_an_imaging_finding() -> None:
    """The Diagnostic Imaging Report's History section (11329-0): its text observations
    are the clinical history, without the imaging category."""
    history = TEXT_OBSERVATION.replace('code="121071"', 'code="121060"').replace(
        'displayName="Finding"', 'displayName="History"'
    )
    body = (
        '<component><section><code code="11329-0" codeSystem="2.16.840.1.113883.6.1"/>'
        '<title>History</title><text><paragraph ID="finding-1">Sore throat.</paragraph></text>'
        f"{history}</section></component>"
    )
    conversion = Converter(ConverterConfig()).convert_document(cda(body=body).encode())
    assert conversion.warnings == ()
    [observation] = [
        e["resource"]
        for e in conversion.bundle["entry"]
        if e["resource"]["resourceType"] == "Observation"
    ]
    assert observation["code"]["coding"][0]["code"] == "121060"
    assert observation["valueString"] == "Sore throat."
    assert "category" not in observation
