"""Session 27: an IVL_TS center alone is the moment its @value would be, everywhere.

- An Encounter Activity dated by ``<center value="…"/>`` had both ends of its period at
  that moment, one dated by ``@value`` its start only: the C-CDA on FHIR IG maps
  ``/effectiveTime/@value`` (like ``low``) to ``period.start`` alone (Encounters), so a
  center now gives the start alone too (both finished).
- time.Period, and the templates reading an effectiveTime's ``@value`` themselves,
  ignored a center alone: the encompassingEncounter, the documented service event, a
  note, a Supply Order's validity, a family member's condition and an IVL_TS result
  value had no period; a problem no onset (nor asserted date), an allergy and its
  reaction no onset, an immunization reaction no date, a dispense no hand-over time, a
  "no known medications" statement no effective time, a medication activity's timing no
  event, a collection procedure's specimen no collection time.
  Each now reads the center as it reads ``@value``: a document written with centers
  converts as the same document written with values.
"""

from __future__ import annotations

from typing import Any

from tests.support.r4validator import R4Validator

from ._support import cda, convert_document, resources_of, section
from .test_centers_and_implants_s26 import _encounter

SNOMED = "2.16.840.1.113883.6.96"
LOINC = "2.16.840.1.113883.6.1"
RXNORM = "2.16.840.1.113883.6.88"
HL7_TIME = "20240305101500+0100"
MOMENT = "2024-03-05T10:15:00+01:00"
AT_VALUE = f'<effectiveTime value="{HL7_TIME}"/>'
AT_CENTER = f'<effectiveTime xsi:type="IVL_TS"><center value="{HL7_TIME}"/></effectiveTime>'
ENCOUNTERS = ("2.16.840.1.113883.10.20.22.2.22.1", "46240-8")


def _template(root: str) -> str:
    return f'<templateId root="2.16.840.1.113883.10.20.22.4.{root}"/>'


def _id(extension: str) -> str:
    return f'<id root="1.2.250.1.999.27" extension="{extension}"/>'


def _problem(time: str) -> str:
    diagnosed = (
        '<entryRelationship typeCode="COMP"><act classCode="ACT" moodCode="EVN">'
        + _template("502")
        + f'<code code="77975-1" codeSystem="{LOINC}"/><statusCode code="completed"/>'
        + f"{time}</act></entryRelationship>"
    )
    return (
        '<entry><act classCode="ACT" moodCode="EVN">'
        + _template("3")
        + _id("CONC-1")
        + '<code code="CONC" codeSystem="2.16.840.1.113883.5.6"/><statusCode code="active"/>'
        + '<entryRelationship typeCode="SUBJ"><observation classCode="OBS" moodCode="EVN">'
        + _template("4")
        + _id("PROB-1")
        + f'<code code="55607006" codeSystem="{SNOMED}"/><statusCode code="completed"/>{time}'
        + f'<value xsi:type="CD" code="38341003" codeSystem="{SNOMED}" displayName="HTA"/>'
        + f"{diagnosed}</observation></entryRelationship></act></entry>"
    )


def _allergy(time: str) -> str:
    reaction = (
        '<entryRelationship typeCode="MFST" inversionInd="true">'
        '<observation classCode="OBS" moodCode="EVN">'
        + _template("9")
        + _id("REAC-1")
        + '<code code="ASSERTION" codeSystem="2.16.840.1.113883.5.4"/>'
        + f'<statusCode code="completed"/>{time}'
        + f'<value xsi:type="CD" code="247472004" codeSystem="{SNOMED}" displayName="Hives"/>'
        + "</observation></entryRelationship>"
    )
    return (
        '<entry><act classCode="ACT" moodCode="EVN">'
        + _template("30")
        + _id("AC-1")
        + '<code code="CONC" codeSystem="2.16.840.1.113883.5.6"/><statusCode code="active"/>'
        + '<entryRelationship typeCode="SUBJ"><observation classCode="OBS" moodCode="EVN">'
        + _template("7")
        + _id("ALG-1")
        + '<code code="ASSERTION" codeSystem="2.16.840.1.113883.5.4"/>'
        + f'<statusCode code="completed"/>{time}'
        + f'<value xsi:type="CD" code="419511003" codeSystem="{SNOMED}"/>'
        + '<participant typeCode="CSM"><participantRole classCode="MANU">'
        + f'<playingEntity classCode="MMAT"><code code="7980" codeSystem="{RXNORM}" '
        + 'displayName="Penicillin G"/></playingEntity></participantRole></participant>'
        + f"{reaction}</observation></entryRelationship></act></entry>"
    )


