"""Session 20 (b): medications and organizer times.

* A Medication Dispense (C-CDA 4.18) inside a Medication Activity was dropped without a
  word: it is now a MedicationDispense authorized by the activity's MedicationRequest.
* The negated Medication Activity for "Drug or medicament" (C-CDA's "No Known
  Medications") became an active MedicationRequest "do not give any drug"; it is now a
  MedicationStatement "No known medications".
* An organizer without a time of its own spans its children's times: they were compared
  as written (wall clocks), so children in other offsets gave a wrong start and end.
* Every macro of mappings/cda/datatypes is called somewhere (two dead ones removed).
"""

from __future__ import annotations

import re
from typing import Any

from ._support import REPO, cda, convert_document, resources_of, section

MEDICATIONS = ("2.16.840.1.113883.10.20.22.2.1.1", "10160-0")
VITAL_SIGNS = ("2.16.840.1.113883.10.20.22.2.4.1", "8716-3")
AMLODIPINE = '<code code="197361" codeSystem="2.16.840.1.113883.6.88" displayName="amlodipine"/>'
DRUG = (
    '<code code="410942007" codeSystem="2.16.840.1.113883.6.96" displayName="Drug or medicament"/>'
)
# HL7's "No Known Medications" example: the concept in a translation of a nullFlavor code.
DRUG_IN_TRANSLATION = (
    '<code nullFlavor="OTH" codeSystem="2.16.840.1.113883.6.88">'
    '<translation code="410942007" codeSystem="2.16.840.1.113883.6.96"/></code>'
)
DISPENSE = (
    '<entryRelationship typeCode="REFR"><supply classCode="SPLY" moodCode="EVN">'
    '<templateId root="2.16.840.1.113883.10.20.22.4.18" extension="2014-06-09"/>'
    '<id root="1.2.250.1.999.7.2" extension="D-1"/><statusCode code="completed"/>'
    '<effectiveTime value="20240302"/><quantity value="30"/></supply></entryRelationship>'
)


def _activity(
    code: str = AMLODIPINE, *, negated: bool = False, mood: str = "INT", extra: str = ""
) -> str:
    negation = ' negationInd="true"' if negated else ""
    return (
        f'<entry><substanceAdministration classCode="SBADM" moodCode="{mood}"{negation}>'
        '<templateId root="2.16.840.1.113883.10.20.22.4.16" extension="2014-06-09"/>'
        '<id root="1.2.250.1.999.7.1" extension="MA-1"/><statusCode code="active"/>'
        '<effectiveTime xsi:type="IVL_TS"><low value="20240301"/></effectiveTime>'
        '<consumable><manufacturedProduct classCode="MANU">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.23" extension="2014-06-09"/>'
        f"<manufacturedMaterial>{code}</manufacturedMaterial></manufacturedProduct>"
        f"</consumable>{extra}</substanceAdministration></entry>"
    )


