"""Content identity of a clinical statement that has no ``id``.

C-CDA requires an id on every entry, but some producers send none. An id-less entry used
to get an id from the document's id and its rank among the resources of its template: a
new version of the document (same setId, new id) or an entry added or moved made new
resources for every id-less entry, and the old ones stayed on the server beside them.

The key is instead what the statement says: its whole subtree, canonicalised, minus what
changes between two renderings of the same statement:

* the narrative links (``ID`` attributes and ``reference/@value``): ``#problem3`` becomes
  ``#problem4`` when an entry is added before it;
* its ``author`` and ``informant`` participations (who recorded it: some systems stamp
  every entry with the export's time). They still become the Provenance.

Two entries of one document saying exactly the same thing stay two resources: the key
ends with the statement's rank among the statements of the document with the same
content (0 for the first). An entry whose content changed between versions (a corrected
value, a new status) is a new statement: without an id nothing tells a correction from a
new fact.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

from lxml import etree

from .node import HL7

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["ContentKeys"]

_SKIPPED = frozenset({f"{{{HL7}}}author", f"{{{HL7}}}informant"})
_REFERENCE = f"{{{HL7}}}reference"
_SPACES = re.compile(r"\s+")


def _canonical(element: etree._Element, out: Callable[[str], None]) -> None:
    out("<" + str(element.tag))
    for name, value in sorted(element.attrib.items()):
        if name == "ID" or (name == "value" and element.tag == _REFERENCE):
            continue
        out(f" {name}={_SPACES.sub(' ', str(value)).strip()!r}")
    out(">")
    text = _SPACES.sub(" ", element.text or "").strip()
    if text:
        out(repr(text))
    for child in element:
        if isinstance(child.tag, str) and child.tag not in _SKIPPED:
            _canonical(child, out)
        tail = _SPACES.sub(" ", child.tail or "").strip()
        if tail:
            out(repr(tail))
    out("/>")


def fingerprint(element: etree._Element) -> str:
    """SHA-256 (hex) of the element's canonical content (module docstring)."""
    digest = hashlib.sha256()

    def out(text: str) -> None:
        digest.update(text.encode("utf-8"))

    _canonical(element, out)
    return digest.hexdigest()


class ContentKeys:
    """Content keys of the statements of one document, computed per element name on
    first use (every element of that name is fingerprinted once)."""

    def __init__(self, root: etree._Element) -> None:
        self._root = root
        self._keys: dict[str, dict[etree._Element, str]] = {}

    def key(self, element: etree._Element) -> str:
        """``<fingerprint>#<rank among the same content>``."""
        tag = str(element.tag)
        keys = self._keys.get(tag)
        if keys is None:
            keys = self._keys[tag] = {}
            seen: dict[str, int] = {}
            for found in self._root.iter(tag):
                value = fingerprint(found)
                rank = seen.get(value, 0)
                seen[value] = rank + 1
                keys[found] = f"{value}#{rank}"
        return keys[element]
