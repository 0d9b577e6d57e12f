"""Data-quality defects found in review of the HL7 v2 mappings, one group of cases each:

1. XTN → ContactPoint (IG XTN[ContactPoint]): a cellular phone (XTN-3 ``CP``) is
   ``use: mobile`` whatever XTN-2 says, and ``value`` follows the IG's precedence: XTN-12
   unformatted number, else XTN-5/6/7/8 composed ("+5 6 7 X8"), else XTN-1.
2. CWE units → Quantity (IG CWE[Quantity]): ``system`` is a URI from the coding system
   (UCUM → http://unitsofmeasure.org); a coding system with no URI (``ISO``, ``L``, a local
   name) gives neither ``system`` nor ``code``, only ``unit``. Every Quantity written from
   HL7 v2: OBX-6 (NM, SN, components, reference ranges), RXA-7, RXO-4/12, SPM-12.
3. INS typing (FR Core fr-core-patient-ins slices) of the retired patient's identifiers in
   MRG-1/2/4; not of a related person's NK1-33 (FR Core defines the slices on Patient only).
4. Account.status: the IG's assigned constants, "active" (PID[Account]) and "unknown"
   (MRG[Account]).
5. ADT^A15 pending transfer: routed to the ADT root, ``in-progress``, PV1-42 reserved.

Each case builds on a golden sample (or a small message) with the fields under test set.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from converter import Converter
from tests.support.hl7_edit import resources

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
UCUM = "http://unitsofmeasure.org"
FR_0203 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
CHU = "CHU-LYON&1.2.250.1.999.1.1&ISO"
INS_NIR = "ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO"
#: Invented INS-NIR (valid mod-97 key) of the retired patient of the A40 sample: not the
#: survivor's (PID-3 of the sample), which the retired Patient leaves to the survivor.
RETIRED_INS = f"275036912345661^^^{INS_NIR}^INS"
RETIRED_IPP = f"0012346777^^^{CHU}^MR"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def with_field(data: bytes, segment: str, position: int, value: str, occurrence: int = 1) -> bytes:
    """``data`` with field ``position`` of the ``occurrence``-th ``segment`` set to ``value``."""
    lines = data.decode("utf-8").split("\r")
    seen = 0
    for n, line in enumerate(lines):
        if line.startswith(segment + "|"):
            seen += 1
            if seen == occurrence:
                fields = line.split("|")
                fields += [""] * (position + 1 - len(fields))
                fields[position] = value
                lines[n] = "|".join(fields)
                return "\r".join(lines).encode("utf-8")
    raise AssertionError(f"no {segment} #{occurrence} in the message")


def convert(converter: Converter, data: bytes) -> dict[str, Any]:
    return converter.convert_message(data).bundle


def adt_a04(pid: dict[int, str]) -> bytes:
    """A small ADT^A04 (v2.5) whose PID has the given fields (and an IPP, name, birth date)."""
    fields = {1: "1", 3: f"0012999001^^^{CHU}^PI", 5: "TEST^Camille^^^^^L", 7: "19900101"} | pid
    segments = [
        "MSH|^~\\&|SIH^1.2.250.1.999.1.10^ISO|CHU-LYON^1.2.250.1.999.1.1^ISO|PASSERELLE|GHT"
        "|20241105091522+0100||ADT^A04^ADT_A01|DQ-TEST-0001|P|2.5|||AL|NE|FRA|UNICODE UTF-8",
        "EVN|A04|20241105091522+0100",
        "PID|" + "|".join(fields.get(n, "") for n in range(1, max(fields) + 1)),
        "PV1|1|O",
    ]
    return ("\r".join(segments) + "\r").encode("utf-8")


# -- 1. XTN → ContactPoint -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "xtn", "expected"),
    [
        # IHE PAM France mobile: PRN + CP, every component valued.
        (
            13,
            "+33 6 39 98 10 08^PRN^CP^^33^6^39981008^^^^^+33639981008",
            {"system": "phone", "value": "+33639981008", "use": "mobile"},
        ),
        # CP without XTN-12: the number composed from XTN-5/6/7, still mobile.
        (
            13,
            "^PRN^CP^^33^6^39981008",
            {"system": "phone", "value": "+33 6 39981008", "use": "mobile"},
        ),
        # A work mobile (WPN + CP), only XTN-12: mobile.
        (
            14,
            "^WPN^CP^^^^^^^^^0639981008",
            {"system": "phone", "value": "0639981008", "use": "mobile"},
        ),
        # A landline with XTN-7 and XTN-12: XTN-12 is the value.
        (
            13,
            "+33 1 99 00 12 34^PRN^PH^^33^1^99001234^^^^^+33199001234",
            {"system": "phone", "value": "+33199001234", "use": "home"},
        ),
        # XTN-8 extension: "X" + XTN-8, as the IG composes it.
        (
            14,
            "^WPN^PH^^33^1^99005050^214",
            {"system": "phone", "value": "+33 1 99005050 X214", "use": "work"},
        ),
    ],
    ids=[
        "PRN-CP-xtn12",
        "PRN-CP-xtn567",
        "WPN-CP-xtn12",
        "PH-xtn7-and-xtn12",
        "PH-xtn8",
    ],
)
def test_contact_point_use_and_value_follow_the_ig(
    converter: Converter, field: int, xtn: str, expected: dict[str, str]
) -> None:
    [patient] = resources(convert(converter, adt_a04({field: xtn})), "Patient")
    assert patient["telecom"] == [expected]


@pytest.mark.parametrize(
    ("field", "xtn", "expected"),
    [
        # XTN-12 wins over XTN-1 (the IG's XTN.1 row: only without XTN-7 and XTN-12).
        (
            13,
            "01 99 00 12 34^PRN^PH^^^^^^^^^0199001234",
            {"system": "phone", "value": "0199001234", "use": "home"},
        ),
        # XTN-1 alone (v2.3 style).
        (13, "0199001234^PRN^PH", {"system": "phone", "value": "0199001234", "use": "home"}),
        # An e-mail address: XTN-4.
        (
            13,
            "^NET^Internet^camille.test@example.org",
            {"system": "email", "value": "camille.test@example.org", "use": "home"},
        ),
        # No XTN-2: PID-14 is a work number.
        (14, "^^PH^^33^4^65711520", {"system": "phone", "value": "+33 4 65711520", "use": "work"}),
    ],
    ids=["PH-xtn1-and-xtn12", "PH-xtn1", "Internet", "PID-14-no-use"],
)
def test_contact_points_the_fix_keeps(
    converter: Converter, field: int, xtn: str, expected: dict[str, str]
) -> None:
    """Not defects: what the XTN fix must keep."""
    [patient] = resources(convert(converter, adt_a04({field: xtn})), "Patient")
    assert patient["telecom"] == [expected]


def test_a_related_persons_cellular_phone_is_mobile(converter: Converter) -> None:
    """NK1-5 goes through the same macro: the spouse's PRN + CP number is mobile."""
    [spouse, _] = resources(
        convert(converter, sample("ADT_A01_admission-full.hl7")), "RelatedPerson"
    )
    assert spouse["telecom"] == [{"system": "phone", "value": "+33639984567", "use": "mobile"}]


