"""Second CDA review: clinical content that reused ids or negation must not corrupt.

* Device identity is the product instance id AND the device code, DeviceUseStatement's
  the patient, the supply id AND the device code: HL7's CCD example gives a pacemaker,
  an upper GI prosthesis and a cane one product instance id, and two of the supplies one
  supply id. Before, the three devices became one Device whose type carried the three
  codes as codings of one concept (the cane's statement pointed at a "Cardiac
  Pacemaker"), and the prosthesis' statement was dropped ("emitted twice").
* A negated Problem Observation whose value is the generic 55607006 "Problem" is C-CDA's
  "No Known Problems": the Condition is the negated concept (SNOMED 160245001), not a
  refuted "Problem" whose text ("No known health problems") then read as its opposite.
  Any other negated problem is refuted without the originalText (the narrative of the
  negated statement): "refuted: No history of asthma" would assert asthma.
"""

from __future__ import annotations

from typing import Any

from tests.support.r4validator import R4Validator

from ._support import cda, convert_document, resources_of

SNOMED = "2.16.840.1.113883.6.96"


def _by_reference(bundle: dict[str, Any], reference: str) -> dict[str, Any]:
    kind, _, rid = reference.partition("/")
    [found] = [r for r in resources_of(bundle, kind) if r["id"] == rid]
    return found


def _supply(supply_id: str, code: str, display: str, end: str) -> str:
    return (
        '<entry><supply classCode="SPLY" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.50" extension="2014-06-09"/>'
        f'<id root="{supply_id}"/><statusCode code="completed"/>'
        f'<effectiveTime xsi:type="IVL_TS"><high value="{end}"/></effectiveTime>'
        '<participant typeCode="PRD"><participantRole classCode="MANU">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.37"/>'
        '<id root="24993f33-6222-41ce-add6-37a9d3da6acb"/>'
        f'<playingDevice><code code="{code}" codeSystem="{SNOMED}" displayName="{display}"/>'
        "</playingDevice></participantRole></participant></supply></entry>"
    )


def _equipment(entries: str) -> str:
    return (
        '<component><section><templateId root="2.16.840.1.113883.10.20.22.2.23" '
        'extension="2014-06-09"/>'
        '<code code="46264-8" codeSystem="2.16.840.1.113883.6.1"/><title>Equipment</title>'
        f"<text>Equipment</text>{entries}</section></component>"
    )


def test_devices_sharing_an_instance_id_stay_distinct(r4validator: R4Validator) -> None:
    body = _equipment(
        _supply("39b5f1b4-a8e1-4ad7-8849-0deab10c97b1", "14106009", "cardiac pacemaker", "20130703")
        + _supply("39b5f1b4-a8e1-4ad7-8849-0deab10c97b1", "303406003", "GI prosthesis", "20130103")
        + _supply("cf75f5be-1da0-4256-8276-94b7fc73f9f9", "87405001", "cane", "20030202")
    )
    bundle, warnings = convert_document(cda(body=body))
    statements = resources_of(bundle, "DeviceUseStatement")
    # Each statement points at a Device carrying its own device code, and only it.
    pairs = sorted(
        (
            s["timingPeriod"]["end"],
            [c["code"] for c in _by_reference(bundle, s["device"]["reference"])["type"]["coding"]],
        )
        for s in statements
    )
    assert pairs == [
        ("2003-02-02", ["87405001"]),
        ("2013-01-03", ["303406003"]),
        ("2013-07-03", ["14106009"]),
    ]
    assert len(resources_of(bundle, "Device")) == 3
    assert not [w for w in warnings if "emitted twice" in w]
    assert r4validator.validate(bundle) == []


def _problem(value: str, *, negated: bool, narrative_id: str = "p1") -> str:
    negation = ' negationInd="true"' if negated else ""
    return (
        '<entry><act classCode="ACT" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.3" extension="2015-08-01"/>'
        '<id root="1.2.250.1.999.31" extension="CONC-1"/>'
        '<code code="CONC" codeSystem="2.16.840.1.113883.5.6"/><statusCode code="active"/>'
        '<effectiveTime><low value="20150722"/></effectiveTime>'
        '<entryRelationship typeCode="SUBJ">'
        f'<observation classCode="OBS" moodCode="EVN"{negation}>'
        '<templateId root="2.16.840.1.113883.10.20.22.4.4" extension="2015-08-01"/>'
        '<id root="1.2.250.1.999.32" extension="OBS-1"/>'
        f'<code code="55607006" codeSystem="{SNOMED}" displayName="Problem"/>'
        '<statusCode code="completed"/><effectiveTime><low value="20150722"/></effectiveTime>'
        f"{value}</observation></entryRelationship></act></entry>"
    )


