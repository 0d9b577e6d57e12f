"""C-CDA documents loaded into a FHIR warehouse (the real test FHIR server): what a data
engineer queries must be there, and nothing twice.

Every sample document, sent twice and then as a new version (relatedDocument RPLC, same
setId, new id, every section's entries in reverse order), leaves on the server the
resources of the first sending plus one Composition and one source DocumentReference per
version: no duplicate, every reference resolves.

An IVL_TS with only a ``center`` (HL7's operative note, procedure note, history and
physical and discharge summary examples date their planned colonoscopy, polypectomy and
planned observation so) is a point in time, as ``@value`` is. It gave a ServiceRequest
without any occurrence (and a Procedure without performed[x]): a search by date never
found the planned procedure.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from lxml import etree

from tests.cda._support import SAMPLES, convert_document, resources_of, section
from tests.support.fhirserver import FhirServer, require_fhirserver
from tests.support.hl7_edit import references

from ._support import cda

V3 = "urn:hl7-org:v3"

PLAN_OF_TREATMENT = "2.16.840.1.113883.10.20.22.2.10"
PROCEDURES = "2.16.840.1.113883.10.20.22.2.7.1"
SNOMED = "2.16.840.1.113883.6.96"


@pytest.fixture(scope="module")
def fhir_server() -> Iterator[FhirServer]:
    require_fhirserver()
    # Batches: a CCD writes more than the 50 updates the engine allows in one transaction.
    with FhirServer.start(transactions=False) as server:
        yield server


def _load(server: FhirServer, bundle: dict[str, Any]) -> None:
    """POST the bundle as a batch; every entry must be written."""
    batch = {**bundle, "type": "batch"}
    answer = server.transact(batch)
    statuses = [entry["response"]["status"] for entry in answer["entry"]]
    assert all(status.startswith("2") for status in statuses), statuses


def _new_version(data: bytes) -> bytes:
    """The next version of a document: a new id, the same set (the old id when it had no
    setId), relatedDocument RPLC naming the old one, entries in reverse order."""
    root = etree.fromstring(data)
    doc_id = root.find(f"{{{V3}}}id")
    assert doc_id is not None
    old_id = copy.deepcopy(doc_id)
    if root.find(f"{{{V3}}}setId") is None:
        doc_id.addnext(copy.deepcopy(old_id))
        doc_id.getnext().tag = f"{{{V3}}}setId"
    doc_id.set("extension", (doc_id.get("extension") or "") + "-v-next")
    for related in root.findall(f"{{{V3}}}relatedDocument"):
        root.remove(related)
    related = etree.Element(f"{{{V3}}}relatedDocument", typeCode="RPLC")
    etree.SubElement(related, f"{{{V3}}}parentDocument").append(old_id)
    body = root.find(f"{{{V3}}}component")
    assert body is not None
    body.addprevious(related)
    for sec in root.iter(f"{{{V3}}}section"):
        entries = sec.findall(f"{{{V3}}}entry")
        for entry in entries:
            sec.remove(entry)
        sec.extend(reversed(entries))
    text: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return text


def _stored(server: FhirServer, kinds: set[str]) -> dict[str, dict[str, Any]]:
    stored: dict[str, dict[str, Any]] = {}
    for kind in sorted(kinds):
        for entry in server.search(kind, _count="1000").get("entry", []):
            stored[f"{kind}/{entry['resource']['id']}"] = entry["resource"]
    return stored


def _planned(kind: str, template: str, ident: str, code: str, when: str) -> str:
    return (
        f'<entry><{kind} classCode="{"OBS" if kind == "observation" else "PROC"}" moodCode="RQO">'
        f'<templateId root="{template}" extension="2014-06-09"/>'
        f'<id root="1.2.250.1.999.7.1" extension="{ident}"/>'
        f'<code code="{code}" codeSystem="{SNOMED}"/>'
        '<statusCode code="new"/>'
        f"<effectiveTime>{when}</effectiveTime>"
        f"</{kind}></entry>"
    )


def _plan_document() -> str:
    entries = _planned(
        "procedure",
        "2.16.840.1.113883.10.20.22.4.41",
        "SR-1",
        "73761001",
        '<center value="20120512"/>',
    ) + _planned(
        "observation",
        "2.16.840.1.113883.10.20.22.4.44",
        "SR-2",
        "252416005",
        '<center value="201410121030+0200"/>',
    )
    return cda(
        doc_id='<id root="1.2.250.1.999.3.1" extension="H7-PLAN"/>',
        body=section(PLAN_OF_TREATMENT, "18776-5", entries),
    )


def _procedure_document() -> str:
    entry = (
        '<entry><procedure classCode="PROC" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.14" extension="2014-06-09"/>'
        '<id root="1.2.250.1.999.7.2" extension="PR-1"/>'
        f'<code code="274025005" codeSystem="{SNOMED}" displayName="Colonic polypectomy"/>'
        '<statusCode code="completed"/>'
        '<effectiveTime><center value="20000421"/></effectiveTime>'
        "</procedure></entry>"
    )
    return cda(
        doc_id='<id root="1.2.250.1.999.3.1" extension="H7-PROC"/>',
        body=section(PROCEDURES, "47519-4", entry),
    )


def _by_code(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["code"]["coding"][0]["code"]: r for r in resources}


def test_planned_activity_center_is_the_occurrence() -> None:
    bundle, _ = convert_document(_plan_document())
    requests = _by_code(resources_of(bundle, "ServiceRequest"))
    assert requests["73761001"]["occurrenceDateTime"] == "2012-05-12"
    # Precision and offset are kept, as for @value.
    assert requests["252416005"]["occurrenceDateTime"] == "2014-10-12T10:30:00+02:00"
    assert "occurrencePeriod" not in requests["73761001"]


def test_procedure_center_is_performed_date_time() -> None:
    bundle, _ = convert_document(_procedure_document())
    [procedure] = resources_of(bundle, "Procedure")
    assert procedure["performedDateTime"] == "2000-04-21"
    assert "_performedDateTime" not in procedure


def test_warehouse_finds_planned_and_performed_procedures_by_date(
    fhir_server: FhirServer,
) -> None:
    fhir_server.reset()
    for document in (_plan_document(), _procedure_document()):
        bundle, _ = convert_document(document)
        _load(fhir_server, bundle)
    planned = fhir_server.search("ServiceRequest", occurrence="2012-05-12")
    codes = [e["resource"]["code"]["coding"][0]["code"] for e in planned.get("entry", [])]
    assert codes == ["73761001"]
    assert fhir_server.count("ServiceRequest", occurrence="ge2014-10-01") == 1
    assert fhir_server.count("Procedure", date="2000-04-21") == 1


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("*.xml")))
def test_resent_and_replaced_sample_adds_no_duplicate(fhir_server: FhirServer, sample: str) -> None:
    fhir_server.reset()
    data = (SAMPLES / sample).read_bytes()
    first, _ = convert_document(data)
    _load(fhir_server, first)
    kinds = {entry["resource"]["resourceType"] for entry in first["entry"]}
    stored = _stored(fhir_server, kinds)
    counts = Counter(key.split("/")[0] for key in stored)
    assert sum(counts.values()) == len(first["entry"])

    again, _ = convert_document(data)
    _load(fhir_server, again)
    assert Counter(key.split("/")[0] for key in _stored(fhir_server, kinds)) == counts

    replacing, _ = convert_document(_new_version(data))
    _load(fhir_server, replacing)
    kinds |= {entry["resource"]["resourceType"] for entry in replacing["entry"]}
    stored = _stored(fhir_server, kinds)
    expected = counts + Counter({"Composition": 1, "DocumentReference": 1})
    assert Counter(key.split("/")[0] for key in stored) == expected
    unresolved = {
        ref
        for resource in stored.values()
        for ref in references(resource)
        if not ref.startswith("#") and ref not in stored
    }
    assert unresolved == set()
