"""Session 30: the same participant written again under every entry is one input.

C-CDA documents repeat the author (and performers, informants) under each entry, as
identical copies. ``Node.first_equal()`` gives the first copy asked for, so that
``emit("Practitioner", entity=...)`` receives the same node each time and the render
session reuses its rendering (templates/memo.py) instead of rendering it again; the
outputs are the same (tests/templates/test_render_memo.py compares every sample and the
C-CDA corpus with and without reuse).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
from lxml import etree

from converter import Converter, ConverterConfig
from converter.cda import CdaDocument, PathCache
from converter.cda.node import Node
from converter.templates.render import RenderSession
from tests.cda._support import CCD_SAMPLE, REPO, cda
from tests.support.compiled import pure_python_only

_H = "{urn:hl7-org:v3}"


def _author(family: str) -> str:
    return (
        '<author><time value="20240312"/><assignedAuthor>'
        '<id root="1.2.250.1.71.4.2.1" extension="810001"/>'
        f"<assignedPerson><name><family>{family}</family></name></assignedPerson>"
        "</assignedAuthor></author>"
    )


def _document(*families: str) -> CdaDocument:
    entries = "".join(f"<entry><act>{_author(f)}</act></entry>" for f in families)
    body = f"<component><section><title>T</title>{entries}</section></component>"
    return CdaDocument(cda(body=body).encode(), PathCache())


def _entities(document: CdaDocument) -> list[Any]:
    return document.root.all(
        "component/structuredBody/component/section/entry/act/author/assignedAuthor"
    )


def test_equal_elements_give_the_first_one_asked_for() -> None:
    document = _document("Martin", "Martin", "Durand", "Martin")
    first, again, other, third = _entities(document)
    assert first.first_equal() is first
    assert again.first_equal() is first
    assert third.first_equal() is first
    assert other.first_equal() is other
    # The first asked for, not the first in the document.
    document = _document("Martin", "Martin")
    first, again = _entities(document)
    assert again.first_equal() is again
    assert first.first_equal() is again


def test_content_decides_to_the_last_attribute() -> None:
    document = _document("Martin", "Martin")
    first, again = _entities(document)
    again.first("id")._element.set("extension", "810002")  # the same name, another id
    assert again.first_equal() is again
    assert first.first_equal() is first


def test_an_absent_element_is_itself() -> None:
    root = _document("Martin").root
    absent = root.noSuchElement
    assert absent.first_equal() is absent


def test_a_released_document_starts_again() -> None:
    document = _document("Martin", "Martin")
    first, again = _entities(document)
    assert first.first_equal() is first and again.first_equal() is first
    document.release()
    first, again = _entities(document)
    assert again.first_equal() is again and first.first_equal() is again


def _mentions(data: bytes) -> tuple[int, int]:
    """Person entities in the document (assignedAuthor / assignedEntity with a person),
    and how many differ in content."""
    root = etree.fromstring(data)
    people = [
        e
        for tag in ("assignedAuthor", "assignedEntity")
        for e in root.iter(_H + tag)
        if e.find(_H + "assignedPerson") is not None
    ]
    return len(people), len({etree.tostring(e, with_tail=False) for e in people})


def _benchmark_ccd() -> bytes:
    """The sample CCD grown by scripts/benchmark.py: its entries replicated, their
    participants as written (the way producers repeat them under every entry)."""
    spec = importlib.util.spec_from_file_location("benchmark", REPO / "scripts" / "benchmark.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return bytes(module.bigger_ccd(CCD_SAMPLE.read_bytes()))


def _convert(data: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[str, list[str]]:
    """The bundle's JSON text and the templates rendered."""
    rendered: list[str] = []
    build = RenderSession._build

    def counting(self: RenderSession, name: str, variables: dict[str, Any]) -> Any:
        rendered.append(name.rsplit("/", 1)[-1])
        return build(self, name, variables)

    with monkeypatch.context() as patch:
        patch.setattr(RenderSession, "_build", counting)
        conversion = Converter(ConverterConfig()).convert_document(data)
    return conversion.to_json(), rendered


@pure_python_only
def test_a_repeated_author_is_rendered_once(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _benchmark_ccd()
    mentions, distinct = _mentions(data)
    assert mentions > distinct  # clinicians repeated under the entries
    bundle, rendered = _convert(data, monkeypatch)
    # The same conversion with every copy its own input: the same bundle, more renderings.
    monkeypatch.setattr(Node, "first_equal", lambda self: self)
    bundle_apart, rendered_apart = _convert(data, monkeypatch)
    assert bundle == bundle_apart
    for name in ("Practitioner.j2", "Organization.j2", "PractitionerRole.j2"):
        assert rendered.count(name) < rendered_apart.count(name), name
    assert rendered.count("Practitioner.j2") <= rendered_apart.count("Practitioner.j2") // 2
