"""Session 24, HL7 v2 segments against the v2-to-FHIR IG's segment maps: fields the IG
maps that the templates dropped or mapped wrongly.

- AL1-4 allergy severity is kept as sent in criticality's alternate-codes extension (IG
  AL1[AllergyIntolerance] row 4): criticality has no code for MO (moderate) and U, and
  reaction.severity needs a reaction (AL1-5), so "MO" without AL1-5 left no severity.
  AL1-2 likewise beside category (row 2), or beside type for MA / MC, which have no
  category (a contraindication, MC, was an AllergyIntolerance of no type nor category).
- PV2-12 visit description is Encounter.text (IG PV2[Encounter] row 12, text.div): it was
  dropped.
- ORC-28 confidentiality code labels the order's results (Observation.meta.security) as the
  IG labels its ServiceRequest and DiagnosticReport: a restricted report's results were
  unlabelled, readable by whoever may read unlabelled Observations. The Immunization read
  only the first ORC-28 repetition and dropped a code its map lacks; it now reads them as
  the ServiceRequest does, and its ORC-4 placer group number is an identifier (IG
  ORC[Immunization] row 4; it was dropped).
- A DG1-21 D (deleted diagnosis) is left out of Encounter.diagnosis: its Condition is
  entered-in-error, yet it stayed the visit's rank-1 diagnosis.
- IN1-11 insured's group employer name (with IN1-10 its ID) is Coverage.policyHolder (IG
  IN1[Coverage] rows 10-11): it was dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter
from tests.support.hl7_edit import resources, set_field
from tests.support.r4validator import R4Validator

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
ADMISSION = (SAMPLES / "ADT_A01_admission-full.hl7").read_bytes()
ALTERNATE = "http://hl7.org/fhir/StructureDefinition/alternate-codes"
V2 = "http://terminology.hl7.org/CodeSystem/v2-"


def _alternate(element: dict[str, Any]) -> list[dict[str, Any]]:
    """The codings of an element's alternate-codes extension."""
    [found] = [e for e in element.get("extension", []) if e["url"] == ALTERNATE]
    codings: list[dict[str, Any]] = found["valueCodeableConcept"]["coding"]
    return codings


def _allergies(converter: Converter, data: bytes) -> list[dict[str, Any]]:
    return resources(converter.convert_message(data).bundle, "AllergyIntolerance")


# --- AL1-4 severity, AL1-2 allergen type ----------------------------------------------------


def test_a_moderate_allergy_without_reaction_keeps_its_severity(
    converter: Converter, r4validator: R4Validator
) -> None:
    # The sample's second AL1 is MO (moderate); without AL1-5 there is no reaction.
    data = set_field(ADMISSION, "AL1", 5, "", occurrence=2)
    peanut = _allergies(converter, data)[1]
    assert "criticality" not in peanut and "reaction" not in peanut
    assert _alternate(peanut["_criticality"]) == [
        {"system": V2 + "0128", "code": "MO", "display": "Moderate"}
    ]
    assert r4validator.validate(peanut) == []


def test_a_severe_allergy_keeps_the_code_it_was_sent_with(converter: Converter) -> None:
    penicillin = _allergies(converter, ADMISSION)[0]
    assert penicillin["criticality"] == "high"
    assert [c["code"] for c in _alternate(penicillin["_criticality"])] == ["SV"]
    assert penicillin["reaction"][0]["severity"] == "severe"


def test_a_local_severity_code_is_kept_as_sent(converter: Converter) -> None:
    data = set_field(ADMISSION, "AL1", 4, "3^Grave^99SEV")
    penicillin = _allergies(converter, data)[0]
    assert "criticality" not in penicillin
    assert _alternate(penicillin["_criticality"]) == [{"code": "3", "display": "Grave"}]


def test_no_severity_writes_no_extension(converter: Converter) -> None:
    data = set_field(ADMISSION, "AL1", 4, "")
    assert "_criticality" not in _allergies(converter, data)[0]


@pytest.mark.parametrize(("sent", "category"), [("DA", "medication"), ("FA", "food")])
def test_the_allergen_type_is_kept_beside_its_category(
    converter: Converter, sent: str, category: str
) -> None:
    data = set_field(ADMISSION, "AL1", 2, f"{sent}^Type^HL70127")
    penicillin = _allergies(converter, data)[0]
    assert penicillin["category"] == [category]
    [extension] = penicillin["_category"]
    assert [(c["system"], c["code"]) for c in _alternate(extension)] == [(V2 + "0127", sent)]