# -- 2. CWE units → Quantity ---------------------------------------------------------------

ORU = "ORU_R01_lab-results.hl7"
VXU = "VXU_V04_immunization.hl7"
ORM = "ORM_O01_medication-order.hl7"


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        ("mg^^ISO", {"unit": "mg"}),
        ("mg^milligramme^L", {"unit": "milligramme"}),
        ("mg^milligramme^99LOC", {"unit": "milligramme"}),
        ("g/L^gramme par litre^99SIL-UNITES", {"unit": "gramme par litre"}),
    ],
    ids=["ISO", "L", "99LOC", "99SIL-UNITES"],
)
def test_a_unit_whose_coding_system_has_no_uri_keeps_only_its_text(
    converter: Converter, unit: str, expected: dict[str, str]
) -> None:
    bundle = convert(converter, with_field(sample(ORU), "OBX", 6, unit))
    glucose = resources(bundle, "Observation")[0]
    quantity = glucose["valueQuantity"]
    assert {k: v for k, v in quantity.items() if k != "value"} == expected
    # The reference range (OBX-7) takes the same unit.
    assert {
        k: v for k, v in glucose["referenceRange"][0]["low"].items() if k != "value"
    } == expected


@pytest.mark.parametrize(
    ("source", "fields", "where"),
    [
        # OBX SN ">^10" (anti-HBs, 9th OBX) → valueQuantity with its comparator.
        (
            ORU,
            [("OBX", 6, "[IU]/L^unité internationale par litre^ISO", 9)],
            ("16935-9", "valueQuantity"),
        ),
        # OBX SN range → valueRange.low and high.
        (
            ORU,
            [("OBX", 5, "^5^-^10", 9), ("OBX", 6, "U/L^unité par litre^99LOC", 9)],
            ("16935-9", "valueRange.low"),
        ),
        (
            ORU,
            [("OBX", 5, "^5^-^10", 9), ("OBX", 6, "U/L^unité par litre^99LOC", 9)],
            ("16935-9", "valueRange.high"),
        ),
        # RXA-7 (VXU) → Immunization.doseQuantity.
        (VXU, [("RXA", 7, "mL^millilitre^99LOC", 1)], ("Immunization", "doseQuantity")),
        # RXO-4 (ORM, an exact dose: no RXO-3) → dosageInstruction.doseAndRate.doseQuantity.
        (
            ORM,
            [("RXO", 4, "g^gramme^ISO", 1)],
            ("MedicationRequest", "dosageInstruction.0.doseAndRate.0.doseQuantity"),
        ),
        # RXO-12 → dispenseRequest.quantity.
        (
            ORM,
            [("RXO", 12, "CP^comprimé^99PHARMA", 1)],
            ("MedicationRequest", "dispenseRequest.quantity"),
        ),
        # SPM-12 (CQ: its unit's components are sub-components) → collection.quantity.
        (ORU, [("SPM", 12, "5^mL&millilitre&99LOC", 1)], ("Specimen", "collection.quantity")),
    ],
    ids=["OBX-SN", "OBX-SN-low", "OBX-SN-high", "RXA-7", "RXO-4", "RXO-12", "SPM-12"],
)
def test_every_quantity_from_hl7v2_has_a_uri_system_or_none(
    converter: Converter,
    source: str,
    fields: list[tuple[str, int, str, int]],
    where: tuple[str, str],
) -> None:
    data = sample(source)
    for segment, position, value, occurrence in fields:
        data = with_field(data, segment, position, value, occurrence)
    bundle = convert(converter, data)
    target, path = where
    if target[0].isdigit():  # an Observation, by its LOINC code
        [node] = [
            o for o in resources(bundle, "Observation") if o["code"]["coding"][0]["code"] == target
        ]
    else:
        node = resources(bundle, target)[0]
    for step in path.split("."):
        node = node[int(step)] if step.isdigit() else node[step]
    assert node.get("unit"), node
    assert "system" not in node, node
    assert "code" not in node, node


