"""Session 20: encounter identity across the header and the Encounters section.

* An Encounter Activity that shares an id with the encompassingEncounter is the same
  Encounter (C-CDA on FHIR, Encounters), also when the two list their ids differently
  (the entry's first id a nullFlavor, or the header's second id the entry's only one).
* An Encounter Activity whose first id is only a nullFlavor takes its first id with a
  root as identity, as the header does: before, it had no identity, so each re-sent or
  new document of the same hospital stay wrote one more Encounter.
"""

from __future__ import annotations

from typing import Any

from ._support import cda, convert_document, resources_of, section

ENCOUNTERS = ("2.16.840.1.113883.10.20.22.2.22.1", "46240-8")
STAY = '<id root="1.2.250.1.999.4.1" extension="SEJ-77"/>'
OTHER = '<id root="1.2.250.1.999.4.2" extension="UF-12"/>'


def _document(header_ids: str | None, entry_ids: str | None, doc_ext: str = "QA-0001") -> str:
    header = (
        ""
        if header_ids is None
        else "<componentOf><encompassingEncounter>"
        + header_ids
        + '<code code="IMP" codeSystem="2.16.840.1.113883.5.4"/>'
        '<effectiveTime><low value="20240310"/><high value="20240312"/></effectiveTime>'
        "</encompassingEncounter></componentOf>"
    )
    entry = (
        '<entry><encounter classCode="ENC" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.49" extension="2015-08-01"/>'
        + (entry_ids or "")
        + '<code code="99223" codeSystem="2.16.840.1.113883.6.12"/>'
        '<statusCode code="completed"/>'
        '<effectiveTime><low value="20240310"/><high value="20240312"/></effectiveTime>'
        "</encounter></entry>"
    )
    return cda(
        header=header,
        body="" if entry_ids is None else section(*ENCOUNTERS, entry),
        doc_id=f'<id root="1.2.250.1.999.3.1" extension="{doc_ext}"/>',
    )


def _encounters(xml: str) -> list[dict[str, Any]]:
    bundle, _ = convert_document(xml)
    return resources_of(bundle, "Encounter")


def test_an_entry_sharing_the_header_id_behind_a_null_id_is_the_header_encounter() -> None:
    [encounter] = _encounters(_document(STAY, '<id nullFlavor="NI"/>' + STAY))
    assert encounter["status"] == "finished"
    assert {i["value"] for i in encounter["identifier"]} == {"SEJ-77"}


def test_an_entry_sharing_the_header_second_id_is_the_header_encounter() -> None:
    [header_only] = _encounters(_document(STAY + OTHER, None))
    [encounter] = _encounters(_document(STAY + OTHER, OTHER))
    assert encounter["id"] == header_only["id"]
    assert {i["value"] for i in encounter["identifier"]} == {"SEJ-77", "UF-12"}


def test_an_entry_with_a_null_first_id_keeps_its_id_across_documents() -> None:
    # Two documents of the same stay (a new version, another document type): one Encounter.
    first = _encounters(_document(None, '<id nullFlavor="NI"/>' + OTHER, "DOC-1"))
    second = _encounters(_document(None, '<id nullFlavor="NI"/>' + OTHER, "DOC-2"))
    assert [e["id"] for e in first] == [e["id"] for e in second]
    # ... the same as when the entry gives that id alone.
    assert [e["id"] for e in _encounters(_document(None, OTHER, "DOC-3"))] == [
        e["id"] for e in first
    ]


def test_the_same_stay_in_two_documents_is_one_encounter_id() -> None:
    first = _encounters(_document(STAY, STAY, "DOC-1"))
    second = _encounters(_document(STAY, '<id nullFlavor="NI"/>' + STAY, "DOC-2"))
    assert len(first) == len(second) == 1
    assert first[0]["id"] == second[0]["id"]


def test_the_header_encounter_and_its_entry_list_a_person_and_a_place_once() -> None:
    person = (
        '<assignedEntity><id root="1.2.250.1.71.4.2.1" extension="10109999999"/>'
        "<assignedPerson><name><given>Chloé</given><family>Soignante</family></name>"
        "</assignedPerson></assignedEntity>"
    )
    header = (
        '<encounterParticipant typeCode="ATND">' + person + "</encounterParticipant>"
        '<location><healthCareFacility><id root="1.2.250.1.999.9" extension="UF1"/>'
        "<location><name>Cardiologie</name></location></healthCareFacility></location>"
    )
    entry = (
        '<performer typeCode="ATND">' + person + "</performer>"
        '<participant typeCode="LOC"><participantRole classCode="SDLOC">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.32"/>'
        '<id root="1.2.250.1.999.9" extension="UF1"/>'
        '<playingEntity classCode="PLC"><name>Cardiologie</name></playingEntity>'
        "</participantRole></participant>"
    )
    xml = _document(STAY, STAY).replace(
        "</encompassingEncounter>", header + "</encompassingEncounter>"
    )
    xml = xml.replace("</encounter></entry>", entry + "</encounter></entry>")
    [encounter] = _encounters(xml)
    assert len(encounter["participant"]) == 1
    assert encounter["participant"][0]["type"][0]["coding"][0]["display"] == "attender"
    assert len(encounter["location"]) == 1


