"""CDA elements shaped for templates.

A :class:`Node` wraps one element of the ``urn:hl7-org:v3`` namespace:

* ``obs.code``, ``obs.effectiveTime.low`` — the first child element of that name (any
  name, ``text`` and ``value`` included); an absent element is an empty, falsy Node;
* ``obs.code["code"]``, ``obs.value["xsi:type"]`` — attribute values (empty when absent),
  as :class:`AttrValue` strings that remember where they come from, for error messages;
* ``section.all("entry")``, ``act.first("entryRelationship/observation")`` — paths of
  element names; ``node.xpath(expr)`` for anything else (prefixes ``h``, ``sdtc``, ``xsi``);
* ``node.string()`` — the element's text, whitespace normalised;
* ``node.has_template("2.16.840.1.113883.10.20.22.4.7")``, ``node.null_flavor``.

An element carrying only a ``nullFlavor`` is empty: ``<value nullFlavor="UNK"/>`` renders
as nothing, like an absent one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from lxml import etree

if TYPE_CHECKING:
    from .document import CdaDocument

__all__ = ["HL7", "NAMESPACES", "AttrValue", "Node", "is_attribute_name"]

HL7 = "urn:hl7-org:v3"
SDTC = "urn:hl7-org:sdtc"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
NAMESPACES = {"h": HL7, "sdtc": SDTC, "xsi": XSI}
_PREFIXED = {"sdtc": SDTC, "xsi": XSI}
_NAME = re.compile(r"[A-Za-z_][\w.-]*(:[A-Za-z_][\w.-]*)?")
_SPACES = re.compile(r"\s+")


class AttrValue(str):
    """An attribute value that knows its location (``…/observation/value/@value``).

    The location is computed only when asked for (an error message): walking up the
    tree for every attribute read would cost more than the conversion itself.
    """

    __slots__ = ("_attribute", "_node")
    _node: Node | None
    _attribute: str

    def __new__(cls, text: str, node: Node | None = None, attribute: str = "") -> AttrValue:
        # node may be absent: Jinja's sandboxed str.format builds ``type(self)(result)``.
        value = super().__new__(cls, text)
        value._node = node
        value._attribute = attribute
        return value

    @property
    def path(self) -> str:
        """``…/value/@unit``; empty for text derived from an attribute (``.format``)."""
        return f"{self._node.path}/@{self._attribute}" if self._node is not None else ""


class Node:
    """One CDA element (or an empty placeholder for an absent one)."""

    # ``__dict__`` holds the children read by name (``node.code``), so that a second
    # read of one finds it without calling :meth:`__getattr__` (a Python frame): only a
    # name the class does not define reaches ``__getattr__``, so nothing stored there
    # can hide a method or property.
    __slots__ = ("__dict__", "_attrs", "_doc", "_element", "_name")

    def __init__(self, element: etree._Element | None, doc: CdaDocument, name: str = "") -> None:
        self._element = element
        self._doc = doc
        self._name = name
        #: ``node["code"]`` by attribute, once read: templates read the same few of an
        #: element many times. An element's Node is one object per document
        #: (:meth:`CdaDocument.node`), so this and ``__dict__`` serve every template.
        self._attrs: dict[str, AttrValue] | None = None

    # -- navigation ------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Node:
        if name.startswith("_"):
            raise AttributeError(name)
        element = self._element
        doc = self._doc
        found = None
        if element is not None:
            # What doc.children(element) and doc.node(child) return, read from their
            # dictionaries first (a call each saved on the common path).
            index = doc._children.get(element)
            if index is None:
                index = doc.children(element)
            clark = _CLARK.get(name)
            children = index.get(clark if clark is not None else _clark(name))
            if children:
                child = children[0]
                nodes = doc._nodes
                found = nodes.get(child)
                if found is None:
                    found = nodes[child] = Node(child, doc)
        if found is None:
            found = Node(None, doc, name)
        self.__dict__[name] = found
        return found

    def first(self, path: str) -> Node:
        """The first element at ``path`` (names separated by ``/``), or an empty Node."""
        doc = self._doc
        found = doc.select(self._element, path, True)
        if not found:
            return Node(None, doc, path)
        node = doc._nodes.get(found[0])
        return node if node is not None else doc.node(found[0])

    def all(self, path: str) -> list[Node]:
        """Every element at ``path``, in document order."""
        doc = self._doc
        nodes = doc._nodes
        found: list[Node] = []
        element = self._element
        steps = doc._paths._steps.get(path)
        if steps is not None and len(steps) == 1 and element is not None:
            # One child step (``id``, ``entry``): the children index, as select() reads it.
            index = doc._children.get(element)
            if index is None:
                index = doc.children(element)
            elements = index.get(steps[0], _NO_ELEMENTS)
        else:
            elements = doc.select(element, path)
        for element in elements:
            # doc.node(element), its dictionary read first.
            node = nodes.get(element)
            found.append(node if node is not None else doc.node(element))
        return found

    def xpath(self, expression: str) -> list[Any]:
        """Raw XPath 1.0 with prefixes h (CDA), sdtc, xsi; elements come back as Nodes."""
        if self._element is None:
            return []
        result = self._doc.xpath(self._element, expression)
        if not isinstance(result, list):
            return [result]
        node = self._doc.node
        return [node(r) if isinstance(r, etree._Element) else str(r) for r in result]

    def __iter__(self) -> Iterator[Node]:
        """Child elements (comments and processing instructions skipped)."""
        if self._element is None:
            return
        node = self._doc.node
        for child in self._element:
            if isinstance(child.tag, str):
                yield node(child)

    def content_key(self) -> str:
        """The identity of a statement sent without ``id``, within its document set
        (setId): a hash of what it says and its rank among the statements of the
        document saying the same (:mod:`converter.cda.fingerprint`); empty for an
        absent element."""
        element = self._element
        return self._doc.content_key(element) if element is not None else ""

    def with_id(self, name: str, root: str, extension: str = "") -> list[Node]:
        """The elements of the document named ``name`` (``observation``, ``sdtc:…``)
        that have an ``id`` child with exactly this ``root`` and ``extension`` (empty:
        an id without extension attribute), in document order: what
        ``//h:name[h:id[@root=… and @extension=…]]`` selects (``not(@extension)`` for an
        empty one), from an index of the document instead of a walk of it per lookup."""
        node = self._doc.node
        found = self._doc.with_id(_clark(str(name)), str(root), str(extension) or None)
        return [node(element) for element in found]

    def first_equal(self) -> Node:
        """The first element of the document asked for with this element's name and
        exactly its content (its subtree as written), else itself: the same participant
        written again under every entry (an author, a performer) becomes one input, whose
        rendering ``emit()`` then reuses instead of rendering it again.

        Only for what is read from the element's own subtree: its ``parent``, its
        ``path`` and XPath leaving it are the first one's."""
        element = self._element
        if element is None:
            return self
        return self._doc.node(self._doc.first_equal(element))

    def same_id(self) -> list[Node]:
        """The statements of the document with this element's name and first id (root
        and extension), itself included, in document order: an id a document reuses
        (:mod:`converter.cda.id_groups`). Empty when it has no id."""
        element = self._element
        if element is None:
            return []
        node = self._doc.node
        return [node(found) for found in self._doc.same_id(element)]

    @property
    def parent(self) -> Node:
        element = self._element
        parent = element.getparent() if element is not None else None
        return self._doc.node(parent) if parent is not None else Node(None, self._doc)

    # -- values ------------------------------------------------------------------------
    def __getitem__(self, attribute: str) -> AttrValue:
        if type(attribute) is not str and not isinstance(attribute, str):
            raise KeyError(attribute)
        attrs = self._attrs
        if attrs is not None:
            # A value read before. Looked up, not tried: half the reads of a document are
            # first reads, and an exception costs many lookups.
            found = attrs.get(attribute)
            if found is not None:
                return found
        element = self._element
        value = ""
        if element is not None:
            key = attribute
            if ":" in attribute:
                prefix, local = attribute.split(":", 1)
                namespace = _PREFIXED.get(prefix)
                if namespace is None:
                    raise KeyError(attribute)
                key = f"{{{namespace}}}{local}"
            value = element.get(key, "")
        # AttrValue(value, self, attribute) without its Python ``__new__`` frame.
        found = _new_str(AttrValue, value)
        found._node = self
        found._attribute = attribute
        if type(attribute) is str:
            if attrs is None:
                attrs = self._attrs = {}
            attrs[attribute] = found
        return found

    def string(self) -> str:
        """All text inside the element, whitespace runs collapsed, trimmed."""
        if self._element is None:
            return ""
        return _SPACES.sub(" ", "".join(self._element.itertext())).strip()

    def resolved(self) -> str:
        """The text of an ``originalText``/``text`` element, following its narrative
        ``<reference value="#id"/>`` when it has one."""
        element = self._element
        if element is None:
            return ""
        references = self._doc.children(element).get(_REFERENCE)
        reference = references[0] if references else None
        if reference is not None and reference.get("value", "").startswith("#"):
            referenced = self._doc.narrative(reference.get("value", ""))
            if referenced:
                return referenced
        return self.string()

    def xhtml(self) -> str | None:
        """A section ``text`` as a FHIR Narrative XHTML ``div`` (None when empty)."""
        from .narrative import narrative_xhtml

        return narrative_xhtml(self._element)

    @property
    def null_flavor(self) -> str:
        element = self._element
        return str(element.get("nullFlavor", "")) if element is not None else ""

    def has_template(self, root: str, extension: str | None = None) -> bool:
        """Whether the element declares ``templateId`` ``root`` (and ``extension``)."""
        if self._element is None:
            return False
        for template in self._element.iterchildren(_TEMPLATE_ID):
            if template.get("root") == root and (
                extension is None or template.get("extension") == extension
            ):
                return True
        return False

    @property
    def template_ids(self) -> list[str]:
        if self._element is None:
            return []
        return [t.get("root", "") for t in self._element.iterchildren(_TEMPLATE_ID)]

    @property
    def tag(self) -> str:
        """The local name of the element (``observation``), empty when absent."""
        element = self._element
        if element is None or not isinstance(element.tag, str):
            return ""
        return str(etree.QName(element).localname)

    @property
    def xsi_type(self) -> str:
        """``xsi:type`` without its prefix (``PQ``, ``CD``, ``IVL_TS``…)."""
        return self["xsi:type"].rsplit(":", 1)[-1]

    def __bool__(self) -> bool:
        element = self._element
        if element is None:
            return False
        if "nullFlavor" not in element.attrib:
            return True
        # A null flavor with real content (originalText, translations, a value) still
        # carries information; an xsi:type alone does not (C-CDA requires it on every
        # value: <value xsi:type="PQ" nullFlavor="NI"/> is an absent value).
        extra = len(element.attrib) - 1 - (_XSI_TYPE in element.attrib)
        return len(element) > 0 or extra > 0 or bool((element.text or "").strip())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Node):
            return self._element is other._element
        return NotImplemented

    def __hash__(self) -> int:
        return id(self._element)

    def __str__(self) -> str:
        return self.string()

    def __repr__(self) -> str:
        return f"<Node {self.path}>"

    # -- location ----------------------------------------------------------------------
    @property
    def path(self) -> str:
        """Location for error messages: ``/ClinicalDocument/component/…/observation[2]``."""
        element = self._element
        if element is None:
            return f"(absent {self._name})"
        parts: list[str] = []
        rank = self._doc.rank
        while element is not None:
            name = etree.QName(element).localname if isinstance(element.tag, str) else "?"
            position, count = rank(element)
            if count > 1:
                name += f"[{position}]"
            parts.append(name)
            element = element.getparent()
        return "/" + "/".join(reversed(parts))


