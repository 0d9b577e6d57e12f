"""Session 21: medication dispenses and replacing versions of a document.

* A C-CDA 3.0+ Medication Dispense (template 2023-05-01) writes its FHIR status in
  supply/code and fixes statusCode to completed: a stopped or declined fill came out
  "completed". Its type (supply/code, else the fill's rank in repeatNumber) and its days
  supply (expectedUseTime) were dropped.
* A dispense under the "no known medications" statement was dropped without a word.
* A replacing version of a document (same setId, new id, relatedDocument RPLC) gave new
  ids to what the document names without an id (manufacturer organizations, people,
  places, its plan of treatment): each version added one more of each.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.support.r4validator import R4Validator

from ._support import CCD_SAMPLE, cda, convert_document, resources_of, section

MEDICATIONS = ("2.16.840.1.113883.10.20.22.2.1.1", "10160-0")
AMLODIPINE = '<code code="197361" codeSystem="2.16.840.1.113883.6.88" displayName="amlodipine"/>'
DRUG = (
    '<code code="410942007" codeSystem="2.16.840.1.113883.6.96" displayName="Drug or medicament"/>'
)
DISPENSE_STATUS = "2.16.840.1.113883.4.642.4.1313"  # FHIR medicationdispense-status
OWN_PRODUCT = (
    '<product><manufacturedProduct classCode="MANU">'
    '<templateId root="2.16.840.1.113883.10.20.22.4.23" extension="2014-06-09"/>'
    '<manufacturedMaterial><code code="308135" codeSystem="2.16.840.1.113883.6.88"/>'
    "</manufacturedMaterial></manufacturedProduct></product>"
)


def _dispense(inner: str, *, version: str = "2023-05-01") -> str:
    return (
        '<entryRelationship typeCode="REFR"><supply classCode="SPLY" moodCode="EVN">'
        f'<templateId root="2.16.840.1.113883.10.20.22.4.18" extension="{version}"/>'
        f'<id root="1.2.250.1.999.7.2" extension="D-1"/>{inner}</supply></entryRelationship>'
    )


def _activity(code: str = AMLODIPINE, *, negated: bool = False, extra: str = "") -> str:
    negation = ' negationInd="true"' if negated else ""
    mood = "EVN" if negated else "INT"
    return (
        f'<entry><substanceAdministration classCode="SBADM" moodCode="{mood}"{negation}>'
        '<templateId root="2.16.840.1.113883.10.20.22.4.16" extension="2014-06-09"/>'
        '<id root="1.2.250.1.999.7.1" extension="MA-1"/><statusCode code="active"/>'
        '<effectiveTime xsi:type="IVL_TS"><low value="20240301"/></effectiveTime>'
        '<consumable><manufacturedProduct classCode="MANU">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.23" extension="2014-06-09"/>'
        f"<manufacturedMaterial>{code}</manufacturedMaterial></manufacturedProduct>"
        f"</consumable>{extra}</substanceAdministration></entry>"
    )


def _convert(entries: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    return convert_document(cda(body=section(*MEDICATIONS, entries)))


def _one_dispense(inner: str, **kwargs: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    bundle, warnings = _convert(_activity(extra=_dispense(inner, **kwargs)))
    [dispense] = resources_of(bundle, "MedicationDispense")
    return dispense, warnings


# --- Medication Dispense: status, type, days supply ------------------------------------


def test_a_ccda3_dispense_takes_its_status_from_its_code() -> None:
    # C-CDA 3.0+: statusCode fixed to completed, the FHIR status in supply/code.
    for status in ("stopped", "declined", "in-progress", "completed"):
        dispense, warnings = _one_dispense(
            f'<code code="{status}" codeSystem="{DISPENSE_STATUS}"/><statusCode code="completed"/>'
        )
        assert dispense["status"] == status
        assert "type" not in dispense  # a status is not a kind of fill
        assert warnings == ()


def test_a_ccda21_dispense_keeps_its_status_from_status_code() -> None:
    for status_code, status in (("completed", "completed"), ("aborted", "stopped")):
        dispense, _ = _one_dispense(f'<statusCode code="{status_code}"/>', version="2014-06-09")
        assert dispense["status"] == status


def test_a_dispense_type_from_its_code() -> None:
    dispense, warnings = _one_dispense(
        '<code code="EM" codeSystem="2.16.840.1.113883.5.4" displayName="Emergency Supply"/>'
        '<statusCode code="completed"/><repeatNumber value="1"/>',
        version="2014-06-09",
    )
    assert dispense["type"]["coding"] == [
        {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "EM",
            "display": "Emergency Supply",
        }
    ]
    assert warnings == ()


def test_a_dispense_type_from_the_rank_of_the_fill() -> None:
    # C-CDA, EVN mood: repeatNumber is the rank of this fill among the order's dispenses.
    for rank, code in (("1", "FF"), ("3", "RF")):
        dispense, _ = _one_dispense(
            f'<statusCode code="completed"/><repeatNumber value="{rank}"/>',
            version="2014-06-09",
        )
        [coding] = dispense["type"]["coding"]
        assert (coding["system"], coding["code"]) == (
            "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            code,
        )


def test_days_supply_from_the_expected_use_time() -> None:
    dispense, warnings = _one_dispense(
        '<statusCode code="completed"/><quantity value="30"/>'
        '<expectedUseTime><width value="30" unit="d"/></expectedUseTime>',
        version="2014-06-09",
    )
    assert dispense["daysSupply"] == {
        "value": 30,
        "unit": "d",
        "system": "http://unitsofmeasure.org",
        "code": "d",
    }
    assert warnings == ()
    _, warnings = _one_dispense(
        '<statusCode code="completed"/>'
        '<expectedUseTime><low value="20240302"/><high value="20240401"/></expectedUseTime>',
        version="2014-06-09",
    )
    assert any("expectedUseTime without a width" in w for w in warnings)


def test_a_full_dispense_is_valid_r4(r4validator: R4Validator) -> None:
    bundle, _ = _convert(
        _activity(
            extra=_dispense(
                f'<code code="completed" codeSystem="{DISPENSE_STATUS}"/>'
                '<statusCode code="completed"/><effectiveTime value="20240302"/>'
                '<repeatNumber value="2"/><quantity value="30"/>'
                '<expectedUseTime><width value="30" unit="d"/></expectedUseTime>'
            )
        )
    )
    assert resources_of(bundle, "MedicationDispense")[0]["type"]["coding"][0]["code"] == "RF"
    issues = r4validator.validate(bundle)
    assert issues == [], json.dumps(issues, indent=1)


# --- A dispense under "no known medications" -------------------------------------------


def test_a_dispense_under_no_known_medications_without_product_is_reported() -> None:
    bundle, warnings = _convert(
        _activity(DRUG, negated=True, extra=_dispense('<statusCode code="completed"/>'))
    )
    assert resources_of(bundle, "MedicationDispense") == []
    assert resources_of(bundle, "Medication") == []  # never a fill of "Drug or medicament"
    [warning] = warnings
    assert "Medication Dispense under a MedicationStatement" in warning
    assert "not converted" in warning
    assert warning.startswith("/ClinicalDocument/")  # names its place


def test_a_dispense_of_a_named_product_under_no_known_medications_is_kept(
    r4validator: R4Validator,
) -> None:
    bundle, warnings = _convert(
        _activity(
            DRUG, negated=True, extra=_dispense('<statusCode code="completed"/>' + OWN_PRODUCT)
        )
    )
    [statement] = resources_of(bundle, "MedicationStatement")
    [dispense] = resources_of(bundle, "MedicationDispense")
    assert "authorizingPrescription" not in dispense  # a statement is no prescription
    [drug] = resources_of(bundle, "Medication")
    assert drug["code"]["coding"][0]["code"] == "308135"
    assert resources_of(bundle, "Composition")[0]["section"][0]["entry"] == [
        {"reference": f"MedicationStatement/{statement['id']}"},
        {"reference": f"MedicationDispense/{dispense['id']}"},
    ]
    assert len(warnings) == 1 and "kept without authorizing prescription" in warnings[0]
    assert r4validator.validate(bundle) == []


def test_a_dispense_under_no_known_medications_in_a_clinical_statement_section() -> None:
    anesthesia = ("2.16.840.1.113883.10.20.22.2.25", "59774-0")
    entry = _activity(DRUG, negated=True, extra=_dispense('<statusCode code="completed"/>'))
    bundle, warnings = convert_document(cda(body=section(*anesthesia, entry)))
    assert resources_of(bundle, "MedicationDispense") == []
    assert any("Medication Dispense under a MedicationStatement" in w for w in warnings)


# --- A replacing version of a document ---------------------------------------------------


def _versions() -> tuple[str, str]:
    """The CCD sample and a version 2 replacing it: new id, same setId, RPLC."""
    original = CCD_SAMPLE.read_text(encoding="utf-8")
    doc_id = '<id root="1.2.250.1.999.3.1" extension="CCD-2024-000123"/>'
    assert doc_id in original
    replacing = original.replace(doc_id, doc_id.replace("000123", "000123-V2"), 1)
    replacing = re.sub(r'<versionNumber value="1"/>', '<versionNumber value="2"/>', replacing)
    related = (
        f'<relatedDocument typeCode="RPLC"><parentDocument>{doc_id}</parentDocument>'
        "</relatedDocument>"
    )
    # Before the body: relatedDocument is a header participation.
    replacing = re.sub(
        r"<component>(\s*<structuredBody)", related + r"<component>\1", replacing, count=1
    )
    assert "RPLC" in replacing and "000123-V2" in replacing
    return original, replacing


def _ids(bundle: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (e["resource"]["resourceType"], e["resource"]["id"]): e["resource"] for e in bundle["entry"]
    }


def test_a_replacing_version_updates_what_it_names_without_ids() -> None:
    original, replacing = _versions()
    first, _ = convert_document(original)
    second, _ = convert_document(replacing)
    before, after = _ids(first), _ids(second)
    # Each version is a document of its own: its Composition and source DocumentReference.
    assert {t for t, _ in set(before) - set(after)} == {"Composition", "DocumentReference"}
    assert {t for t, _ in set(after) - set(before)} == {"Composition", "DocumentReference"}
    # Everything else (entries, the people and organizations named without an id, the
    # plan of treatment) keeps its id: the new version updates, it does not duplicate.
    kept = set(before) & set(after)
    assert {t for t, _ in kept} >= {"Organization", "CarePlan", "Observation", "Condition"}
    unnamed = [r for (t, _), r in after.items() if t == "Organization" and not r.get("identifier")]
    assert unnamed  # the sample's manufacturers have names only
    [composition] = resources_of(second, "Composition")
    assert composition["relatesTo"][0]["code"] == "replaces"


def test_documents_of_other_sets_keep_people_without_ids_apart() -> None:
    original, _ = _versions()
    other = original.replace(
        '<setId root="1.2.250.1.999.3.2" extension="CCD-LEFEVRE-C"/>',
        '<setId root="1.2.250.1.999.3.2" extension="CCD-OTHER"/>',
    )
    assert other != original
    first, _ = convert_document(original)
    second, _ = convert_document(other)
    unnamed = {
        key
        for key, r in _ids(first).items()
        if key[0] == "Organization" and not r.get("identifier")
    }
    assert unnamed and not unnamed & set(_ids(second))
