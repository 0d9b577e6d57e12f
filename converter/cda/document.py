"""A parsed CDA document: its root, templates, narrative references and path cache."""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cached_property
from typing import Any

from lxml import etree

from ..errors import ParseError
from .fingerprint import ContentKeys
from .id_groups import IdGroups
from .node import HL7, NAMESPACES, Node, compile_path, name_steps
from .xml import DEFAULT_MAX_BYTES, parse_xml

__all__ = ["DOCUMENT_TYPES", "CdaDocument", "PathCache"]

#: C-CDA R2.1 document templates, most specific first (every one also declares the US
#: Realm Header 2.16.840.1.113883.10.20.22.1.1).
DOCUMENT_TYPES: dict[str, str] = {
    "2.16.840.1.113883.10.20.22.1.2": "CCD",
    "2.16.840.1.113883.10.20.22.1.4": "Consultation Note",
    "2.16.840.1.113883.10.20.22.1.5": "Diagnostic Imaging Report",
    "2.16.840.1.113883.10.20.22.1.8": "Discharge Summary",
    "2.16.840.1.113883.10.20.22.1.3": "History and Physical",
    "2.16.840.1.113883.10.20.22.1.7": "Operative Note",
    "2.16.840.1.113883.10.20.22.1.6": "Procedure Note",
    "2.16.840.1.113883.10.20.22.1.9": "Progress Note",
    "2.16.840.1.113883.10.20.22.1.14": "Referral Note",
    "2.16.840.1.113883.10.20.22.1.13": "Transfer Summary",
    "2.16.840.1.113883.10.20.22.1.15": "Care Plan",
    "2.16.840.1.113883.10.20.22.1.10": "Unstructured Document",
}


_WITH_ID = etree.XPath("//*[@ID]")
_ID = f"{{{HL7}}}id"
_NONE: list[etree._Element] = []
_BY_ID = re.compile(r"//\*\[@ID='([^']*)'\]")


class PathCache:
    """Compiled XPath expressions, shared by every document a converter reads."""

    def __init__(self) -> None:
        self._paths: dict[str, etree.XPath] = {}
        self._steps: dict[str, tuple[str, ...] | None] = {}

    def steps(self, path: str) -> tuple[str, ...] | None:
        """The element names of a names-only path (validated like any path), else None."""
        try:
            return self._steps[path]
        except KeyError:
            pass
        compile_path(path)  # refuses what paths do not support, as XPath paths do
        steps = name_steps(path)
        if len(self._steps) < 4096:
            self._steps[path] = steps
        return steps

    def get(self, expression: str, *, raw: bool = False) -> etree.XPath:
        key = ("x:" if raw else "p:") + expression
        compiled = self._paths.get(key)
        if compiled is None:
            source = expression if raw else compile_path(expression)
            compiled = etree.XPath(source, namespaces=NAMESPACES)
            if len(self._paths) < 4096:  # templates use a bounded set of paths
                self._paths[key] = compiled
        return compiled


