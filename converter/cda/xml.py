"""Hardened XML parsing for CDA documents.

Clinical documents arrive from outside: the parser resolves no entities, loads no DTD,
opens no network or file, applies no stylesheet, and bounds size and depth. A document
that declares a DTD or entities is refused outright (libxml2 would leave external
entities as unexpanded nodes; refusing is simpler to reason about). An
``<?xml-stylesheet?>`` instruction is ignored: nothing here ever applies XSLT.
"""

from __future__ import annotations

import re
from typing import Literal

from lxml import etree

from ..errors import ParseError

__all__ = ["DEFAULT_MAX_BYTES", "MAX_DEPTH", "parse_xml"]

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
_DTD_REFUSED = "documents declaring a DTD or entities are not accepted"
#: libxml2 refuses deeper nesting itself when huge_tree is off (its parser limit).
MAX_DEPTH = 256


def _parser(*, huge_text: bool = False) -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=huge_text,
        remove_comments=True,
        remove_pis=True,
        # collect_ids must stay on: lxml turns collect_ids=False into libxml2's
        # XML_SKIP_IDS "loadsubset" flag, and any loadsubset flag makes libxml2 open the
        # external DTD subset and external parameter entities (file paths, FIFOs,
        # devices) even with load_dtd=False.
    )


def parse_xml(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> etree._Element:
    """The document's root element, or :class:`ParseError` saying why it was refused."""
    if len(data) > max_bytes:
        raise ParseError(f"document of {len(data)} bytes exceeds the limit of {max_bytes}")
    # A DOCTYPE comes before the root element: refuse early when it is in the first
    # bytes; the check after parsing catches one placed after a long prologue.
    if b"<!doctype" in data[:4096].lower():
        raise ParseError(_DTD_REFUSED, location="DOCTYPE")
    try:
        try:
            root = etree.fromstring(data, _parser())
        except etree.XMLSyntaxError as exc:
            if not _TEXT_NODE_TOO_LONG.search(str(exc.msg or "")):
                raise
            prolog = _prolog(data)
            if prolog == "doctype":
                raise ParseError(_DTD_REFUSED, location="DOCTYPE") from None
            if prolog == "unreadable":
                raise
            # A text node over libxml2's 10 MB limit: an embedded PDF or image (a scanned
            # report is often larger), within the document size limit. See
            # _parse_long_text for why lifting that limit is safe here.
            root = _parse_long_text(data)
    except etree.XMLSyntaxError as exc:
        message = str(exc.msg or "").strip()
        if "amplification factor" in message.lower():
            # libxml2's entity-expansion guard (billion laughs, quadratic blow-up) fired
            # before the DOCTYPE check below could run.
            raise ParseError(
                "documents declaring a DTD or entities are not accepted (entity expansion refused)",
                location="DOCTYPE",
                detail=message or None,
            ) from None
        # libxml2's text quotes the document (an entity, tag or attribute name, which may
        # be a patient's name): str(error) says only the kind of problem and where; the
        # text goes to ``detail``, shown only to someone allowed to read the document.
        deep = "excessive depth" in message.lower()
        reason = "nested too deeply" if deep else _error_kind(exc)
        raise ParseError(
            f"not well-formed XML: {reason}", location=_position(exc), detail=message or None
        ) from None
    tree = root.getroottree()
    if tree.docinfo.internalDTD is not None or tree.docinfo.doctype:
        raise ParseError(_DTD_REFUSED, location="DOCTYPE")
    return root


#: libxml2's message when a text node exceeds its 10,000,000-byte limit (huge_tree off).
_TEXT_NODE_TOO_LONG = re.compile(r"text node too long", re.IGNORECASE)
#: What may precede the root element: the XML declaration and processing instructions,
#: comments, whitespace (a DOCTYPE too, which is refused).
_PROLOG_ITEM = re.compile(rb"\s+|<\?.*?\?>|<!--.*?-->", re.DOTALL)
_UTF8_BOM = b"\xef\xbb\xbf"


def _prolog(data: bytes) -> Literal["clean", "doctype", "unreadable"]:
    """What comes before the root element: only the XML declaration, processing
    instructions, comments and whitespace (``clean``), a DOCTYPE after those
    (``doctype``), or something this byte-level reading cannot follow (``unreadable``:
    UTF-16, an unclosed comment, text), which then keeps libxml2's limits."""
    position = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
    while True:
        item = _PROLOG_ITEM.match(data, position)
        if item is None:
            break
        position = item.end()
    following = data[position : position + 9]
    if following.upper() == b"<!DOCTYPE":
        return "doctype"
    if following[:1] == b"<" and following[1:2] not in (b"!", b"?", b""):
        return "clean"
    return "unreadable"


def _parse_long_text(data: bytes) -> etree._Element:
    """Parse with libxml2's size limits on text nodes lifted (``huge_tree``), for a
    document the normal parser refused only for a long text node.

    The limits guard against entity amplification (billion laughs), which needs a
    DOCTYPE declaring entities: the prolog holds none (checked before: :func:`_prolog`), and one
    can appear nowhere else. ``huge_tree`` also raises libxml2's nesting limit, so the usual
    one (:data:`MAX_DEPTH`) is checked here after parsing; the document size limit was
    checked before.
    """
    root = etree.fromstring(data, _parser(huge_text=True))
    depth = 0
    for event, _ in etree.iterwalk(root, events=("start", "end")):
        depth += 1 if event == "start" else -1
        if depth > MAX_DEPTH:
            raise ParseError("not well-formed XML: nested too deeply", location=None)
    return root


#: Wording for the libxml2 error codes a hostile or broken document commonly raises;
#: any other code is named from its libxml2 identifier (``ERR_TAG_NOT_FINISHED`` ->
#: "tag not finished"). Neither ever carries document text.
_KINDS = {
    "ERR_RESOURCE_LIMIT": "a name, value or text node exceeds the parser's size limit",
    "ERR_UNDECLARED_ENTITY": "undeclared entity",
    "ERR_TAG_NAME_MISMATCH": "opening and ending tag mismatch",
    "ERR_DOCUMENT_END": "extra content after the root element",
}

_UNDEFINED_PREFIX = re.compile(r"Namespace prefix (\S+) ")
_STANDARD_PREFIXES = frozenset({"xsi", "xsd", "xml", "xmlns", "xlink", "sdtc", "voc", "cda", "hl7"})


def _error_kind(exc: etree.XMLSyntaxError) -> str:
    code = getattr(exc, "code", None)
    name = etree.ErrorTypes._getName(code, None) if isinstance(code, int) else None
    if not isinstance(name, str) or not name:
        return "syntax error"
    if name in _KINDS:
        return _KINDS[name]
    if name == "NS_ERR_UNDEFINED_NAMESPACE":
        # A standard prefix (a closed set, never patient text) is worth naming: a missing
        # xmlns:xsi is the usual cause.
        found = _UNDEFINED_PREFIX.match(str(exc.msg or ""))
        if found and found.group(1) in _STANDARD_PREFIXES:
            return f"undefined namespace prefix {found.group(1)!r}"
    for prefix in ("NS_ERR_", "ERR_", "WAR_", "XML_"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return name.lower().replace("_", " ")


def _position(exc: etree.XMLSyntaxError) -> str | None:
    line, column = getattr(exc, "position", (None, None)) or (None, None)
    if not isinstance(line, int) or line <= 0:
        return None
    return (
        f"line {line}, column {column}"
        if isinstance(column, int) and column > 0
        else f"line {line}"
    )