@pytest.mark.parametrize(("sent", "kind"), [("MC", None), ("MA", "allergy")])
def test_an_allergen_type_without_category_is_kept_beside_the_type(
    converter: Converter, r4validator: R4Validator, sent: str, kind: str | None
) -> None:
    data = set_field(ADMISSION, "AL1", 2, f"{sent}^Divers^HL70127")
    penicillin = _allergies(converter, data)[0]
    assert "category" not in penicillin and "_category" not in penicillin
    assert penicillin.get("type") == kind
    assert [(c["system"], c["code"]) for c in _alternate(penicillin["_type"])] == [
        (V2 + "0127", sent)
    ]
    assert r4validator.validate(penicillin) == []


# --- PV2-12 visit description ---------------------------------------------------------------

XHTML = '<div xmlns="http://www.w3.org/1999/xhtml">'


def _encounter(converter: Converter, data: bytes) -> dict[str, Any]:
    [found] = resources(converter.convert_message(data).bundle, "Encounter")
    return found


def test_the_visit_description_is_the_encounter_narrative(
    converter: Converter, r4validator: R4Validator
) -> None:
    encounter = _encounter(converter, ADMISSION)
    assert encounter["text"] == {
        "status": "additional",
        "div": XHTML + "Hospitalisation en cardiologie après passage au SAU</div>",
    }
    assert r4validator.validate(encounter) == []


def test_markup_characters_of_the_description_stay_text(
    converter: Converter, r4validator: R4Validator
) -> None:
    # \T\ is the escaped "&" of HL7 v2; "<b>" is text, not markup, in an ST field.
    data = set_field(ADMISSION, "PV2", 12, "Bilan <b>cardio</b> \\T\\ suivi")
    encounter = _encounter(converter, data)
    assert encounter["text"]["div"] == XHTML + "Bilan &lt;b&gt;cardio&lt;/b&gt; &amp; suivi</div>"
    assert r4validator.validate(encounter) == []


@pytest.mark.parametrize("empty", ["", "   ", '""'])
def test_no_description_gives_no_narrative(converter: Converter, empty: str) -> None:
    data = set_field(ADMISSION, "PV2", 12, empty)
    assert "text" not in _encounter(converter, data)


# --- ORC-28 confidentiality of an order's results -------------------------------------------

RESTRICTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
    "code": "R",
    "display": "restricted",
}


def _labels(resource: dict[str, Any]) -> list[dict[str, Any]]:
    labels: list[dict[str, Any]] = resource.get("meta", {}).get("security", [])
    return labels


