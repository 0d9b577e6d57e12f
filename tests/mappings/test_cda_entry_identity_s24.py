"""A CDA entry's resource is identified by its id (and code), not by what it says.

A new version of a document (same setId, relatedDocument RPLC) that corrects a result's
value or time, a problem's code, an allergen or a vaccination date used to give the
corrected statement a new resource id (the identity held the value and the time): the
warehouse kept the wrong value beside the right one. The identity is now the patient,
the entry's first id and its code; the value and time enter it only when the same
document holds another statement with that id and code saying something else (HL7's
own examples reuse ids: those stay two resources, the same at every conversion).
Entries without an id keep their content identity.
"""

from __future__ import annotations

from typing import Any

from converter.cda import CdaDocument, PathCache
from tests.cda._support import cda, convert_document, resources_of, section
from tests.support.r4validator import R4Validator

LOINC = "2.16.840.1.113883.6.1"
SNOMED = "2.16.840.1.113883.6.96"
CVX = "2.16.840.1.113883.12.292"
RXNORM = "2.16.840.1.113883.6.88"
RESULTS = "2.16.840.1.113883.10.20.22.2.3.1"
PROBLEMS = "2.16.840.1.113883.10.20.22.2.5.1"
ALLERGIES = "2.16.840.1.113883.10.20.22.2.6.1"
IMMUNIZATIONS = "2.16.840.1.113883.10.20.22.2.2.1"
ENCOUNTERS = "2.16.840.1.113883.10.20.22.2.22.1"
RESULT = "2.16.840.1.113883.10.20.22.4.2"


def _version(body: str, number: int) -> str:
    """Version ``number`` of one document set: its own id, the set's setId, and from
    version 2 on a relatedDocument replacing the previous version."""
    header = (
        f'<relatedDocument typeCode="RPLC"><parentDocument>'
        f'<id root="1.2.250.1.999.3.1" extension="V{number - 1}"/>'
        '<setId root="1.2.250.1.999.3.9" extension="SET-1"/>'
        f'<versionNumber value="{number - 1}"/></parentDocument></relatedDocument>'
        if number > 1
        else ""
    )
    document = cda(
        doc_id=f'<id root="1.2.250.1.999.3.1" extension="V{number}"/>',
        body=body,
        header=header,
    )
    set_id = (
        '<setId root="1.2.250.1.999.3.9" extension="SET-1"/>'
        f'<versionNumber value="{number}"/><recordTarget>'
    )
    return document.replace("<recordTarget>", set_id, 1)


def _result(
    extension: str,
    code: str,
    time: str,
    value: str,
    *,
    panel_time: str = "20240310",
    more: str = "",
) -> str:
    """A results organizer holding one Result Observation (and ``more`` components)."""
    return (
        '<entry><organizer classCode="BATTERY" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.1" extension="2015-08-01"/>'
        f'<id root="1.2.250.1.999.60" extension="PANEL-{extension}"/>'
        f'<code code="24323-8" codeSystem="{LOINC}"/><statusCode code="completed"/>'
        f'<effectiveTime value="{panel_time}"/>'
        f"{_result_observation(extension, code, time, value)}{more}</organizer></entry>"
    )


def _result_observation(extension: str, code: str, time: str, value: str) -> str:
    return (
        '<component><observation classCode="OBS" moodCode="EVN">'
        f'<templateId root="{RESULT}" extension="2015-08-01"/>'
        f'<id root="1.2.250.1.999.61" extension="{extension}"/>'
        f'<code code="{code}" codeSystem="{LOINC}"/><statusCode code="completed"/>'
        f'<effectiveTime value="{time}"/>{value}</observation></component>'
    )


def _problem(extension: str, problem: str, *, problem_type: str = "55607006") -> str:
    return (
        '<observation classCode="OBS" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.4" extension="2015-08-01"/>'
        f'<id root="1.2.250.1.999.71" extension="{extension}"/>'
        f'<code code="{problem_type}" codeSystem="{SNOMED}"/><statusCode code="completed"/>'
        '<effectiveTime><low value="20240301"/></effectiveTime>'
        f'<value xsi:type="CD" code="{problem}" codeSystem="{SNOMED}"/></observation>'
    )


def _concern(*problems: str) -> str:
    related = "".join(
        f'<entryRelationship typeCode="SUBJ">{problem}</entryRelationship>' for problem in problems
    )
    return (
        '<entry><act classCode="ACT" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.3" extension="2015-08-01"/>'
        '<id root="1.2.250.1.999.70" extension="CONCERN-1"/>'
        '<code code="CONC" codeSystem="2.16.840.1.113883.5.6"/><statusCode code="active"/>'
        f'<effectiveTime><low value="20240301"/></effectiveTime>{related}</act></entry>'
    )