def _medications(time: str) -> str:
    """A Medication Activity with a Supply Order and a Medication Dispense, and a negated
    one for "Drug or medicament" (a "no known medications" MedicationStatement)."""

    def supply(mood: str, template: str, key: str) -> str:
        return (
            f'<entryRelationship typeCode="REFR"><supply classCode="SPLY" moodCode="{mood}">'
            + _template(template)
            + _id(key)
            + f'<statusCode code="completed"/>{time}<quantity value="30"/></supply>'
            + "</entryRelationship>"
        )

    def activity(key: str, code: str, negation: str = "", extra: str = "") -> str:
        mood = "EVN" if negation else "INT"
        return (
            f'<entry><substanceAdministration classCode="SBADM" moodCode="{mood}"{negation}>'
            + _template("16")
            + _id(key)
            + f'<statusCode code="completed"/>{time}'
            + '<consumable><manufacturedProduct classCode="MANU">'
            + _template("23")
            + f"<manufacturedMaterial>{code}</manufacturedMaterial></manufacturedProduct>"
            + f"</consumable>{extra}</substanceAdministration></entry>"
        )

    amlodipine = f'<code code="197361" codeSystem="{RXNORM}" displayName="amlodipine"/>'
    drug = f'<code code="410942007" codeSystem="{SNOMED}" displayName="Drug or medicament"/>'
    fills = supply("INT", "17", "SO-1") + supply("EVN", "18", "DISP-1")
    return activity("MA-1", amlodipine, extra=fills) + activity(
        "MA-2", drug, negation=' negationInd="true"'
    )


def _immunization(time: str) -> str:
    reaction = (
        '<entryRelationship typeCode="CAUS"><observation classCode="OBS" moodCode="EVN">'
        + _template("9")
        + _id("IMM-REAC-1")
        + '<code code="ASSERTION" codeSystem="2.16.840.1.113883.5.4"/>'
        + f'<statusCode code="completed"/>{time}'
        + f'<value xsi:type="CD" code="247472004" codeSystem="{SNOMED}" displayName="Hives"/>'
        + "</observation></entryRelationship>"
    )
    return (
        '<entry><substanceAdministration classCode="SBADM" moodCode="EVN" negationInd="false">'
        + _template("52")
        + _id("IMM-1")
        + '<statusCode code="completed"/><effectiveTime value="20240301"/>'
        + '<consumable><manufacturedProduct classCode="MANU">'
        + _template("54")
        + '<manufacturedMaterial><code code="140" codeSystem="2.16.840.1.113883.12.292" '
        + 'displayName="Influenza"/></manufacturedMaterial></manufacturedProduct></consumable>'
        + f"{reaction}</substanceAdministration></entry>"
    )


