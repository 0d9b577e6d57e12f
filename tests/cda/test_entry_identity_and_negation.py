"""Clinical content that an entry's identity or negation must not corrupt.

* Procedure identity is the patient, the id and the code (as Condition and
  ServiceRequest): a document reusing a procedure id for two procedures gives two
  Procedures (merged, one Procedure had both codes as codings of one concept, silently),
  and two patients' documents reusing an id never give the same Procedure id (a PUT of
  the second moved the first patient's procedure to the second patient).
* A Medication without a code is identified by its product id AND its text: a reused
  manufacturedProduct id no longer points the second prescription at the first drug.
* AllergyIntolerance: a negated Reaction Observation ("no hives") is not written as a
  manifestation; an allergy whose observation has an effectiveTime/high is resolved even
  when its concern act is still active (C-CDA Allergy Concern Act: the observation's time
  is the definitive indication of resolution).
"""

from __future__ import annotations

import re
from typing import Any

from tests.support.r4validator import R4Validator

from ._support import CCD_SAMPLE, cda, convert_document, resources_of

SNOMED = "2.16.840.1.113883.6.96"


def _section(template: str, code: str, entries: str) -> str:
    return (
        f'<component><section><templateId root="{template}" extension="2015-08-01"/>'
        f'<code code="{code}" codeSystem="2.16.840.1.113883.6.1"/><title>{code}</title>'
        f"<text>{code}</text>{entries}</section></component>"
    )


def _procedure(code: str, display: str, extension: str = "PROC-1") -> str:
    return (
        '<entry><procedure classCode="PROC" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.14" extension="2014-06-09"/>'
        f'<id root="1.2.250.1.999.21" extension="{extension}"/>'
        f'<code code="{code}" codeSystem="{SNOMED}" displayName="{display}"/>'
        '<statusCode code="completed"/><effectiveTime value="20230105"/></procedure></entry>'
    )


def _procedures(entries: str) -> str:
    return _section("2.16.840.1.113883.10.20.22.2.7.1", "47519-4", entries)


def test_a_reused_procedure_id_gives_two_procedures(r4validator: R4Validator) -> None:
    body = _procedures(
        _procedure("73761001", "Colonoscopy") + _procedure("80146002", "Appendectomy")
    )
    bundle, _ = convert_document(cda(body=body))
    procedures = resources_of(bundle, "Procedure")
    assert sorted([c["code"] for c in p["code"]["coding"]] for p in procedures) == [
        ["73761001"],
        ["80146002"],
    ]
    assert len({p["id"] for p in procedures}) == 2
    assert r4validator.validate(bundle) == []


def test_two_patients_reusing_a_procedure_id_never_share_the_procedure() -> None:
    body = _procedures(_procedure("73761001", "Colonoscopy"))
    first, _ = convert_document(cda(body=body))
    other = cda(body=body, doc_id='<id root="1.2.250.1.999.3.1" extension="QA-0002"/>')
    second, _ = convert_document(other.replace("IPP0001", "IPP0002"))
    [a], [b] = resources_of(first, "Procedure"), resources_of(second, "Procedure")
    assert a["subject"] != b["subject"]
    assert a["id"] != b["id"]
    # The same document converted again keeps its ids (identity, not position).
    again, _ = convert_document(cda(body=body))
    assert resources_of(again, "Procedure")[0]["id"] == a["id"]


def _medication(activity: str, text: str) -> str:
    return (
        '<entry><substanceAdministration classCode="SBADM" moodCode="INT">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.16" extension="2014-06-09"/>'
        f'<id root="1.2.250.1.999.22" extension="{activity}"/><statusCode code="active"/>'
        '<effectiveTime xsi:type="IVL_TS"><low value="20230101"/></effectiveTime>'
        '<consumable><manufacturedProduct classCode="MANU">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.23" extension="2014-06-09"/>'
        '<id root="2a620155-9d11-439e-92b3-5d9815ff4ee8"/>'
        f'<manufacturedMaterial><code nullFlavor="OTH"><originalText>{text}</originalText>'
        "</code></manufacturedMaterial></manufacturedProduct></consumable>"
        "</substanceAdministration></entry>"
    )


def test_uncoded_drugs_sharing_a_product_id_stay_two_medications() -> None:
    body = _section(
        "2.16.840.1.113883.10.20.22.2.1.1",
        "10160-0",
        _medication("M1", "Amoxicilline 500 mg") + _medication("M2", "Paracétamol 1 g"),
    )
    bundle, warnings = convert_document(cda(body=body))
    medications = {
        f"Medication/{m['id']}": m["code"]["text"] for m in resources_of(bundle, "Medication")
    }
    prescribed = {
        r["identifier"][0]["value"]: medications[r["medicationReference"]["reference"]]
        for r in resources_of(bundle, "MedicationRequest")
    }
    assert prescribed == {"M1": "Amoxicilline 500 mg", "M2": "Paracétamol 1 g"}
    assert not [w for w in warnings if "emitted twice" in w]