def _problems(text: str, entries: str) -> str:
    return (
        '<component><section><templateId root="2.16.840.1.113883.10.20.22.2.5.1" '
        'extension="2015-08-01"/>'
        '<code code="11450-4" codeSystem="2.16.840.1.113883.6.1"/><title>Problems</title>'
        f"<text>{text}</text>{entries}</section></component>"
    )


def test_no_known_problems_is_the_negated_concept(r4validator: R4Validator) -> None:
    value = (
        f'<value xsi:type="CD" code="55607006" codeSystem="{SNOMED}" displayName="Problem">'
        '<originalText><reference value="#p1"/></originalText></value>'
    )
    body = _problems(
        '<content ID="p1">No known health problems</content>', _problem(value, negated=True)
    )
    bundle, _ = convert_document(cda(body=body))
    [condition] = resources_of(bundle, "Condition")
    assert condition["code"]["coding"] == [
        {
            "system": "http://snomed.info/sct",
            "code": "160245001",
            "display": "No current problems or disability",
        }
    ]
    assert condition["code"]["text"] == "No known health problems"
    # A positive statement of absence: not a refuted "Problem".
    assert "verificationStatus" not in condition
    assert condition["clinicalStatus"]["coding"][0]["code"] == "active"
    assert r4validator.validate(bundle) == []


def test_a_refuted_problem_does_not_carry_its_negated_narrative() -> None:
    value = (
        f'<value xsi:type="CD" code="195967001" codeSystem="{SNOMED}" displayName="Asthma">'
        '<originalText><reference value="#p1"/></originalText></value>'
    )
    body = _problems(
        '<content ID="p1">No history of asthma</content>', _problem(value, negated=True)
    )
    bundle, _ = convert_document(cda(body=body))
    [condition] = resources_of(bundle, "Condition")
    assert condition["verificationStatus"]["coding"][0]["code"] == "refuted"
    assert condition["code"] == {
        "coding": [{"system": "http://snomed.info/sct", "code": "195967001", "display": "Asthma"}]
    }
    # Not negated, the same observation keeps its original text.
    bundle, _ = convert_document(
        cda(body=_problems('<content ID="p1">Asthma</content>', _problem(value, negated=False)))
    )
    [condition] = resources_of(bundle, "Condition")
    assert "verificationStatus" not in condition
    assert condition["code"]["text"] == "Asthma"


def test_a_second_value_is_not_dropped_silently() -> None:
    """C-CDA allows one value per Result / Problem Observation, CDA several: the ones
    FHIR cannot hold are named in a warning, never lost without a word."""
    values = (
        f'<value xsi:type="CD" code="195967001" codeSystem="{SNOMED}" displayName="Asthma"/>'
        f'<value xsi:type="CD" code="73211009" codeSystem="{SNOMED}" displayName="Diabetes"/>'
    )
    result = (
        '<component><section><templateId root="2.16.840.1.113883.10.20.22.2.3.1" '
        'extension="2015-08-01"/>'
        '<code code="30954-2" codeSystem="2.16.840.1.113883.6.1"/><title>Results</title>'
        "<text>Results</text>"
        '<entry><observation classCode="OBS" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.2" extension="2015-08-01"/>'
        '<id root="1.2.250.1.999.41" extension="R-1"/>'
        '<code code="2345-7" codeSystem="2.16.840.1.113883.6.1" displayName="Glucose"/>'
        '<statusCode code="completed"/><effectiveTime value="20240301"/>'
        '<value xsi:type="PQ" value="5.4" unit="mmol/L"/>'
        '<value xsi:type="PQ" value="97" unit="mg/dL"/>'
        "</observation></entry></section></component>"
    )
    bundle, warnings = convert_document(
        cda(body=_problems("Problems", _problem(values, negated=False)) + result)
    )
    [condition] = resources_of(bundle, "Condition")
    assert [c["code"] for c in condition["code"]["coding"]] == ["195967001"]
    [observation] = resources_of(bundle, "Observation")
    assert observation["valueQuantity"]["unit"] == "mmol/L"
    assert len([w for w in warnings if "2 values; only the first" in w]) == 2
