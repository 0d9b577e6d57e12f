"""Units and language tags a FHIR warehouse can query by their code.

* Quantity units: C-CDA requires UCUM, yet documents (HL7's own History and Physical
  example among them) write "mcg", "bpm", "mmHg" or a dose form ("tablets"). Each was
  written with system http://unitsofmeasure.org and itself as the code: an invalid UCUM
  code that unit conversion and "dose in ug" queries miss. A known non-UCUM spelling now
  gets its UCUM code (map CdaUcumUnit; a compound unit term by term: "mcg/kg" → ug/kg),
  a dose form keeps only its text, any other unit is taken as UCUM as before.
* Language tags: BCP 47 takes the ISO 639-1 two-letter code wherever one exists; HL7's
  CCD example writes "eng" and "ita" (ISO 639-2). They were written as urn:ietf:bcp:47
  codes as they were, so the patient's language never matched "en". The primary subtag
  is now mapped (map CdaLanguage), for Patient.communication and the document language.
"""

from __future__ import annotations

from typing import Any

from tests.support.r4validator import R4Validator

from ._support import cda, convert_document, resources_of, section

UCUM = "http://unitsofmeasure.org"


def _medication(activity: str, dose: str) -> str:
    return (
        '<entry><substanceAdministration classCode="SBADM" moodCode="INT">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.16" extension="2014-06-09"/>'
        f'<id root="1.2.250.1.999.31" extension="{activity}"/><statusCode code="active"/>'
        '<effectiveTime xsi:type="IVL_TS"><low value="20230101"/></effectiveTime>'
        f"{dose}"
        '<consumable><manufacturedProduct classCode="MANU">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.23" extension="2014-06-09"/>'
        '<manufacturedMaterial><code code="197806" codeSystem="2.16.840.1.113883.6.88" '
        'displayName="ibuprofen 600 MG Oral Tablet"/></manufacturedMaterial>'
        "</manufacturedProduct></consumable></substanceAdministration></entry>"
    )


def _vital(code: str, value: str, unit: str) -> str:
    return (
        '<component><observation classCode="OBS" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.27" extension="2014-06-09"/>'
        f'<id root="1.2.250.1.999.32" extension="V{code}"/>'
        f'<code code="{code}" codeSystem="2.16.840.1.113883.6.1"/>'
        '<statusCode code="completed"/><effectiveTime value="20230105093000+0100"/>'
        f'<value xsi:type="PQ" value="{value}" unit="{unit}"/></observation></component>'
    )


def _vitals(components: str) -> str:
    return section(
        "2.16.840.1.113883.10.20.22.2.4.1",
        "8716-3",
        '<entry><organizer classCode="CLUSTER" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.26" extension="2015-08-01"/>'
        '<id root="1.2.250.1.999.32" extension="PANEL"/>'
        '<code code="46680005" codeSystem="2.16.840.1.113883.6.96"/>'
        '<statusCode code="completed"/><effectiveTime value="20230105093000+0100"/>'
        f"{components}</organizer></entry>",
    )


def _dose(bundle: dict[str, Any], activity: str) -> dict[str, Any]:
    [request] = [
        r
        for r in resources_of(bundle, "MedicationRequest")
        if r["identifier"][0]["value"] == activity
    ]
    dose: dict[str, Any] = request["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]
    return dose


def test_non_ucum_units_get_their_ucum_code_or_none(r4validator: R4Validator) -> None:
    body = section(
        "2.16.840.1.113883.10.20.22.2.1.1",
        "10160-0",
        _medication("MCG", '<doseQuantity value="50" unit="mcg"/>')
        + _medication("TAB", '<doseQuantity value="2" unit="tablets"/>')
        + _medication("MG", '<doseQuantity value="600" unit="mg"/>')
        + _medication("PERKG", '<doseQuantity value="5" unit="mcg/kg"/>')
        + _medication("PERDAY", '<doseQuantity value="2" unit="tab/d"/>'),
    ) + _vitals(
        _vital("8867-4", "72", "bpm")
        + _vital("8480-6", "120", "mmHg")
        + _vital("2710-2", "98", "%")
    )
    bundle, _ = convert_document(cda(body=body))

    assert _dose(bundle, "MCG") == {"value": 50, "unit": "mcg", "system": UCUM, "code": "ug"}
    # A dose form is no UCUM unit: its text only (a code needs its system, qty-3).
    assert _dose(bundle, "TAB") == {"value": 2, "unit": "tablets"}
    # A UCUM unit is taken as it is.
    assert _dose(bundle, "MG") == {"value": 600, "unit": "mg", "system": UCUM, "code": "mg"}
    # A compound unit is read term by term.
    assert _dose(bundle, "PERKG") == {"value": 5, "unit": "mcg/kg", "system": UCUM, "code": "ug/kg"}
    assert _dose(bundle, "PERDAY") == {"value": 2, "unit": "tab/d"}

    values = {
        o["code"]["coding"][0]["code"]: o.get("valueQuantity")
        for o in resources_of(bundle, "Observation")
    }
    assert values["8867-4"] == {"value": 72, "unit": "bpm", "system": UCUM, "code": "/min"}
    assert values["8480-6"] == {"value": 120, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}
    assert values["2710-2"] == {"value": 98, "unit": "%", "system": UCUM, "code": "%"}
    assert r4validator.validate(bundle) == []


def test_iso_639_2_language_codes_become_bcp_47_tags() -> None:
    xml = cda().replace('<languageCode code="fr-FR"/>', '<languageCode code="fre-FR"/>')
    xml = xml.replace(
        '<birthTime value="19700101"/></patient>',
        '<birthTime value="19700101"/>'
        '<languageCommunication><languageCode code="fre"/>'
        '<preferenceInd value="true"/></languageCommunication>'
        '<languageCommunication><languageCode code="eng"/></languageCommunication>'
        '<languageCommunication><languageCode code="haw"/></languageCommunication>'
        '<languageCommunication><languageCode code="de-CH"/></languageCommunication>'
        "</patient>",
    )
    bundle, _ = convert_document(xml)
    [patient] = resources_of(bundle, "Patient")
    tags = [c["language"]["coding"][0] for c in patient["communication"]]
    assert [t["code"] for t in tags] == ["fr", "en", "haw", "de-CH"]
    assert {t["system"] for t in tags} == {"urn:ietf:bcp:47"}
    # ISO 639-2 B ("fre") and T ("fra") codes alike; the region subtag is kept.
    [composition] = resources_of(bundle, "Composition")
    assert composition["language"] == "fr-FR"
    [source] = [
        d
        for d in resources_of(bundle, "DocumentReference")
        if d["content"][0]["attachment"].get("contentType") == "text/xml"
    ]
    assert source["content"][0]["attachment"]["language"] == "fr-FR"
