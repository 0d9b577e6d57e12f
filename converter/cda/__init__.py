"""CDA / C-CDA documents: hardened parsing and the element API templates use."""

from .document import CdaDocument, PathCache, parse_clinical_document
from .narrative import narrative_xhtml
from .node import AttrValue, Node
from .sections import SectionTable
from .xml import parse_xml

__all__ = [
    "AttrValue",
    "CdaDocument",
    "Node",
    "PathCache",
    "SectionTable",
    "narrative_xhtml",
    "parse_clinical_document",
    "parse_xml",
]