def _order_results(bundle: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The Observations each DiagnosticReport lists, by the report's first code."""
    by_id = {e["resource"]["id"]: e["resource"] for e in bundle["entry"]}
    return {
        report["code"]["coding"][0]["code"]: [
            by_id[ref["reference"].split("/")[1]] for ref in report.get("result", [])
        ]
        for report in resources(bundle, "DiagnosticReport")
    }


@pytest.mark.parametrize("sample", ["ORU_R01_lab-results.hl7", "OUL_R22_lab-results.hl7"])
def test_the_results_of_a_restricted_order_are_restricted(
    converter: Converter, r4validator: R4Validator, sample: str
) -> None:
    data = set_field((SAMPLES / sample).read_bytes(), "ORC", 28, "R^Restreint^HL70177")
    bundle = converter.convert_message(data).bundle
    [first, *others] = _order_results(bundle).values()
    assert first and all(_labels(obx) == [RESTRICTED] for obx in first)
    assert r4validator.validate(first[0]) == []
    # The other orders of the message (ORC-28 empty) are not labelled.
    assert others and not any(_labels(obx) for results in others for obx in results)


def test_a_result_keeps_every_confidentiality_code_of_its_order(converter: Converter) -> None:
    data = set_field(
        (SAMPLES / "ORU_R01_lab-results.hl7").read_bytes(),
        "ORC",
        28,
        "R^Restreint^HL70177~HIV^VIH^HL70177",
    )
    bundle = converter.convert_message(data).bundle
    report = resources(bundle, "DiagnosticReport")[0]
    [first, *_] = _order_results(bundle).values()
    assert (
        [c["code"] for c in _labels(first[0])]
        == ["R", "HIV"]
        == [c["code"] for c in _labels(report)]
    )


def test_an_order_without_confidentiality_code_labels_no_result(converter: Converter) -> None:
    bundle = converter.convert_message((SAMPLES / "ORU_R01_lab-results.hl7").read_bytes()).bundle
    assert not any(_labels(obx) for obx in resources(bundle, "Observation"))


VACCINATION = (SAMPLES / "VXU_V04_immunization.hl7").read_bytes()


def test_an_immunization_keeps_every_confidentiality_code(converter: Converter) -> None:
    data = set_field(VACCINATION, "ORC", 28, "R^Restreint^HL70177~PSYCH^Psy^99LOC")
    bundle = converter.convert_message(data).bundle
    immunization = resources(bundle, "Immunization")[0]
    assert _labels(immunization) == [RESTRICTED, {"code": "PSYCH", "display": "Psy"}]
    # The dose's OBX (eligibility, information statement) are its order's too.
    dose_results = [
        obx
        for obx in resources(bundle, "Observation")
        if obx.get("partOf", [{}])[0].get("reference") == f"Immunization/{immunization['id']}"
    ]
    assert len(dose_results) == 2
    assert all(_labels(obx) == _labels(immunization) for obx in dose_results)


def test_the_placer_group_number_identifies_the_immunization(
    converter: Converter, r4validator: R4Validator
) -> None:
    data = set_field(VACCINATION, "ORC", 4, "GRP-2024-0315^LOGICIEL-PMI")
    immunization = resources(converter.convert_message(data).bundle, "Immunization")[0]
    assert {
        "type": {"coding": [{"system": V2 + "0203", "code": "PGN"}]},
        "value": "GRP-2024-0315",
        "assigner": {"display": "LOGICIEL-PMI"},
    } in immunization["identifier"]
    assert r4validator.validate(immunization) == []


# --- IN1-10/11 insured's group employer -----------------------------------------------------

EMPLOYER_ID = "55210055400013^^^INSEE&1.2.250.1.71.4.2.2&ISO^SIRET"


def _by_reference(bundle: dict[str, Any], reference: str) -> dict[str, Any]:
    rtype, _, rid = reference.partition("/")
    [found] = [r for r in resources(bundle, rtype) if r["id"] == rid]
    return found


def test_the_group_employer_holds_the_policy(
    converter: Converter, r4validator: R4Validator
) -> None:
    data = set_field(set_field(ADMISSION, "IN1", 11, "DURAND SA^L"), "IN1", 10, EMPLOYER_ID)
    bundle = converter.convert_message(data).bundle
    [coverage] = resources(bundle, "Coverage")
    employer = _by_reference(bundle, coverage["policyHolder"]["reference"])
    assert employer["name"] == "DURAND SA"
    assert [(i["system"], i["value"]) for i in employer["identifier"]] == [
        ("urn:oid:1.2.250.1.71.4.2.2", "55210055400013")
    ]
    assert r4validator.validate(coverage) == []


def test_an_employer_without_id_is_still_the_policy_holder(converter: Converter) -> None:
    data = set_field(ADMISSION, "IN1", 11, "DURAND SA")
    bundle = converter.convert_message(data).bundle
    [coverage] = resources(bundle, "Coverage")
    assert _by_reference(bundle, coverage["policyHolder"]["reference"])["name"] == "DURAND SA"


def test_an_employer_id_without_name_is_a_warning(converter: Converter) -> None:
    conversion = converter.convert_message(set_field(ADMISSION, "IN1", 10, EMPLOYER_ID))
    [coverage] = resources(conversion.bundle, "Coverage")
    assert "policyHolder" not in coverage
    assert any("IN1-10" in str(w) for w in conversion.warnings)


# --- DG1-21 deleted diagnosis ---------------------------------------------------------------


def test_a_deleted_diagnosis_is_no_diagnosis_of_the_visit(converter: Converter) -> None:
    # The sample's first DG1 is the admission diagnosis, ranked 1 (DG1-15).
    bundle = converter.convert_message(set_field(ADMISSION, "DG1", 21, "D")).bundle
    deleted, kept = resources(bundle, "Condition")
    assert deleted["verificationStatus"]["coding"][0]["code"] == "entered-in-error"
    assert "verificationStatus" not in kept
    [encounter] = resources(bundle, "Encounter")
    assert [d["condition"]["reference"] for d in encounter["diagnosis"]] == [
        f"Condition/{kept['id']}"
    ]


@pytest.mark.parametrize("action", ["A", "U", ""])
def test_a_diagnosis_added_or_updated_stays_listed(converter: Converter, action: str) -> None:
    bundle = converter.convert_message(set_field(ADMISSION, "DG1", 21, action)).bundle
    [encounter] = resources(bundle, "Encounter")
    assert [d.get("rank") for d in encounter["diagnosis"]] == [1, 2]


def test_a_visit_whose_diagnoses_are_all_deleted_lists_none(converter: Converter) -> None:
    data = set_field(ADMISSION, "DG1", 21, "D", occurrence=0)
    bundle = converter.convert_message(data).bundle
    [encounter] = resources(bundle, "Encounter")
    assert "diagnosis" not in encounter
    assert len(resources(bundle, "Condition")) == 2