def _allergy(extension: str, substance: str) -> str:
    return (
        '<entry><act classCode="ACT" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.30" extension="2015-08-01"/>'
        f'<id root="1.2.250.1.999.90" extension="CONCERN-{extension}"/>'
        '<code code="CONC" codeSystem="2.16.840.1.113883.5.6"/><statusCode code="active"/>'
        '<effectiveTime><low value="20240301"/></effectiveTime>'
        '<entryRelationship typeCode="SUBJ"><observation classCode="OBS" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.7" extension="2014-06-09"/>'
        f'<id root="1.2.250.1.999.91" extension="{extension}"/>'
        '<code code="ASSERTION" codeSystem="2.16.840.1.113883.5.4"/>'
        '<statusCode code="completed"/><effectiveTime><low value="20240301"/></effectiveTime>'
        f'<value xsi:type="CD" code="416098002" codeSystem="{SNOMED}"/>'
        '<participant typeCode="CSM"><participantRole classCode="MANU"><playingEntity '
        f'classCode="MMAT"><code code="{substance}" codeSystem="{RXNORM}"/></playingEntity>'
        "</participantRole></participant></observation></entryRelationship></act></entry>"
    )


def _immunization(extension: str, date: str) -> str:
    return (
        '<entry><substanceAdministration classCode="SBADM" moodCode="EVN" negationInd="false">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.52" extension="2015-08-01"/>'
        f'<id root="1.2.250.1.999.80" extension="{extension}"/><statusCode code="completed"/>'
        f'<effectiveTime value="{date}"/><consumable><manufacturedProduct classCode="MANU">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.54" extension="2014-06-09"/>'
        f'<manufacturedMaterial><code code="140" codeSystem="{CVX}"/></manufacturedMaterial>'
        "</manufacturedProduct></consumable></substanceAdministration></entry>"
    )


def _coded(code: str) -> str:
    return f'<value xsi:type="CD" code="{code}" codeSystem="{SNOMED}"/>'


def _quantity(number: str) -> str:
    return f'<value xsi:type="PQ" value="{number}" unit="g/dL"/>'


def _one(bundle: dict[str, Any], kind: str) -> dict[str, Any]:
    [resource] = resources_of(bundle, kind)
    return resource


def test_a_corrected_result_updates_its_observation_and_report(
    r4validator: R4Validator,
) -> None:
    """The culture result is corrected (another organism, another time, and the panel's
    time): version 2 writes the same Observation and DiagnosticReport ids."""
    first = _result("CULT-1", "600-7", "20240310091500+0100", _coded("10828004"))
    corrected = _result(
        "CULT-1",
        "600-7",
        "20240310101500+0100",
        _coded("260385009"),
        panel_time="20240311",
    )
    v1, _ = convert_document(_version(section(RESULTS, "30954-2", first), 1))
    v2, _ = convert_document(_version(section(RESULTS, "30954-2", corrected), 2))
    before, after = _one(v1, "Observation"), _one(v2, "Observation")
    assert before["valueCodeableConcept"]["coding"][0]["code"] == "10828004"
    assert after["valueCodeableConcept"]["coding"][0]["code"] == "260385009"
    assert after["effectiveDateTime"] == "2024-03-10T10:15:00+01:00"
    assert after["id"] == before["id"]
    report_before, report_after = _one(v1, "DiagnosticReport"), _one(v2, "DiagnosticReport")
    assert report_before["effectiveDateTime"] != report_after["effectiveDateTime"]
    assert report_after["id"] == report_before["id"]
    assert after["id"] in report_after["result"][0]["reference"]
    assert r4validator.validate(v2) == []


def test_a_corrected_problem_allergen_and_vaccination_date_update_their_resources() -> None:
    def body(problem: str, substance: str, date: str) -> str:
        return (
            section(PROBLEMS, "11450-4", _concern(_problem("PROB-1", problem)))
            + section(ALLERGIES, "48765-2", _allergy("ALG-1", substance))
            + section(IMMUNIZATIONS, "11369-6", _immunization("VAX-1", date))
        )

    v1, _ = convert_document(_version(body("44054006", "7980", "20240301"), 1))
    v2, _ = convert_document(_version(body("46635009", "723", "20240302"), 2))
    for kind, read in (
        ("Condition", lambda r: r["code"]["coding"][0]["code"]),
        ("AllergyIntolerance", lambda r: r["code"]["coding"][0]["code"]),
        ("Immunization", lambda r: r["occurrenceDateTime"]),
    ):
        before, after = _one(v1, kind), _one(v2, kind)
        assert read(before) != read(after), kind
        assert after["id"] == before["id"], kind


