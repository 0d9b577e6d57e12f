"""The statements of one document that share an id.

A clinical statement's resource is identified by its id (and its code), so that a new
version of the document correcting a value or a time updates the resource the first
version wrote. HL7's own examples, and producers that copy them, reuse one id for
several statements of one document (the C-CDA examples give the same id to different
allergies, problems and results): those must stay apart. A template learns from
:class:`IdGroups` which statements of the document carry the same first id as the one it
converts, and adds what tells them apart (value, time) to the identity only then
(``mappings/cda/datatypes/statement_identity.j2``).

Statements are grouped by element name and first ``id`` (root and extension, trimmed as
identity parts are): an id that is only a nullFlavor is no id.
"""

from __future__ import annotations

from lxml import etree

from .node import HL7

__all__ = ["IdGroups"]

_ID = f"{{{HL7}}}id"


def _id_key(
    element: etree._Element, first: etree._Element | None = None
) -> tuple[str, str, str] | None:
    """(element name, root, extension) of the element's first id (``first`` when the
    caller knows it); None without one."""
    if first is None:
        # iterchildren, not find(): lxml's find() parses its path in Python first.
        first = next(element.iterchildren(_ID), None)
        if first is None:
            return None
    root = (first.get("root") or "").strip()
    extension = (first.get("extension") or "").strip()
    if not (root or extension):
        return None
    return (str(element.tag), root, extension)


class IdGroups:
    """The elements of one document by element name and first id, indexed in one walk
    on first use."""

    def __init__(self, root: etree._Element) -> None:
        self._root = root
        self._groups: dict[tuple[str, str, str], list[etree._Element]] | None = None

    def _index(self) -> dict[tuple[str, str, str], list[etree._Element]]:
        groups: dict[tuple[str, str, str], list[etree._Element]] = {}
        seen: set[etree._Element] = set()
        for id_element in self._root.iter(_ID):
            parent = id_element.getparent()
            # Only an element's first id names it (every template reads obs.id).
            if parent is None or parent in seen:
                continue
            seen.add(parent)
            # The walk is in document order: the first id met under a parent is its
            # first id child, the one find() would return.
            key = _id_key(parent, id_element)
            if key is not None:
                groups.setdefault(key, []).append(parent)
        return groups

    def same_id(self, element: etree._Element) -> list[etree._Element]:
        """The elements with the element's name and first id, itself included, in
        document order; empty when it has no id."""
        key = _id_key(element)
        if key is None:
            return []
        if self._groups is None:
            self._groups = self._index()
        return list(self._groups.get(key, (element,)))
