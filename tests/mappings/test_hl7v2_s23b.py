"""Session 23 (second round), HL7 v2 templates.

- PD1-12 protection indicator `Y` (a VIP, a victim, a patient who asked for confidentiality)
  is the security label R (restricted) in Patient.meta.security, as PV2-22 labels the
  Encounter (both through the code map ProtectionIndicator-Passerelle): the protected
  patient's record carried no restriction.
- PID-12 county code is Patient.address.district under the IG's four conditions (PID[Patient]
  rows 12): it was dropped.
- OBX-15 producer's ID is the performer Organization's identifier (IG OBX[Observation] row
  15), or names the producing Organization when OBX-23 is empty: it was dropped.
- FT1-8 transaction description is ChargeItem.code.text beside a coded FT1-7 (as PR1-4 is
  Procedure.code.text): it was dropped whenever FT1-7 had a code.
"""

from __future__ import annotations

from typing import Any

import pytest

from converter import Converter
from tests.mappings.test_financial import LITHO, dft, one, valid
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import message, resources, segment
from tests.support.r4validator import R4Validator

CHU = "CHU-LYON&1.2.250.1.999.1.1&ISO"
RESTRICTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
    "code": "R",
    "display": "restricted",
}
HOME = "1 rue de la Charité^^Lyon^^69002^FRA^H"


def _adt(
    event: str,
    *,
    pid: dict[int, str] | None = None,
    pd1: dict[int, str] | None = None,
    pv2: dict[int, str] | None = None,
    control: str | None = None,
) -> bytes:
    patient = {1: "1", 3: f"0012361188^^^{CHU}^MR", 5: "MOREAU^Isabelle", 7: "19780114", 8: "F"}
    patient.update(pid or {})
    return message(
        [
            "MSH|^~\\&|SIH|CHU-LYON^1.2.250.1.999.1.1^ISO|||20240410151230+0200||"
            f"ADT^{event}^ADT_A01|{control or 'S23B-' + event}|P|2.5.1",
            segment("EVN", {1: event, 2: "20240410151230+0200"}),
            segment("PID", patient),
            *([segment("PD1", pd1)] if pd1 is not None else []),
            segment("PV1", {1: "1", 2: "I", 19: f"2024000505^^^{CHU}^VN"}),
            *([segment("PV2", pv2)] if pv2 is not None else []),
        ]
    )


def _patient(converter: Converter, data: bytes) -> dict[str, Any]:
    [found] = resources(converter.convert_message(data).bundle, "Patient")
    return found


# --- PD1-12 protection indicator -----------------------------------------------------------


@pytest.mark.parametrize("value", ["Y", "y", " Y "])
def test_a_protected_patient_is_labelled_restricted(
    converter: Converter, r4validator: R4Validator, value: str
) -> None:
    conversion = converter.convert_message(_adt("A08", pd1={12: value, 13: "20240401"}))
    assert r4validator.validate(conversion.bundle) == []
    [patient] = resources(conversion.bundle, "Patient")
    assert patient["meta"] == {"security": [RESTRICTED]}


@pytest.mark.parametrize("pd1", [None, {4: ""}, {12: "N"}, {12: '""'}])
def test_a_patient_not_protected_has_no_label(
    converter: Converter, pd1: dict[int, str] | None
) -> None:
    conversion = converter.convert_message(_adt("A08", pd1=pd1))
    [patient] = resources(conversion.bundle, "Patient")
    assert "meta" not in patient
    assert not [w for w in conversion.warnings if "PD1-12" in w]


def test_an_unknown_protection_indicator_is_a_warning_not_a_label(converter: Converter) -> None:
    conversion = converter.convert_message(_adt("A08", pd1={12: "X"}))
    [patient] = resources(conversion.bundle, "Patient")
    assert "meta" not in patient
    assert [w for w in conversion.warnings if "PD1-12" in w] == [
        "PD1-12 (protection indicator) is neither Y nor N: not mapped"
    ]


def test_visit_protection_keeps_its_label_through_the_shared_code_map(
    converter: Converter,
) -> None:
    """PV2-22 now reads ProtectionIndicator-Passerelle too: same label as before."""
    [encounter] = resources(
        converter.convert_message(_adt("A08", pv2={22: "Y"})).bundle, "Encounter"
    )
    assert encounter["meta"] == {"security": [RESTRICTED]}
    [encounter] = resources(
        converter.convert_message(_adt("A08", pv2={22: "N"})).bundle, "Encounter"
    )
    assert "meta" not in encounter


