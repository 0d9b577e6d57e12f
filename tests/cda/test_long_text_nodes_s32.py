"""A text node over libxml2's 10 MB limit: a scanned report embedded as a PDF.

The parser keeps libxml2's limits (they guard against entity expansion), which refuse a
text node of more than 10,000,000 bytes: a document embedding a PDF of ~7.5 MB or more
was refused as "not well-formed XML: … exceeds the parser's size limit" although it was
well-formed and within the document size limit (50 MB). Such a document is now parsed
again with the text limits lifted, once its prolog is known to hold no DOCTYPE (without
one no entity can be declared, so nothing can expand); the nesting limit stays. An
oversized attribute, a DOCTYPE anywhere in the prolog, a document the prolog check
cannot read (UTF-16) and deep nesting are still refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from converter import Converter, ConverterConfig, ParseError
from converter.cda import parse_xml
from converter.cda import xml as cda_xml

from ._support import SAMPLES, run_cli

SAMPLE = SAMPLES / "Unstructured_nguyen-lea_pdf.xml"
_B64_TEXT = re.compile(rb'(<text[^>]*representation="B64"[^>]*>)(.*?)(</text>)', re.DOTALL)
PDF_BYTES = 9_000_000  # 12 MB of base64, over libxml2's 10,000,000-byte text limit


def pdf(size: int = PDF_BYTES) -> bytes:
    """A PDF-looking payload of ``size`` bytes (its content does not matter)."""
    block = hashlib.sha256(b"scan").digest() * 64
    return (b"%PDF-1.4\n" + block * (size // len(block) + 1))[:size]


def with_pdf(payload: bytes, *, before_root: bytes = b"", nest: int = 0) -> bytes:
    """The unstructured sample embedding ``payload`` (base64 in lines of 76), with
    ``before_root`` written before its root element and, when ``nest`` is set, a
    narrative-free chain of ``nest`` elements after its body."""
    document = SAMPLE.read_bytes()
    encoded = base64.encodebytes(payload)
    found = _B64_TEXT.search(document)
    assert found is not None
    document = document[: found.start(2)] + b"\n" + encoded + document[found.end(2) :]
    if before_root:
        start = document.index(b"<ClinicalDocument")
        document = document[:start] + before_root + document[start:]
    if nest:
        chain = b"<x>" * nest + b"</x>" * nest
        document = document.replace(b"</ClinicalDocument>", chain + b"</ClinicalDocument>")
    return document


@pytest.fixture(scope="module")
def converter() -> Converter:
    return Converter(ConverterConfig(default_timezone="Europe/Paris"))


def _attachments(bundle: dict[str, object]) -> list[dict[str, object]]:
    found = []
    for entry in bundle["entry"]:  # type: ignore[attr-defined]
        resource = entry["resource"]
        if resource["resourceType"] == "DocumentReference":
            found += [content["attachment"] for content in resource["content"]]
    return found


def test_the_payload_is_past_libxml2s_text_limit() -> None:
    data = with_pdf(pdf())
    found = _B64_TEXT.search(data)
    assert found is not None and len(found.group(2)) > 10_000_000
    assert len(data) < cda_xml.DEFAULT_MAX_BYTES


def test_an_embedded_pdf_over_10_mb_converts(converter: Converter) -> None:
    payload = pdf()
    [conversion] = converter.convert(with_pdf(payload), input_type="cda")  # validated
    [embedded] = [
        a for a in _attachments(conversion.bundle) if a["contentType"] == "application/pdf"
    ]
    assert base64.b64decode(str(embedded["data"])) == payload


def test_an_embedded_pdf_over_10_mb_converts_through_the_cli(tmp_path: Path) -> None:
    payload = pdf()
    source = tmp_path / "scan.xml"
    source.write_bytes(with_pdf(payload))
    result = run_cli("convert", source, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    attachments = _attachments(json.loads(result.stdout))
    assert any(
        a["contentType"] == "application/pdf" and base64.b64decode(str(a["data"])) == payload
        for a in attachments
    )


@pytest.mark.parametrize(
    "prolog",
    [
        b"<!DOCTYPE ClinicalDocument>\n",
        b'<!DOCTYPE ClinicalDocument [<!ENTITY a "b">]>\n',
        b"<!-- " + b"x" * 5000 + b" -->\n<!DOCTYPE ClinicalDocument>\n",
        b'<?xml-stylesheet href="cda.xsl"?>\n<!DOCTYPE ClinicalDocument>\n',
    ],
    ids=["bare", "internal-subset", "after-long-comment", "after-instruction"],
)
def test_a_doctype_still_refuses_a_document_with_a_long_text(prolog: bytes) -> None:
    with pytest.raises(ParseError) as caught:
        parse_xml(with_pdf(pdf(), before_root=prolog))
    assert "DTD or entities are not accepted" in caught.value.reason, caught.value.reason


def test_deep_nesting_is_still_refused_beside_a_long_text() -> None:
    # The long text comes first: the document is parsed again with huge_tree, whose own
    # nesting limit is 2048; ours stays.
    with pytest.raises(ParseError) as caught:
        parse_xml(with_pdf(pdf(), nest=cda_xml.MAX_DEPTH + 10))
    assert "nested too deeply" in caught.value.reason
    assert parse_xml(with_pdf(pdf(), nest=100)) is not None


def test_an_oversized_attribute_is_still_refused() -> None:
    document = with_pdf(b"%PDF-1.4\n").replace(
        b"<ClinicalDocument ", b'<ClinicalDocument data-x="' + b"x" * 11_000_000 + b'" ', 1
    )
    with pytest.raises(ParseError) as caught:
        parse_xml(document)
    assert "size limit" in caught.value.reason


def test_a_utf16_document_with_a_long_text_keeps_the_limit() -> None:
    """The prolog check reads bytes as ASCII: what it cannot read keeps libxml2's limits."""
    document = with_pdf(pdf()).decode("utf-8").replace('encoding="UTF-8"', 'encoding="UTF-16"')
    with pytest.raises(ParseError) as caught:
        parse_xml(document.encode("utf-16"))
    assert "size limit" in caught.value.reason