def parse_clinical_document(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> etree._Element:
    """The root of a CDA document, parsed safely (:func:`parse_xml`); anything but a
    ``ClinicalDocument`` in the HL7 v3 namespace is a ParseError."""
    root = parse_xml(data, max_bytes=max_bytes)
    if etree.QName(root).namespace != HL7 or etree.QName(root).localname != "ClinicalDocument":
        raise ParseError(
            "not a CDA document: the root element must be "
            "ClinicalDocument in the urn:hl7-org:v3 namespace",
            location="/",
            # The root's name is the sender's text: shown on request only.
            detail=f"<{root.tag}>",
        )
    return root


class CdaDocument:
    """The document as templates see it (``doc``), plus what the converter needs."""

    def __init__(
        self, data: bytes, paths: PathCache, *, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self._data = data
        self._paths = paths
        self._root = parse_clinical_document(data, max_bytes=max_bytes)
        #: Element children by Clark name, per element, built on first access: templates
        #: read the same few children of an element many times (``obs.code``, ``id``…),
        #: and a dictionary lookup is several times cheaper than ``find()``. The keys keep
        #: their lxml proxies alive, so an element always maps to the same entry.
        self._children: dict[etree._Element, dict[str, list[etree._Element]]] = {}
        #: One Node per element (:meth:`node`), so that what a Node caches serves every
        #: template that reaches the element.
        self._nodes: dict[etree._Element, Node] = {}
        #: Each element's position among its parent's children of its name, for the
        #: locations of warnings and errors (:meth:`rank`), filled one list at a time.
        self._ranks: dict[etree._Element, int] = {}
        self.root = self.node(self._root)

    def release(self) -> None:
        """Drop the per-element caches (Nodes, children indexes), once a conversion is
        done with the document.

        Nodes refer to their document, which keeps them (one Node per element): the
        document, its Nodes and their attribute values form reference cycles that only
        Python's cycle collector frees. A converted 176 KB CCD left ~13,000 of them per
        conversion for the collector's full passes to walk: ~32 ms of such passes per
        document on the development machine, ~12 ms with the document released.
        Released, the document leaves a handful of objects to the collector (itself and
        its root Node, which refer to each other). It stays usable: the caches are built
        again on the next read, and its root keeps its Node.
        """
        for node in self._nodes.values():
            node._attrs = None
            node.__dict__.clear()
        self._nodes.clear()
        self._children.clear()
        self._ranks.clear()
        self._nodes[self._root] = self.root
        for cached in ("_by_id", "_ids", "_content_keys", "_id_groups", "_first_equal", "_with_id"):
            self.__dict__.pop(cached, None)

    # -- template helpers ------------------------------------------------------------------
    def node(self, element: etree._Element) -> Node:
        """The element's Node (the same object every time: the key keeps the lxml proxy
        alive, so an element always maps to the same entry)."""
        found = self._nodes.get(element)
        if found is None:
            found = self._nodes[element] = Node(element, self)
        return found

    def children(self, element: etree._Element) -> dict[str, list[etree._Element]]:
        """The element's child elements grouped by Clark name, in document order."""
        index = self._children.get(element)
        if index is None:
            index = {}
            # Elements only (comments, processing instructions, entities skipped by lxml).
            for child in element.iterchildren(etree.Element):
                tag = child.tag
                found = index.get(tag)
                if found is None:
                    index[tag] = [child]
                else:
                    found.append(child)
            self._children[element] = index
        return index

    def rank(self, element: etree._Element) -> tuple[int, int]:
        """The element's position (from 1) among its parent's child elements of its
        name, and their number; (1, 1) for the root, a comment or a processing
        instruction.

        Positions are recorded for the whole list at its first lookup: a warning naming
        each of thousands of entries once scanned their siblings for each (quadratic).
        """
        parent = element.getparent()
        tag = element.tag
        if parent is None or not isinstance(tag, str):
            return 1, 1
        same = self.children(parent).get(tag, _NONE)
        if len(same) < 2:
            return 1, 1
        position = self._ranks.get(element)
        if position is None:
            for n, sibling in enumerate(same, 1):
                self._ranks[sibling] = n
            position = self._ranks[element]
        return position, len(same)

    def select(
        self, element: etree._Element | None, path: str, first: bool = False
    ) -> list[etree._Element]:
        """The elements at ``path`` under ``element``, in document order: a list the
        caller reads only (it may be the children index's own)."""
        if element is None:
            return []
        steps = self._paths._steps.get(path)
        if steps is None:
            steps = self._paths.steps(path)
            if steps is None:
                found: list[etree._Element] = self._paths.get(path)(element)
                return found[:1] if first else found
        # Child steps only: walk the children index (the same nodes, in document order,
        # as the XPath would return). Each index is read from its dictionary first.
        indexes = self._children
        index = indexes.get(element)
        if index is None:
            index = self.children(element)
        current = index.get(steps[0], _NONE)
        for tag in steps[1:]:
            if not current:
                break
            following: list[etree._Element] = []
            for parent in current:
                index = indexes.get(parent)
                if index is None:
                    index = self.children(parent)
                following.extend(index.get(tag, _NONE))
            current = following
        return current[:1] if first else current

    def xpath(self, element: etree._Element, expression: str) -> Any:
        by_id = _BY_ID.fullmatch(expression)
        if by_id is not None:
            # ``//*[@ID='x']`` (a narrative reference's target): what XPath returns, from
            # an index instead of a walk of the whole document on every call.
            return list(self._by_id.get(by_id.group(1), ()))
        result: Any = self._paths.get(expression, raw=True)(element)
        return result

    def narrative(self, reference: str) -> str:
        """The text of the narrative element whose ID is ``reference`` (``#ref1``)."""
        target = self._ids.get(reference.lstrip("#"))
        if target is None:
            return ""
        return self.node(target).string()

    @cached_property
    def _by_id(self) -> dict[str, list[etree._Element]]:
        """Every element carrying an ``ID`` attribute, by its value, in document order."""
        index: dict[str, list[etree._Element]] = {}
        for element in _WITH_ID(self._root):
            index.setdefault(element.get("ID"), []).append(element)
        return index

    @cached_property
    def _ids(self) -> dict[str, etree._Element]:
        # The last element of each non-empty ID, as a walk of the document keeps it.
        return {key: found[-1] for key, found in self._by_id.items() if key}

    def content_key(self, element: etree._Element) -> str:
        """:meth:`Node.content_key`: the document set (:attr:`set_key`: every version of
        the document shares it) and the element's content key (:mod:`.fingerprint`)."""
        return f"{self.set_key}|{self._content_keys.key(element)}"

    @cached_property
    def _content_keys(self) -> ContentKeys:
        return ContentKeys(self._root)

    def first_equal(self, element: etree._Element) -> etree._Element:
        """:meth:`Node.first_equal`: the first element read with this one's name and
        serialized content, or itself."""
        key = (str(element.tag), etree.tostring(element, with_tail=False))
        return self._first_equal.setdefault(key, element)

    @cached_property
    def _first_equal(self) -> dict[tuple[str, bytes], etree._Element]:
        return {}

    def with_id(self, tag: str, root: str, extension: str | None) -> list[etree._Element]:
        """:meth:`Node.with_id`: the elements named ``tag`` (Clark) with an ``id`` child
        of this root and extension (None: an id without one), in document order. Indexed
        once per name: XPath walks the whole document for each id looked up."""
        index = self._with_id.get(tag)
        if index is None:
            index = self._with_id[tag] = {}
            for element in self._root.iter(tag):
                for identifier in element.iterchildren(_ID):
                    key = (identifier.get("root"), identifier.get("extension"))
                    found = index.setdefault(key, [])
                    if not found or found[-1] is not element:  # two equal ids: once
                        found.append(element)
        return index.get((root, extension), _NONE)

    @cached_property
    def _with_id(self) -> dict[str, dict[tuple[str | None, str | None], list[etree._Element]]]:
        return {}

    def same_id(self, element: etree._Element) -> list[etree._Element]:
        """:meth:`Node.same_id`: the elements with this one's name and first id."""
        return self._id_groups.same_id(element)

    @cached_property
    def _id_groups(self) -> IdGroups:
        return IdGroups(self._root)

    @property
    def template_ids(self) -> list[str]:
        return self.root.template_ids

    @property
    def document_type(self) -> str:
        """``CCD``, ``Discharge Summary``…, or ``CDA`` for any other document."""
        for template_id in self.template_ids:
            if template_id in DOCUMENT_TYPES:
                return DOCUMENT_TYPES[template_id]
        return "CDA"

    @property
    def control_id(self) -> str:
        """The document id (``root^extension``): names the document in errors and logs."""
        id_node = self.root.id
        root, extension = id_node["root"], id_node["extension"]
        return f"{root}^{extension}" if extension else str(root)

    @property
    def set_key(self) -> str:
        """The document set (``setId`` as ``root^extension``), else the document id.

        Every version of one document shares its setId (a replacing document has a new
        id), so what a document names only within itself (a person or organization
        without id) keeps one identity across its versions instead of one per version.
        """
        set_node = self.root.setId
        root, extension = set_node["root"], set_node["extension"]
        if not root:
            return self.control_id
        return f"set^{root}^{extension}" if extension else f"set^{root}"

    def source_base64(self) -> str:
        """The original bytes as base64 (for the DocumentReference to the source)."""
        return base64.b64encode(self._data).decode("ascii")

    def source_sha1(self) -> str:
        """Base64 SHA-1 of the original bytes (Attachment.hash)."""
        return base64.b64encode(hashlib.sha1(self._data).digest()).decode("ascii")

    @property
    def source_size(self) -> int:
        return len(self._data)
