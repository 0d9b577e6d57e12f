"""The FHIR rules for Narrative.div (txt-1, txt-2) that the R4 validator does not check.

FHIR allows a ``<div>`` in the XHTML namespace holding only basic formatting elements
and attributes (HTML 4.0 chapters 7-11 and 15, ``<a>``, images): no script, form,
frame, object, head/body, no event attributes, no ``javascript:`` links. The element
and attribute lists are the ones the HL7 Java validator enforces.
"""

from __future__ import annotations

from lxml import etree

__all__ = ["XHTML", "xhtml_problems"]

XHTML = "http://www.w3.org/1999/xhtml"

_ELEMENTS = (
    "p br div h1 h2 h3 h4 h5 h6 a span b em i strong small big tt dfn q var abbr acronym "
    "cite blockquote hr address bdo kbd sub sup ul ol li dl dt dd pre table caption "
    "colgroup col thead tr tfoot tbody th td code samp img map area"
)
ALLOWED_ELEMENTS = frozenset(_ELEMENTS.split())
_ATTRIBUTES = (
    "title style class id lang dir accesskey tabindex span width align valign char charoff "
    "abbr axis headers scope rowspan colspan border cellpadding cellspacing frame rules "
    "summary href name src alt height shape coords nohref type"
)
ALLOWED_ATTRIBUTES = frozenset(_ATTRIBUTES.split()) | {"{http://www.w3.org/XML/1998/namespace}lang"}
UNSAFE_SCHEMES = ("javascript:", "vbscript:", "data:")


def xhtml_problems(div: str) -> list[str]:
    """What makes ``div`` an invalid FHIR narrative (empty when it is valid)."""
    try:
        root = etree.fromstring(div.encode("utf-8"))
    except etree.XMLSyntaxError as exc:
        return [f"not well-formed: {exc}"]
    problems = []
    if root.tag != f"{{{XHTML}}}div":
        problems.append(f"root is {root.tag}, not an XHTML div")
    for element in root.iter():
        if not isinstance(element.tag, str):
            problems.append("comment or processing instruction")
            continue
        qname = etree.QName(element)
        if qname.namespace != XHTML or qname.localname not in ALLOWED_ELEMENTS:
            problems.append(f"element {element.tag} is not allowed")
        for name, value in element.attrib.items():
            if name not in ALLOWED_ATTRIBUTES or name.lower().startswith("on"):
                problems.append(f"attribute {name} on {qname.localname} is not allowed")
            if name in ("href", "src") and value.strip().lower().startswith(UNSAFE_SCHEMES):
                problems.append(f"unsafe {name} {value[:30]!r}")
    text = "".join(root.itertext()).strip()
    if not text and root.find(f".//{{{XHTML}}}img") is None:
        problems.append("no text content (txt-2)")
    return problems
