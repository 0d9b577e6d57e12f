"""ADT / DFT / MFN fields read as the IG and the rest of the mapping read them:

- STF-5 (staff sex) and GT1-9 (guarantor sex) through the ``sex.Gender`` macro, as PID-8
  and NK1-15: a sex spelled out (``Femme``) is read through the alias map with a warning
  naming the field;
- an account number (CX.1) of blanks is no identity, in ``Account.j2`` itself (an MRG-3
  whose first repetition is blank named one Account for every such message of the
  authority) and in the DFT's logical reference to the PID-18 account;
- PV1-11 is the IG's temporary location (subject-locationClassification ``temporary``)
  and PV1-40 the operationalStatus of PV1-3's bed, else room (IG BedStatus, table 0116).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from tests.support.hl7_edit import by_reference, convert_one, resources, segment, set_field

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
CLASSIFICATION = "http://hl7.org/fhir/StructureDefinition/subject-locationClassification"


@pytest.fixture(scope="module")
def converter() -> Converter:
    return Converter(ConverterConfig(default_timezone="Europe/Paris"))


# --- STF-5 ------------------------------------------------------------------------------


def staff(sex: str) -> bytes:
    return "\r".join(
        [
            "MSH|^~\\&|RH|FAC|PASS|GHT|20260102120000+0100||MFN^M02^MFN_M02|M1|P|2.5",
            "MFI|PRA^Practitioner master file^HL70175||UPD|||AL",
            "MFE|MAD|M1-1|20260102120000+0100|DOEJ^DOE Jane^L|CE",
            f"STF|DOEJ^DOE Jane^L|DOEJ^^^FAC^EI|DOE^Jane^^^Dr^^L|MED|{sex}||A",
            "",
        ]
    ).encode()


@pytest.mark.parametrize(("sex", "gender"), [("Femme", "female"), ("masculin", "male")])
def test_stf5_spelled_out_is_read_through_the_alias_map(
    converter: Converter, sex: str, gender: str
) -> None:
    bundle, warnings = convert_one(converter, staff(sex))
    [practitioner] = resources(bundle, "Practitioner")
    assert practitioner["gender"] == gender
    [said] = [w for w in warnings if w.startswith("STF-5 ")]
    assert "AdministrativeSex-Alias-Passerelle" in said and sex not in said


def test_stf5_code_needs_no_alias(converter: Converter) -> None:
    bundle, warnings = convert_one(converter, staff("F"))
    assert resources(bundle, "Practitioner")[0]["gender"] == "female"
    assert not [w for w in warnings if "STF-5" in w]


def test_gt1_9_spelled_out_is_read_through_the_alias_map(converter: Converter) -> None:
    data = set_field((SAMPLES / "BAR_P01_add-account.hl7").read_bytes(), "GT1", 9, "Femme")
    bundle, warnings = convert_one(converter, data)
    [guarantor] = [
        p for p in resources(bundle, "RelatedPerson") if p["name"][0]["given"] == ["Claire"]
    ]
    assert guarantor["gender"] == "female"
    [said] = [w for w in warnings if w.startswith("GT1-9 ")]
    assert "AdministrativeSex-Alias-Passerelle" in said and "Femme" not in said


# --- blank account numbers --------------------------------------------------------------

AUTHORITY = "HOP-PARIS-EST&1.2.250.1.999.2.1&ISO"


def test_mrg3_blank_first_repetition_is_not_an_account(converter: Converter) -> None:
    data = (SAMPLES / "ADT_A06_outpatient-to-inpatient.hl7").read_bytes()
    data = set_field(data, "MRG", 3, f"   ^^^{AUTHORITY}^AN~OLD-1^^^{AUTHORITY}^AN")
    bundle, _ = convert_one(converter, data)
    accounts = resources(bundle, "Account")
    assert all(a["identifier"][0].get("value") for a in accounts)
    [prior] = [a for a in accounts if a["status"] == "unknown"]
    assert prior["identifier"][0]["value"] == "OLD-1"


def test_account_template_refuses_a_blank_number(tmp_path: Path) -> None:
    # A root emitting Account.j2 without a guard of its own: the template decides.
    root = tmp_path / "hl7v2" / "messages" / "AccountOnly.j2"
    root.parent.mkdir(parents=True)
    root.write_text(
        '{% set patient = emit("Patient", pid=msg.PID, pd1=msg.PD1) %}'
        '{% do emit("Account", cx=msg.PID[18].first, patient=patient) %}'
    )
    converter = Converter(
        ConverterConfig(default_timezone="Europe/Paris", template_dirs=(tmp_path,))
    )
    data = (SAMPLES / "ADT_A01_admission-full.hl7").read_bytes()
    for number, written in (("   ", False), ('""', False), ("ACC-1", True)):
        account = set_field(data, "PID", 18, f"{number}^^^CHU-LYON&1.2.250.1.999.1.1&ISO^AN")
        [conversion] = converter.convert(account, root_template="AccountOnly")
        assert bool(resources(conversion.bundle, "Account")) is written, number


@pytest.mark.parametrize("pid18", ["   ^^^CHU^AN", "^^^CHU^AN"])
def test_dft_blank_account_number_names_no_account(converter: Converter, pid18: str) -> None:
    data = set_field((SAMPLES / "DFT_P03_charges.hl7").read_bytes(), "PID", 18, pid18)
    bundle, warnings = convert_one(converter, data)
    assert all("account" not in c for c in resources(bundle, "ChargeItem"))
    assert all("account" not in e for e in resources(bundle, "Encounter"))
    assert "PID-18 patient account number is empty: the charges name no Account" in warnings


def test_dft_account_is_the_first_repetition_with_a_number(converter: Converter) -> None:
    data = (SAMPLES / "DFT_P03_charges.hl7").read_bytes()
    data = set_field(data, "PID", 18, "   ^^^CHU^AN~ACC-9^^^CHU^AN")
    bundle, _ = convert_one(converter, data)
    for charge in resources(bundle, "ChargeItem"):
        assert charge["account"][0]["identifier"]["value"] == "ACC-9"


# --- PV1-11, PV1-40 ---------------------------------------------------------------------


def visit(pv1: dict[int, str]) -> bytes:
    return "\r".join(
        [
            "MSH|^~\\&|APP|FAC|PASS|GHT|20260102120000+0100||ADT^A02^ADT_A02|T2|P|2.5.1",
            "EVN|A02|20260102120000+0100",
            "PID|1||123^^^FAC^MR||DOE^JOHN||19800101|M",
            segment("PV1", {1: "1", 2: "I", 19: "V1^^^FAC^VN", **pv1}),
            "",
        ]
    ).encode()


def location_named(bundle: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [loc for loc in resources(bundle, "Location") if loc["name"] == name]
    return found


def test_pv1_11_is_the_temporary_location(converter: Converter) -> None:
    bundle, _ = convert_one(converter, visit({3: "CARD^101^1^FAC", 11: "RADIO^R2^^FAC"}))
    [encounter] = resources(bundle, "Encounter")
    assigned, temporary = encounter["location"]
    assert "extension" not in assigned
    assert by_reference(bundle, temporary["location"]["reference"])["name"] == "R2"
    assert temporary["extension"] == [
        {
            "url": CLASSIFICATION,
            "valueCodeableConcept": {
                "coding": [
                    {
                        "system": "http://hl7.org/fhir/subject-locationClassification",
                        "code": "temporary",
                        "display": "Temporary",
                    }
                ]
            },
        }
    ]


@pytest.mark.parametrize(("pl", "described"), [("CARD^101^1^FAC", "1"), ("CARD^101^^FAC", "101")])
def test_pv1_40_is_the_bed_or_room_operational_status(
    converter: Converter, pl: str, described: str
) -> None:
    bundle, _ = convert_one(converter, visit({3: pl, 40: "K"}))
    assert location_named(bundle, described)["operationalStatus"] == {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0116",
        "code": "K",
        "display": "Contaminated",
    }
    others = [loc for loc in resources(bundle, "Location") if loc["name"] != described]
    assert others and all("operationalStatus" not in loc for loc in others)


def test_pv1_40_without_room_or_bed_is_not_written(converter: Converter) -> None:
    bundle, _ = convert_one(converter, visit({3: "CARD^^^FAC", 40: "O"}))
    assert all("operationalStatus" not in loc for loc in resources(bundle, "Location"))


def test_pv1_40_outside_table_0116_is_said(converter: Converter) -> None:
    bundle, warnings = convert_one(converter, visit({3: "CARD^101^1^FAC", 40: "ZZ"}))
    assert "operationalStatus" not in location_named(bundle, "1")
    assert "code not in code map BedStatus at PV1-40" in warnings