def test_components_of_a_numeric_obx_get_no_system_from_a_local_unit(converter: Converter) -> None:
    data = with_field(with_field(sample(ORU), "OBX", 5, "1.32~1.40"), "OBX", 6, "g/L^^99LOC")
    glucose = resources(convert(converter, data), "Observation")[0]
    assert [c["valueQuantity"] for c in glucose["component"]] == [
        {"value": Decimal("1.32"), "unit": "g/L"},
        {"value": Decimal("1.40"), "unit": "g/L"},
    ]


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        ("g/L^gramme par litre^UCUM", {"unit": "gramme par litre", "system": UCUM, "code": "g/L"}),
        ("mg/dL^^UCUM", {"unit": "mg/dL", "system": UCUM, "code": "mg/dL"}),
        # An OID names its system: urn:oid (2.16.840.1.113883.6.8 is UCUM's).
        ("mg^^2.16.840.1.113883.6.8", {"unit": "mg", "system": UCUM, "code": "mg"}),
        # No CWE.1: the IG writes system and code only when CWE.1 and CWE.3 are valued.
        ("^gramme par litre^UCUM", {"unit": "gramme par litre"}),
    ],
    ids=["UCUM", "UCUM-no-text", "UCUM-OID", "no-code"],
)
def test_a_unit_with_a_known_coding_system_keeps_system_and_code(
    converter: Converter, unit: str, expected: dict[str, str]
) -> None:
    """Not a defect: what the fix must keep (IG CWE[Quantity] rows CWE.1, CWE.2, CWE.3)."""
    bundle = convert(converter, with_field(sample(ORU), "OBX", 6, unit))
    quantity = resources(bundle, "Observation")[0]["valueQuantity"]
    assert {k: v for k, v in quantity.items() if k != "value"} == expected


# -- 3. INS identifiers outside PID ---------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [(1, f"{RETIRED_IPP}~{RETIRED_INS}"), (2, RETIRED_INS), (4, RETIRED_INS)],
    ids=["MRG-1", "MRG-2", "MRG-4"],
)
def test_the_retired_patients_ins_gets_the_fr_core_slice(
    converter: Converter, field: int, value: str
) -> None:
    data = with_field(sample("ADT_A40_merge-patient.hl7"), "MRG", field, value)
    retired = [
        p for p in resources(convert(converter, data), "Patient") if p.get("active") is False
    ]
    assert len(retired) == 1
    [ins] = [i for i in retired[0]["identifier"] if i["system"] == "urn:oid:1.2.250.1.213.1.4.8"]
    assert ins["use"] == "official"
    assert ins["type"]["coding"] == [
        {"system": FR_0203, "code": "INS-NIR", "display": "NIR définitif"}
    ]
    assert ins["value"] == "275036912345661"


