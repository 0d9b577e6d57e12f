"""Session 30: the document's elements carrying an id, from an index.

Templates looked up the Problem Observation an entry reference names (Goal.addresses,
Condition links) and the encounter a note names with ``//h:observation[h:id[…]]``: an
XPath walk of the whole document per reference. ``Node.with_id`` answers from an index
of the document built once per element name, with exactly what that XPath selects.
"""

from __future__ import annotations

import itertools
import json

import pytest

from converter import Converter, ConverterConfig
from converter.cda import CdaDocument, PathCache
from tests.cda._support import cda
from tests.conftest import SHARED_DIR

_OBSERVATIONS = (
    '<observation><id root="1.2.3" extension="A"/></observation>'
    '<observation><id root="1.2.3"/></observation>'
    '<observation><id root="1.2.3" extension=""/></observation>'
    # Two ids, one of them the one looked up; the same id twice.
    '<observation><id root="9.9"/><id root="1.2.3" extension="A"/></observation>'
    '<observation><id root="1.2.3" extension="B"/><id root="1.2.3" extension="B"/>'
    # Nested: both, the outer first (document order).
    '<entryRelationship><observation><id root="1.2.3" extension="B"/></observation>'
    "</entryRelationship></observation>"
    '<observation><id root="O\'Brien" extension="it\'s"/></observation>'
    '<act><id root="1.2.3" extension="A"/></act>'
)


def _document() -> CdaDocument:
    body = (
        f"<component><section><title>T</title><entry>{_OBSERVATIONS}</entry></section></component>"
    )
    return CdaDocument(cda(body=body).encode(), PathCache())


def _xpath(document: CdaDocument, name: str, root: str, extension: str) -> list[object]:
    # What the templates wrote (roots and extensions without a quote).
    test = f"@extension='{extension}'" if extension else "not(@extension)"
    return list(document.root.xpath(f"//h:{name}[h:id[@root='{root}' and {test}]]"))


@pytest.mark.parametrize(
    ("name", "root", "extension"),
    list(itertools.product(["observation", "act"], ["1.2.3", "9.9", "4.5"], ["A", "B", "", "C"])),
)
def test_the_same_elements_as_the_xpath(name: str, root: str, extension: str) -> None:
    document = _document()
    expected = _xpath(document, name, root, extension)
    assert document.root.with_id(name, root, extension) == expected


def test_what_the_xpath_could_not_look_up() -> None:
    # A quote in an id broke the XPath (the templates skipped such ids): found now.
    document = _document()
    (found,) = document.root.with_id("observation", "O'Brien", "it's")
    assert found.id["extension"] == "it's"
    assert document.root.with_id("observation", "O'Brien", "") == []


def test_a_released_document_indexes_again() -> None:
    document = _document()
    before = [n.path for n in document.root.with_id("observation", "1.2.3", "A")]
    document.release()
    assert [n.path for n in document.root.with_id("observation", "1.2.3", "A")] == before
    assert len(before) == 2


_CARE_PLAN = SHARED_DIR / "corpus" / "ccda" / "hl7-c-cda-examples" / "documents" / "Care_Plan.xml"


def test_a_goal_addresses_the_problems_its_entry_references_name() -> None:
    if not _CARE_PLAN.is_file():
        pytest.skip(f"{_CARE_PLAN} is absent: the shared corpus is not available here")
    bundle = json.loads(
        Converter(ConverterConfig()).convert_document(_CARE_PLAN.read_bytes()).to_json()
    )
    resources = {
        f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"]
        for e in bundle["entry"]
    }
    addressed = [
        ref["reference"]
        for r in resources.values()
        if r["resourceType"] == "Goal"
        for ref in r.get("addresses", [])
    ]
    # HL7's Care Plan example: its goal addresses three problems of the document, named
    # by entry references (4.122), not nested.
    assert len(addressed) == 3
    assert all(resources[ref]["resourceType"] == "Condition" for ref in addressed)
