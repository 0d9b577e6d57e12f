"""Hardened XML parsing for CDA documents.

Clinical documents arrive from outside: the parser resolves no entities, loads no DTD,
opens no network or file, applies no stylesheet, and bounds size and depth. A document
that declares a DTD or entities is refused outright (libxml2 would leave external
entities as unexpanded nodes; refusing is simpler to reason about). An
``<?xml-stylesheet?>`` instruction is ignored: nothing here ever applies XSLT.
"""

from __future__ import annotations

import re

from lxml import etree

from ..errors import ParseError

__all__ = ["DEFAULT_MAX_BYTES", "MAX_DEPTH", "parse_xml"]

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
#: libxml2 refuses deeper nesting itself when huge_tree is off (its parser limit).
MAX_DEPTH = 256


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
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
        raise ParseError(
            "documents declaring a DTD or entities are not accepted", location="DOCTYPE"
        )
    try:
        root = etree.fromstring(data, _parser())
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
        raise ParseError(
            "documents declaring a DTD or entities are not accepted", location="DOCTYPE"
        )
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
