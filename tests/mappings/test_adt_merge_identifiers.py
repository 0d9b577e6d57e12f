"""The identifiers of the Patient an A40 retires (resources/PatientMerged.j2), as a
warehouse written in the conditional request modes sees them.

- The retired Patient's first identifier is the one its identity comes from (MRG-1's MR,
  else PI): the conditional modes match a Patient on its first identifier with a system.
  An MRG-1 listing the INS first made the stub's ``PUT Patient?identifier=`` search the
  INS, which the survivor holds, and the server refused the merge.
- An MRG identifier the survivor also lists (the INS of the person both records turned
  out to be) is left to the survivor: on the stub, every later conditional request
  searching it matched two Patients and was refused.
- Nothing is retired when MRG names the survivor by an identifier it lists that is no
  record number (an MRG-1 of the INS alone), nor when PID names no identifier (the
  survivor would be a Patient of this message only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converter import Converter, ConverterConfig
from converter.assembly.bundle import RequestMode
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import convert_one, lines, message, set_field
from tests.support.r4validator import R4Validator

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "hl7v2" / "ADT_A40_merge-patient.hl7"
CHU = "CHU-LYON&1.2.250.1.999.1.1&ISO"
INS_SYSTEM = "urn:oid:1.2.250.1.213.1.4.8"
#: The survivor's INS in the sample's PID-3, and the two IPPs.
SHARED_INS = "175016912309948^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS"
SURVIVOR_IPP = "0012345999"
RETIRED_IPP = "0012346777"


def a40(mrg_1: str) -> bytes:
    return set_field(SAMPLE.read_bytes(), "MRG", 1, mrg_1)


def conditional(mode: RequestMode) -> Converter:
    return Converter(ConverterConfig(default_timezone="Europe/Paris", request_mode=mode))


def patient_entries(bundle: dict[str, Any]) -> dict[bool, dict[str, Any]]:
    """The Patient entries by whether they are the retired one."""
    return {
        e["resource"].get("active") is False: e
        for e in bundle["entry"]
        if e.get("resource", {}).get("resourceType") == "Patient"
    }


def test_the_retired_patient_is_matched_on_the_number_it_was_filed_under(
    r4validator: R4Validator,
) -> None:
    data = a40(f"{SHARED_INS}~{RETIRED_IPP}^^^{CHU}^MR")
    bundle, warnings = convert_one(conditional("conditional-update"), data)
    assert warnings == []
    assert r4validator.validate(bundle) == []
    entries = patient_entries(bundle)
    assert entries[True]["request"] == {
        "method": "PUT",
        "url": f"Patient?identifier=urn:oid:1.2.250.1.999.1.1|{RETIRED_IPP}",
    }
    assert entries[False]["request"]["url"].endswith(f"|{SURVIVOR_IPP}")
    bundle, _ = convert_one(conditional("conditional-create"), data)
    assert patient_entries(bundle)[True]["request"]["ifNoneExist"].endswith(f"|{RETIRED_IPP}")


def test_the_survivors_ins_is_left_to_the_survivor(
    converter: Converter, r4validator: R4Validator
) -> None:
    for mrg_1 in (
        f"{RETIRED_IPP}^^^{CHU}^MR~{SHARED_INS}",
        f"{SHARED_INS}~{RETIRED_IPP}^^^{CHU}^MR",
    ):
        bundle, warnings = convert_one(converter, a40(mrg_1))
        assert warnings == []
        assert r4validator.validate(bundle) == []
        entries = patient_entries(bundle)
        retired, survivor = entries[True]["resource"], entries[False]["resource"]
        assert [i["value"] for i in retired["identifier"]] == [RETIRED_IPP]
        assert INS_SYSTEM in {i["system"] for i in survivor["identifier"]}
        assert retired["link"] == [
            {"other": {"reference": f"Patient/{survivor['id']}"}, "type": "replaced-by"}
        ]


def registration(pid_3: str, control_id: str, name: str) -> bytes:
    """An A28 (add person information) of one of the two records, without MRG."""
    data = message([line for line in lines(SAMPLE.read_bytes()) if not line.startswith("MRG|")])
    data = set_field(data, "MSH", 9, "ADT^A28^ADT_A05")
    data = set_field(data, "MSH", 10, control_id)
    data = set_field(data, "EVN", 1, "A28")
    data = set_field(data, "PID", 3, pid_3)
    return set_field(data, "PID", 5, name)


def test_on_a_fhir_server_a_conditional_merge_applies_and_the_ins_stays_unambiguous(
    fhir_server: FhirServer,
) -> None:
    fhir_server.reset()
    writer = conditional("conditional-update")
    survivor_pid_3 = f"{SURVIVOR_IPP}^^^{CHU}^MR~{SHARED_INS}"
    for data in (
        registration(survivor_pid_3, "MERGE-IDS-A28-1", "PETIT^Jérôme^André^^M.^^L"),
        registration(f"{RETIRED_IPP}^^^{CHU}^MR", "MERGE-IDS-A28-2", "PETIT^Jérome^^^^^L"),
    ):
        fhir_server.transact(writer.convert_message(data).bundle)
    assert fhir_server.count("Patient") == 2

    # The identity service merges the duplicate, MRG-1 listing the INS first.
    merge = writer.convert_message(a40(f"{SHARED_INS}~{RETIRED_IPP}^^^{CHU}^MR")).bundle
    fhir_server.transact(merge)

    assert fhir_server.count("Patient") == 2
    stored = {
        e["resource"]["identifier"][0]["value"]: e["resource"]
        for e in fhir_server.search("Patient").get("entry", [])
    }
    survivor, retired = stored[SURVIVOR_IPP], stored[RETIRED_IPP]
    assert survivor.get("active", True) is True
    assert survivor["link"] == [
        {"other": {"reference": f"Patient/{retired['id']}"}, "type": "replaces"}
    ]
    assert retired["active"] is False
    assert retired["link"] == [
        {"other": {"reference": f"Patient/{survivor['id']}"}, "type": "replaced-by"}
    ]
    assert fhir_server.count("Patient", identifier=f"{INS_SYSTEM}|175016912309948") == 1

    # A later message of the survivor searching it by its INS (PID-3 listing it first)
    # finds one Patient.
    later = registration(
        f"{SHARED_INS}~{SURVIVOR_IPP}^^^{CHU}^MR", "MERGE-IDS-A28-3", "PETIT^Jérôme^André^^M.^^L"
    )
    fhir_server.transact(writer.convert_message(later).bundle)
    assert fhir_server.count("Patient") == 2


def test_a_merge_into_a_pid_without_identifier_retires_nothing(
    converter: Converter, r4validator: R4Validator
) -> None:
    """The survivor's id would derive from this message: retiring the record of MRG-1 in
    favour of a Patient no other message writes left the person without a record."""
    for pid_3 in ("", f"^^^{CHU}^PI"):
        data = set_field(SAMPLE.read_bytes(), "PID", 3, pid_3)
        bundle, warnings = convert_one(converter, data)
        assert r4validator.validate(bundle) == []
        patients = [
            e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
        ]
        assert [(p.get("active"), p.get("link")) for p in patients] == [(None, None)]
        assert any("names no surviving patient identifier" in w for w in warnings), warnings


def test_an_mrg_naming_only_the_survivors_ins_retires_nothing(
    converter: Converter, r4validator: R4Validator
) -> None:
    """MRG-1 holding the INS alone names the person, not the duplicate record: the stub
    was a Patient keyed by the INS, which a conditional write matched to the survivor."""
    bundle, warnings = convert_one(converter, a40(SHARED_INS))
    assert r4validator.validate(bundle) == []
    assert list(patient_entries(bundle)) == [False]
    assert "link" not in patient_entries(bundle)[False]["resource"]
    assert any("by an identifier it lists" in w for w in warnings), warnings


def test_a_survivor_listing_the_absorbed_record_number_still_retires_it(
    converter: Converter,
) -> None:
    """A record number (MR / PI) names a record even when the survivor lists it too."""
    data = set_field(
        a40(f"{RETIRED_IPP}^^^{CHU}^MR"),
        "PID",
        3,
        f"{SURVIVOR_IPP}^^^{CHU}^MR~{RETIRED_IPP}^^^{CHU}^MR~{SHARED_INS}",
    )
    bundle, warnings = convert_one(converter, data)
    assert warnings == []
    retired = patient_entries(bundle)[True]["resource"]
    assert [i["value"] for i in retired["identifier"]] == [RETIRED_IPP]


def test_an_untyped_prior_number_the_survivor_lists_is_still_retired(
    converter: Converter,
) -> None:
    """Without CX.5 the key is taken for a record number (guard of the INS rule above)."""
    data = set_field(
        a40(f"{RETIRED_IPP}^^^{CHU}"), "PID", 3, f"{SURVIVOR_IPP}^^^{CHU}^MR~{RETIRED_IPP}^^^{CHU}"
    )
    bundle, warnings = convert_one(converter, data)
    assert warnings == []
    assert patient_entries(bundle)[True]["resource"]["active"] is False


def test_two_records_qualified_with_one_ins_listed_first_stay_two_on_a_server(
    fhir_server: FhirServer,
) -> None:
    """The conditional modes match a Patient on its first identifier with a system: a
    PID-3 listing the INS first made two records of one person (before the identity
    service merges them) match each other, the second overwriting the first. Each is
    matched on its own record number, as its id is."""
    fhir_server.reset()
    writer = conditional("conditional-update")
    for pid_3, control, name in (
        (f"{SHARED_INS}~{SURVIVOR_IPP}^^^{CHU}^MR", "INS-FIRST-1", "PETIT^Jérôme^André^^M.^^L"),
        (f"{SHARED_INS}~{RETIRED_IPP}^^^{CHU}^MR", "INS-FIRST-2", "PETIT^Jérome^^^^^L"),
    ):
        bundle = writer.convert_message(registration(pid_3, control, name)).bundle
        [patient] = [
            e for e in bundle["entry"] if e.get("resource", {}).get("resourceType") == "Patient"
        ]
        assert patient["request"]["url"].endswith(f"|{pid_3.split('~')[1].split('^')[0]}")
        fhir_server.transact(bundle)
    assert fhir_server.count("Patient") == 2


def test_a_merge_written_conditional_create_says_it_is_not_applied() -> None:
    """POST with ifNoneExist leaves a stored record as it is: both records stay active and
    unlinked on a server that holds them; the conversion says so, once."""
    data = a40(f"{RETIRED_IPP}^^^{CHU}^MR")
    said = "Patient written conditional-create: a stored record keeps its links and status"
    _, warnings = convert_one(conditional("conditional-create"), data)
    assert len([w for w in warnings if w.startswith(said)]) == 1
    _, warnings = convert_one(conditional("conditional-update"), data)
    assert not [w for w in warnings if w.startswith(said)]