def _results(time: str) -> str:
    collection = (
        '<component><procedure classCode="PROC" moodCode="EVN">'
        + _template("415")
        + _id("COLL-1")
        + f'<code code="17636008" codeSystem="{SNOMED}"/><statusCode code="completed"/>{time}'
        + '<participant typeCode="PRD"><participantRole classCode="SPEC">'
        + _id("SPEC-1")
        + f'<playingEntity><code code="119297000" codeSystem="{SNOMED}" displayName="Blood"/>'
        + "</playingEntity></participantRole></participant></procedure></component>"
    )
    # The result's value is the IVL_TS itself: a period, not an effective time.
    value = time.replace("effectiveTime", "value")
    value = value if "xsi:type" in value else value.replace("<value ", '<value xsi:type="IVL_TS" ')
    result = (
        '<component><observation classCode="OBS" moodCode="EVN">'
        + _template("2")
        + _id("RES-1")
        + f'<code code="63910-4" codeSystem="{LOINC}"/><statusCode code="completed"/>'
        + f"{time}{value}</observation></component>"
    )
    return (
        '<entry><organizer classCode="BATTERY" moodCode="EVN">'
        + _template("1")
        + _id("PANEL-1")
        + f'<code code="57021-8" codeSystem="{LOINC}"/><statusCode code="completed"/>'
        + f"{time}{collection}{result}</organizer></entry>"
    )


def _family_history(time: str) -> str:
    return (
        '<entry><organizer classCode="CLUSTER" moodCode="EVN">'
        + _template("45")
        + _id("FH-1")
        + '<statusCode code="completed"/><subject><relatedSubject classCode="PRS">'
        + '<code code="MTH" codeSystem="2.16.840.1.113883.5.111" displayName="Mother"/>'
        + "</relatedSubject></subject>"
        + '<component><observation classCode="OBS" moodCode="EVN">'
        + _template("46")
        + _id("FH-OBS-1")
        + f'<code code="64572001" codeSystem="{SNOMED}"/><statusCode code="completed"/>{time}'
        + f'<value xsi:type="CD" code="22298006" codeSystem="{SNOMED}" displayName="MI"/>'
        + "</observation></component></organizer></entry>"
    )


def _note(time: str) -> str:
    return (
        '<entry><act classCode="ACT" moodCode="EVN">'
        + _template("202")
        + _id("NOTE-1")
        + f'<code code="34109-9" codeSystem="{LOINC}"/>'
        + '<text mediaType="text/plain">Seen today.</text>'
        + f'<statusCode code="completed"/>{time}</act></entry>'
    )


def _document(time: str) -> str:
    """A document whose every clinical time is ``time``: the header's encounter and
    service event, and one entry of each kind that reads an effectiveTime's @value."""
    header = (
        '<documentationOf><serviceEvent classCode="PCPR">'
        + time
        + "</serviceEvent></documentationOf>"
        + "<componentOf><encompassingEncounter>"
        + _id("HDR-ENC-1")
        + time
        + "</encompassingEncounter></componentOf>"
    )
    body = "".join(
        (
            section(*ENCOUNTERS, _encounter(time)),
            section("2.16.840.1.113883.10.20.22.2.5.1", "11450-4", _problem(time)),
            section("2.16.840.1.113883.10.20.22.2.6.1", "48765-2", _allergy(time)),
            section("2.16.840.1.113883.10.20.22.2.1.1", "10160-0", _medications(time)),
            section("2.16.840.1.113883.10.20.22.2.2.1", "11369-6", _immunization(time)),
            section("2.16.840.1.113883.10.20.22.2.3.1", "30954-2", _results(time)),
            section("2.16.840.1.113883.10.20.22.2.15", "10157-6", _family_history(time)),
            section("2.16.840.1.113883.10.20.22.2.65", "11488-4", _note(time)),
        )
    )
    return cda(header=header, body=body)


def _convert_valid(xml: str, r4validator: R4Validator) -> dict[str, Any]:
    bundle, warnings = convert_document(xml)
    assert warnings == ()
    assert r4validator.validate(bundle) == []
    return bundle


def _one(bundle: dict[str, Any], kind: str, key: str | None = None) -> dict[str, Any]:
    """The resource of ``kind`` (whose first identifier value is ``key``, if given)."""
    [found] = [
        r
        for r in resources_of(bundle, kind)
        if key is None or r.get("identifier", [{}])[0].get("value") == key
    ]
    return found


