"""French CDA documents (ANS CI-SIS volets: VSM, IPS-FR, lettre de liaison…) keep their entries.

Their sections and entries declare the IHE PCC content modules (sections
1.3.6.1.4.1.19376.1.5.3.1.3.x, entries 1.3.6.1.4.1.19376.1.5.3.1.4.x) and the CCD 1.0
parents, without the C-CDA R2 templateIds: cda/sections.toml maps the IHE sections and
cda/datatypes/entries.j2 lists the IHE entry templates beside the C-CDA ones. Before that,
samples/cda/VSM_synthese-medicale.xml lost its problems, past illnesses, allergies and
surgeries (7 warnings; medications, immunizations and vital signs were kept by the
structural fallbacks).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from converter import json_loads
from tests.support.hl7_edit import resources
from tests.support.r4validator import R4Validator

from ._support import SAMPLES, convert_document

SAMPLE = SAMPLES / "VSM_synthese-medicale.xml"
GOLDEN = SAMPLES / "expected" / "VSM_synthese-medicale.json"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ATC = "http://www.whocc.no/atc"
CCAM = "https://smt.esante.gouv.fr/terminologie-ccam"


@pytest.fixture(scope="module")
def converted() -> tuple[dict[str, Any], tuple[str, ...]]:
    return convert_document(SAMPLE.read_bytes())


@pytest.fixture(scope="module")
def bundle(converted: tuple[dict[str, Any], tuple[str, ...]]) -> dict[str, Any]:
    return converted[0]


def _by_id(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"]
        for e in bundle["entry"]
    }


def _section(bundle: dict[str, Any], loinc: str) -> dict[str, Any]:
    [composition] = resources(bundle, "Composition")
    sections: list[dict[str, Any]] = composition["section"]
    [section] = [s for s in sections if s["code"]["coding"][0]["code"] == loinc]
    return section


def _section_resources(bundle: dict[str, Any], loinc: str) -> list[dict[str, Any]]:
    index = _by_id(bundle)
    return [index[ref["reference"]] for ref in _section(bundle, loinc).get("entry", [])]


def _codes(concept: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in concept.get("coding", [])}


def test_every_section_keeps_its_entries(
    converted: tuple[dict[str, Any], tuple[str, ...]],
) -> None:
    bundle, warnings = converted
    assert warnings == ()
    listed = {
        loinc: sorted(r["resourceType"] for r in _section_resources(bundle, loinc))
        for loinc in ("11450-4", "11348-0", "48765-2", "10160-0", "11369-6", "8716-3", "47519-4")
    }
    assert listed == {
        "11450-4": ["Condition", "Condition"],
        "11348-0": ["Condition"],
        "48765-2": ["AllergyIntolerance", "AllergyIntolerance"],
        "10160-0": ["MedicationRequest", "MedicationRequest"],
        "11369-6": ["Immunization", "Immunization"],
        "8716-3": ["Observation"],
        "47519-4": ["Procedure", "Procedure"],
    }


def test_active_problems_are_active_conditions(bundle: dict[str, Any]) -> None:
    conditions = {next(iter(_codes(c["code"]))): c for c in _section_resources(bundle, "11450-4")}
    assert set(conditions) == {(ICD10, "E11.9"), (ICD10, "I10")}
    for condition in conditions.values():
        # E11.9: its Problem Status Observation (IHE …4.1.1, 33999-4) says active; I10 has
        # none, and its concern act is active.
        assert condition["clinicalStatus"]["coding"][0]["code"] == "active"
        assert condition["category"][0]["coding"][0]["code"] == "problem-list-item"
        assert (SNOMED, "282291009") in _codes(condition["category"][1])
    assert conditions[(ICD10, "E11.9")]["onsetDateTime"] == "2016-04-05"


def test_past_illness_section_is_mapped_by_its_ihe_template(bundle: dict[str, Any]) -> None:
    """11348-0 is not among the LOINC codes of sections.toml: the IHE section templateId
    (History of Past Illness, 1.3.6.1.4.1.19376.1.5.3.1.3.8) maps it."""
    [condition] = _section_resources(bundle, "11348-0")
    assert _codes(condition["code"]) == {(ICD10, "J18.9")}
    assert condition["clinicalStatus"]["coding"][0]["code"] == "resolved"
    assert condition["abatementDateTime"] == "2021-03-25"


def test_allergies_keep_substance_type_category_and_reaction(bundle: dict[str, Any]) -> None:
    allergies = {next(iter(_codes(a["code"]))): a for a in _section_resources(bundle, "48765-2")}
    assert set(allergies) == {(ATC, "J01CA04"), (SNOMED, "256349002")}
    drug = allergies[(ATC, "J01CA04")]
    food = allergies[(SNOMED, "256349002")]
    # The IHE entry's code (ObservationIntoleranceType DALG / FALG) gives type and category.
    assert (drug["type"], drug["category"]) == ("allergy", ["medication"])
    assert (food["type"], food["category"]) == ("allergy", ["food"])
    for allergy in (drug, food):
        assert allergy["clinicalStatus"]["coding"][0]["code"] == "active"
    assert drug["code"]["text"] == "Amoxicilline"
    [reaction] = drug["reaction"]
    assert _codes(reaction["manifestation"][0]) == {(SNOMED, "271807003")}
    assert "reaction" not in food


def test_medications_keep_their_medication(bundle: dict[str, Any]) -> None:
    index = _by_id(bundle)
    requests = _section_resources(bundle, "10160-0")
    medications = {
        next(iter(_codes(index[r["medicationReference"]["reference"]]["code"]))): r
        for r in requests
    }
    assert set(medications) == {(ATC, "A10BA02"), (ATC, "C09AA05")}
    metformin = medications[(ATC, "A10BA02")]
    assert metformin["status"] == "active"
    [dosage] = metformin["dosageInstruction"]
    assert dosage["timing"]["repeat"]["frequency"] == 2
    assert dosage["route"]["coding"][0]["code"] == "20053000"


def test_immunizations_keep_vaccine_date_and_lot(bundle: dict[str, Any]) -> None:
    immunizations = {
        next(iter(_codes(i["vaccineCode"]))): i for i in _section_resources(bundle, "11369-6")
    }
    assert set(immunizations) == {(ATC, "J07CA01"), (ATC, "J07BB02")}
    dtp = immunizations[(ATC, "J07CA01")]
    assert (dtp["status"], dtp["occurrenceDateTime"], dtp["lotNumber"]) == (
        "completed",
        "2024-03-14",
        "X3K21",
    )


def test_vital_signs_panel_and_members(bundle: dict[str, Any]) -> None:
    index = _by_id(bundle)
    [panel] = _section_resources(bundle, "8716-3")
    assert (LOINC, "85353-1") in _codes(panel["code"])
    members = {
        next(iter(_codes(m["code"]))): m
        for m in (index[ref["reference"]] for ref in panel["hasMember"])
    }
    assert set(members) == {(LOINC, "29463-7"), (LOINC, "8302-2"), (LOINC, "85354-9")}
    assert members[(LOINC, "29463-7")]["valueQuantity"]["value"] == 72
    assert members[(LOINC, "8302-2")]["valueQuantity"]["code"] == "cm"
    pressure = {
        c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"]
        for c in members[(LOINC, "85354-9")]["component"]
    }
    assert pressure == {"8480-6": 138, "8462-4": 84}
    for observation in [panel, *members.values()]:
        assert observation["category"][0]["coding"][0]["code"] == "vital-signs"


def test_surgeries_become_procedures(bundle: dict[str, Any]) -> None:
    procedures = {next(iter(_codes(p["code"]))): p for p in _section_resources(bundle, "47519-4")}
    assert set(procedures) == {(CCAM, "HHFA016"), (CCAM, "HMFC004")}
    appendectomy = procedures[(CCAM, "HHFA016")]
    assert (appendectomy["status"], appendectomy["performedDateTime"]) == ("completed", "1994-06")
    assert procedures[(CCAM, "HMFC004")]["performedPeriod"] == {"start": "2018-11-07"}


def test_patient_keeps_the_test_ins_nir(bundle: dict[str, Any]) -> None:
    [patient] = resources(bundle, "Patient")
    ins = [i for i in patient["identifier"] if i["system"] == "urn:oid:1.2.250.1.213.1.4.10"]
    assert [i["value"] for i in ins] == ["279037511203467"]


def test_ihe_entry_templates_alone_are_recognised() -> None:
    """Without the CCD 1.0 parents (2.16.840.1.113883.10.20.1.x), which some producers
    leave out, the IHE templateIds still carry every entry."""
    text = SAMPLE.read_text(encoding="utf-8")
    stripped = re.sub(r'\s*<templateId root="2\.16\.840\.1\.113883\.10\.20\.1\.\d+"/>', "", text)
    assert 'root="2.16.840.1.113883.10.20.1.' not in stripped
    bundle, warnings = convert_document(stripped)
    assert warnings == ()
    counts = {
        t: len(resources(bundle, t))
        for t in ("Condition", "AllergyIntolerance", "MedicationRequest", "Immunization")
    }
    assert counts == {
        "Condition": 3,
        "AllergyIntolerance": 2,
        "MedicationRequest": 2,
        "Immunization": 2,
    }
    assert len(resources(bundle, "Procedure")) == 2


def test_a_concern_without_an_ihe_or_ccda_observation_is_still_skipped() -> None:
    """The concern is recognised by its template, its observations by theirs: a Problem
    Concern Entry whose observation declares no problem template is not a Condition."""
    text = SAMPLE.read_text(encoding="utf-8")
    first = text.index('<templateId root="1.3.6.1.4.1.19376.1.5.3.1.4.5"/>')
    altered = text[:first] + text[first:].replace(
        '<templateId root="1.3.6.1.4.1.19376.1.5.3.1.4.5"/>',
        '<templateId root="1.2.250.1.999.77"/>',
        1,
    )
    altered = re.sub(r'\s*<templateId root="2\.16\.840\.1\.113883\.10\.20\.1\.\d+"/>', "", altered)
    bundle, warnings = convert_document(altered)
    codes = {next(iter(_codes(c["code"]))) for c in _section_resources(bundle, "11450-4")}
    assert codes == {(ICD10, "I10")}
    assert any("act without a Problem Observation skipped" in w for w in warnings)


def test_bundle_is_valid_r4(bundle: dict[str, Any], r4validator: R4Validator) -> None:
    issues = r4validator.validate(bundle)
    assert issues == [], json.dumps(issues, indent=1, ensure_ascii=False)


def test_matches_its_golden(bundle: dict[str, Any]) -> None:
    assert GOLDEN.is_file(), "write it with passerelle convert (tests/golden/test_cda_samples.py)"
    assert bundle == json_loads(GOLDEN.read_text(encoding="utf-8"))
