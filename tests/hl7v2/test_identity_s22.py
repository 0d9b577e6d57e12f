"""The patient's mother and the people around a patient (session 22).

- PID-21 (mother's identifier, IG PID[Patient] row 37, CX[RelatedPerson-Mother]) was
  written by the ADT root only: a newborn's immunizations (VXU) and results (ORU, OUL),
  problems (PPR) and referrals (REF) dropped it. Every root of these reads NK1 and PID-21
  through one macro (datatypes/relations.j2), and the mother is one RelatedPerson across
  message types.
- An NK1 naming the mother with one of PID-21's identifiers (NK1-12, NK1-33) was a second
  RelatedPerson beside PID-21's; an NK1 MTH with an identifier and no PID-21 is the
  mother a later PID-21 names. A GT1 guarantor or IN1 insured of her name follows the
  NK1 (they were one RelatedPerson by name before, and must stay one).
"""

from __future__ import annotations

from typing import Any

import pytest

from converter import Converter
from tests.hl7v2._support import SAMPLES
from tests.support.hl7_edit import convert_one, resources, set_field
from tests.support.r4validator import R4Validator

MOTHER = "MERE-778^^^CHU-LYON&1.2.250.1.999.1.1&ISO^MR"
NEWBORN = "BB-2024-1^^^CHU-LYON&1.2.250.1.999.1.1&ISO^MR"
V3_MTH = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
    "code": "MTH",
    "display": "mother",
}
ROOTS = [
    "ADT_A01_admission-full",
    "VXU_V04_immunization",
    "ORU_R01_lab-results",
    "OUL_R22_lab-results",
    "PPR_PC1_add-problem",
    "REF_I12_referral",
    "MDM_T02_discharge-summary",
    "SIU_S12_new-appointment",
]
VXU = (SAMPLES / "VXU_V04_immunization.hl7").read_bytes()


def sample(name: str, *, nk1: bool = True, **fields: str) -> bytes:
    """A sample with fields replaced (``PID_21="…"``), without its NK1s if not ``nk1``.
    The VXU sample's NK1 is the mother, GARNIER^Sophie, MTH, without identifier."""
    data = (SAMPLES / f"{name}.hl7").read_bytes()
    if not nk1:
        kept = [x for x in data.replace(b"\n", b"\r").split(b"\r") if not x.startswith(b"NK1|")]
        data = b"\r".join(kept)
    for where, value in fields.items():
        segment, position = where.split("_")
        data = set_field(data, segment, int(position), value)
    return data


def mothers(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        r
        for r in resources(bundle, "RelatedPerson")
        if any(c.get("code") == "MTH" for rel in r.get("relationship", []) for c in rel["coding"])
    ]


@pytest.mark.parametrize("name", ROOTS)
def test_every_root_reading_a_pid_writes_the_mother(converter: Converter, name: str) -> None:
    bundle, _ = convert_one(converter, sample(name, PID_3=NEWBORN, PID_21=MOTHER))
    [patient] = resources(bundle, "Patient")
    keyed = [
        r
        for r in resources(bundle, "RelatedPerson")
        if ("urn:oid:1.2.250.1.999.1.1", "MERE-778")
        in [(i.get("system"), i.get("value")) for i in r.get("identifier", [])]
    ]
    [mother] = keyed
    assert mother["patient"] == {"reference": f"Patient/{patient['id']}"}
    assert V3_MTH in [c for rel in mother["relationship"] for c in rel["coding"]]


def test_the_mother_is_one_resource_across_message_types(converter: Converter) -> None:
    """The newborn's admission, vaccination and results name one mother: one id."""
    ids = set()
    for name in ("ADT_A01_admission-full", "VXU_V04_immunization", "ORU_R01_lab-results"):
        data = sample(name, nk1=False, PID_3=NEWBORN, PID_21=MOTHER)
        bundle, _ = convert_one(converter, data)
        [mother] = mothers(bundle)
        ids.add(mother["id"])
    assert len(ids) == 1


def test_a_vxu_mother_is_valid_r4(converter: Converter, r4validator: R4Validator) -> None:
    bundle, _ = convert_one(converter, sample("VXU_V04_immunization", PID_21=MOTHER))
    assert len(resources(bundle, "RelatedPerson")) == 2  # PID-21's and the NK1 (no identifier)
    assert r4validator.validate_all(bundle) == []