def _medications(entries: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    return convert_document(cda(body=section(*MEDICATIONS, entries)))


# --- Medication Dispense ------------------------------------------------------------


def test_a_medication_dispense_becomes_a_medication_dispense() -> None:
    bundle, warnings = _medications(_activity(extra=DISPENSE))
    assert warnings == ()
    [request] = resources_of(bundle, "MedicationRequest")
    assert "dispenseRequest" not in request  # a fill is not the order's supply
    [dispense] = resources_of(bundle, "MedicationDispense")
    assert dispense["status"] == "completed"
    assert dispense["identifier"] == [{"system": "urn:oid:1.2.250.1.999.7.2", "value": "D-1"}]
    assert dispense["authorizingPrescription"] == [
        {"reference": f"MedicationRequest/{request['id']}"}
    ]
    # Without a product of its own, the activity's drug.
    assert dispense["medicationReference"] == request["medicationReference"]
    assert dispense["subject"] == request["subject"]
    assert dispense["quantity"] == {"value": 30}
    assert dispense["whenHandedOver"] == "2024-03-02"
    [composition] = resources_of(bundle, "Composition")
    assert {"reference": f"MedicationDispense/{dispense['id']}"} in composition["section"][0][
        "entry"
    ]


def test_a_dispense_of_a_wrapped_activity_and_its_own_product() -> None:
    product = (
        '<product><manufacturedProduct classCode="MANU">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.23" extension="2014-06-09"/>'
        '<manufacturedMaterial><code code="308135" codeSystem="2.16.840.1.113883.6.88"/>'
        "</manufacturedMaterial></manufacturedProduct></product>"
    )
    wrapped = (
        '<entry><act classCode="ACT" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.35" extension="2016-03-01"/>'
        '<code code="10183-2" codeSystem="2.16.840.1.113883.6.1"/>'
        '<entryRelationship typeCode="SUBJ">'
        + _activity(extra=DISPENSE.replace("</supply>", product + "</supply>"))[
            len("<entry>") : -len("</entry>")
        ]
        + "</entryRelationship></act></entry>"
    )
    bundle, warnings = _medications(wrapped)
    assert warnings == ()
    [dispense] = resources_of(bundle, "MedicationDispense")
    drugs = {m["id"]: m["code"]["coding"][0]["code"] for m in resources_of(bundle, "Medication")}
    assert drugs[dispense["medicationReference"]["reference"].split("/")[1]] == "308135"


def test_a_clinical_statement_section_converts_dispenses_and_no_known_medications() -> None:
    # Anesthesia (an operative note's section of clinical statements): as in Medications.
    anesthesia = ("2.16.840.1.113883.10.20.22.2.25", "59774-0")
    bundle, _ = convert_document(cda(body=section(*anesthesia, _activity(extra=DISPENSE))))
    [request] = resources_of(bundle, "MedicationRequest")
    [dispense] = resources_of(bundle, "MedicationDispense")
    assert dispense["authorizingPrescription"] == [
        {"reference": f"MedicationRequest/{request['id']}"}
    ]
    assert resources_of(bundle, "Composition")[0]["section"][0]["entry"] == [
        {"reference": f"MedicationRequest/{request['id']}"},
        {"reference": f"MedicationDispense/{dispense['id']}"},
    ]
    none_taken = _activity(DRUG, negated=True, mood="EVN")
    bundle, _ = convert_document(cda(body=section(*anesthesia, none_taken)))
    assert [r["resourceType"] for r in resources_of(bundle, "MedicationStatement")] == [
        "MedicationStatement"
    ]
    assert resources_of(bundle, "MedicationRequest") == []


def test_a_supply_order_is_the_request_dispense_not_a_dispense() -> None:
    order = (
        '<entryRelationship typeCode="REFR"><supply classCode="SPLY" moodCode="INT">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.17" extension="2014-06-09"/>'
        '<repeatNumber value="3"/><quantity value="30"/></supply></entryRelationship>'
    )
    bundle, warnings = _medications(_activity(extra=order))
    [request] = resources_of(bundle, "MedicationRequest")
    assert request["dispenseRequest"]["numberOfRepeatsAllowed"] == 2
    assert resources_of(bundle, "MedicationDispense") == []
    assert warnings == ()


# --- No known medications -----------------------------------------------------------


def _no_known(code: str) -> dict[str, Any]:
    bundle, warnings = _medications(_activity(code, negated=True, mood="EVN"))
    assert warnings == ()
    assert resources_of(bundle, "MedicationRequest") == []
    assert resources_of(bundle, "Medication") == []  # no "Drug or medicament" product
    [statement] = resources_of(bundle, "MedicationStatement")
    [composition] = resources_of(bundle, "Composition")
    [listed] = composition["section"]
    assert listed["entry"] == [{"reference": f"MedicationStatement/{statement['id']}"}]
    return statement


def test_no_known_medications_is_a_statement_not_an_order_to_give_nothing() -> None:
    statement = _no_known(DRUG)
    assert statement["medicationCodeableConcept"]["coding"] == [
        {"system": "http://snomed.info/sct", "code": "787481004", "display": "No known medications"}
    ]
    assert statement["status"] == "active"
    assert statement["effectivePeriod"] == {"start": "2024-03-01"}
    assert statement["identifier"][0]["value"] == "MA-1"
    assert "doNotPerform" not in statement


def test_no_known_medications_in_a_translation_as_hl7_example_writes_it() -> None:
    assert _no_known(DRUG_IN_TRANSLATION)["id"] == _no_known(DRUG)["id"]


def test_a_negated_real_drug_stays_a_do_not_perform_request() -> None:
    # The IG's rule for any other drug: "do not give amlodipine".
    bundle, _ = _medications(_activity(negated=True))
    [request] = resources_of(bundle, "MedicationRequest")
    assert request["doNotPerform"] is True
    assert resources_of(bundle, "MedicationStatement") == []


def test_drug_or_medicament_without_negation_stays_a_request() -> None:
    bundle, _ = _medications(_activity(DRUG))
    assert len(resources_of(bundle, "MedicationRequest")) == 1
    assert resources_of(bundle, "MedicationStatement") == []


# --- Organizer times across offsets ---------------------------------------------------


def _vital(code: str, time: str) -> str:
    return (
        '<component><observation classCode="OBS" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.27" extension="2014-06-09"/>'
        f'<id root="1.2.250.1.999.7.3" extension="{code}"/>'
        f'<code code="{code}" codeSystem="2.16.840.1.113883.6.1"/>'
        f'<statusCode code="completed"/><effectiveTime value="{time}"/>'
        '<value xsi:type="PQ" value="70" unit="/min"/></observation></component>'
    )


def _panel(*vitals: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    organizer = (
        '<entry><organizer classCode="CLUSTER" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.26" extension="2015-08-01"/>'
        '<id root="1.2.250.1.999.7.4" extension="ORG"/>'
        '<code code="46680005" codeSystem="2.16.840.1.113883.6.96"/>'
        '<statusCode code="completed"/>' + "".join(vitals) + "</organizer></entry>"
    )
    bundle, warnings = convert_document(cda(body=section(*VITAL_SIGNS, organizer)))
    [panel] = [
        o
        for o in resources_of(bundle, "Observation")
        if o["code"]["coding"][0]["code"] == "85353-1"
    ]
    return panel, warnings


def test_an_organizer_spans_its_children_as_instants_not_wall_clocks() -> None:
    # 23:00 at -05:00 is 04:00Z on the 11th; 02:00 at +01:00 is 01:00Z: the earlier one.
    panel, warnings = _panel(
        _vital("8867-4", "20240310230000-0500"), _vital("9279-1", "20240311020000+0100")
    )
    assert panel["effectivePeriod"] == {
        "start": "2024-03-11T02:00:00+01:00",
        "end": "2024-03-10T23:00:00-05:00",
    }
    assert not [w for w in warnings if "end before start" in w]


def test_one_instant_in_two_offsets_is_a_point_in_time() -> None:
    panel, _ = _panel(
        _vital("8867-4", "20240311020000+0100"), _vital("9279-1", "20240311010000+0000")
    )
    assert panel["effectiveDateTime"] == "2024-03-11T02:00:00+01:00"


def test_children_with_a_date_or_a_month_only_still_span() -> None:
    # A child without a day has no instant: its digits are kept, no warning.
    panel, warnings = _panel(_vital("8867-4", "202403"), _vital("9279-1", "20240311"))
    assert panel["effectivePeriod"] == {"start": "2024-03", "end": "2024-03-11"}
    assert not [w for w in warnings if "invalid" in w.lower()]


# --- Dead macros ----------------------------------------------------------------------


def test_every_datatype_macro_is_called_somewhere() -> None:
    templates = {
        path: path.read_text(encoding="utf-8") for path in (REPO / "mappings").rglob("*.j2")
    }
    unused = []
    for path, text in templates.items():
        if path.parent.name != "datatypes" or "cda" not in path.parts:
            continue
        for name in re.findall(r"\{%-?\s*macro\s+(\w+)\(", text):
            call = re.compile(rf"(?<![\w.])(?:\w+\.)?{name}\(")
            calls = sum(len(call.findall(other)) for other in templates.values())
            if calls <= 1:  # the definition itself
                unused.append(f"{path.name}:{name}")
    assert unused == []
