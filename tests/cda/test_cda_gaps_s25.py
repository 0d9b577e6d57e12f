"""Session 25: C-CDA gaps — nullified problems, blood pressure halves, IdNat_Struct.

- A Problem Observation, or the concern act around it, with ``statusCode`` nullified
  ("entered in error") gave a Condition that read as valid (active from its Problem
  Status Observation). It is now ``verificationStatus`` entered-in-error without a
  ``clinicalStatus`` (FHIR con-5), as every other CDA statement writes nullified.
- A nullified systolic or diastolic paired with its partner into one final blood
  pressure Observation holding the withdrawn value. A nullified one now pairs with none:
  written alone entered-in-error (no panel member), its partner an Observation of its own.
  A member without any ``<value>`` keeps the pair, its component with a
  dataAbsentReason (FHIR vital signs vs-3: a component without value or reason is invalid).
- An ANS IdNat_Struct (root 1.2.250.1.71.4.2.2) holding a SIREN (``2``), a SIRET (``3``),
  an RPPS rang (``4``) or an ADELI rang (``0``) gets, after it, the register's own
  identifier as FR Core's fr-core-organization slices write it.
"""

from __future__ import annotations

from typing import Any

from tests.support.r4validator import R4Validator

from ._support import cda, convert_document, resources_of, section

PROBLEMS = ("2.16.840.1.113883.10.20.22.2.5.1", "11450-4")
VITALS = ("2.16.840.1.113883.10.20.22.2.4.1", "8716-3")
VER_STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
DAR = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
FR_0203 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
IDNST_OID = "urn:oid:1.2.250.1.71.4.2.2"