def test_an_observation_stay_has_one_class_in_the_header_and_the_body() -> None:
    # CPT 99219 (initial observation care): IMP from the header, OBSENC from the body.
    xml = _document(STAY, STAY).replace(
        '<code code="IMP" codeSystem="2.16.840.1.113883.5.4"/>',
        '<code code="99219" codeSystem="2.16.840.1.113883.6.12"/>',
    )
    xml = xml.replace('<code code="99223" ', '<code code="99219" ')
    bundle, warnings = convert_document(xml)
    [encounter] = resources_of(bundle, "Encounter")
    assert encounter["class"]["code"] == "OBSENC"
    assert not [w for w in warnings if "emitted twice" in w]
    [header_only] = _encounters(
        _document(STAY, None).replace(
            '<code code="IMP" codeSystem="2.16.840.1.113883.5.4"/>',
            '<code code="99219" codeSystem="2.16.840.1.113883.6.12"/>',
        )
    )
    assert header_only["class"]["code"] == "OBSENC"


# -- Family history negation ----------------------------------------------------------------

FAMILY_HISTORY = ("2.16.840.1.113883.10.20.22.2.15", "10157-6")
SNOMED = "2.16.840.1.113883.6.96"


def _family_observation(code: str, display: str, *, negated: bool = False, death: str = "") -> str:
    return (
        '<component><observation classCode="OBS" moodCode="EVN"'
        + (' negationInd="true"' if negated else "")
        + '><templateId root="2.16.840.1.113883.10.20.22.4.46" extension="2015-08-01"/>'
        f'<id root="1.2.250.1.999.46" extension="{code}"/>'
        f'<code code="64572001" codeSystem="{SNOMED}" displayName="Condition"/>'
        '<statusCode code="completed"/>'
        f'<value xsi:type="CD" code="{code}" codeSystem="{SNOMED}" displayName="{display}"/>'
        + death
        + "</observation></component>"
    )


def _death(*, negated: bool) -> str:
    return (
        '<entryRelationship typeCode="CAUS"><observation classCode="OBS" moodCode="EVN"'
        + (' negationInd="true"' if negated else "")
        + '><templateId root="2.16.840.1.113883.10.20.22.4.47"/>'
        '<code code="ASSERTION" codeSystem="2.16.840.1.113883.5.4"/>'
        '<statusCode code="completed"/>'
        f'<value xsi:type="CD" code="419099009" codeSystem="{SNOMED}" displayName="Dead"/>'
        "</observation></entryRelationship>"
    )


def _family_history(observations: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    organizer = (
        '<entry><organizer classCode="CLUSTER" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.45" extension="2015-08-01"/>'
        '<id root="1.2.250.1.999.45" extension="FH-1"/><statusCode code="completed"/>'
        '<subject><relatedSubject classCode="PRS"><code code="MTH" '
        'codeSystem="2.16.840.1.113883.5.111" displayName="Mother"/></relatedSubject></subject>'
        + observations
        + "</organizer></entry>"
    )
    bundle, warnings = convert_document(cda(body=section(*FAMILY_HISTORY, organizer)))
    [history] = resources_of(bundle, "FamilyMemberHistory")
    return history, warnings


def test_a_negated_family_history_observation_is_no_condition_of_the_relative() -> None:
    history, warnings = _family_history(
        _family_observation("254837009", "Breast cancer", negated=True)
        + _family_observation("44054006", "Diabetes")
    )
    codes = [c["code"]["coding"][0]["code"] for c in history["condition"]]
    assert codes == ["44054006"]  # not "the mother had breast cancer"
    assert any("negated" in w and "component[1]/observation" in w for w in warnings)


def test_a_negated_death_observation_does_not_make_the_relative_deceased() -> None:
    history, _ = _family_history(
        _family_observation("44054006", "Diabetes", death=_death(negated=True))
    )
    assert "deceasedBoolean" not in history
    [condition] = history["condition"]
    assert "contributedToDeath" not in condition and "outcome" not in condition
    alive_then_dead, _ = _family_history(
        _family_observation("44054006", "Diabetes", death=_death(negated=False))
    )
    assert alive_then_dead["deceasedBoolean"] is True
    assert alive_then_dead["condition"][0]["contributedToDeath"] is True