# -- the prolog check ------------------------------------------------------------------------
_ITEMS = {
    "declaration": b'<?xml version="1.0" encoding="UTF-8"?>',
    "instruction": b'<?xml-stylesheet href="a<b>.xsl"?>',
    "comment": b"<!-- <ClinicalDocument> <!DOCTYPE x> -->",
    "space": b" \r\n\t",
}
_DOCTYPE = b"<!DOCTYPE ClinicalDocument>"


@given(
    items=st.lists(st.sampled_from(sorted(_ITEMS)), max_size=6),
    doctype_at=st.one_of(st.none(), st.integers(min_value=0, max_value=6)),
    bom=st.booleans(),
)
def test_prolog_check_finds_a_doctype_wherever_it_is(
    items: list[str], doctype_at: int | None, bom: bool
) -> None:
    parts = [_ITEMS[item] for item in items]
    if doctype_at is not None:
        parts.insert(min(doctype_at, len(parts)), _DOCTYPE)
    data = (b"\xef\xbb\xbf" if bom else b"") + b"".join(parts) + b'<ClinicalDocument a="<!x"/>'
    assert cda_xml._prolog(data) == ("doctype" if doctype_at is not None else "clean")


@pytest.mark.parametrize(
    "data",
    [b"<!-- never closed <ClinicalDocument/>", b"", b"text<ClinicalDocument/>", b"<", b"<!x"],
)
def test_prolog_check_is_conservative_on_what_it_cannot_follow(data: bytes) -> None:
    assert cda_xml._prolog(data) == "unreadable"


# -- a Note Activity's Base64 text -----------------------------------------------------------
NOTE_TEXT = re.compile(
    rb'(<templateId root="2.16.840.1.113883.10.20.22.4.202"[^>]*/>.*?)'
    rb'<text mediaType="text/plain">\s*<reference value="#note1"/>\s*</text>',
    re.DOTALL,
)


def with_note_data(data: bytes) -> bytes:
    """The CCD sample whose Note Activity carries ``data`` as its B64 text (a PDF)."""
    document = (SAMPLES / "CCD_lefevre-camille.xml").read_bytes()
    replaced, count = NOTE_TEXT.subn(
        lambda m: (
            m.group(1)
            + b'<text mediaType="application/pdf" representation="B64">'
            + data
            + b"</text>"
        ),
        document,
        count=1,
    )
    assert count == 1
    return replaced


def _note_data(bundle: dict[str, object]) -> list[str]:
    return [
        str(attachment["data"])
        for attachment in _attachments(bundle)
        if attachment.get("contentType") == "application/pdf" and "data" in attachment
    ]


def test_a_large_base64_note_is_kept_whole(converter: Converter) -> None:
    """Checked with str.strip of the alphabet, not one character at a time through
    Jinja's reject filter (a 7 MB PDF in a note took seconds)."""
    payload = pdf(1_000_000)
    [conversion] = converter.convert(with_note_data(base64.encodebytes(payload)), input_type="cda")
    [data] = _note_data(conversion.bundle)
    assert base64.b64decode(data) == payload


@pytest.mark.parametrize(
    "data",
    [b"JVBERi0xLjQK?!", b"JVBERi0xLjQ", b"\xc3\xa9AAA"],
    ids=["alphabet", "length", "accent"],
)
def test_a_note_that_is_not_base64_is_left_out_with_a_warning(
    converter: Converter, data: bytes
) -> None:
    [conversion] = converter.convert(with_note_data(data), input_type="cda")  # validated
    assert _note_data(conversion.bundle) == []
    assert [w for w in conversion.warnings if "is not valid Base64" in w], conversion.warnings
