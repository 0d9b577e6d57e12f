"""IHE PCC coded social history, family history and advance directives sections (French
ANS CI-SIS documents), and the CI-SIS entry templates sent without their IHE ids.

samples/cda/VSM_ihe-coded-sections.xml holds the three sections as the ANS "CDA document
core" profiles describe them (FRCDASectionHabitusModeDeVie, FRCDASectionAntecedentsFamiliaux,
FRCDASectionDirectivesAnticipees): IHE section templateIds (…3.16.1, …3.15, …3.35), IHE
entries (Social History Observation …4.13.4, Family History Organizer …4.15 with Family
History Observations …4.13.3, Advance Directive Observation …4.13.7), CCD 1.0 parents and
the ANS ids, no C-CDA R2 templateId. Before, the family history organizers were skipped
(two warnings: the section template knew only the C-CDA organizer 4.45).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from converter import json_loads
from tests.support.hl7_edit import resources
from tests.support.r4validator import R4Validator

from ._support import SAMPLES, cda, convert_document

SAMPLE = SAMPLES / "VSM_ihe-coded-sections.xml"
GOLDEN = SAMPLES / "expected" / "VSM_ihe-coded-sections.json"
VSM = SAMPLES / "VSM_synthese-medicale.xml"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
SOCIAL, FAMILY, DIRECTIVES = "29762-2", "10157-6", "42348-3"
# Entry-level templateIds of the CCD 1.0 parents and of IHE PCC (…4.x): a CI-SIS entry
# sent with its ANS id only has neither.
CCD_PARENT = re.compile(r'\s*<templateId root="2\.16\.840\.1\.113883\.10\.20\.1\.\d+"/>')
# Section templateIds: IHE PCC (…3.x), ANS CI-SIS (1.2.250.1.213.1.1.2.x), CCD 1.0.
SECTION_IDS = ("1.3.6.1.4.1.19376.1.5.3.1.3.", "1.2.250.1.213.1.1.2.", "2.16.840.1.113883.10.20.1.")
IHE_ENTRY = re.compile(r'\s*<templateId root="1\.3\.6\.1\.4\.1\.19376\.1\.5\.3\.1\.4[.\d]*"/>')


@pytest.fixture(scope="module")
def converted() -> tuple[dict[str, Any], tuple[str, ...]]:
    return convert_document(SAMPLE.read_bytes())


@pytest.fixture(scope="module")
def bundle(converted: tuple[dict[str, Any], tuple[str, ...]]) -> dict[str, Any]:
    return converted[0]


def _section_resources(bundle: dict[str, Any], loinc: str) -> list[dict[str, Any]]:
    index = {
        f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"]
        for e in bundle["entry"]
    }
    [composition] = resources(bundle, "Composition")
    [section] = [s for s in composition["section"] if s["code"]["coding"][0]["code"] == loinc]
    return [index[ref["reference"]] for ref in section.get("entry", [])]


def _codes(concept: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["system"], c["code"]) for c in concept.get("coding", [])]


def _relatives(bundle: dict[str, Any], loinc: str = FAMILY) -> dict[str, dict[str, Any]]:
    return {
        _codes(h["relationship"])[0][1]: h
        for h in _section_resources(bundle, loinc)
        if h["resourceType"] == "FamilyMemberHistory"
    }


def test_every_section_keeps_its_entries(
    converted: tuple[dict[str, Any], tuple[str, ...]],
) -> None:
    bundle, warnings = converted
    assert warnings == ()
    listed = {
        loinc: sorted(r["resourceType"] for r in _section_resources(bundle, loinc))
        for loinc in (SOCIAL, FAMILY, DIRECTIVES)
    }
    assert listed == {
        SOCIAL: ["Observation", "Observation"],
        FAMILY: ["FamilyMemberHistory", "FamilyMemberHistory"],
        DIRECTIVES: ["Observation", "Observation"],
    }


def test_family_history_organizers_become_family_member_histories(
    bundle: dict[str, Any],
) -> None:
    relatives = _relatives(bundle)
    assert set(relatives) == {"FTH", "MTH"}
    father, mother = relatives["FTH"], relatives["MTH"]
    assert _codes(father["relationship"]) == [(ROLE, "FTH")]
    assert (father["sex"]["coding"][0]["code"], father["bornDate"]) == ("male", "1918")
    assert father["deceasedBoolean"] is True
    [infarction] = father["condition"]
    assert _codes(infarction["code"]) == [(ICD10, "I21.9")]
    assert infarction["onsetPeriod"] == {"start": "1976"}
    [cancer] = mother["condition"]
    assert _codes(cancer["code"]) == [(ICD10, "C50.9")]
    assert "deceasedBoolean" not in mother
    for history in (father, mother):
        assert history["status"] == "completed"
        assert history["patient"] == _section_resources(bundle, FAMILY)[0]["patient"]


def test_ihe_tobacco_observation_with_a_smoking_status_value_is_the_smoking_status(
    bundle: dict[str, Any],
) -> None:
    """IHE has no Smoking Status template: a Social History Observation whose value is a
    smoking status finding (ex-smoker) gets C-CDA's Smoking Status code, 72166-2, first
    and keeps its own (SNOMED CT 229819007); the alcohol one keeps its code alone."""
    observations = {_codes(o["code"])[-1][1]: o for o in _section_resources(bundle, SOCIAL)}
    assert set(observations) == {"229819007", "897148007"}
    tobacco, alcohol = observations["229819007"], observations["897148007"]
    assert _codes(tobacco["code"]) == [(LOINC, "72166-2"), (SNOMED, "229819007")]
    assert _codes(tobacco["valueCodeableConcept"]) == [(SNOMED, "8517006")]
    assert tobacco["effectiveDateTime"] == "2015-03-01"
    assert _codes(alcohol["code"]) == [(SNOMED, "897148007")]
    assert alcohol["valueQuantity"]["value"] == 2
    for observation in (tobacco, alcohol):
        assert observation["category"][0]["coding"][0]["code"] == "social-history"


def test_a_tobacco_observation_without_a_smoking_status_value_keeps_its_code() -> None:
    text = SAMPLE.read_text(encoding="utf-8").replace(
        'code="8517006" codeSystem="2.16.840.1.113883.6.96" codeSystemName="SNOMED CT" '
        'displayName="Ancien fumeur"',
        'code="43381005" codeSystem="2.16.840.1.113883.6.96" codeSystemName="SNOMED CT" '
        'displayName="Passive smoker"',
    )
    bundle, warnings = convert_document(text)
    assert warnings == ()
    codes = [_codes(o["code"]) for o in _section_resources(bundle, SOCIAL)]
    assert [(SNOMED, "229819007")] in codes
    assert all((LOINC, "72166-2") not in c for c in codes)


def test_a_ccda_social_history_observation_is_not_renamed() -> None:
    """The smoking status rule is for the IHE observation: C-CDA has its own Smoking
    Status template (4.78); a C-CDA Social History Observation (4.38) keeps its code."""
    section = (
        "<component><section>"
        '<templateId root="2.16.840.1.113883.10.20.22.2.17" extension="2015-08-01"/>'
        '<code code="29762-2" codeSystem="2.16.840.1.113883.6.1"/>'
        "<title>Social history</title><text>Former smoker</text>"
        '<entry><observation classCode="OBS" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.38" extension="2015-08-01"/>'
        '<id root="1.2.250.1.999.9.1" extension="SH-1"/>'
        '<code code="229819007" codeSystem="2.16.840.1.113883.6.96"/>'
        '<statusCode code="completed"/><effectiveTime value="20240101"/>'
        '<value xsi:type="CD" code="8517006" codeSystem="2.16.840.1.113883.6.96"/>'
        "</observation></entry></section></component>"
    )
    bundle, _ = convert_document(cda(body=section))
    [observation] = _section_resources(bundle, SOCIAL)
    assert _codes(observation["code"]) == [(SNOMED, "229819007")]


def test_advance_directives_are_adi_observations(bundle: dict[str, Any]) -> None:
    observations = {_codes(o["code"])[0][1]: o for o in _section_resources(bundle, DIRECTIVES)}
    assert set(observations) == {"89666000", "52765003"}
    for observation in observations.values():
        assert observation["category"][0]["coding"][0]["code"] == "observation-adi-documentation"
        assert observation["valueBoolean"] is False
        assert observation["effectiveDateTime"] == "2023-06-15"
        assert observation["status"] == "final"


@pytest.mark.parametrize(
    ("section_ids", "note"),
    [
        (
            (
                "1.3.6.1.4.1.19376.1.5.3.1.3.16.1",
                "1.3.6.1.4.1.19376.1.5.3.1.3.15",
                "1.3.6.1.4.1.19376.1.5.3.1.3.35",
            ),
            "IHE coded section templateIds",
        ),
        (
            ("1.2.250.1.213.1.1.2.141", "1.2.250.1.213.1.1.2.139", "1.2.250.1.213.1.1.2.157"),
            "ANS CI-SIS section templateIds",
        ),
    ],
)
def test_sections_are_mapped_by_their_template_not_their_code(
    section_ids: tuple[str, str, str], note: str
) -> None:
    """Each section keeps only one of its templateIds and gets a local code instead of its
    LOINC one (not in sections.toml's [codes]): the templateId alone maps it."""
    kept = set(section_ids)

    def keep(match: re.Match[str]) -> str:
        root = match.group(1)
        return match.group(0) if root in kept or not root.startswith(SECTION_IDS) else ""

    text = re.sub(r'\s*<templateId root="([\d.]+)"/>', keep, SAMPLE.read_text(encoding="utf-8"))
    for loinc, local in ((SOCIAL, "QA-HAB"), (FAMILY, "QA-FAM"), (DIRECTIVES, "QA-DA")):
        text = text.replace(
            f'<code code="{loinc}" codeSystem="2.16.840.1.113883.6.1"',
            f'<code code="{local}" codeSystem="1.2.250.1.999.77"',
        )
    bundle, warnings = convert_document(text)
    assert warnings == (), note
    for local, count in (("QA-HAB", 2), ("QA-FAM", 2), ("QA-DA", 2)):
        assert len(_section_resources(bundle, local)) == count, note


def test_ans_only_family_history_organizer_is_recognised() -> None:
    """An organizer declaring only FR-Antecedents-familiaux (1.2.250.1.213.1.1.3.59)."""
    text = SAMPLE.read_text(encoding="utf-8")
    stripped = IHE_ENTRY.sub("", CCD_PARENT.sub("", text))
    assert 'root="1.3.6.1.4.1.19376.1.5.3.1.4.15"' not in stripped
    assert stripped.count('root="1.2.250.1.213.1.1.3.59"') == 2
    bundle, warnings = convert_document(stripped)
    assert warnings == ()
    assert set(_relatives(bundle)) == {"FTH", "MTH"}


def test_an_organizer_with_another_template_is_still_skipped() -> None:
    text = SAMPLE.read_text(encoding="utf-8")
    stripped = IHE_ENTRY.sub("", CCD_PARENT.sub("", text))
    altered = stripped.replace(
        '<templateId root="1.2.250.1.213.1.1.3.59"/>', '<templateId root="1.2.250.1.999.78"/>'
    )
    bundle, warnings = convert_document(altered)
    assert _relatives(bundle) == {}
    assert sum("Family History section: entry organizer" in w for w in warnings) == 2


# The CI-SIS entry templates a section template recognises by their template, and the
# IHE PCC one each specialises (ANS profiles FRCDAProbleme, FRCDAListeDesAllergiesEt
# Hypersensibilites, FRCDAAllergieOuHypersensibilite, FRCDAActe).
ANS_FOR_IHE = {
    "1.3.6.1.4.1.19376.1.5.3.1.4.5": "1.2.250.1.213.1.1.3.37",
    "1.3.6.1.4.1.19376.1.5.3.1.4.5.3": "1.2.250.1.213.1.1.3.40",
    "1.3.6.1.4.1.19376.1.5.3.1.4.6": "1.2.250.1.213.1.1.3.41",
    "1.3.6.1.4.1.19376.1.5.3.1.4.19": "1.2.250.1.213.1.1.3.62",
}


def _ans_only(text: str) -> str:
    """The VSM sample's entries with their ANS ids in place of the IHE ones they derive
    from, every other IHE entry id and CCD parent removed."""
    for ihe, ans in ANS_FOR_IHE.items():
        text = text.replace(f'<templateId root="{ihe}"/>', f'<templateId root="{ans}"/>')
    return IHE_ENTRY.sub("", CCD_PARENT.sub("", text))


def test_ans_only_entries_convert_as_the_ihe_ones() -> None:
    original, _ = convert_document(VSM.read_bytes())
    text = _ans_only(VSM.read_text(encoding="utf-8"))
    assert 'root="1.3.6.1.4.1.19376.1.5.3.1.4.' not in text
    assert 'root="1.2.250.1.213.1.1.3.37"' in text
    bundle, warnings = convert_document(text)
    assert warnings == ()
    for resource_type in ("Condition", "AllergyIntolerance", "Procedure"):
        assert resources(bundle, resource_type) == resources(original, resource_type), resource_type
    assert len(resources(bundle, "Condition")) == 3
    assert len(resources(bundle, "AllergyIntolerance")) == 2
    assert len(resources(bundle, "Procedure")) == 2


def test_an_unknown_entry_template_alone_is_not_taken_for_an_ans_one() -> None:
    text = _ans_only(VSM.read_text(encoding="utf-8")).replace(
        '<templateId root="1.2.250.1.213.1.1.3.62"/>', '<templateId root="1.2.250.1.999.79"/>'
    )
    bundle, warnings = convert_document(text)
    assert resources(bundle, "Procedure") == []
    assert sum("Procedures section: entry procedure" in w for w in warnings) == 2


def test_bundle_is_valid_r4(bundle: dict[str, Any], r4validator: R4Validator) -> None:
    issues = r4validator.validate(bundle)
    assert issues == [], json.dumps(issues, indent=1, ensure_ascii=False)


def test_matches_its_golden(bundle: dict[str, Any]) -> None:
    assert GOLDEN.is_file(), "write it with passerelle convert (tests/golden/test_cda_samples.py)"
    assert bundle == json_loads(GOLDEN.read_text(encoding="utf-8"))
