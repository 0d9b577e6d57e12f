"""The Nutrition, Reason for Referral and Advance Directives sections."""

from __future__ import annotations

from typing import Any

from converter import Converter, ConverterConfig

from ._support import cda

ASSESSMENT = (
    '<entryRelationship typeCode="SUBJ"><observation classCode="OBS" moodCode="EVN">'
    '<templateId root="2.16.840.1.113883.10.20.22.4.138"/>'
    '<id root="1.2.250.1.999.8" extension="A{n}"/>'
    '<code code="75303-8" codeSystem="2.16.840.1.113883.6.1"/>'
    '<statusCode code="completed"/><effectiveTime value="20240512"/>'
    '<value xsi:type="CD" code="{code}" codeSystem="2.16.840.1.113883.6.96"/>'
    "</observation></entryRelationship>"
)
NUTRITION = (
    '<component><section><templateId root="2.16.840.1.113883.10.20.22.2.57"/>'
    '<code code="61144-2" codeSystem="2.16.840.1.113883.6.1"/><title>Nutrition</title>'
    "<text>Well nourished</text>"
    '<entry><observation classCode="OBS" moodCode="EVN">'
    '<templateId root="2.16.840.1.113883.10.20.22.4.124"/>'
    '<id root="1.2.250.1.999.8" extension="S1"/>'
    '<code code="75305-3" codeSystem="2.16.840.1.113883.6.1"/>'
    '<statusCode code="completed"/><effectiveTime value="20240512"/>'
    '<value xsi:type="CD" code="248324001" codeSystem="2.16.840.1.113883.6.96"/>'
    + ASSESSMENT.format(n=1, code="386619000")
    + ASSESSMENT.format(n=2, code="430186007")
    + "</observation></entry>"
    '<entry><act classCode="ACT" moodCode="INT">'
    '<templateId root="2.16.840.1.113883.10.20.22.4.130"/>'
    '<id root="1.2.250.1.999.8" extension="R1"/>'
    '<code code="61310001" codeSystem="2.16.840.1.113883.6.96" displayName="Nutrition education"/>'
    '<statusCode code="active"/><effectiveTime value="20240601"/></act></entry>'
    '<entry><encounter classCode="ENC" moodCode="EVN"><id root="1.2.250.1.999.8" extension="E"/>'
    "</encounter></entry>"
    "</section></component>"
)
REFERRAL = (
    '<component><section><templateId root="1.3.6.1.4.1.19376.1.5.3.1.3.1"/>'
    '<code code="42349-1" codeSystem="2.16.840.1.113883.6.1"/><title>Reason for referral</title>'
    "<text>Cardiology consult</text>"
    '<entry><act classCode="PCPR" moodCode="RQO">'
    '<templateId root="2.16.840.1.113883.10.20.22.4.140"/>'
    '<id root="1.2.250.1.999.9" extension="REF-1"/>'
    '<code code="44383000" codeSystem="2.16.840.1.113883.6.96" '
    'displayName="Patient referral for consultation"/>'
    '<statusCode code="active"/><effectiveTime value="20240315"/>'
    '<priorityCode code="A" codeSystem="2.16.840.1.113883.5.7"/></act></entry>'
    "</section></component>"
)

DIRECTIVES = (
    '<component><section><templateId root="2.16.840.1.113883.10.20.22.2.21.1"/>'
    '<code code="42348-3" codeSystem="2.16.840.1.113883.6.1"/><title>Advance directives</title>'
    "<text>Not for resuscitation</text>"
    '<entry><organizer classCode="CLUSTER" moodCode="EVN">'
    '<templateId root="2.16.840.1.113883.10.20.22.4.108"/>'
    '<id root="1.2.250.1.999.10" extension="ORG-1"/>'
    '<code code="45473-6" codeSystem="2.16.840.1.113883.6.1"/><statusCode code="completed"/>'
    '<component><observation classCode="OBS" moodCode="EVN">'
    '<templateId root="2.16.840.1.113883.10.20.22.4.48" extension="2015-08-01"/>'
    '<id root="1.2.250.1.999.10" extension="AD-1"/>'
    '<code code="75278-2" codeSystem="2.16.840.1.113883.6.1"/><statusCode code="completed"/>'
    '<effectiveTime><low value="20110219"/><high value="20300101"/></effectiveTime>'
    '<value xsi:type="CD" code="304253006" codeSystem="2.16.840.1.113883.6.96"/>'
    "</observation></component></organizer></entry>"
    "</section></component>"
)


def resources(bundle: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {
        e["resource"]["id"]: e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == kind
    }


def section_refs(bundle: dict[str, Any], loinc: str) -> list[str]:
    (composition,) = resources(bundle, "Composition").values()
    (found,) = [s for s in composition["section"] if s["code"]["coding"][0]["code"] == loinc]
    return [ref["reference"] for ref in found.get("entry", [])]


def test_nutritional_status_keeps_its_value_and_its_assessments_as_members() -> None:
    conversion = Converter(ConverterConfig()).convert_document(cda(body=NUTRITION).encode())
    observations = resources(conversion.bundle, "Observation")
    requests = resources(conversion.bundle, "ServiceRequest")
    status_ref, request_ref = section_refs(conversion.bundle, "61144-2")
    status = observations[status_ref.split("/")[1]]
    assert status["valueCodeableConcept"]["coding"][0]["code"] == "248324001"
    assert status["category"][0]["coding"][0]["code"] == "exam"
    members = [observations[m["reference"].split("/")[1]] for m in status["hasMember"]]
    assert [m["valueCodeableConcept"]["coding"][0]["code"] for m in members] == [
        "386619000",
        "430186007",
    ]
    recommendation = requests[request_ref.split("/")[1]]
    assert (recommendation["intent"], recommendation["status"]) == ("plan", "active")
    assert recommendation["code"]["coding"][0]["code"] == "61310001"
    assert any("Nutrition section: entry encounter" in w for w in conversion.warnings)


def test_a_patient_referral_becomes_a_service_request() -> None:
    conversion = Converter(ConverterConfig()).convert_document(cda(body=REFERRAL).encode())
    (referral,) = resources(conversion.bundle, "ServiceRequest").values()
    assert section_refs(conversion.bundle, "42349-1") == [f"ServiceRequest/{referral['id']}"]
    assert (referral["intent"], referral["status"], referral["priority"]) == (
        "order",
        "active",
        "asap",
    )
    assert referral["code"]["coding"][0]["code"] == "44383000"
    assert referral["occurrenceDateTime"] == "2024-03-15"
    assert not conversion.warnings


def test_advance_directives_become_us_core_adi_observations() -> None:
    conversion = Converter(ConverterConfig()).convert_document(cda(body=DIRECTIVES).encode())
    observations = resources(conversion.bundle, "Observation")
    (panel_ref,) = section_refs(conversion.bundle, "42348-3")
    panel = observations[panel_ref.split("/")[1]]
    assert panel["code"]["coding"][0]["code"] == "45473-6"
    (member_ref,) = panel["hasMember"]
    directive = observations[member_ref["reference"].split("/")[1]]
    assert directive["valueCodeableConcept"]["coding"][0]["code"] == "304253006"
    assert directive["effectivePeriod"] == {"start": "2011-02-19", "end": "2030-01-01"}
    for observation in (panel, directive):
        assert observation["category"] == [
            {
                "coding": [
                    {
                        "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-category",
                        "code": "observation-adi-documentation",
                        "display": "Observation ADI Documentation",
                    }
                ]
            }
        ]
    assert not conversion.warnings
