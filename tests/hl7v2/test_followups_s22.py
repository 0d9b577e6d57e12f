"""Follow-ups of session 22 on the real converter and the samples of samples/hl7v2: an
XON.6 namespace without universal id is the identifier's assigner (IG XON[Organization]),
and every root reading a PID writes PID-21's mother as the ADT root does (IG PID[Patient]
row 37, CX[RelatedPerson-Mother]; relations.PatientRelations). The ordering facility's
phone and the ordering provider's address (ORC-23, ORC-24) are in test_orders_s21.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from tests.support.hl7_edit import convert_one, lines, message, resources, set_field
from tests.support.r4validator import R4Validator

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"

#: A mother's identifier with its authority (PID-21), the same in every message below.
MOTHER = "0099887766^^^CHU-LYON&1.2.250.1.999.1.1&ISO^PI"


def _sample(name: str) -> bytes:
    return (SAMPLES / f"{name}.hl7").read_bytes()


def test_xon_namespace_without_universal_id_is_the_assigner(
    converter: Converter, r4validator: R4Validator
) -> None:
    """PD1-3 `Clinique des Lilas^^4455^^^CLINLILAS`: XON.6 names the authority by its
    namespace only. Its identifier was `{"value": "4455"}`, as if no authority were given;
    the namespace is the assigner, as CX.4 and XCN.9 write theirs."""
    data = set_field(
        _sample("VXU_V04_immunization"), "PD1", 3, "Clinique des Lilas^^4455^^^CLINLILAS"
    )
    bundle, _ = convert_one(converter, data)
    [clinic] = [
        o for o in resources(bundle, "Organization") if o.get("name") == "Clinique des Lilas"
    ]
    assert clinic["identifier"] == [{"value": "4455", "assigner": {"display": "CLINLILAS"}}]
    assert r4validator.validate_all(bundle) == []


def test_xon_universal_id_gives_a_system_and_no_assigner(converter: Converter) -> None:
    """With a universal id the authority is the system; no assigner besides."""
    xon = "Clinique des Lilas^^4455^^^CLINLILAS&1.2.250.1.999.5.5&ISO"
    bundle, _ = convert_one(converter, set_field(_sample("VXU_V04_immunization"), "PD1", 3, xon))
    [clinic] = [
        o for o in resources(bundle, "Organization") if o.get("name") == "Clinique des Lilas"
    ]
    assert clinic["identifier"] == [{"system": "urn:oid:1.2.250.1.999.5.5", "value": "4455"}]


def _mothers(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        r
        for r in resources(bundle, "RelatedPerson")
        if any(c.get("code") == "MTH" for rel in r.get("relationship", []) for c in rel["coding"])
    ]


def _admission_mother(data: bytes, pid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Patient and mother RelatedPerson an ADT^A04 of this sending facility (the
    message's MSH) writes for this PID."""
    msh = lines(data)[0]
    adt = set_field(
        message([msh, "EVN|A04|20250101120000+0100", pid, "PV1|1|O"]),
        "MSH",
        9,
        "ADT^A04^ADT_A01",
    )
    [conversion] = Converter(ConverterConfig(default_timezone="Europe/Paris")).convert(adt)
    [patient] = resources(conversion.bundle, "Patient")
    [mother] = _mothers(conversion.bundle)
    return patient, mother


#: Roots that did not write PID-21: sample → the PID (its occurrence) given a mother.
ROOTS = {
    "ORM_O01_medication-order": 1,
    "ORM_O01_radiology-order": 1,
    "OML_O21_lab-order": 1,
    "OMG_O19_radiology-order": 1,
    "RDE_O11_pharmacy-encoded-orders": 1,
    "OMP_O09_pharmacy-order": 1,
    "RDS_O13_pharmacy-dispense": 1,
    "BAR_P01_add-account": 1,
    "DFT_P03_charges": 1,
    "ADT_A17_swap-beds": 2,
    "ADT_A24_link-patients": 2,
    "ADT_A40_merge-patient": 1,
    "ADT_A45_move-visit": 1,
}


@pytest.mark.parametrize("name", sorted(ROOTS))
def test_every_root_writes_the_mother_as_the_admission_does(
    converter: Converter, r4validator: R4Validator, name: str
) -> None:
    """PID-21 → the mother's RelatedPerson (relationship MTH, patient the PID's), the one
    an admission of the same patient writes (same id): a newborn's order, dispense, charge,
    swap or merge wrote no mother. In a message of two patients, the mother is the one
    whose PID names her."""
    occurrence = ROOTS[name]
    data = set_field(_sample(name), "PID", 21, MOTHER, occurrence)
    pid = [line for line in lines(data) if line.startswith("PID|")][occurrence - 1]
    bundle, _ = convert_one(converter, data)
    [mother] = _mothers(bundle)
    patient, admission_mother = _admission_mother(data, pid)
    assert mother["id"] == admission_mother["id"]
    assert mother["patient"]["reference"] == f"Patient/{patient['id']}"
    assert [i["value"] for i in mother["identifier"]] == ["0099887766"]
    assert r4validator.validate_all(bundle) == []


def test_merge_of_two_patient_groups_gives_each_its_mother(converter: Converter) -> None:
    """ADT^A40 with two PATIENT groups: the second PID's mother is the second patient's."""
    data = _sample("ADT_A40_merge-patient")
    second_pid = "PID|2||0012340001^^^CHU-LYON&1.2.250.1.999.1.1&ISO^MR||DURAND^Alice||20250101|F"
    second_mrg = "MRG|0012340002^^^CHU-LYON&1.2.250.1.999.1.1&ISO^MR"
    data = set_field(message([*lines(data), second_pid, second_mrg]), "PID", 21, MOTHER, 2)
    bundle, _ = convert_one(converter, data)
    [mother] = _mothers(bundle)
    patient, admission_mother = _admission_mother(data, second_pid + "|" * 13 + MOTHER)
    assert mother["id"] == admission_mother["id"]
    assert mother["patient"]["reference"] == f"Patient/{patient['id']}"


def test_billing_of_two_patients_gives_each_its_mother_and_next_of_kin(
    converter: Converter,
) -> None:
    """BAR^P02 with two PATIENT groups: each group's NK1 and PID-21 belong to its own
    patient (the NK1s of every visit of the group, once)."""
    data = set_field(_sample("BAR_P01_add-account"), "MSH", 9, "BAR^P02^BAR_P02")
    second_pid = "PID|2||0045219999^^^CHU-NANTES&1.2.250.1.999.2.1&ISO^PI||BERNARD^Emma||20250101|F"
    data = message([*lines(data), second_pid, "PV1|1|O"])
    data = set_field(data, "PID", 21, MOTHER, 2)
    bundle, _ = convert_one(converter, data)
    patients = {p["name"][0]["given"][0]: p["id"] for p in resources(bundle, "Patient")}
    [mother] = _mothers(bundle)
    assert mother["patient"]["reference"] == f"Patient/{patients['Emma']}"
    spouses = [r for r in resources(bundle, "RelatedPerson") if r not in (mother,)]
    assert {r["patient"]["reference"] for r in spouses} == {f"Patient/{patients['Lucas']}"}