def _by_id(bundle: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {
        identifier["value"]: resource
        for resource in resources_of(bundle, kind)
        for identifier in resource.get("identifier", [])
    }


# -- nullified problems ------------------------------------------------------------------
def _problem(key: str, status: str = "completed") -> str:
    """A Problem Observation whose Problem Status Observation says active."""
    return (
        '<observation classCode="OBS" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.4" extension="2015-08-01"/>'
        f'<id root="1.2.250.1.999.25" extension="{key}"/>'
        '<code code="55607006" codeSystem="2.16.840.1.113883.6.96"/>'
        f'<statusCode code="{status}"/><effectiveTime><low value="20230101"/></effectiveTime>'
        '<value xsi:type="CD" code="38341003" codeSystem="2.16.840.1.113883.6.96"'
        ' displayName="Hypertension"/>'
        '<entryRelationship typeCode="REFR"><observation classCode="OBS" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.6"/>'
        '<code code="33999-4" codeSystem="2.16.840.1.113883.6.1"/>'
        '<statusCode code="completed"/>'
        '<value xsi:type="CD" code="55561003" codeSystem="2.16.840.1.113883.6.96"/>'
        "</observation></entryRelationship></observation>"
    )


def _concern(key: str, status: str, problem: str) -> str:
    return (
        '<entry><act classCode="ACT" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.3" extension="2015-08-01"/>'
        f'<id root="1.2.250.1.999.25" extension="{key}"/>'
        '<code code="CONC" codeSystem="2.16.840.1.113883.5.6"/>'
        f'<statusCode code="{status}"/>'
        f'<entryRelationship typeCode="SUBJ">{problem}</entryRelationship></act></entry>'
    )


def test_a_nullified_problem_or_concern_is_entered_in_error(r4validator: R4Validator) -> None:
    body = section(
        *PROBLEMS,
        _concern("ACT-OK", "active", _problem("P-OK"))
        + _concern("ACT-NULL", "nullified", _problem("P-CONCERN"))
        + _concern("ACT-ACTIVE", "active", _problem("P-OBS", status="nullified")),
    )
    bundle, _ = convert_document(cda(body=body))
    found = _by_id(bundle, "Condition")
    assert found["P-OK"]["clinicalStatus"]["coding"][0]["code"] == "active"
    assert "verificationStatus" not in found["P-OK"]
    for key in ("P-CONCERN", "P-OBS"):
        condition = found[key]
        assert condition["verificationStatus"]["coding"][0]["system"] == VER_STATUS
        assert condition["verificationStatus"]["coding"][0]["code"] == "entered-in-error"
        assert "clinicalStatus" not in condition  # con-5
        assert condition["code"]["coding"][0]["code"] == "38341003"
    # Still listed in its section: a stored Condition is marked, readers see why.
    [composition] = resources_of(bundle, "Composition")
    listed = {e["reference"] for s in composition["section"] for e in s.get("entry", [])}
    ids = {c["id"] for c in resources_of(bundle, "Condition")}
    assert ids <= {ref.split("/", 1)[1] for ref in listed}
    assert r4validator.validate(bundle) == []


# -- blood pressure halves ---------------------------------------------------------------
def _vital(key: str, code: str, value: str, status: str = "completed") -> str:
    return (
        '<component><observation classCode="OBS" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.27" extension="2015-08-01"/>'
        f'<id root="1.2.250.1.999.25" extension="{key}"/>'
        f'<code code="{code}" codeSystem="2.16.840.1.113883.6.1"/>'
        f'<statusCode code="{status}"/><effectiveTime value="20240301103000+0100"/>'
        f"{value}</observation></component>"
    )


def _vitals(components: str) -> str:
    return cda(
        body=section(
            *VITALS,
            '<entry><organizer classCode="CLUSTER" moodCode="EVN">'
            '<templateId root="2.16.840.1.113883.10.20.22.4.26" extension="2015-08-01"/>'
            '<id root="1.2.250.1.999.25" extension="PANEL"/>'
            '<code code="46680005" codeSystem="2.16.840.1.113883.6.96"/>'
            '<statusCode code="completed"/><effectiveTime value="20240301103000+0100"/>'
            f"{components}</organizer></entry>",
        )
    )


def _mmhg(number: int) -> str:
    return f'<value xsi:type="PQ" value="{number}" unit="mm[Hg]"/>'


def _panel(bundle: dict[str, Any]) -> dict[str, Any]:
    [panel] = [o for o in resources_of(bundle, "Observation") if o.get("hasMember")]
    return panel


def test_a_nullified_half_makes_no_blood_pressure(r4validator: R4Validator) -> None:
    bundle, _ = convert_document(
        _vitals(
            _vital("S1", "8480-6", _mmhg(120))
            + _vital("D1", "8462-4", _mmhg(80), status="nullified")
            + _vital("S2", "8480-6", _mmhg(180), status="nullified")
            + _vital("D2", "8462-4", _mmhg(95))
        )
    )
    observations = resources_of(bundle, "Observation")
    assert not [o for o in observations if o["code"]["coding"][0]["code"] == "85354-9"]
    assert not [o for o in observations if o.get("component")]
    found = _by_id(bundle, "Observation")
    members = {m["reference"].split("/", 1)[1] for m in _panel(bundle)["hasMember"]}
    for key, code, number in (("S1", "8480-6", 120), ("D2", "8462-4", 95)):
        lone = found[key]
        assert (lone["status"], lone["code"]["coding"][0]["code"]) == ("final", code)
        assert lone["valueQuantity"]["value"] == number
        assert lone["id"] in members
    for key in ("D1", "S2"):
        assert found[key]["status"] == "entered-in-error"
        assert found[key]["id"] not in members
    assert r4validator.validate(bundle) == []


def test_a_half_without_a_value_keeps_the_pair_with_a_reason(r4validator: R4Validator) -> None:
    bundle, warnings = convert_document(
        _vitals(_vital("S", "8480-6", _mmhg(120)) + _vital("D", "8462-4", ""))
    )
    [pressure] = [o for o in resources_of(bundle, "Observation") if o.get("component")]
    assert pressure["code"]["coding"][0]["code"] == "85354-9"
    systolic, diastolic = pressure["component"]
    assert systolic["valueQuantity"]["value"] == 120
    assert diastolic["code"]["coding"][0]["code"] == "8462-4"
    assert diastolic["dataAbsentReason"] == {"coding": [{"system": DAR, "code": "unknown"}]}
    assert "valueQuantity" not in diastolic
    assert any("component observation without a value" in w for w in warnings)
    assert r4validator.validate(bundle) == []


# -- IdNat_Struct holding a SIRET / SIREN --------------------------------------------------
def test_an_idnat_struct_siret_or_siren_gets_its_register_identifier(
    r4validator: R4Validator,
) -> None:
    custodian = '<id root="1.2.250.1.71.4.2.2" extension="690099901"/>'
    xml = cda().replace(
        custodian,
        '<id root="1.2.250.1.71.4.2.2" extension="312345678900012"/>'
        '<id root="1.2.250.1.71.4.2.2" extension="2123456789"/>',
    )
    bundle, _ = convert_document(xml)
    [organization] = [
        o
        for o in resources_of(bundle, "Organization")
        if any(i.get("value") == "312345678900012" for i in o.get("identifier", []))
    ]
    written = [
        (i["type"]["coding"][0]["code"], i["system"], i["value"])
        for i in organization["identifier"]
    ]
    assert written == [
        ("IDNST", IDNST_OID, "312345678900012"),
        ("SIRET", "https://sirene.fr", "12345678900012"),
        ("IDNST", IDNST_OID, "2123456789"),
        ("SIREN", "https://sirene.fr", "123456789"),
    ]
    assert {i["type"]["coding"][0]["system"] for i in organization["identifier"]} == {FR_0203}
    assert r4validator.validate(bundle) == []
