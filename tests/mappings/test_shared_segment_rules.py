"""Rules every root shares because a resource template owns them: whether a PV1 describes
a visit (resources/Encounter.j2) and whether an NK1 names a person or an organization
(resources/RelatedPerson.j2, resources/PatientContacts.j2). Each root only emits; these
tests hold every root that reads the segment to the template's rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from converter import Converter
from tests.support.hl7_edit import (
    convert_one,
    insert_after,
    lines,
    message,
    references,
    resources,
    segment,
)

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"

#: One sample per root that reads a PV1 (with a patient, which some roots require).
VISIT_ROOTS = [
    "ADT_A01_admission-full",
    "BAR_P01_add-account",
    "DFT_P03_charges",
    "MDM_T02_discharge-summary",
    "OMG_O19_radiology-order",
    "OML_O21_lab-order",
    "ORM_O01_radiology-order",
    "ORU_R01_lab-results",
    "OUL_R22_lab-results",
    "PPR_PC1_add-problem",
    "RDE_O11_pharmacy-encoded-orders",
    "RDS_O13_pharmacy-dispense",
    "REF_I12_referral",
    "SIU_S12_new-appointment",
]
#: One sample per root that reads NK1 (each sample has one NK1 naming a person).
CONTACT_ROOTS = [
    "ADT_A01_admission-full",
    "BAR_P01_add-account",
    "OMG_O19_radiology-order",
    "REF_I12_referral",
    "VXU_V04_immunization",
]


def sample(name: str) -> bytes:
    return (SAMPLES / f"{name}.hl7").read_bytes()


def with_pv1(data: bytes, pv1: str) -> bytes:
    """``data`` with its first PV1 replaced by ``pv1``."""
    found = lines(data)
    at = next(n for n, line in enumerate(found) if line.startswith("PV1|"))
    return message([*found[:at], pv1, *found[at + 1 :]])


@pytest.mark.parametrize("name", VISIT_ROOTS)
def test_a_placeholder_pv1_writes_no_encounter(converter: Converter, name: str) -> None:
    """PV1|1|N (class "not applicable", no visit number, no location): no Encounter, and
    nothing in the bundle refers to one."""
    original, _ = convert_one(converter, sample(name))
    assert resources(original, "Encounter"), "the sample itself must write an Encounter"
    bundle, _ = convert_one(converter, with_pv1(sample(name), "PV1|1|N"))
    assert resources(bundle, "Encounter") == []
    assert [r for r in references(bundle) if r.startswith("Encounter/")] == []


@pytest.mark.parametrize("name", VISIT_ROOTS)
def test_a_visit_number_alone_makes_the_pv1_a_visit(converter: Converter, name: str) -> None:
    pv1 = segment("PV1", {1: "1", 2: "N", 19: "V-77^^^HOP&1.2.250.1.999.9&ISO^VN"})
    bundle, _ = convert_one(converter, with_pv1(sample(name), pv1))
    [encounter] = resources(bundle, "Encounter")
    assert [i["value"] for i in encounter["identifier"]] == ["V-77"]


@pytest.mark.parametrize("name", CONTACT_ROOTS)
def test_an_organization_nk1_is_a_patient_contact_not_a_related_person(
    converter: Converter, name: str
) -> None:
    employer = segment(
        "NK1", {1: "2", 2: "ACME^^^^^^L", 3: "EMR^Employer^HL70063", 13: "ACME Industries"}
    )
    before, _ = convert_one(converter, sample(name))
    bundle, _ = convert_one(converter, insert_after(sample(name), "NK1|", employer))
    people = resources(bundle, "RelatedPerson")
    assert [p["name"] for p in people] == [p["name"] for p in resources(before, "RelatedPerson")]
    assert people, "the sample's NK1 names a person"
    [patient] = resources(bundle, "Patient")
    [contact] = patient["contact"]
    assert contact["name"]["family"] == "ACME"
    assert contact["organization"]["reference"].startswith("Organization/")
    assert "contact" not in resources(before, "Patient")[0]
