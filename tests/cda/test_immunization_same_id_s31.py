"""Two mentions of one immunization (same id, same vaccine), one dated and one whose
effectiveTime is only a nullFlavor: the second says nothing that tells them apart, so
both are one Immunization, merged. The dated mention wrote ``occurrenceDateTime`` and
the other ``occurrenceString`` (+ its data-absent-reason): the merge kept both, one
element of two types, and the bundle failed validation ("only one occurrence[x]
element is allowed"; found by ``scripts/perturb_samples.py --cda-dir`` over the shared
C-CDA corpus). The first mention's type is kept, the other reported as a conflict."""

from __future__ import annotations

import copy

import pytest
from lxml import etree

from converter import Converter, ConverterConfig

from ._support import SAMPLES, resources_of

NS = {"h": "urn:hl7-org:v3"}
IMMUNIZATION_ACTIVITY = "2.16.840.1.113883.10.20.22.4.52"
SAMPLE = SAMPLES / "CCD_lefevre-camille.xml"


def _twice(undated_first: bool) -> tuple[bytes, str]:
    """The sample with its first immunization's entry written again right after it,
    one of the two with an effectiveTime of nullFlavor UNK only; and that id's root."""
    root = etree.fromstring(SAMPLE.read_bytes())
    [administration, *_] = root.xpath(
        f"//h:substanceAdministration[h:templateId/@root='{IMMUNIZATION_ACTIVITY}']",
        namespaces=NS,
    )
    entry = administration.getparent()
    again = copy.deepcopy(entry)
    entry.addnext(again)
    undated = entry if undated_first else again
    [time] = undated.xpath("h:substanceAdministration/h:effectiveTime", namespaces=NS)
    for child in list(time):
        time.remove(child)
    time.attrib.clear()
    time.set("nullFlavor", "UNK")
    [id_root] = administration.xpath("h:id/@root", namespaces=NS)
    return bytes(etree.tostring(root)), str(id_root)


@pytest.mark.parametrize("undated_first", [False, True], ids=["dated-first", "undated-first"])
@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lenient"])
def test_one_immunization_with_one_occurrence(undated_first: bool, strict: bool) -> None:
    converter = Converter(ConverterConfig(default_timezone="Europe/Paris", strict_values=strict))
    data, id_root = _twice(undated_first)
    [conversion] = converter.convert(data, input_type="cda")  # validated
    same = [
        resource
        for resource in resources_of(conversion.bundle, "Immunization")
        if any(id_root in i.get("value", "") for i in resource.get("identifier", []))
    ]
    assert len(same) == 1
    occurrences = sorted(key for key in same[0] if key.startswith(("occurrence", "_occurrence")))
    if undated_first:
        assert occurrences == ["_occurrenceString", "occurrenceString"]
    else:
        assert occurrences == ["occurrenceDateTime"]
    assert any(
        "emitted twice with different values" in warning and "occurrence" in warning
        for warning in conversion.warnings
    )
