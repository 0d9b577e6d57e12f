"""``CdaDocument.release()``: a document done with leaves (almost) nothing to Python's
cycle collector, and stays usable."""

from __future__ import annotations

import gc
from collections.abc import Iterator

from converter.cda import CdaDocument, Node, PathCache
from tests.cda._support import CCD_SAMPLE


def _walk(node: Node) -> Iterator[Node]:
    """Every element under ``node``, read the way templates read them: children by
    name, attributes, paths, the statement keys."""
    for child in node:
        values = (child["root"], child["code"], child["xsi:type"])  # cached reads
        assert all(isinstance(value, str) for value in values)
        name = child.tag
        assert getattr(node, name) is not None
        node.all(name)
        node.first(name)
        if child.has_template("2.16.840.1.113883.10.20.22.4.2"):
            child.same_id()
            child.content_key()
        yield child
        yield from _walk(child)


def _left_for_the_collector(release: bool) -> int:
    """Objects only the cycle collector would free once a walked document is dropped."""
    data = CCD_SAMPLE.read_bytes()
    paths = PathCache()  # one per converter, outliving its documents
    gc.collect()
    gc.disable()
    try:
        document = CdaDocument(data, paths)
        assert sum(1 for _ in _walk(document.root)) > 500
        if release:
            document.release()
        del document
        return gc.collect()
    finally:
        gc.enable()


def test_a_released_document_is_freed_without_the_cycle_collector() -> None:
    # Without release() the document, its Nodes and their attribute values refer to one
    # another: thousands of objects wait for a full collection.
    assert _left_for_the_collector(release=False) > 2000
    assert _left_for_the_collector(release=True) < 30


def test_a_released_document_reads_the_same() -> None:
    document = CdaDocument(CCD_SAMPLE.read_bytes(), PathCache())
    root = document.root

    def snapshot() -> list[tuple[str, str, str, str, int]]:
        return [
            (n.path, n["root"], n["code"], n.string()[:40], len(n.same_id()))
            for n in _walk(document.root)
        ]

    before = snapshot()
    keys = [n.content_key() for n in root.component.structuredBody.all("component/section")]
    document.release()
    assert document.root is root
    assert document.node(root._element) is root
    assert snapshot() == before
    assert [n.content_key() for n in root.component.structuredBody.all("component/section")] == (
        keys
    )
    assert document.control_id and document.narrative("#nonexistent") == ""
