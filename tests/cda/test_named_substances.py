"""An allergen or a vaccine written by name only keeps its name.

A document may name the substance without a code (``<code nullFlavor="OTH"/>`` and a
``playingEntity/name`` or ``manufacturedMaterial/name``), as local allergen lists and
vaccine product names often are. The Medication already took that name as its text;
the AllergyIntolerance lost it (an allergy to nothing: no code at all) and the
Immunization kept only a data-absent-reason coding. Both now carry the name as the
concept's text; a code or an originalText, when given, still comes first.
"""

from __future__ import annotations

from tests.support.r4validator import R4Validator

from ._support import cda, convert_document, resources_of, section

DAR = "http://terminology.hl7.org/CodeSystem/data-absent-reason"


def _section(template: str, code: str, entries: str) -> str:
    return section(template, code, entries, "<content ID='allergen-1'>Pollen de bouleau</content>")


def _allergy(extension: str, entity: str) -> str:
    return (
        '<entry><act classCode="ACT" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.30" extension="2015-08-01"/>'
        f'<id root="1.2.250.1.999.41" extension="C{extension}"/>'
        '<code code="CONC" codeSystem="2.16.840.1.113883.5.6"/><statusCode code="active"/>'
        '<effectiveTime><low value="2010"/></effectiveTime>'
        '<entryRelationship typeCode="SUBJ"><observation classCode="OBS" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.7" extension="2014-06-09"/>'
        f'<id root="1.2.250.1.999.41" extension="{extension}"/>'
        '<code code="ASSERTION" codeSystem="2.16.840.1.113883.5.4"/>'
        '<statusCode code="completed"/><effectiveTime><low value="2010"/></effectiveTime>'
        '<value xsi:type="CD" code="419199007" codeSystem="2.16.840.1.113883.6.96"/>'
        '<participant typeCode="CSM"><participantRole classCode="MANU">'
        f'<playingEntity classCode="MMAT">{entity}</playingEntity></participantRole>'
        "</participant></observation></entryRelationship></act></entry>"
    )


def test_an_allergen_named_without_a_code_keeps_its_name(r4validator: R4Validator) -> None:
    body = _section(
        "2.16.840.1.113883.10.20.22.2.6.1",
        "48765-2",
        _allergy("NAME", '<code nullFlavor="OTH"/><name>Gants en latex</name>')
        + _allergy("BARE", "<name>Arachide</name>")
        + _allergy(
            "TEXT",
            '<code nullFlavor="OTH"><originalText><reference value="#allergen-1"/>'
            "</originalText></code><name>Bouleau</name>",
        )
        + _allergy(
            "CODED",
            '<code code="1191" codeSystem="2.16.840.1.113883.6.88" displayName="Aspirin"/>'
            "<name>Aspirine</name>",
        ),
    )
    bundle, _ = convert_document(cda(body=body))
    codes = {
        r["identifier"][0]["value"]: r.get("code")
        for r in resources_of(bundle, "AllergyIntolerance")
    }
    assert codes["NAME"] == {"text": "Gants en latex"}
    assert codes["BARE"] == {"text": "Arachide"}
    # The narrative the originalText points to comes before the name.
    assert codes["TEXT"] == {"text": "Pollen de bouleau"}
    # A code is the concept: the name does not replace its display.
    assert codes["CODED"] == {
        "coding": [
            {
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": "1191",
                "display": "Aspirin",
            }
        ]
    }
    assert r4validator.validate(bundle) == []


def test_a_vaccine_named_without_a_code_keeps_its_name() -> None:
    entry = (
        '<entry><substanceAdministration classCode="SBADM" moodCode="EVN" negationInd="false">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.52" extension="2015-08-01"/>'
        '<id root="1.2.250.1.999.42" extension="VAX-1"/><statusCode code="completed"/>'
        '<effectiveTime value="20231015"/><consumable><manufacturedProduct classCode="MANU">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.54" extension="2014-06-09"/>'
        '<manufacturedMaterial><code nullFlavor="OTH"/><name>Vaxigrip Tetra 2023-2024</name>'
        "</manufacturedMaterial></manufacturedProduct></consumable>"
        "</substanceAdministration></entry>"
    )
    bundle, _ = convert_document(
        cda(body=_section("2.16.840.1.113883.10.20.22.2.2.1", "11369-6", entry))
    )
    [immunization] = resources_of(bundle, "Immunization")
    assert immunization["vaccineCode"] == {
        "coding": [{"system": DAR, "code": "unsupported"}],
        "text": "Vaxigrip Tetra 2023-2024",
    }
