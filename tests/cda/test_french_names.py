"""French CDA patient names (ANS CI-SIS): one <name> with a birth family (qualifier BR) and
a used family (qualifier SP) becomes FR Core 2.1.0's two Patient names, officialName (use
official, the birth name) and usualName (use usual, the used name), each with the
name's given names but a CL one, which is the usual name's only
(mappings/cda/datatypes/contact.j2, HumanNames)."""

from __future__ import annotations

from typing import Any

import pytest

from converter import Converter, ConverterConfig
from tests.support.r4validator import R4Validator

from ._support import SAMPLES

VSM = SAMPLES / "VSM_synthese-medicale.xml"
VSM_NAME = """<name>
          <given qualifier="BR">Hélène</given>
          <family qualifier="BR">Dubois</family>
          <family qualifier="SP">Mercier</family>
        </name>"""


@pytest.fixture(scope="module")
def converter() -> Converter:
    return Converter(ConverterConfig(default_timezone="Europe/Paris"))


def _patient(
    converter: Converter, name: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    xml = VSM.read_text(encoding="utf-8")
    assert xml.count(VSM_NAME) == 1
    if name is not None:
        xml = xml.replace(VSM_NAME, name)
    [conversion] = converter.convert(xml.encode("utf-8"), input_type="cda")
    assert conversion.warnings == ()
    [patient] = [
        e["resource"]
        for e in conversion.bundle["entry"]
        if e["resource"]["resourceType"] == "Patient"
    ]
    return patient, conversion.bundle


def test_vsm_sample_keeps_birth_and_used_names(converter: Converter) -> None:
    patient, _ = _patient(converter)
    assert patient["name"] == [
        {"use": "official", "family": "Dubois", "given": ["Hélène"]},
        {"use": "usual", "family": "Mercier", "given": ["Hélène"]},
    ]


def test_birth_and_used_names_in_any_order_with_prefix(converter: Converter) -> None:
    patient, _ = _patient(
        converter,
        "<name><prefix>Mme</prefix><given>Anne</given><given>Marie</given>"
        '<family qualifier="SP">Martin</family><family qualifier="BR">Dupont</family></name>',
    )
    assert patient["name"] == [
        {"use": "official", "family": "Dupont", "given": ["Anne", "Marie"], "prefix": ["Mme"]},
        {"use": "usual", "family": "Martin", "given": ["Anne", "Marie"], "prefix": ["Mme"]},
    ]


def test_a_called_first_name_is_the_usual_name_s_only(converter: Converter) -> None:
    # CL ("call me", HL7 v3 EntityNamePartQualifier): the first name used, not a birth
    # given name; the official (birth) name keeps the others.
    patient, _ = _patient(
        converter,
        '<name><given qualifier="BR">Hélène</given><given qualifier="CL">Léna</given>'
        '<family qualifier="BR">Dubois</family><family qualifier="SP">Mercier</family></name>',
    )
    assert patient["name"] == [
        {"use": "official", "family": "Dubois", "given": ["Hélène"]},
        {"use": "usual", "family": "Mercier", "given": ["Léna"]},
    ]


def test_birth_name_with_an_unqualified_family_as_the_used_name(converter: Converter) -> None:
    patient, _ = _patient(
        converter,
        '<name><given>Anne</given><family qualifier="BR">Dupont</family>'
        "<family>Martin</family></name>",
    )
    assert patient["name"] == [
        {"use": "official", "family": "Dupont", "given": ["Anne"]},
        {"use": "usual", "family": "Martin", "given": ["Anne"]},
    ]


def test_birth_name_alone(converter: Converter) -> None:
    patient, _ = _patient(
        converter, '<name><given>Anne</given><family qualifier="BR">Dupont</family></name>'
    )
    assert patient["name"] == [{"use": "official", "family": "Dupont", "given": ["Anne"]}]


def test_used_name_alone(converter: Converter) -> None:
    patient, _ = _patient(
        converter, '<name><given>Anne</given><family qualifier="SP">Martin</family></name>'
    )
    assert patient["name"] == [{"use": "usual", "family": "Martin", "given": ["Anne"]}]


def test_no_qualifier_is_unchanged(converter: Converter) -> None:
    patient, _ = _patient(converter, "<name><given>Anne</given><family>Dupont</family></name>")
    assert patient["name"] == [{"family": "Dupont", "given": ["Anne"]}]
    patient, _ = _patient(
        converter, '<name use="L"><given>Anne</given><family>Dupont</family></name>'
    )
    assert patient["name"] == [{"use": "official", "family": "Dupont", "given": ["Anne"]}]


def test_an_explicit_use_wins_over_a_single_qualifier(converter: Converter) -> None:
    """C-CDA (HL7 Care Plan example) writes <name use="L"> with a single SP family and
    <name use="SRCH"> with a single BR one: their output is the one before the split."""
    patient, _ = _patient(
        converter,
        '<name use="L"><given>Eve</given><family qualifier="SP">Betterhalf</family></name>'
        '<name use="SRCH"><given>Eve</given><family qualifier="BR">Everywoman</family></name>',
    )
    assert patient["name"] == [
        {"use": "official", "family": "Betterhalf", "given": ["Eve"]},
        {"family": "Everywoman", "given": ["Eve"]},
    ]


def test_two_families_are_split_even_with_a_use(converter: Converter) -> None:
    patient, _ = _patient(
        converter,
        '<name use="L"><given>Anne</given><family qualifier="BR">Dupont</family>'
        '<family qualifier="SP">Martin</family></name>',
    )
    assert [(n["use"], n["family"]) for n in patient["name"]] == [
        ("official", "Dupont"),
        ("usual", "Martin"),
    ]


def test_french_names_bundle_validates(converter: Converter, r4validator: R4Validator) -> None:
    _, bundle = _patient(converter)
    assert r4validator.validate(bundle) == []