def test_on_a_fhir_server_the_label_lasts_while_the_sender_repeats_pd1_12(
    fhir_server: FhirServer,
) -> None:
    """The protection reaches the stored Patient, and an update repeating PD1-12 keeps it.
    An update without PD1-12 replaces the Patient without it on a server that replaces
    meta.security on update (this one, Medplum's engine): the README tells the sender to
    repeat PD1-12 (the converter never reads the server)."""
    fhir_server.reset()
    converter = Converter()
    stored: list[Any] = []
    for n, pd1 in enumerate(({12: "Y"}, {4: "", 12: "Y"}, None, {12: "N"})):
        bundle = converter.convert_message(_adt("A31", pd1=pd1, control=f"S23B-{n}")).bundle
        [patient] = resources(bundle, "Patient")
        fhir_server.transact(bundle)
        read = fhir_server.read("Patient", patient["id"])
        assert read is not None
        stored.append(read.get("meta", {}).get("security"))
    assert stored == [[RESTRICTED], [RESTRICTED], None, None]


def _merge(pd1: dict[int, str] | None) -> bytes:
    """A40: record OLD-1 merged into 0012361188, PD1 in the PATIENT group."""
    return message(
        [
            "MSH|^~\\&|SIH|CHU-LYON^1.2.250.1.999.1.1^ISO|||20240410151230+0200||"
            "ADT^A40^ADT_A39|S23B-A40|P|2.5.1",
            segment("EVN", {1: "A40", 2: "20240410151230+0200"}),
            segment("PID", {1: "1", 3: f"0012361188^^^{CHU}^MR", 5: "MOREAU^Isabelle"}),
            *([segment("PD1", pd1)] if pd1 is not None else []),
            segment("MRG", {1: f"OLD-1^^^{CHU}^MR", 7: "MOREAU^Isabelle"}),
        ]
    )


def test_a_protected_patient_s_retired_record_keeps_the_label(
    converter: Converter, r4validator: R4Validator
) -> None:
    """The merge writes the retired record whole (its name, its identifiers): without the
    label, the protected person's old record became readable by all (reproduced on the
    test server: the label written by an earlier A31 was gone after the A40)."""
    conversion = converter.convert_message(_merge({12: "Y"}))
    assert r4validator.validate(conversion.bundle) == []
    patients = resources(conversion.bundle, "Patient")
    assert [p.get("active") for p in patients] == [None, False]
    assert [p.get("meta") for p in patients] == [{"security": [RESTRICTED]}] * 2
    for pd1 in (None, {12: "N"}):
        unprotected = resources(converter.convert_message(_merge(pd1)).bundle, "Patient")
        assert [p.get("meta") for p in unprotected] == [None, None]


# --- PID-12 county code ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pid11", "districts"),
    [
        # One address without XAD.9: its district (IG row 12, first condition).
        (HOME, ["69123"]),
        # One address whose XAD.9 is PID-12 already: nothing more.
        (f"{HOME}^^69123", ["69123"]),
        # One address with another XAD.9: an address of its own (second condition).
        (f"{HOME}^^69381", ["69381", "69123"]),
        # Several addresses: an address of its own (third condition).
        (f"{HOME}~2 quai Perrache^^Lyon^^69002^FRA^M", [None, None, "69123"]),
        # No address (fourth condition), or only the birthplace, not a Patient.address.
        ("", ["69123"]),
        ("^^Lyon^^69002^FRA^BDL^^69382", ["69123"]),
        # The birthplace does not count: the home address is the only one.
        (f"{HOME}~^^Lyon^^69002^FRA^BDL^^69382", ["69123"]),
    ],
)
def test_county_code_is_the_address_district(
    converter: Converter, r4validator: R4Validator, pid11: str, districts: list[str | None]
) -> None:
    conversion = converter.convert_message(_adt("A08", pid={11: pid11, 12: "69123"}))
    assert r4validator.validate(conversion.bundle) == []
    [patient] = resources(conversion.bundle, "Patient")
    assert [a.get("district") for a in patient["address"]] == districts


def test_county_code_fills_the_address_it_belongs_to(
    converter: Converter, r4validator: R4Validator
) -> None:
    conversion = converter.convert_message(_adt("A08", pid={11: HOME, 12: " 69123 "}))
    assert r4validator.validate(conversion.bundle) == []
    [patient] = resources(conversion.bundle, "Patient")
    assert patient["address"] == [
        {
            "use": "home",
            "line": ["1 rue de la Charité"],
            "city": "Lyon",
            "district": "69123",
            "postalCode": "69002",
            "country": "FRA",
        }
    ]


def test_no_county_code_adds_no_address(converter: Converter) -> None:
    assert "address" not in _patient(converter, _adt("A08"))
    patient = _patient(converter, _adt("A08", pid={11: HOME}))
    assert [a.get("district") for a in patient["address"]] == [None]


# --- OBX-15 producer's ID -------------------------------------------------------------------