def test_an_nk1_holding_pid21_s_identifier_is_that_mother(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle, _ = convert_one(converter, sample("VXU_V04_immunization", PID_21=MOTHER, NK1_33=MOTHER))
    [mother] = resources(bundle, "RelatedPerson")
    assert [(i["system"], i["value"]) for i in mother["identifier"]] == [
        ("urn:oid:1.2.250.1.999.1.1", "MERE-778")
    ]
    assert mother["name"][0]["family"] == "GARNIER"  # the NK1's facts are kept
    assert mother["telecom"][0]["value"] == "+33639987766"
    # One MTH concept (the NK1's, carrying the sender's code too), then the contact role.
    mth = [rel for rel in mother["relationship"] if V3_MTH in rel["coding"]]
    assert len(mth) == 1 and len(mth[0]["coding"]) == 2
    # The same id as the mother PID-21 alone names (a VXU without NK1).
    alone, _ = convert_one(converter, sample("VXU_V04_immunization", nk1=False, PID_21=MOTHER))
    assert [m["id"] for m in mothers(alone)] == [mother["id"]]
    assert r4validator.validate_all(bundle) == []


def test_an_admission_s_nk1_holding_pid21_s_identifier_is_that_mother(
    converter: Converter,
) -> None:
    """The ADT root wrote PID-21 already: its NK1 mother (the second NK1) was a second
    RelatedPerson holding the same identifier."""
    data = sample("ADT_A01_admission-full", PID_21=MOTHER)
    bundle, _ = convert_one(converter, set_field(data, "NK1", 33, MOTHER, occurrence=2))
    [mother] = mothers(bundle)
    assert mother["name"] and mother["identifier"][0]["value"] == "MERE-778"
    assert len(resources(bundle, "RelatedPerson")) == 2  # the mother and the spouse


def test_a_matching_identifier_joins_whatever_nk1_3_says(converter: Converter) -> None:
    """The identifier names the person; the NK1's relationship (guardian) is added."""
    data = sample("VXU_V04_immunization", PID_21=MOTHER, NK1_33=MOTHER, NK1_3="GRD^Tuteur^HL70063")
    bundle, _ = convert_one(converter, data)
    [mother] = resources(bundle, "RelatedPerson")
    codes = {c["code"] for rel in mother["relationship"] for c in rel["coding"]}
    assert {"MTH", "GRD"} <= codes


def test_an_nk1_mother_without_pid21_is_the_mother_a_later_pid21_names(
    converter: Converter,
) -> None:
    first, _ = convert_one(converter, sample("VXU_V04_immunization", NK1_12=MOTHER))
    [nk1_mother] = resources(first, "RelatedPerson")
    later, _ = convert_one(
        converter, sample("ORU_R01_lab-results", PID_3=_pid3_of_vxu(), PID_21=MOTHER)
    )
    [pid21_mother] = mothers(later)
    assert pid21_mother["id"] == nk1_mother["id"]


def test_other_nk1s_keep_their_identity_by_name(converter: Converter) -> None:
    """A father's identifier, or a mother's NK1 without any, changes nothing."""
    plain, _ = convert_one(converter, VXU)
    [before] = resources(plain, "RelatedPerson")
    father = sample("VXU_V04_immunization", NK1_3="FTH^Père^HL70063")
    with_id = set_field(father, "NK1", 33, "P-1^^^CHU-LYON&1.2.250.1.999.1.1&ISO^MR")
    [father_plain] = resources(convert_one(converter, father)[0], "RelatedPerson")
    [father_id] = resources(convert_one(converter, with_id)[0], "RelatedPerson")
    assert father_id["id"] == father_plain["id"] == before["id"]
    # PID-21 beside a mother NK1 without identifier: two, nothing ties them but "MTH".
    both, _ = convert_one(converter, sample("VXU_V04_immunization", PID_21=MOTHER))
    assert before["id"] in {r["id"] for r in resources(both, "RelatedPerson")}


def _pid3_of_vxu() -> str:
    line = next(x for x in VXU.decode().split("\r") if x.startswith("PID|"))
    return line.split("|")[3]


def test_the_mother_as_guarantor_and_insured_is_that_one_resource(converter: Converter) -> None:
    """A guarantor (GT1-3) or insured (IN1-16) is the NK1 of that name: once the NK1
    mother is identified by her identifier, they follow it instead of being a second
    RelatedPerson identified by name."""
    data = sample(
        "BAR_P01_add-account",
        NK1_3="MTH^Mère^HL70063",
        NK1_33="MERE-9^^^CHU-NANTES&1.2.250.1.999.2.1&ISO^MR",
    )
    data = set_field(data, "IN1", 16, "BERNARD^Claire^^^Mme^^L", occurrence=2)
    data = set_field(data, "IN1", 17, "MTH^Mère^HL70063", occurrence=2)
    bundle, _ = convert_one(converter, data)
    [mother] = resources(bundle, "RelatedPerson")
    assert {i["value"] for i in mother["identifier"]} == {"MERE-9", "G-0045213377"}
    [account] = resources(bundle, "Account")
    assert account["guarantor"][0]["party"] == {"reference": f"RelatedPerson/{mother['id']}"}
    subscribers = [c["subscriber"]["reference"] for c in resources(bundle, "Coverage")]
    related = [s for s in subscribers if s.startswith("RelatedPerson/")]
    assert related == [f"RelatedPerson/{mother['id']}"]


def test_a_guarantor_who_is_not_the_mother_stays_the_nk1_of_her_name(
    converter: Converter,
) -> None:
    """The sample's spouse: GT1 and NK1 of one name are one RelatedPerson, as before."""
    bundle, _ = convert_one(converter, sample("BAR_P01_add-account"))
    [spouse] = resources(bundle, "RelatedPerson")
    codes = {c["code"] for rel in spouse["relationship"] for c in rel["coding"]}
    assert {"SPO", "C"} <= codes
