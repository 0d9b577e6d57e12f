"""An immunization whose only date is invalid (``20241399``): strict mode refuses it at
that time, as any invalid time; lenient mode drops the value with a warning, and then
the required date is missing: a MappingError naming the effectiveTime. It wrote an
Immunization without occurrence[x], a validation error naming no place in the document
(found by ``scripts/perturb_samples.py --lenient --kinds cda``)."""

from __future__ import annotations

import pytest
from lxml import etree

from converter import Converter, ConverterConfig, MappingError

from ._support import SAMPLES, resources_of

NS = {"h": "urn:hl7-org:v3"}
IMMUNIZATION_ACTIVITY = "2.16.840.1.113883.10.20.22.4.52"
SAMPLE = SAMPLES / "CCD_lefevre-camille.xml"


def _with_first_immunization_time(value: str) -> bytes:
    root = etree.fromstring(SAMPLE.read_bytes())
    [time, *_] = root.xpath(
        f"//h:substanceAdministration[h:templateId/@root='{IMMUNIZATION_ACTIVITY}']"
        "/h:effectiveTime",
        namespaces=NS,
    )
    for child in list(time):
        time.remove(child)
    time.attrib.clear()
    time.set("value", value)
    return bytes(etree.tostring(root))


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lenient"])
def test_an_invalid_only_date_is_refused_at_its_place(strict: bool) -> None:
    converter = Converter(ConverterConfig(default_timezone="Europe/Paris", strict_values=strict))
    with pytest.raises(MappingError) as caught:
        converter.convert(_with_first_immunization_time("20241399"), input_type="cda")
    assert caught.value.location is not None
    assert "/substanceAdministration/effectiveTime" in caught.value.location
    if not strict:
        assert "the immunization date (effectiveTime) is missing" in str(caught.value)


def test_a_valid_date_still_converts_in_lenient_mode() -> None:
    converter = Converter(ConverterConfig(default_timezone="Europe/Paris", strict_values=False))
    [conversion] = converter.convert(_with_first_immunization_time("20240305"), input_type="cda")
    dates = [i.get("occurrenceDateTime") for i in resources_of(conversion.bundle, "Immunization")]
    assert "2024-03-05" in dates