def _at(node: Any, *steps: str | int) -> Any:
    """``node[step][step]…``, None where a step is missing."""
    for step in steps:
        if isinstance(step, int):
            node = node[step] if isinstance(node, list) and len(node) > step else None
        else:
            node = node.get(step) if isinstance(node, dict) else None
    return node


def _times(bundle: dict[str, Any]) -> dict[str, Any]:
    """Each time of this test's document, by where it lands."""
    encounter = _one(bundle, "Encounter", "ENC-1")
    header = _one(bundle, "Encounter", "HDR-ENC-1")
    condition = _one(bundle, "Condition")
    allergy = _one(bundle, "AllergyIntolerance")
    request = _one(bundle, "MedicationRequest")
    [source] = [d for d in resources_of(bundle, "DocumentReference") if "masterIdentifier" in d]
    note = _one(bundle, "DocumentReference", "NOTE-1")
    return {
        "Encounter.period": encounter.get("period"),
        "Encounter.status": encounter["status"],
        "header Encounter.period": header.get("period"),
        "header Encounter.status": header["status"],
        "Composition.event.period": _at(_one(bundle, "Composition"), "event", 0, "period"),
        "source DocumentReference.context.period": _at(source, "context", "period"),
        "note DocumentReference.context.period": _at(note, "context", "period"),
        "Condition.onsetDateTime": condition.get("onsetDateTime"),
        "Condition assertedDate": [e["valueDateTime"] for e in condition.get("extension", [])],
        "AllergyIntolerance.onsetDateTime": allergy.get("onsetDateTime"),
        "AllergyIntolerance.reaction.onset": _at(allergy, "reaction", 0, "onset"),
        "MedicationRequest timing": _at(request, "dosageInstruction", 0, "timing"),
        "MedicationRequest validityPeriod": _at(request, "dispenseRequest", "validityPeriod"),
        "MedicationDispense.whenHandedOver": _one(bundle, "MedicationDispense").get(
            "whenHandedOver"
        ),
        "MedicationStatement.effectiveDateTime": _one(bundle, "MedicationStatement").get(
            "effectiveDateTime"
        ),
        "Immunization.reaction.date": _at(_one(bundle, "Immunization"), "reaction", 0, "date"),
        # Without a collection time, the specimen (no id, no type of its own) is none.
        "Specimen.collection": [s.get("collection") for s in resources_of(bundle, "Specimen")],
        "Observation.valuePeriod": _one(bundle, "Observation", "RES-1").get("valuePeriod"),
        "FamilyMemberHistory onsetPeriod": _at(
            _one(bundle, "FamilyMemberHistory"), "condition", 0, "onsetPeriod"
        ),
    }


START = {"start": MOMENT}
EXPECTED = {
    "Encounter.period": START,
    "Encounter.status": "finished",
    "header Encounter.period": START,
    "header Encounter.status": "finished",
    "Composition.event.period": START,
    "source DocumentReference.context.period": START,
    "note DocumentReference.context.period": START,
    "Condition.onsetDateTime": MOMENT,
    "Condition assertedDate": [MOMENT],
    "AllergyIntolerance.onsetDateTime": MOMENT,
    "AllergyIntolerance.reaction.onset": MOMENT,
    "MedicationRequest timing": {"event": [MOMENT]},
    "MedicationRequest validityPeriod": START,
    "MedicationDispense.whenHandedOver": MOMENT,
    "MedicationStatement.effectiveDateTime": MOMENT,
    "Immunization.reaction.date": MOMENT,
    "Specimen.collection": [{"collectedDateTime": MOMENT}],
    "Observation.valuePeriod": START,
    "FamilyMemberHistory onsetPeriod": START,
}


def test_a_center_alone_lands_where_a_value_does(r4validator: R4Validator) -> None:
    """Every template that reads an effectiveTime's @value (or time.Period) reads a
    center alone as that @value: the same element, the same time."""
    by_value, value_warnings = convert_document(_document(AT_VALUE))
    by_center, center_warnings = convert_document(_document(AT_CENTER))
    assert _times(by_value) == EXPECTED
    differing = {k: v for k, v in _times(by_center).items() if v != EXPECTED[k]}
    assert differing == {}
    assert value_warnings == center_warnings == ()
    assert r4validator.validate(by_value) == []
    assert r4validator.validate(by_center) == []


