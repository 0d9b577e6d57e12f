"""An observation whose code is blanks (``code=" "``, a system and nothing else): the
concept test took the blank code for a code, the CodeableConcept written from it came
out empty, and the required Observation.code went missing (an invalid bundle; found by
``scripts/perturb_samples.py --cda-dir`` over the shared C-CDA corpus). It is an absent
code now: the data-absent-reason extension, as for a code element with nothing in it."""

from __future__ import annotations

import pytest
from lxml import etree

from converter import Converter, ConverterConfig

from ._support import SAMPLES, resources_of

NS = {"h": "urn:hl7-org:v3"}
RESULT_OBSERVATION = "2.16.840.1.113883.10.20.22.4.2"
SAMPLE = SAMPLES / "CCD_lefevre-camille.xml"
ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lenient"])
def test_a_blank_code_is_an_absent_code(strict: bool) -> None:
    root = etree.fromstring(SAMPLE.read_bytes())
    [code, *_] = root.xpath(
        f"//h:observation[h:templateId/@root='{RESULT_OBSERVATION}']/h:code", namespaces=NS
    )
    for child in list(code):
        code.remove(child)
    code.attrib.clear()
    code.set("code", " ")
    code.set("codeSystem", "2099")
    converter = Converter(ConverterConfig(default_timezone="Europe/Paris", strict_values=strict))
    [conversion] = converter.convert(etree.tostring(root), input_type="cda")  # validated
    absent = [
        observation
        for observation in resources_of(conversion.bundle, "Observation")
        if any(e.get("url") == ABSENT for e in observation["code"].get("extension", []))
    ]
    assert len(absent) == 1
