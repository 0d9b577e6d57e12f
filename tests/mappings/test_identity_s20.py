"""Patient identities whose register is named by the identifier type (session 20).

An INS sent with CX.4 empty and CX.5 one of FR Core's INS identifier types
(``189017511200512^^^^INS-NIR``: the type names one register, one OID) was scoped by the
sending facility and written without system: one Patient per hospital for one INS, outside
FR Core's INS slice (no ``use``), and an A40 whose MRG-1 named the survivor so was taken
for another record. CX.5 ``INS`` alone (IHE PAM France's type for NIR and NIA alike, test
or production) and ``NH`` (the NSS, which a family shares) name no register and stay
scoped by the facility.

Also: an order number's namespace is written as the assigner without surrounding blanks,
as a CX's is; an MFN M05 keys its records' locations as Location identities read them
(without surrounding blanks), so the last record of a location is the one written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from converter.assembly.bundle import RequestMode
from converter.datetimes import TimestampConverter
from converter.templates.codemaps import CodeMaps
from converter.templates.filters import ValueFilters
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import convert_one, lines, message, resources, set_field
from tests.support.r4validator import R4Validator

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples" / "hl7v2"
ORM = SAMPLES / "ORM_O01_radiology-order.hl7"
A40 = SAMPLES / "ADT_A40_merge-patient.hl7"
FR_0203 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
BIRTH_LIST = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-birth-list-given-name"
NIR = "189017511200512"
FULL_INS = f"{NIR}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS"


def patient(converter: Converter, pid_3: str, msh_4: str = "HOP-A") -> dict[str, Any]:
    """The Patient of the ORM sample with PID-3 and MSH-4 replaced."""
    data = set_field(ORM.read_bytes(), "MSH", 4, msh_4)
    bundle, _ = convert_one(converter, set_field(data, "PID", 3, pid_3))
    [found] = resources(bundle, "Patient")
    return found


def identifier(resource: dict[str, Any], value: str) -> dict[str, Any]:
    [found] = [i for i in resource["identifier"] if i["value"] == value]
    return found


@pytest.mark.parametrize(
    ("type_code", "oid", "use"),
    [
        ("INS-NIR", "1.2.250.1.213.1.4.8", "official"),
        ("INS-NIA", "1.2.250.1.213.1.4.9", "temp"),
        ("INS-NIR-TEST", "1.2.250.1.213.1.4.10", "official"),
        ("INS-NIR-DEMO", "1.2.250.1.213.1.4.11", "official"),
    ],
)
def test_an_ins_typed_without_authority_is_the_ins_of_its_register(
    converter: Converter, type_code: str, oid: str, use: str
) -> None:
    typed = patient(converter, f"{NIR}^^^^{type_code}")
    written = identifier(typed, NIR)
    assert (written.get("use"), written.get("system")) == (use, f"urn:oid:{oid}")
    assert [(c["system"], c["code"]) for c in written["type"]["coding"]] == [(FR_0203, type_code)]
    full = patient(converter, f"{NIR}^^^ASIP-SANTE&{oid}&ISO^INS", msh_4="HOP-B")
    # One person whoever sends the INS and however its register is named.
    assert typed["id"] == full["id"] == patient(converter, f"{NIR}^^^^{type_code}", "HOP-B")["id"]


@pytest.mark.parametrize("cx_5", ["INS", "NH"])
def test_a_type_naming_no_single_register_stays_the_facility_s(
    converter: Converter, cx_5: str
) -> None:
    """``INS`` does not say NIR or NIA, test or production; ``NH`` (the NSS) is shared by a
    family: neither is made a national identity."""
    first, second = (patient(converter, f"{NIR}^^^^{cx_5}", facility) for facility in "AB")
    assert first["id"] != second["id"]
    assert "system" not in identifier(first, NIR)
    assert first["id"] != patient(converter, FULL_INS)["id"]


def test_an_ins_type_beside_another_authority_keeps_that_authority(
    converter: Converter,
) -> None:
    """CX.4 names the authority; the type does not replace it."""
    found = patient(converter, f"{NIR}^^^HOPX^INS-NIR")
    assert "system" not in identifier(found, NIR)
    assert found["id"] != patient(converter, FULL_INS)["id"]


def test_an_ins_typed_without_authority_makes_the_identity_french(
    converter: Converter, r4validator: R4Validator
) -> None:
    """The legal name's list of birth given names is read as an INS identity's."""
    data = set_field(ORM.read_bytes(), "PID", 3, f"PE1^^^HOP&1.2.3.4&ISO^PI~{NIR}^^^^INS-NIR")
    data = set_field(data, "PID", 5, "GILBERT^Louis^Louis Maurice^^^^L")
    bundle, _ = convert_one(converter, data)
    assert r4validator.validate(bundle) == []
    [found] = resources(bundle, "Patient")
    [legal] = [n for n in found["name"] if n.get("use") == "official"]
    assert legal["given"] == ["Louis"]
    assert legal["extension"] == [{"url": BIRTH_LIST, "valueString": "Louis Maurice"}]


def test_an_mrg_naming_the_survivors_ins_by_its_type_retires_nothing(
    converter: Converter,
) -> None:
    """The survivor lists the INS with its OID; MRG-1 names it by type alone: the same
    person, not a duplicate record (it was a retired stub holding the survivor's INS)."""
    bundle, warnings = convert_one(
        converter, set_field(A40.read_bytes(), "MRG", 1, "175016912309948^^^^INS-NIR")
    )
    patients = resources(bundle, "Patient")
    assert [p.get("active") for p in patients] == [None]
    assert "link" not in patients[0]
    assert any("by an identifier it lists" in w for w in warnings), warnings


def test_hd_system_reads_an_ins_type_only_without_authority() -> None:
    filters = ValueFilters(
        TimestampConverter("Europe/Paris"),
        CodeMaps.load([REPO / "mappings" / "codemaps"]),
        strict=True,
    )
    assert filters.hd_system("", type_code="INS-NIR") == "urn:oid:1.2.250.1.213.1.4.8"
    assert filters.hd_system(None, type_code=" INS-NIA ") == "urn:oid:1.2.250.1.213.1.4.9"
    assert filters.hd_system("", type_code="INS") is None
    assert filters.hd_system("", type_code="NH") is None
    # A national register that is no INS (a practitioner's) is no patient's register.
    assert filters.hd_system("", type_code="RPPS") is None
    assert filters.hd_system("HOPX", type_code="INS-NIR") is None
    assert filters.hd_system("ASIP-SANTE-PS", type_code="INS-NIR") == "urn:oid:1.2.250.1.71.4.2.1"


def test_an_order_number_namespace_is_its_assigner_without_blanks(
    converter: Converter,
) -> None:
    data = set_field(ORM.read_bytes(), "ORC", 2, "123^LAB ")
    bundle, _ = convert_one(converter, set_field(data, "OBR", 2, "123^LAB "))
    [order] = resources(bundle, "ServiceRequest")
    assert [i.get("assigner") for i in order["identifier"] if i["value"] == "123"] == [
        {"display": "LAB"}
    ]


def test_location_records_keyed_with_blanks_apply_in_message_order(converter: Converter) -> None:
    """An MFN M05 whose MDC writes LOC-1 with a trailing blank deactivates the ward its MAD
    added: one Location (the identity reads its parts trimmed), the last record written.
    Keyed apart, both records were rendered and the first kept: the ward stayed active."""
    header = lines((SAMPLES / "MFN_M05_locations.hl7").read_bytes())[:2]
    ward = "^^^CHU-LYON&1.2.250.1.999.1.1&ISO"
    segments = [
        *header,
        f"MFE|MAD|R1|20240315110000+0100|USIC{ward}|PL",
        f"LOC|USIC{ward}|Soins intensifs|N",
        f"MFE|MDC|R2|20240315110000+0100|USIC {ward}|PL",
        f"LOC|USIC {ward}|Soins intensifs (fermée)|N",
    ]
    bundle, warnings = convert_one(converter, message(segments))
    [ward_location] = resources(bundle, "Location")
    assert (ward_location["status"], ward_location["name"]) == (
        "inactive",
        "Soins intensifs (fermée)",
    )
    assert not [w for w in warnings if "emitted twice" in w], warnings


# --- conditional modes: a Patient is matched on its record number or written by id -------

A28 = SAMPLES / "ADT_A28_add-person.hl7"
A29 = SAMPLES / "ADT_A29_delete-person.hl7"
SHARED_INS = "291127511108785^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS"


def hospital_message(sample: Path, facility: str, ipp: str) -> bytes:
    """``sample`` sent by ``facility`` naming its record ``ipp`` in a namespace the code
    maps do not know (no system), then the person's INS."""
    data = set_field(sample.read_bytes(), "MSH", 4, facility)
    data = set_field(data, "MSH", 10, f"{facility}-{sample.stem}")
    return set_field(data, "PID", 3, f"{ipp}^^^{facility}^PI~{SHARED_INS}")


def patient_requests(bundle: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (e["request"]["method"], e["request"]["url"])
        for e in bundle["entry"]
        if e["request"]["url"].startswith("Patient")
    ]


@pytest.mark.parametrize("mode", ["conditional-create", "conditional-update"])
def test_a_record_number_without_system_is_written_by_id_not_matched_on_the_ins(
    mode: RequestMode,
) -> None:
    """The search fell to the INS, which every hospital's record of the person holds."""
    writer = Converter(ConverterConfig(default_timezone="Europe/Paris", request_mode=mode))
    bundle, _ = convert_one(writer, hospital_message(A28, "HOP-A", "A-111"))
    [found] = resources(bundle, "Patient")
    assert found["identifier"][0]["value"] == "A-111"
    [request] = patient_requests(bundle)
    assert request[1].startswith("Patient/")
    assert "identifier=" not in request[1]
    deleted, _ = convert_one(writer, hospital_message(A29, "HOP-A", "A-111"))
    assert patient_requests(deleted) == [("DELETE", request[1])]


def test_on_a_fhir_server_two_hospitals_records_of_one_ins_stay_two_and_one_is_deleted(
    fhir_server: FhirServer,
) -> None:
    """Hospital B's A28 replaced hospital A's record (matched on their shared INS); B's A29
    would have deleted the person as every hospital wrote it."""
    fhir_server.reset()
    writer = Converter(
        ConverterConfig(default_timezone="Europe/Paris", request_mode="conditional-update")
    )
    for facility, ipp in (("HOP-A", "A-111"), ("HOP-B", "B-222")):
        fhir_server.transact(writer.convert_message(hospital_message(A28, facility, ipp)).bundle)
    assert fhir_server.count("Patient") == 2
    assert fhir_server.count("Patient", identifier="A-111") == 1
    fhir_server.transact(writer.convert_message(hospital_message(A29, "HOP-B", "B-222")).bundle)
    assert fhir_server.count("Patient", identifier="B-222") == 0
    assert fhir_server.count("Patient", identifier="A-111") == 1


# --- senders without MSH-4: the sending application scopes their unqualified ids ---------

ORU = SAMPLES / "ORU_R01_lab-results.hl7"


def doctor(converter: Converter, application: str, xcn: str) -> dict[str, Any]:
    """The Practitioner of PV1-7 in the ORU sample sent by ``application`` without MSH-4."""
    data = set_field(set_field(ORU.read_bytes(), "MSH", 4, ""), "MSH", 3, application)
    bundle, _ = convert_one(converter, set_field(data, "PV1", 7, xcn))
    [found] = [p for p in resources(bundle, "Practitioner") if xcn.split("^")[1] in str(p)]
    return found


@pytest.mark.parametrize("xcn", ["123^{}^Jean", "^{}^Jean"], ids=["number", "name-only"])
def test_without_msh_4_one_number_from_two_applications_is_two_doctors(
    converter: Converter, xcn: str
) -> None:
    """Scoped by an empty MSH-4, doctor 123 of LIS-A and doctor 123 of RIS-B were one
    Practitioner: on the server the second's name replaced the first's."""
    lab = doctor(converter, "LIS-A", xcn.format("DUPONT"))
    radiology = doctor(converter, "RIS-B", xcn.format("DUPONT"))
    assert lab["id"] != radiology["id"]
    # One application's doctor is still one Practitioner from message to message.
    assert doctor(converter, "LIS-A", xcn.format("DUPONT"))["id"] == lab["id"]