def _without_source(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The bundle's resources, the source document's bytes left out (they differ)."""
    resources = [entry["resource"] for entry in bundle["entry"]]
    for resource in resources:
        if "masterIdentifier" in resource:
            for content in resource["content"]:
                for name in ("data", "hash", "size"):
                    content["attachment"].pop(name, None)
    return resources


def test_a_document_written_with_centers_converts_as_with_values() -> None:
    """Nothing else differs either (ids, statuses, other elements)."""
    by_value, _ = convert_document(_document(AT_VALUE))
    by_center, _ = convert_document(_document(AT_CENTER))
    assert _without_source(by_center) == _without_source(by_value)


def test_an_encounter_at_a_moment_starts_then(r4validator: R4Validator) -> None:
    """The IG maps an Encounter's @value to period.start alone; a center alone is the same
    moment: the same start, no end, and the encounter finished (a single time). A low
    and high are read as before."""
    for time in (AT_VALUE, AT_CENTER):
        bundle = _convert_valid(cda(body=section(*ENCOUNTERS, _encounter(time))), r4validator)
        encounter = _one(bundle, "Encounter")
        assert (encounter["period"], encounter["status"]) == ({"start": MOMENT}, "finished")
    span = '<effectiveTime><low value="20240305"/><high value="20240306"/></effectiveTime>'
    bundle = _convert_valid(cda(body=section(*ENCOUNTERS, _encounter(span))), r4validator)
    encounter = _one(bundle, "Encounter")
    assert encounter["period"] == {"start": "2024-03-05", "end": "2024-03-06"}
    assert encounter["status"] == "finished"
    started = '<effectiveTime><low value="20240305"/></effectiveTime>'
    bundle = _convert_valid(cda(body=section(*ENCOUNTERS, _encounter(started))), r4validator)
    encounter = _one(bundle, "Encounter")
    assert (encounter["period"], encounter["status"]) == ({"start": "2024-03-05"}, "in-progress")


def _pulse(time: str) -> str:
    """A pulse Observation; HL7's examples give every such reading one id."""
    return (
        '<component><observation classCode="OBS" moodCode="EVN">'
        + _template("27")
        + _id("PULSE")
        + f'<code code="8867-4" codeSystem="{LOINC}"/><statusCode code="completed"/>{time}'
        + '<value xsi:type="PQ" value="70" unit="/min"/></observation></component>'
    )


def test_readings_sharing_an_id_stay_apart_by_their_centers(r4validator: R4Validator) -> None:
    """Statements sharing an id and a code are told apart by their time
    (statement_identity): a center alone is that time, as @value is. Two readings dated
    by centers were one Observation, the second "emitted twice" and lost."""
    later = "20240305111500+0100"
    for first, second in (
        (AT_VALUE, f'<effectiveTime value="{later}"/>'),
        (AT_CENTER, f'<effectiveTime xsi:type="IVL_TS"><center value="{later}"/></effectiveTime>'),
    ):
        organizer = (
            '<entry><organizer classCode="CLUSTER" moodCode="EVN">'
            + _template("26")
            + _id("VITALS-1")
            + f'<code code="46680005" codeSystem="{SNOMED}"/><statusCode code="completed"/>'
            + _pulse(first)
            + _pulse(second)
            + "</organizer></entry>"
        )
        vitals = ("2.16.840.1.113883.10.20.22.2.4.1", "8716-3")
        bundle = _convert_valid(cda(body=section(*vitals, organizer)), r4validator)
        readings = [
            o["effectiveDateTime"]
            for o in resources_of(bundle, "Observation")
            if o["code"]["coding"][0]["code"] == "8867-4"
        ]
        assert readings == [MOMENT, "2024-03-05T11:15:00+01:00"]