def _oru(obx: dict[int, str]) -> bytes:
    return message(
        [
            "MSH|^~\\&|LAB|CHU-LYON^1.2.250.1.999.1.1^ISO|||20240410151230+0200||"
            "ORU^R01^ORU_R01|S23B-ORU|P|2.5.1",
            segment("PID", {1: "1", 3: f"0012361188^^^{CHU}^MR", 5: "MOREAU^Isabelle"}),
            segment("OBR", {1: "1", 3: "F-1^LAB", 4: "2345-7^Glucose^LN", 7: "20240410120000"}),
            segment("OBX", {1: "1", 2: "NM", 3: "2345-7^Glucose^LN", 5: "5.4", 11: "F", **obx}),
        ]
    )


def _performing_lab(converter: Converter, r4validator: R4Validator, data: bytes) -> Any:
    bundle = valid(converter, r4validator, data, "ORU_R01").bundle
    observation = one(bundle, "Observation")
    by_ref = {f"Organization/{o['id']}": o for o in resources(bundle, "Organization")}
    labs = [by_ref[p["reference"]] for p in observation.get("performer", [])]
    return labs


LAB_XON = "Laboratoire central^L^^^^CHU-LYON&1.2.250.1.999.1.1&ISO^FI^^^LAB-01"
LAB_ID = {
    "system": "urn:oid:1.2.250.1.999.1.1",
    "value": "LAB-01",
    "type": {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                "code": "FI",
                "display": "Facility ID",
            }
        ]
    },
}


def test_producer_id_is_an_identifier_of_the_performing_organization(
    converter: Converter, r4validator: R4Validator
) -> None:
    data = _oru({15: "12D0620420^Laboratoire central^CLIA", 23: LAB_XON})
    [lab] = _performing_lab(converter, r4validator, data)
    assert lab["identifier"] == [LAB_ID, {"value": "12D0620420"}]
    # Its identity is OBX-23's: the lab's results without OBX-15 name the same one.
    [same] = _performing_lab(converter, r4validator, _oru({23: LAB_XON}))
    assert same["id"] == lab["id"]
    assert same["identifier"] == [LAB_ID]


def test_a_producer_id_that_is_the_organization_identifier_is_not_repeated(
    converter: Converter, r4validator: R4Validator
) -> None:
    [lab] = _performing_lab(converter, r4validator, _oru({15: "LAB-01^Labo^L", 23: LAB_XON}))
    assert lab["identifier"] == [LAB_ID]


def test_producer_id_alone_names_the_producing_organization(
    converter: Converter, r4validator: R4Validator
) -> None:
    data = _oru({15: "12D0620420^General Hospital Lab^CLIA"})
    [lab] = _performing_lab(converter, r4validator, data)
    assert (lab["identifier"], lab["name"]) == ([{"value": "12D0620420"}], "General Hospital Lab")
    [again] = _performing_lab(converter, r4validator, data)
    assert again["id"] == lab["id"]
    # Another producer is another Organization.
    [other] = _performing_lab(converter, r4validator, _oru({15: "99D0000001^Other^CLIA"}))
    assert other["id"] != lab["id"]


def test_an_empty_producer_id_names_no_organization(
    converter: Converter, r4validator: R4Validator
) -> None:
    assert _performing_lab(converter, r4validator, _oru({15: "^^CLIA"})) == []


# --- FT1-8 transaction description ----------------------------------------------------------


@pytest.mark.parametrize(
    "ft1",
    [
        # A coded FT1-7.
        {**LITHO, 8: "Lithotritie, 2 séances"},
        # FT1-7 that FT1-25 post-coordinates.
        {**LITHO, 8: "Lithotritie, 2 séances", 25: LITHO[7], 26: "F"},
        # No FT1-7: FT1-25 coded, with or without modifiers.
        {**LITHO, 7: "", 8: "Lithotritie, 2 séances", 25: LITHO[7]},
        {**LITHO, 7: "", 8: "Lithotritie, 2 séances", 25: LITHO[7], 26: "F"},
    ],
)
def test_transaction_description_is_the_code_text(
    converter: Converter, r4validator: R4Validator, ft1: dict[int, str]
) -> None:
    bundle = valid(converter, r4validator, dft(ft1), "DFT").bundle
    code = one(bundle, "ChargeItem")["code"]
    assert code["text"] == "Lithotritie, 2 séances"
    assert code["coding"][0]["code"].startswith("JANM001")


def test_original_text_of_the_code_comes_before_the_description(
    converter: Converter, r4validator: R4Validator
) -> None:
    ft1 = {**LITHO, 7: LITHO[7] + "^^^^^^lithotritie extracorporelle", 8: "Lithotritie"}
    bundle = valid(converter, r4validator, dft(ft1), "DFT").bundle
    assert one(bundle, "ChargeItem")["code"]["text"] == "lithotritie extracorporelle"


def test_without_description_the_code_has_no_text(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle = valid(converter, r4validator, dft(LITHO), "DFT").bundle
    assert "text" not in one(bundle, "ChargeItem")["code"]
