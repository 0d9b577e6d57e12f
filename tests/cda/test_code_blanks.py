"""A CDA code holding a run of blanks (``34  133-9``) is written with single spaces and a
warning naming the attribute, as for HL7 v2 (``fhir_code``): R4's code pattern refused it,
and with it the whole document (BundleValidationError)."""

from __future__ import annotations

from pathlib import Path

import pytest

from converter import Converter, ConverterConfig

CCD = Path(__file__).resolve().parents[2] / "samples" / "cda" / "CCD_lefevre-camille.xml"
LOINC = 'codeSystem="2.16.840.1.113883.6.1"'


@pytest.fixture(scope="module")
def converter() -> Converter:
    return Converter(ConverterConfig(default_timezone="Europe/Paris"))


def test_a_document_code_with_two_blanks_is_one_space_and_a_warning(
    converter: Converter,
) -> None:
    xml = CCD.read_text(encoding="utf-8")
    edited = xml.replace(f'code="34133-9" {LOINC}', f'code="34  133-9" {LOINC}', 1)
    assert edited != xml
    [result] = converter.convert(edited.encode("utf-8"), input_type="cda")
    [composition] = [
        e["resource"]
        for e in result.bundle["entry"]
        if e["resource"]["resourceType"] == "Composition"
    ]
    assert composition["type"]["coding"][0]["code"] == "34 133-9"
    assert "blanks inside the code at /ClinicalDocument/code/@code written as one space" in (
        result.warnings
    )