def test_one_id_reused_for_different_statements_of_a_document_stays_apart() -> None:
    """HL7's examples give one id to several statements: two results with one id and
    code (another value, or the same time and another number), two problems, two
    allergies, two vaccinations: each is its own resource, with the same ids when the
    document is converted again."""
    reused = (
        section(
            RESULTS,
            "30954-2",
            _result(
                "R",
                "718-7",
                "20240310",
                _quantity("13.2"),
                more=_result_observation("R", "718-7", "20240310", _quantity("9.1"))
                + _result_observation("R", "718-7", "20240311", _coded("281302008")),
            )
            # another panel with the same id and code, at another time
            + _result("R", "4544-3", "20240312", _quantity("40"), panel_time="20240312"),
        )
        + section(
            PROBLEMS,
            "11450-4",
            _concern(_problem("P", "44054006"), _problem("P", "38341003")),
        )
        + section(ALLERGIES, "48765-2", _allergy("A", "7980") + _allergy("A", "723"))
        + section(
            IMMUNIZATIONS,
            "11369-6",
            _immunization("V", "20240301") + _immunization("V", "20240401"),
        )
    )
    document = _version(reused, 1)
    bundle, warnings = convert_document(document)
    expected = {
        "Observation": 4,
        "DiagnosticReport": 2,
        "Condition": 2,
        "AllergyIntolerance": 2,
        "Immunization": 2,
    }
    ids = {kind: [r["id"] for r in resources_of(bundle, kind)] for kind in expected}
    assert {kind: len(set(found)) for kind, found in ids.items()} == expected
    assert not [w for w in warnings if "emitted twice" in w]
    again, _ = convert_document(document)
    assert {kind: [r["id"] for r in resources_of(again, kind)] for kind in expected} == ids


def test_a_statement_met_twice_is_one_resource_with_its_plain_identity() -> None:
    """The problem of the problem list, repeated as an encounter diagnosis (typed
    otherwise) and referenced by its id alone elsewhere, is one Condition, with the id it
    has when the document holds it once: a later version adding the encounter does not
    make a second one."""
    problem = _problem("PROB-1", "44054006")
    alone, _ = convert_document(_version(section(PROBLEMS, "11450-4", _concern(problem)), 1))
    encounter = (
        '<entry><encounter classCode="ENC" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.49" extension="2015-08-01"/>'
        '<id root="1.2.250.1.999.50" extension="ENC-1"/>'
        '<code code="99213" codeSystem="2.16.840.1.113883.6.12"/>'
        '<effectiveTime value="20240301"/>'
        '<entryRelationship typeCode="COMP"><act classCode="ACT" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.80" extension="2015-08-01"/>'
        f'<code code="29308-4" codeSystem="{LOINC}"/>'
        '<entryRelationship typeCode="SUBJ">'
        + _problem("PROB-1", "44054006", problem_type="282291009")
        + "</entryRelationship></act></entryRelationship>"
        # a reference to the problem by its id only
        + '<entryRelationship typeCode="RSON"><observation classCode="OBS" moodCode="EVN">'
        '<id root="1.2.250.1.999.71" extension="PROB-1"/></observation></entryRelationship>'
        "</encounter></entry>"
    )
    body = section(PROBLEMS, "11450-4", _concern(problem)) + section(
        ENCOUNTERS, "46240-8", encounter
    )
    both, _ = convert_document(_version(body, 2))
    [condition] = resources_of(both, "Condition")
    assert condition["id"] == _one(alone, "Condition")["id"]


def test_entries_without_an_id_keep_their_content_identity() -> None:
    """Without an id nothing tells a correction from a new fact: an id-less result whose
    value changed is another resource; one whose neighbours changed keeps its id."""

    def without_id(number: str) -> str:
        return _result("X", "718-7", "20240310", _quantity(number)).replace(
            '<id root="1.2.250.1.999.61" extension="X"/>', ""
        )

    first, _ = convert_document(_version(section(RESULTS, "30954-2", without_id("13.2")), 1))
    other, _ = convert_document(_version(section(RESULTS, "30954-2", without_id("9.1")), 2))
    moved, _ = convert_document(
        _version(
            section(
                RESULTS,
                "30954-2",
                _result("Y", "4544-3", "20240310", _quantity("40")) + without_id("13.2"),
            ),
            3,
        )
    )
    kept = _one(first, "Observation")["id"]
    assert _one(other, "Observation")["id"] != kept
    assert kept in [r["id"] for r in resources_of(moved, "Observation")]


def test_same_id_groups_by_element_name_and_first_id() -> None:
    """``node.same_id()``: the elements of the document with the node's name and first
    id (root and extension, trimmed), in document order; nothing for an id that is only
    a nullFlavor."""
    entries = (
        '<entry><observation classCode="OBS" moodCode="EVN">'
        '<id root="1.2.3" extension="A"/><id root="9.9" extension="Z"/></observation></entry>'
        '<entry><observation classCode="OBS" moodCode="EVN">'
        '<id root=" 1.2.3 " extension="A"/></observation></entry>'
        '<entry><observation classCode="OBS" moodCode="EVN">'
        '<id root="9.9" extension="Z"/><id root="1.2.3" extension="A"/></observation></entry>'
        '<entry><act classCode="ACT" moodCode="EVN"><id root="1.2.3" extension="A"/></act>'
        '</entry><entry><observation classCode="OBS" moodCode="EVN">'
        '<id nullFlavor="NI"/></observation></entry>'
    )
    document = CdaDocument(cda(body=section(RESULTS, "30954-2", entries)).encode(), PathCache())
    found = document.root.xpath("//h:entry/*")
    first, second, third, act, unidentified = found
    assert first.same_id() == [first, second]
    assert second.same_id() == [first, second]
    assert third.same_id() == [third]
    assert act.same_id() == [act]
    assert unidentified.same_id() == []
