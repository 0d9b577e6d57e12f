"""French identifier type codes (CX.5, XCN.13, STF-2's type) → FR Core's fr-core-cs-v2-0203.

IHE PAM France senders type identifiers with codes HL7 table 0203 does not have (RPPS,
ADELI, INS-NIR, INS-C, NDP, FINEG…): FR Core 2.1.0 defines them in its own CodeSystem
https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203. They were written as codes of
http://terminology.hl7.org/CodeSystem/v2-0203, a coding naming a code its system lacks.
``ids.IdentifierType`` now reads the IdentifierType-Passerelle map first; table 0203's own
codes keep the HL7 system, and resource ids do not move.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from converter import Converter
from tests.support.r4validator import R4Validator

FR_0203 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
CODEMAPS = Path(__file__).resolve().parents[2] / "mappings" / "codemaps"
FR_ROWS = list(csv.DictReader((CODEMAPS / "IdentifierType-Passerelle.csv").open(encoding="utf-8")))
FR_CODES = [row["source_code"] for row in FR_ROWS]
IPP = "0012999001^^^CHU-LYON&1.2.250.1.999.1.1&ISO^PI"
PS = "ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO"


def message(pid3: str, pv1_7: str, *, control_id: str = "FR-IDT-0001") -> bytes:
    segments = [
        "MSH|^~\\&|SIH^1.2.250.1.999.1.10^ISO|CHU-LYON^1.2.250.1.999.1.1^ISO|PASSERELLE|GHT"
        f"|20241105091522+0100||ADT^A04^ADT_A01|{control_id}|P|2.5|||AL|NE|FRA|UNICODE UTF-8",
        "EVN|A04|20241105091522+0100",
        f"PID|1||{pid3}||TEST^Camille^^^^^L||19900101|F",
        f"PV1|1|O|||||{pv1_7}",
    ]
    return ("\r".join(segments) + "\r").encode("utf-8")


def resources(bundle: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type
    ]


def fr_coding(code: str) -> dict[str, str]:
    row = next(r for r in FR_ROWS if r["source_code"] == code)
    return {"system": FR_0203, "code": code, "display": row["target_display"]}


def test_map_holds_only_fr_core_codes_none_of_table_0203() -> None:
    """Every row keeps the sender's code in FR Core's system, and none shadows a code
    the IG's IdentifierType map (table 0203) has."""
    hl7 = {
        row["source_code"]
        for row in csv.DictReader((CODEMAPS / "IdentifierType.csv").open(encoding="utf-8"))
    }
    assert len(FR_CODES) == len(set(FR_CODES)) == 17
    for row in FR_ROWS:
        assert row["target_code"] == row["source_code"]
        assert row["target_system"] == FR_0203
        assert row["target_display"]
        assert row["source_code"] not in hl7


@pytest.mark.parametrize("code", FR_CODES)
def test_xcn13_french_type_gets_fr_core_system(converter: Converter, code: str) -> None:
    """PV1-7 with XCN.13 a French type: the Practitioner's Identifier.type is FR Core's."""
    bundle = converter.convert_message(
        message(IPP, f"10101234563^MARTIN^Jean^^^Dr^^^{PS}^^^^{code}")
    ).bundle
    [practitioner] = resources(bundle, "Practitioner")
    [identifier] = practitioner["identifier"]
    assert identifier["type"] == {"coding": [fr_coding(code)]}
    assert identifier["value"] == "10101234563"


@pytest.mark.parametrize("code", ["ADELI", "IDNPS", "NDP", "INS-C", "NNFRA", "INS-NIR"])
def test_cx5_french_type_gets_fr_core_system(converter: Converter, code: str) -> None:
    """A PID-3 identifier typed with a French code under an authority that is not an INS
    OID (so not one of the fr-core-patient-ins slices) keeps its code in FR Core's
    system, no longer in HL7's v2-0203."""
    bundle = converter.convert_message(
        message(f"{IPP}~123456789^^^LOCAL&1.2.250.1.999.1.77&ISO^{code}", "")
    ).bundle
    [patient] = resources(bundle, "Patient")
    [other] = [i for i in patient["identifier"] if i["value"] == "123456789"]
    assert other["type"] == {"coding": [fr_coding(code)]}
    assert other["system"] == "urn:oid:1.2.250.1.999.1.77"


@pytest.mark.parametrize(
    ("cx", "code", "display"),
    [
        ("0012999001^^^CHU-LYON&1.2.250.1.999.1.1&ISO^MR", "MR", "Medical record number"),
        (IPP, "PI", "Patient internal identifier"),
        (
            "285036938204569^^^&1.2.250.1.213.1.4.8&ISO^NH",
            "NH",
            "National Health Plan Identifier",
        ),
        ("1234^^^CHU-LYON&1.2.250.1.999.1.1&ISO^SS", "SS", "Social Security number"),
        ("1234^^^CHU-LYON&1.2.250.1.999.1.1&ISO^NI", "NI", "National unique individual identifier"),
    ],
    ids=["MR", "PI", "NH", "SS", "NI"],
)
def test_table_0203_codes_keep_the_hl7_system(
    converter: Converter, cx: str, code: str, display: str
) -> None:
    bundle = converter.convert_message(message(f"{IPP}~{cx}" if cx != IPP else IPP, "")).bundle
    [patient] = resources(bundle, "Patient")
    typed = [
        i["type"]["coding"] for i in patient["identifier"] if i["type"]["coding"][0]["code"] == code
    ]
    assert typed == [[{"system": V2_0203, "code": code, "display": display}]]


def test_ids_do_not_depend_on_the_type_system(converter: Converter) -> None:
    """The Practitioner of an RPPS XCN is the one the same XCN without XCN.13 names:
    the identity is XCN.1 under XCN.9, never the type coding."""
    typed = converter.convert_message(
        message(IPP, f"10101234563^MARTIN^Jean^^^Dr^^^{PS}^^^^RPPS")
    ).bundle
    untyped = converter.convert_message(message(IPP, f"10101234563^MARTIN^Jean^^^Dr^^^{PS}")).bundle
    [with_type] = resources(typed, "Practitioner")
    [without_type] = resources(untyped, "Practitioner")
    assert with_type["id"] == without_type["id"]
    assert with_type["identifier"][0]["type"]["coding"][0]["system"] == FR_0203
    assert "type" not in without_type["identifier"][0]


def test_french_types_are_valid_r4(converter: Converter, r4validator: R4Validator) -> None:
    bundle = converter.convert_message(
        message(
            f"{IPP}~123456789^^^LOCAL&1.2.250.1.999.1.77&ISO^NDP",
            f"10101234563^MARTIN^Jean^^^Dr^^^{PS}^^^^RPPS",
        )
    ).bundle
    assert r4validator.validate(bundle) == []


def test_an_organization_identifier_type_xon_7_gets_fr_core_system(converter: Converter) -> None:
    """XON.7 (an MFN M05 LOC-4 organization typed FINEG) went straight into v2-0203."""
    data = (
        Path(__file__).resolve().parents[2] / "samples/hl7v2/MFN_M05_locations.hl7"
    ).read_bytes()
    [result] = converter.convert(data)
    typed = [
        identifier["type"]["coding"][0]
        for organization in resources(result.bundle, "Organization")
        for identifier in organization.get("identifier", [])
        if "type" in identifier
    ]
    assert fr_coding("FINEG") in typed
    assert all(coding["system"] != V2_0203 or coding["code"] != "FINEG" for coding in typed)