def _allergy(*, observation_time: str, concern: str = "active", reaction: str = "") -> str:
    return (
        '<entry><act classCode="ACT" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.30" extension="2015-08-01"/>'
        '<id root="1.2.250.1.999.23" extension="AC1"/>'
        '<code code="CONC" codeSystem="2.16.840.1.113883.5.6"/>'
        f'<statusCode code="{concern}"/><effectiveTime><low value="2010"/></effectiveTime>'
        '<entryRelationship typeCode="SUBJ"><observation classCode="OBS" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.7" extension="2014-06-09"/>'
        '<id root="1.2.250.1.999.23" extension="A1"/>'
        '<code code="ASSERTION" codeSystem="2.16.840.1.113883.5.4"/>'
        f'<statusCode code="completed"/>{observation_time}'
        f'<value xsi:type="CD" code="419511003" codeSystem="{SNOMED}"/>'
        '<participant typeCode="CSM"><participantRole classCode="MANU">'
        '<playingEntity classCode="MMAT"><code code="7980" codeSystem="2.16.840.1.113883.6.88" '
        'displayName="Penicillin G"/></playingEntity></participantRole></participant>'
        f"{reaction}</observation></entryRelationship></act></entry>"
    )


def _reaction(code: str, display: str, negated: bool) -> str:
    negation = ' negationInd="true"' if negated else ""
    return (
        '<entryRelationship typeCode="MFST" inversionInd="true">'
        f'<observation classCode="OBS" moodCode="EVN"{negation}>'
        '<templateId root="2.16.840.1.113883.10.20.22.4.9" extension="2014-06-09"/>'
        '<code code="ASSERTION" codeSystem="2.16.840.1.113883.5.4"/><statusCode code="completed"/>'
        f'<value xsi:type="CD" code="{code}" codeSystem="{SNOMED}" displayName="{display}"/>'
        "</observation></entryRelationship>"
    )


def _allergies(entries: str) -> str:
    return _section("2.16.840.1.113883.10.20.22.2.6.1", "48765-2", entries)


def test_a_negated_reaction_is_not_a_manifestation(r4validator: R4Validator) -> None:
    reactions = _reaction("247472004", "Hives", negated=True) + _reaction(
        "267036007", "Dyspnea", negated=False
    )
    body = _allergies(
        _allergy(
            observation_time='<effectiveTime><low value="2010"/></effectiveTime>',
            reaction=reactions,
        )
    )
    bundle, warnings = convert_document(cda(body=body))
    [allergy] = resources_of(bundle, "AllergyIntolerance")
    manifestations = [
        c["code"] for r in allergy["reaction"] for m in r["manifestation"] for c in m["coding"]
    ]
    assert manifestations == ["267036007"]
    assert any("negated reaction" in w for w in warnings)
    assert r4validator.validate(bundle) == []


def _clinical_status(allergy: dict[str, Any]) -> str:
    return str(allergy["clinicalStatus"]["coding"][0]["code"])


def test_an_abated_allergy_in_an_active_concern_is_resolved() -> None:
    abated = '<effectiveTime><low value="2010"/><high value="2015"/></effectiveTime>'
    bundle, _ = convert_document(cda(body=_allergies(_allergy(observation_time=abated))))
    [allergy] = resources_of(bundle, "AllergyIntolerance")
    assert _clinical_status(allergy) == "resolved"
    assert allergy["extension"][0]["valueDateTime"] == "2015"
    # Without a high the active concern still gives an active allergy, and a completed
    # concern an inactive one (the IG's concern status map is unchanged).
    ongoing = '<effectiveTime><low value="2010"/></effectiveTime>'
    bundle, _ = convert_document(cda(body=_allergies(_allergy(observation_time=ongoing))))
    assert _clinical_status(resources_of(bundle, "AllergyIntolerance")[0]) == "active"
    bundle, _ = convert_document(
        cda(body=_allergies(_allergy(observation_time=abated, concern="completed")))
    )
    assert _clinical_status(resources_of(bundle, "AllergyIntolerance")[0]) == "inactive"


def test_another_patients_document_reusing_every_id_shares_no_clinical_resource() -> None:
    """The CCD sample converted again for another patient (and as another document):
    only the shared actors, places and products keep their ids; every clinical resource
    (Procedure, Goal, ServiceRequest, CarePlan, the blood-pressure Observation…) gets
    its own, so one patient's PUT never overwrites the other's."""
    source = CCD_SAMPLE.read_text(encoding="utf-8")
    first, _ = convert_document(source)
    other = source.replace('extension="IPP0456123"', 'extension="IPP0000999"', 1)
    doc_id = re.search(r"<id [^>]*/>", other.split("<title>", 1)[0])
    assert doc_id is not None
    other = other.replace(
        doc_id.group(0), '<id root="1.2.250.1.999.3.1" extension="AUTRE-DOC"/>', 1
    )
    second, _ = convert_document(other)
    kinds = {e["resource"]["id"]: e["resource"]["resourceType"] for e in first["entry"]}
    shared = {kinds[e["resource"]["id"]] for e in second["entry"] if e["resource"]["id"] in kinds}
    assert shared <= {
        "Device",
        "Encounter",  # the visit number names the encounter (header and entries agree)
        "Location",
        "Medication",
        "Organization",
        "Practitioner",
        "PractitionerRole",
    }, shared
