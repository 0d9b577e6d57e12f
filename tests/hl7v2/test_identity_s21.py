"""Identity scopes and national practitioner numbers (session 21).

- The scope of identifiers sent without an authority: an MSH-4 of blanks was the scope
  "   ", which an identity reads as empty and drops: the local patient numbers of every
  sender padding MSH-4 were one record. Without MSH-4, the sending application was read
  by its namespace alone (MSH-3.1): two applications named by their OID only were one
  scope (""), and two hospitals' applications sharing a vendor's name (``DPI``) and
  differing by their OIDs were one. MSH-3 is now read as MSH-4 is: its universal id when
  it has one. The message ``Converter.parse`` gives carries the scope its conversion uses
  (it was "" for a sender without MSH-4, the conversion alone knowing MSH-3).
- The ANS national identifier of a health professional (IdNat_PS, 1.2.250.1.71.4.2.1) is
  "8" + the RPPS (or "0" + the ADELI): ``810101234563`` and ``10101234563`` under that
  authority were two Practitioners of one doctor, on the FHIR server too in the
  conditional modes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from converter.hl7v2 import parse_message
from tests.hl7v2._support import CATALOG
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import convert_one, message, resources, set_field

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples" / "hl7v2"
ORM = (SAMPLES / "ORM_O01_radiology-order.hl7").read_bytes()
MFN = (SAMPLES / "MFN_M02_staff.hl7").read_bytes()
FR_0203 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
ANS_PS = "urn:oid:1.2.250.1.71.4.2.1"
ANS_HD = "ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO"
RPPS = "10102345674"


def sent(msh_3: str, msh_4: str, data: bytes = ORM, **fields: str) -> bytes:
    """``data`` with MSH-3, MSH-4 and other fields (``PID_3="…"``) replaced."""
    data = set_field(set_field(data, "MSH", 3, msh_3), "MSH", 4, msh_4)
    for name, value in fields.items():
        segment, position = name.split("_")
        data = set_field(data, segment, int(position), value)
    return data


def the(converter: Converter, data: bytes, rtype: str) -> dict[str, Any]:
    bundle, _ = convert_one(converter, data)
    return resources(bundle, rtype)[0]


def patient_id(converter: Converter, msh_3: str, msh_4: str) -> str:
    """The id of patient ``123`` (a local number, no authority) of that sender."""
    return str(the(converter, sent(msh_3, msh_4, PID_3="123^^^^PI"), "Patient")["id"])


# --- the scope of identifiers without an authority ---------------------------------------


def test_an_msh_4_of_blanks_keeps_two_senders_apart(converter: Converter) -> None:
    """Scoped by "   " (read as empty and dropped), patient 123 of LIS-A and patient 123
    of RIS-B were one Patient; blanks are no facility: the application scopes them."""
    padded = patient_id(converter, "LIS-A", "   ")
    assert padded != patient_id(converter, "RIS-B", "   ")
    assert padded == patient_id(converter, "LIS-A", "")


def test_an_application_named_by_its_oid_alone_is_a_scope(converter: Converter) -> None:
    """MSH-3 ``^1.2.250…^ISO`` without MSH-4: MSH-3.1 is empty, so every such sender's
    patient 123 was one Patient."""
    first = patient_id(converter, "^1.2.250.1.999.7.1^ISO", "")
    assert first != patient_id(converter, "^1.2.250.1.999.7.2^ISO", "")


def test_two_applications_sharing_a_name_differ_by_their_oids(converter: Converter) -> None:
    """Two hospitals' copies of one vendor's application (MSH-3.1 ``DPI``), without MSH-4:
    their patients and their local doctors were one (the second message's name and
    details overwriting the first's). MSH-3 is read as MSH-4 is: its universal id first."""
    doctor = "123^MARTIN^Paul"
    a = the(converter, sent("DPI^1.2.250.1.999.7.1^ISO", "", PV1_7=doctor), "Practitioner")
    b = the(converter, sent("DPI^1.2.250.1.999.7.2^ISO", "", PV1_7=doctor), "Practitioner")
    assert a["id"] != b["id"]
    assert patient_id(converter, "DPI^1.2.250.1.999.7.1^ISO", "") != patient_id(
        converter, "DPI^1.2.250.1.999.7.2^ISO", ""
    )
    # One application written with and without its namespace is one scope, as for MSH-4.
    assert patient_id(converter, "DPI^1.2.250.1.999.7.1^ISO", "") == patient_id(
        converter, "AUTRE-NOM^urn:oid:1.2.250.1.999.7.1^ISO", ""
    )


@pytest.mark.parametrize(
    ("msh_3", "msh_4", "scope"),
    [
        ("LIS-A", "", "LIS-A"),
        ("LIS-A", "  ", "LIS-A"),
        ("LIS-A^1.2.250.1.999.7.1^ISO", "", "1.2.250.1.999.7.1"),
        ("LIS-A", "HOP-A^URN:OID:1.2.250.1.999.2.1^ISO", "1.2.250.1.999.2.1"),
        ("LIS-A", " HOP-A ", "HOP-A"),
        ("LIS-A", "^^ISO", "LIS-A"),
    ],
)
def test_the_parsed_message_carries_the_scope_of_its_conversion(
    converter: Converter, msh_3: str, msh_4: str, scope: str
) -> None:
    """``Converter.parse`` gave "" for a sender without MSH-4 (only the conversion read
    MSH-3), and the parser alone gave ``urn:oid:…`` where the conversion read the OID.
    Without a code map naming the facility, both parsers agree."""
    data = sent(msh_3, msh_4)
    assert converter.parse(data).facility_scope == scope
    assert parse_message(data, CATALOG).facility_scope == scope


def test_an_assigning_facility_is_read_by_its_universal_id(converter: Converter) -> None:
    """CX.4 empty, CX.6 (assigning facility) scoped the number by its namespace alone: two
    hospitals' patient 123, each with CX.6 ``CH&<its own OID>&ISO``, were one Patient
    (in put mode the second hospital's record replaced the first's). CX.6 is read as
    MSH-4 is: a facility naming itself in CX.6 or not is one scope."""

    def patient(msh_4: str, pid_3: str) -> str:
        return str(the(converter, sent("GAM", msh_4, PID_3=pid_3), "Patient")["id"])

    a = patient("HOP-A^1.2.250.1.999.90.1^ISO", "123^^^^PI^CH&1.2.250.1.999.90.1&ISO")
    b = patient("HOP-B^1.2.250.1.999.90.2^ISO", "123^^^^PI^CH&1.2.250.1.999.90.2&ISO")
    assert a != b
    assert a == patient("HOP-A^1.2.250.1.999.90.1^ISO", "123^^^^PI")
    assert a == patient("HOP-A^1.2.250.1.999.90.1^ISO", "123^^^^PI^&urn:oid:1.2.250.1.999.90.1&ISO")


# --- the IdNat_PS and the RPPS / ADELI it holds --------------------------------------------


def practitioner(converter: Converter, pv1_7: str) -> dict[str, Any]:
    return the(converter, set_field(ORM, "PV1", 7, pv1_7), "Practitioner")


def written(resource: dict[str, Any]) -> list[tuple[str | None, str, str | None]]:
    return [
        (i.get("system"), i["value"], i.get("type", {}).get("coding", [{}])[0].get("code"))
        for i in resource["identifier"]
    ]


@pytest.mark.parametrize(
    "pv1_7",
    [
        f"8{RPPS}^MOREL^Anne^^^Dr^^^{ANS_HD}^L^^^IDNPS",
        f"8{RPPS}^MOREL^Anne^^^Dr^^^{ANS_HD}^L^^^RPPS",
        f"8{RPPS}^MOREL^Anne^^^Dr^^^ASIP-SANTE-PS",
        f"8{RPPS}^MOREL^Anne^^^Dr^^^^L^^^RPPS",
        # The type IDNPS alone names the national authority, as RPPS and ADELI do.
        f"8{RPPS}^MOREL^Anne^^^Dr^^^^L^^^IDNPS",
    ],
)
def test_an_idnat_ps_is_the_doctor_its_rpps_names(converter: Converter, pv1_7: str) -> None:
    """FR Core's fr-core-practitioner: idNatPs (IDNPS) = "8" + RPPS under 1.2.250.1.71.4.2.1,
    and the bare RPPS is the same person (its rpps slice). The forms were two Practitioners."""
    bare = practitioner(converter, f"{RPPS}^MOREL^Anne^^^Dr^^^{ANS_HD}^L^^^RPPS")
    prefixed = practitioner(converter, pv1_7)
    assert prefixed["id"] == bare["id"]
    # The identifier the conditional modes search comes first, as the bare form writes it;
    # the IdNat_PS as sent follows.
    assert written(bare) == [(ANS_PS, RPPS, "RPPS")]
    assert written(prefixed) == [(ANS_PS, RPPS, "RPPS"), (ANS_PS, f"8{RPPS}", "IDNPS")]
    assert prefixed["identifier"][1]["type"]["coding"][0]["system"] == FR_0203


def test_an_idnat_ps_of_an_adeli_number_is_that_adeli(converter: Converter) -> None:
    bare = practitioner(converter, f"751234567^ROUX^Claire^^^^^^{ANS_HD}^L^^^ADELI")
    prefixed = practitioner(converter, f"0751234567^ROUX^Claire^^^^^^{ANS_HD}^L^^^IDNPS")
    assert prefixed["id"] == bare["id"]
    assert written(prefixed)[0] == (ANS_PS, "751234567", "ADELI")


@pytest.mark.parametrize(
    "pv1_7",
    [
        # Another authority's number that happens to look like an IdNat_PS.
        f"8{RPPS}^MOREL^Anne^^^Dr^^^CHU&1.2.250.1.999.1.1&ISO",
        # Not "8" + 11 digits, nor "0" + 9 characters.
        f"7{RPPS}^MOREL^Anne^^^Dr^^^{ANS_HD}",
        f"8{RPPS}9^MOREL^Anne^^^Dr^^^{ANS_HD}",
        "3123456789/0001^MOREL^Anne^^^Dr^^^" + ANS_HD,
    ],
)
def test_other_numbers_are_kept_as_sent(converter: Converter, pv1_7: str) -> None:
    found = practitioner(converter, pv1_7)
    assert [value for _, value, _ in written(found)] == [pv1_7.split("^")[0]]
    assert found["id"] != practitioner(converter, f"{RPPS}^MOREL^Anne^^^Dr^^^{ANS_HD}")["id"]


def test_a_master_file_s_idnat_ps_is_the_doctor_pv1_7_names_by_rpps(
    converter: Converter,
) -> None:
    """An MFN STF-2 (or PRA-6) giving the IdNat_PS describes the Practitioner that PV1-7
    names by the bare RPPS (it was a second one, which the master file alone described)."""
    clinical = practitioner(converter, f"{RPPS}^LEROY^Paul^^^Dr^^^{ANS_HD}^L^^^RPPS")
    stf = set_field(MFN, "STF", 2, f"8{RPPS}^^^{ANS_HD}^IDNPS~LEROYP^^^CHU-LYON^EI", 1)
    staff = the(converter, stf, "Practitioner")
    assert staff["id"] == clinical["id"]
    assert written(staff)[:2] == [(ANS_PS, RPPS, "RPPS"), (ANS_PS, f"8{RPPS}", "IDNPS")]
    both = set_field(stf, "PRA", 6, f"{RPPS}^RPPS^Ordre des médecins", 1)
    assert [value for _, value, _ in written(the(converter, both, "Practitioner"))].count(RPPS) == 1
    # Without STF-1 and STF-2, the PRA-6 is the identity.
    pra = set_field(set_field(set_field(MFN, "STF", 2, "", 1), "STF", 1, "", 1), "PRA", 6, "", 1)
    pra = set_field(pra, "PRA", 6, f"8{RPPS}^RPPS^Ordre des médecins", 1)
    assert the(converter, pra, "Practitioner")["id"] == clinical["id"]


def test_on_a_fhir_server_the_two_forms_are_one_practitioner(fhir_server: FhirServer) -> None:
    """Conditional-update searches the first identifier with a system: the bare RPPS and the
    IdNat_PS searched two values, and the server held two Practitioners of the doctor."""
    fhir_server.reset()
    writer = Converter(
        ConverterConfig(default_timezone="Europe/Paris", request_mode="conditional-update")
    )
    for number, control in ((RPPS, "S21-RPPS-1"), (f"8{RPPS}", "S21-RPPS-2")):
        # A short message: the server's transactions are capped at 8 conditional entries.
        data = message(
            [
                f"MSH|^~\\&|GAM|HOP-A|||20240315101522+0100||ADT^A04^ADT_A01|{control}|P|2.5",
                "EVN|A04|20240315101522+0100",
                "PID|1||IPP-1^^^HOP-A^PI||MARTIN^Jean||19800101|M",
                f"PV1|1|O|||||{number}^MOREL^Anne^^^Dr^^^{ANS_HD}^L^^^RPPS",
            ]
        )
        fhir_server.transact(writer.convert_message(data).bundle)
    found = {
        entry["resource"]["id"]
        for value in (RPPS, f"8{RPPS}")
        for entry in fhir_server.search("Practitioner", identifier=f"{ANS_PS}|{value}").get(
            "entry", []
        )
    }
    assert len(found) == 1
    assert fhir_server.count("Practitioner") == 1
