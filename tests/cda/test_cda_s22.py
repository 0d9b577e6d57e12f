"""Session 22: the identity of entries sent without an id.

An entry without an id got an id from the document's id and its rank among the resources
of its template: a new version of the document (same setId, new id), or an entry added or
moved, gave every id-less entry a new resource, and the old ones stayed on the server
beside them. They now take their identity from what they say (converter/cda/fingerprint.py)
within the document set.
"""

from __future__ import annotations

import copy
from typing import Any

from lxml import etree

from ._support import CCD_SAMPLE, cda, convert_document, resources_of, section

H = "{urn:hl7-org:v3}"
STATEMENT_TAGS = "act observation substanceAdministration supply procedure encounter organizer"
STATEMENTS = {f"{H}{tag}" for tag in STATEMENT_TAGS.split()}
#: Written once per document, whatever its entries.
PER_DOCUMENT = {"Composition", "DocumentReference", "Provenance"}
PROBLEMS = ("2.16.840.1.113883.10.20.22.2.5.1", "11450-4")


def _without_entry_ids() -> etree._Element:
    """The CCD sample with no id on any clinical statement (what some producers send)."""
    root = etree.fromstring(CCD_SAMPLE.read_bytes())
    for element in list(root.iter(f"{H}id")):
        parent = element.getparent()
        if parent is not None and parent.tag in STATEMENTS:
            parent.remove(element)
    return root


def _next_version(root: etree._Element) -> etree._Element:
    """A replacing version: new document id, same setId, every section's entries in
    reverse order."""
    version = etree.fromstring(etree.tostring(root))
    version.find(f"{H}id").set("extension", "CCD-LEFEVRE-C-V2")
    for sec in version.iter(f"{H}section"):
        entries = sec.findall(f"{H}entry")
        for entry in entries:
            sec.remove(entry)
        for entry in reversed(entries):
            sec.append(entry)
    return version


def _clinical(bundle: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (e["resource"]["resourceType"], e["resource"]["id"])
        for e in bundle["entry"]
        if e["resource"]["resourceType"] not in PER_DOCUMENT
    }


def test_a_new_version_with_entries_reordered_updates_entries_without_ids() -> None:
    original = _without_entry_ids()
    first, _ = convert_document(etree.tostring(original))
    second, _ = convert_document(etree.tostring(_next_version(original)))
    before, after = _clinical(first), _clinical(second)
    assert {t for t, _ in before} >= {"Condition", "AllergyIntolerance", "Observation"}
    assert after == before


def test_an_entry_added_before_the_others_leaves_their_ids() -> None:
    original = _without_entry_ids()
    first, _ = convert_document(etree.tostring(original))
    version = _next_version(original)
    # A new problem at the top of the problem list: its narrative links shift the others'.
    problems = next(
        s
        for s in version.iter(f"{H}section")
        if s.find(f"{H}code") is not None and s.find(f"{H}code").get("code") == "11450-4"
    )
    added = copy.deepcopy(problems.find(f"{H}entry"))
    value = next(added.iter(f"{H}value"))
    value.set("code", "38341003")
    value.set("displayName", "Hypertension")
    for reference in problems.iter(f"{H}reference"):
        reference.set("value", reference.get("value", "") + "-shifted")
    problems.find(f"{H}entry").addprevious(added)
    second, _ = convert_document(etree.tostring(version))
    before, after = _clinical(first), _clinical(second)
    assert before <= after
    assert {t for t, _ in after - before} == {"Condition"}
    assert len(after - before) == 1


def _problem(code: str, onset: str) -> str:
    return (
        '<entry><act classCode="ACT" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.3" extension="2015-08-01"/>'
        '<code code="CONC" codeSystem="2.16.840.1.113883.5.6"/><statusCode code="active"/>'
        '<entryRelationship typeCode="SUBJ"><observation classCode="OBS" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.4" extension="2015-08-01"/>'
        '<code code="55607006" codeSystem="2.16.840.1.113883.6.96"/>'
        '<text><reference value="#p1"/></text><statusCode code="completed"/>'
        f'<effectiveTime><low value="{onset}"/></effectiveTime>'
        f'<value xsi:type="CD" code="{code}" codeSystem="2.16.840.1.113883.6.96"/>'
        "</observation></entryRelationship></act></entry>"
    )


def _conditions(*entries: str, setid: str = "S-1") -> list[str]:
    header = f'<setId root="1.2.250.1.999.3.9" extension="{setid}"/>'
    doc = cda(body=section(*PROBLEMS, "".join(entries)), header="")
    doc = doc.replace('<code code="34133-9"', header + '<code code="34133-9"', 1)
    bundle, _ = convert_document(doc)
    return [c["id"] for c in resources_of(bundle, "Condition")]


def test_two_identical_entries_of_one_document_stay_two_resources() -> None:
    same = _problem("44054006", "20200101")
    ids = _conditions(same, same)
    assert len(set(ids)) == 2
    # ...and keep their ids when a third, different entry comes between them.
    assert set(_conditions(same, _problem("38341003", "20210101"), same)) >= set(ids)


def test_different_entries_or_document_sets_do_not_share_ids() -> None:
    [diabetes] = _conditions(_problem("44054006", "20200101"))
    [other_onset] = _conditions(_problem("44054006", "20190101"))
    [other_set] = _conditions(_problem("44054006", "20200101"), setid="S-2")
    assert len({diabetes, other_onset, other_set}) == 3
    # The same entry in another version of the set: the same resource.
    assert _conditions(_problem("44054006", "20200101")) == [diabetes]
