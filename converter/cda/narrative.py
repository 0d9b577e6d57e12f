"""CDA narrative blocks (section ``text``) to FHIR Narrative XHTML.

The CDA narrative schema is a small HTML-like vocabulary; each element maps to the XHTML
element FHIR allows (paragraph → p, list/item → ul|ol/li, content → span, table parts as
they are, linkHtml → a, renderMultiMedia dropped). Attributes other than a few safe ones
are dropped, IDs kept (as ``id``) so that references into the narrative still resolve.
Text is escaped by the serializer; nothing from the source is copied as markup.
"""

from __future__ import annotations

from lxml import etree

from .node import HL7

__all__ = ["narrative_xhtml"]

XHTML = "http://www.w3.org/1999/xhtml"

_ELEMENTS = {
    "paragraph": "p",
    "content": "span",
    "br": "br",
    "sub": "sub",
    "sup": "sup",
    "caption": "b",
    "table": "table",
    "thead": "thead",
    "tbody": "tbody",
    "tfoot": "tfoot",
    "tr": "tr",
    "th": "th",
    "td": "td",
    "col": "col",
    "colgroup": "colgroup",
    "item": "li",
    "linkHtml": "a",
    "footnote": "span",
    "footnoteRef": "span",
}
_KEEP_ATTRIBUTES = {"colspan", "rowspan", "href"}
_DROP = {"renderMultiMedia"}


def narrative_xhtml(text: etree._Element | None) -> str | None:
    """The ``<div xmlns="http://www.w3.org/1999/xhtml">`` of a section text, or None."""
    if text is None:
        return None
    div = etree.Element(f"{{{XHTML}}}div", nsmap={None: XHTML})
    _copy_children(text, div)
    if len(div) == 0 and not (div.text or "").strip():
        return None
    return str(etree.tostring(div, encoding="unicode"))


def _copy_children(source: etree._Element, target: etree._Element) -> None:
    _append_text(target, source.text)
    for child in source:
        if not isinstance(child.tag, str):
            _append_text_after(target, child.tail)
            continue
        qname = etree.QName(child)
        name = qname.localname if qname.namespace in (HL7, None) else None
        if name is None or name in _DROP:
            _append_text_after(target, child.tail)
            continue
        if name == "list":
            tag = "ol" if child.get("listType") == "ordered" else "ul"
        else:
            tag = _ELEMENTS.get(name, "span")
        element = etree.SubElement(target, f"{{{XHTML}}}{tag}")
        for attribute, value in child.attrib.items():
            if attribute == "ID":
                element.set("id", value)
            elif attribute in _KEEP_ATTRIBUTES and (
                attribute != "href" or value.startswith(("http://", "https://", "#"))
            ):
                element.set(attribute, value)
        _copy_children(child, element)
        element.tail = child.tail


def _append_text(element: etree._Element, text: str | None) -> None:
    if text:
        element.text = (element.text or "") + text


def _append_text_after(parent: etree._Element, text: str | None) -> None:
    if not text:
        return
    if len(parent):
        last = parent[-1]
        last.tail = (last.tail or "") + text
    else:
        _append_text(parent, text)
