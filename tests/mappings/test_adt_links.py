"""ADT^A24 link and ADT^A37 unlink patient information (HL7 v2.5 3.3.24, 3.3.37; root ADT_A24).

- A24: each of the two PIDs gives its Patient (the id every other message gives that
  record), and each Patient gets Patient.link → the other, type ``seealso``; neither is
  retired (no ``active: false``, no ``replaced-by``): "the affected patient data records
  should remain distinct".
- A37: both Patients written without link; on a real FHIR server an A24 then an A37
  leave no link (each entry replaces the whole stored Patient), in the default mode and in
  the conditional-update mode.
- Messages that cannot say which two records to link warn and link nothing.
The samples ADT_A24_link-patients and ADT_A37_unlink-patients pin their whole bundles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from converter.assembly.bundle import RequestMode
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import convert_one, lines, message, resources, set_field
from tests.support.r4validator import R4Validator

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
LYON_IPP = "0012353410"
VILLEFRANCHE_IPP = "V00478211"
LYON = "CHU-LYON&1.2.250.1.999.1.1&ISO"


def sample(name: str) -> bytes:
    return (SAMPLES / f"{name}.hl7").read_bytes()


def a24() -> bytes:
    return sample("ADT_A24_link-patients")


def a37() -> bytes:
    return sample("ADT_A37_unlink-patients")


def ref(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def by_ipp(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["identifier"][0]["value"]: p for p in resources(bundle, "Patient")}


def a28_of_each_record(converter: Converter) -> dict[str, str]:
    """The Patient id an A28 (add person information) gives each of the two records."""
    ids = {}
    msh, evn, *rest = lines(a24())
    for pid in (line for line in rest if line.startswith("PID|")):
        data = message([msh, evn, pid])
        data = set_field(data, "MSH", 9, "ADT^A28^ADT_A05")
        data = set_field(data, "EVN", 1, "A28")
        bundle, _ = convert_one(converter, data)
        [patient] = resources(bundle, "Patient")
        ids[patient["identifier"][0]["value"]] = patient["id"]
    return ids


def test_a24_links_the_two_patient_records_with_seealso(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle, warnings = convert_one(converter, a24())

    assert warnings == []
    assert r4validator.validate(bundle) == []
    patients = by_ipp(bundle)
    assert set(patients) == {LYON_IPP, VILLEFRANCHE_IPP}
    lyon, villefranche = patients[LYON_IPP], patients[VILLEFRANCHE_IPP]
    assert lyon["link"] == [{"other": {"reference": ref(villefranche)}, "type": "seealso"}]
    assert villefranche["link"] == [{"other": {"reference": ref(lyon)}, "type": "seealso"}]
    # Linked, not merged: both stay in use, each with its own demographics.
    assert "active" not in lyon and "active" not in villefranche
    assert lyon["name"][0]["given"] == ["Hélène", "Brigitte"]
    assert villefranche["name"][0]["given"] == ["Hélène"]
    # The linked records are the ones other messages wrote (same ids).
    assert {k: p["id"] for k, p in patients.items()} == a28_of_each_record(converter)
    # PV1|1|N names no visit: no Encounter.
    assert resources(bundle, "Encounter") == []
    [provenance] = resources(bundle, "Provenance")
    targets = {t["reference"] for t in provenance["target"]}
    assert {ref(lyon), ref(villefranche)} <= targets


def test_a37_writes_both_patients_without_link(
    converter: Converter, r4validator: R4Validator
) -> None:
    linked, _ = convert_one(converter, a24())
    bundle, warnings = convert_one(converter, a37())

    assert warnings == []
    assert r4validator.validate(bundle) == []
    patients = by_ipp(bundle)
    assert set(patients) == {LYON_IPP, VILLEFRANCHE_IPP}
    assert {k: p["id"] for k, p in patients.items()} == {
        k: p["id"] for k, p in by_ipp(linked).items()
    }
    assert all("link" not in p and "active" not in p for p in patients.values())
    assert bundle["entry"][0]["resource"]["eventCoding"]["code"] == "A37"


def test_a24_with_visits_writes_each_patients_encounter(converter: Converter) -> None:
    data = set_field(a24(), "PV1", 2, "O", occurrence=0)
    data = set_field(data, "PV1", 19, f"2025052001^^^{LYON}^VN", occurrence=1)
    data = set_field(
        data, "PV1", 19, "V2025052077^^^CH-VILLEFRANCHE&1.2.250.1.999.2.1&ISO^VN", occurrence=2
    )
    data = set_field(data, "PID", 18, f"2025052001^^^{LYON}^AN", occurrence=1)

    bundle, warnings = convert_one(converter, data)

    assert warnings == []
    patients = by_ipp(bundle)
    encounters = {e["identifier"][0]["value"]: e for e in resources(bundle, "Encounter")}
    assert encounters["2025052001"]["subject"] == {"reference": ref(patients[LYON_IPP])}
    assert encounters["V2025052077"]["subject"] == {"reference": ref(patients[VILLEFRANCHE_IPP])}
    [account] = resources(bundle, "Account")
    assert account["subject"] == [{"reference": ref(patients[LYON_IPP])}]
    assert encounters["2025052001"]["account"] == [{"reference": ref(account)}]


def test_an_a24_naming_one_record_twice_links_nothing(converter: Converter) -> None:
    same = set_field(a24(), "PID", 3, f"{LYON_IPP}^^^{LYON}^PI", occurrence=2)
    bundle, warnings = convert_one(converter, same)
    [patient] = resources(bundle, "Patient")
    assert "link" not in patient
    assert any("both PID segments identify one Patient" in w for w in warnings), warnings


def test_an_a24_with_one_pid_or_an_unidentified_pid_links_nothing(converter: Converter) -> None:
    msh, evn, pid, pv1, *_ = lines(a24())
    bundle, warnings = convert_one(converter, message([msh, evn, pid, pv1]))
    assert [p.get("link") for p in resources(bundle, "Patient")] == [None]
    assert any("the message has 1 PID segments" in w for w in warnings), warnings

    anonymous = set_field(a24(), "PID", 3, "", occurrence=2)
    bundle, warnings = convert_one(converter, anonymous)
    anonymous_patients = resources(bundle, "Patient")
    assert anonymous_patients and all("link" not in p for p in anonymous_patients)
    assert any("names no patient record" in w for w in warnings), warnings


@pytest.mark.parametrize("numberless", ["^^^CHU-LYON&1.2.250.1.999.1.1&ISO^MR", " ^^^^PI"])
def test_an_a24_whose_pid_has_an_identifier_without_number_links_nothing(
    converter: Converter, numberless: str
) -> None:
    """A PID-3 naming only an authority or a type (or a blank number) gives a Patient of
    this message only (Patient.j2): the A24 linked the other, real record to it."""
    data = set_field(a24(), "PID", 3, numberless, occurrence=2)
    bundle, warnings = convert_one(converter, data)
    assert all("link" not in p for p in resources(bundle, "Patient"))
    assert any("names no patient record" in w for w in warnings), warnings


def deliver(converter: Converter, server: FhirServer, data: bytes) -> dict[str, Any]:
    bundle = converter.convert_message(data).bundle
    server.transact(bundle)
    return bundle


def stored_links(server: FhirServer) -> dict[str, list[tuple[str, str]]]:
    """Each stored Patient's IPP → its links as (type, IPP of the other Patient)."""
    stored = [e["resource"] for e in server.search("Patient").get("entry", [])]
    ipp = {p["id"]: p["identifier"][0]["value"] for p in stored}
    return {
        p["identifier"][0]["value"]: [
            (x["type"], ipp[x["other"]["reference"].split("/")[-1]]) for x in p.get("link", [])
        ]
        for p in stored
    }


@pytest.mark.parametrize("mode", ["put", "conditional-update"])
def test_on_a_fhir_server_a24_then_a37_leaves_no_link(
    fhir_server: FhirServer, mode: RequestMode
) -> None:
    converter = Converter(ConverterConfig(default_timezone="Europe/Paris", request_mode=mode))
    fhir_server.reset()

    deliver(converter, fhir_server, a24())
    assert stored_links(fhir_server) == {
        LYON_IPP: [("seealso", VILLEFRANCHE_IPP)],
        VILLEFRANCHE_IPP: [("seealso", LYON_IPP)],
    }

    deliver(converter, fhir_server, a37())
    # Each PUT replaced the whole Patient: no link is left, and no Patient was added.
    assert stored_links(fhir_server) == {LYON_IPP: [], VILLEFRANCHE_IPP: []}
    assert fhir_server.count("Patient") == 2