_new_str = str.__new__
_NO_ELEMENTS: list[etree._Element] = []
_TEMPLATE_ID = f"{{{HL7}}}templateId"
_REFERENCE = f"{{{HL7}}}reference"
_XSI_TYPE = f"{{{XSI}}}type"
_CLARK: dict[str, str] = {}


def _clark(name: str) -> str:
    """``code`` → ``{urn:hl7-org:v3}code``, ``sdtc:raceCode`` → ``{urn:hl7-org:sdtc}raceCode``
    (memoised: templates use a bounded set of names)."""
    clark = _CLARK.get(name)
    if clark is None:
        if ":" in name:
            prefix, local = name.split(":", 1)
            clark = f"{{{_PREFIXED.get(prefix, HL7)}}}{local}"
        else:
            clark = f"{{{HL7}}}{name}"
        if len(_CLARK) < 4096:
            _CLARK[name] = clark
    return clark


def is_attribute_name(key: object) -> bool:
    """Whether ``node[key]`` reads an attribute for any Node (never raising KeyError): a
    string without a prefix, or with ``sdtc:`` or ``xsi:``."""
    if type(key) is not str:
        return False
    prefix, colon, _ = key.partition(":")
    return not colon or prefix in _PREFIXED


def name_steps(path: str) -> tuple[str, ...] | None:
    """The Clark names of a path made only of element names (``entry/observation``), or
    None when it has ``.``, ``..`` or ``*`` steps (those go through XPath)."""
    steps = path.strip("/").split("/")
    if any(step in (".", "..", "*") for step in steps):
        return None
    return tuple(_clark(step) for step in steps)


def compile_path(path: str) -> str:
    """``entryRelationship/observation`` → ``h:entryRelationship/h:observation``."""
    steps = []
    for step in path.strip("/").split("/"):
        if step in (".", "..", "*"):
            steps.append(step)
        elif _NAME.fullmatch(step):
            steps.append(step if ":" in step else f"h:{step}")
        else:
            raise ValueError(f"unsupported path step {step!r} (use node.xpath for XPath)")
    return "/".join(steps)
