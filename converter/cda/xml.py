"""Hardened XML parsing for CDA documents.

Clinical documents arrive from outside: the parser resolves no entities, loads no DTD,
opens no network or file, applies no stylesheet, and bounds size and depth. A document
that declares a DTD or entities is refused outright (libxml2 would leave external
entities as unexpanded nodes; refusing is simpler to reason about). An
``<?xml-stylesheet?>`` instruction is ignored: nothing here ever applies XSLT.
"""

from __future__ import annotations

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
        line = getattr(exc, "lineno", None)
        message = str(exc.msg)
        if "amplification" in message.lower():
            # libxml2's entity-expansion guard (billion laughs, quadratic blow-up) fired
            # before the DOCTYPE check below could run.
            raise ParseError(
                "documents declaring a DTD or entities are not accepted (entity expansion refused)",
                location="DOCTYPE",
            ) from None
        reason = "nested too deeply" if "depth" in message.lower() else message
        raise ParseError(
            f"not well-formed XML: {reason}", location=f"line {line}" if line else None
        ) from None
    tree = root.getroottree()
    if tree.docinfo.internalDTD is not None or tree.docinfo.doctype:
        raise ParseError(
            "documents declaring a DTD or entities are not accepted", location="DOCTYPE"
        )
    return root