def test_the_retired_patients_identity_is_still_its_ipp(converter: Converter) -> None:
    """Typing the INS leaves the id of the retired Patient (its MR identifier) alone."""
    before = convert(converter, sample("ADT_A40_merge-patient.hl7"))
    after = convert(
        converter,
        with_field(sample("ADT_A40_merge-patient.hl7"), "MRG", 1, f"{RETIRED_IPP}~{RETIRED_INS}"),
    )
    ids = [
        {p["id"] for p in resources(b, "Patient") if p.get("active") is False}
        for b in (before, after)
    ]
    assert ids[0] == ids[1] and len(ids[0]) == 1


def test_a_related_persons_ins_is_not_typed_as_a_patient_ins(converter: Converter) -> None:
    """Decision, not a defect: NK1-33 identifies the related person; FR Core 2.1.0 defines
    the INS slices (use official / temp, fr-core-cs-v2-0203 type) on the Patient only
    (fr-core-patient-ins), none on fr-core-related-person."""
    data = with_field(sample("ADT_A01_admission-full.hl7"), "NK1", 33, RETIRED_INS)
    spouse = resources(convert(converter, data), "RelatedPerson")[0]
    [ins] = [i for i in spouse["identifier"] if i.get("system") == "urn:oid:1.2.250.1.213.1.4.8"]
    assert "use" not in ins
    assert all(c.get("system") != FR_0203 for c in ins.get("type", {}).get("coding", []))


# -- 4. Account.status ----------------------------------------------------------------------


def test_an_account_from_pid_18_is_active(converter: Converter) -> None:
    """IG PID[Account]: status assigned "active" (kept)."""
    [account] = resources(convert(converter, sample("ADT_A01_admission-full.hl7")), "Account")
    assert account["status"] == "active"


@pytest.mark.parametrize(
    ("event", "mrg3", "expected"),
    [
        ("A06", f"2024001111^^^{CHU}^AN", ["active", "unknown"]),
        ("A07", f"2024001111^^^{CHU}^AN", ["active", "unknown"]),
        ("A06", "", ["active"]),
        ("A01", f"2024001111^^^{CHU}^AN", ["active"]),
    ],
    ids=["A06-MRG-3", "A07-MRG-3", "A06-no-MRG-3", "A01-MRG-ignored"],
)
def test_an_account_from_mrg_3_has_status_unknown(
    converter: Converter, event: str, mrg3: str, expected: list[str]
) -> None:
    """IG ADT_A06 (A06, A07) and MRG[Account]: the prior account MRG-3 is Account[2],
    status assigned "unknown" (it may still be active or not), subject the Patient;
    nothing without an MRG-3 account number, nor for events whose map has no MRG row."""
    data = sample("ADT_A01_admission-full.hl7").decode("utf-8")
    structure = {"A06": "ADT_A06", "A07": "ADT_A06", "A01": "ADT_A01"}[event]
    data = data.replace("ADT^A01^ADT_A01", f"ADT^{event}^{structure}")
    lines = data.split("\r")
    at = next(n for n, line in enumerate(lines) if line.startswith("PD1|"))
    lines.insert(at + 1, f"MRG|0012345999^^^{CHU}^MR||{mrg3}")
    accounts = resources(convert(converter, "\r".join(lines).encode("utf-8")), "Account")
    assert sorted(a["status"] for a in accounts) == expected
    if len(expected) == 2:
        [prior] = [a for a in accounts if a["status"] == "unknown"]
        assert prior["identifier"][0]["value"] == "2024001111"
        assert prior["subject"] == accounts[0]["subject"]


# -- 5. ADT^A15 pending transfer ------------------------------------------------------------


def test_a_pending_transfer_keeps_the_visit_and_reserves_the_new_location(
    converter: Converter,
) -> None:
    """HL7 v2.5 3.3.15: PV1-3 the current location, PV1-42 the pending one."""
    bundle = convert(converter, sample("ADT_A15_pending-transfer.hl7"))
    [encounter] = resources(bundle, "Encounter")
    assert encounter["status"] == "in-progress"
    locations = {f"Location/{loc['id']}": loc for loc in resources(bundle, "Location")}

    def ward(reference: str) -> str:
        """The name of the ward a bed, room or ward Location belongs to (PL.1)."""
        location = locations[reference]
        while location.get("physicalType", {}).get("coding", [{}])[0].get("code") != "wa":
            location = locations[location["partOf"]["reference"]]
        return location["name"]

    statuses = {
        ward(entry["location"]["reference"]): entry["status"] for entry in encounter["location"]
    }
    assert statuses == {"CARDIO": "active", "SSR": "reserved"}
