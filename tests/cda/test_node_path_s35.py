"""``Node.path`` names every element as a scan of its siblings would (session 35: the
positions now come from a per-document index, filled one sibling list at a time; a
warning naming each of 8,000 results took 11 s, the scans being quadratic)."""

from __future__ import annotations

from lxml import etree

from converter.cda import CdaDocument, PathCache
from tests.cda._support import REPO


def _scanned_path(element: etree._Element) -> str:
    """The location as Node.path wrote it before the index: each step's position among
    its parent's children of the same name, when there are several."""
    parts = []
    current: etree._Element | None = element
    while current is not None:
        name = etree.QName(current).localname
        parent = current.getparent()
        if parent is not None:
            same = [c for c in parent if c.tag == current.tag]
            if len(same) > 1:
                name += f"[{same.index(current) + 1}]"
        parts.append(name)
        current = parent
    return "/" + "/".join(reversed(parts))


def test_every_element_of_the_samples_has_the_path_a_scan_gives() -> None:
    samples = sorted((REPO / "samples" / "cda").glob("*.xml"))
    assert samples
    for sample in samples:
        doc = CdaDocument(sample.read_bytes(), PathCache())
        for _ in range(2):  # and again once the caches were released
            elements = [e for e in doc._root.iter() if isinstance(e.tag, str)]
            # Deepest first, then in document order: positions asked before their lists
            # were indexed from a sibling, and after.
            for element in sorted(elements, key=lambda e: -len(list(e.iterancestors())))[:50]:
                assert doc.node(element).path == _scanned_path(element), sample.name
            for element in elements:
                assert doc.node(element).path == _scanned_path(element), sample.name
            doc.release()


def test_positions_among_many_siblings() -> None:
    entries = "".join(f'<entry><act><id root="1.2.{n}"/></act></entry>' for n in range(300))
    data = (
        '<ClinicalDocument xmlns="urn:hl7-org:v3"><component><structuredBody><component>'
        f"<section><!-- a comment -->{entries}<text/></section>"
        "</component></structuredBody></component></ClinicalDocument>"
    ).encode()
    doc = CdaDocument(data, PathCache())
    section = doc.root.component.structuredBody.component.section
    acts = section.all("entry/act")
    assert acts[299].path == (
        "/ClinicalDocument/component/structuredBody/component/section/entry[300]/act"
    )
    assert acts[0].path.endswith("/section/entry[1]/act")
    assert section.text.path.endswith("/section/text")
    assert acts[150].id.path.endswith("/section/entry[151]/act/id")
