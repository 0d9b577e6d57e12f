"""ADT^A29 (delete person information) and ADT^A23 (delete a patient visit): root ADT_A29.

HL7 v2.5 section 3.3.29: an A29 "undoes" an A28, the person's demographic information is
deleted; section 3.3.23: an A23 deletes visit-specific information (a visit entered in
error is cancelled with A11/A12/A13 instead). The bundle's entry for the deleted resource
is ``DELETE Type/id`` (no resource), with the id every other message gives it; shared
Practitioner, Organization and Location resources are never deleted (Microsoft
FHIR-Converter's output deletes every resource it would have written, those included).
The golden sample ``ADT_A29_delete-person`` (the person of ``ADT_A28_add-person``) pins
the whole A29 bundle.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from converter import Converter, ConverterConfig, MappingError, json_dumps
from listeners.delivery import FhirServerSink
from listeners.errors import RejectedDeliveryError
from tests.conftest import SHARED_DIR
from tests.listeners.delivery.helpers import destination, make_envelope
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import convert_one, lines, message, set_field
from tests.support.r4validator import R4Validator

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
A28 = SAMPLES / "ADT_A28_add-person.hl7"
A29 = SAMPLES / "ADT_A29_delete-person.hl7"
ROOT = SAMPLES.parents[1] / "mappings" / "hl7v2" / "messages" / "ADT_A29.j2"
CORPUS_A29 = sorted(
    (SHARED_DIR / "corpus" / "hl7v2" / "ms-fhir-converter" / "input").glob("ADT-A29-*.hl7")
)
CHU = "CHU-LYON&1.2.250.1.999.1.1&ISO"
IPP = "0012391234"
VISIT = "CHU2024022101"
PV1 = (
    "PV1|1|I|CARDIO^204^1^CHU-LYON&1.2.250.1.999.1.1&ISO||||"
    "10101234567^MARCHAND^Luc^^^Dr^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS"
    f"||||||||||||{VISIT}^^^{CHU}^VN|||||||||||||||||||||||||20240221080000+0100"
)


def visit_message(event: str, structure: str, control_id: str, pv1: str = PV1) -> bytes:
    """The A29 sample's person with a stay: an A01 (admission) or an A23 (delete visit)."""
    data = set_field(A29.read_bytes(), "MSH", 9, f"ADT^{event}^{structure}")
    data = set_field(data, "MSH", 10, control_id)
    data = set_field(data, "EVN", 1, event)
    return message([pv1 if line.startswith("PV1|") else line for line in lines(data)])


def written(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [
        e["resource"]
        for e in bundle["entry"]
        if "resource" in e and e["resource"]["resourceType"] == rtype
    ]


def deletions(bundle: dict[str, Any]) -> list[str]:
    return [e["request"]["url"] for e in bundle["entry"] if e["request"]["method"] == "DELETE"]


def test_a29_deletes_the_patient_an_a28_wrote_and_nothing_else(
    converter: Converter, r4validator: R4Validator
) -> None:
    added, _ = convert_one(converter, A28.read_bytes())
    [patient] = written(added, "Patient")

    bundle, warnings = convert_one(converter, A29.read_bytes())
    assert warnings == []
    assert r4validator.validate(bundle) == []
    assert deletions(bundle) == [f"Patient/{patient['id']}"]
    [entry] = [e for e in bundle["entry"] if e["request"]["method"] == "DELETE"]
    assert entry == {"request": {"method": "DELETE", "url": f"Patient/{patient['id']}"}}
    assert written(bundle, "Patient") == []
    # The message's own records are written; the Provenance targets what is written, not
    # the deleted Patient.
    [header] = written(bundle, "MessageHeader")
    assert header["eventCoding"]["code"] == "A29"
    [provenance] = written(bundle, "Provenance")
    targets = {t["reference"] for t in provenance["target"]}
    assert f"MessageHeader/{header['id']}" in targets
    assert not any(t.startswith("Patient/") for t in targets)
    # No visit is written or deleted by an A29 (its PV1 is the pseudo "N" one here).
    assert written(bundle, "Encounter") == []
    # No written resource refers to the deleted Patient.
    kept = [e["resource"] for e in bundle["entry"] if "resource" in e]
    assert len(kept) == len(bundle["entry"]) - 1
    assert patient["id"] not in json_dumps(kept)


def test_a29_in_a_conditional_mode_deletes_by_identifier() -> None:
    for mode in ("conditional-create", "conditional-update"):
        converter = Converter(ConverterConfig(default_timezone="Europe/Paris", request_mode=mode))
        bundle, _ = convert_one(converter, A29.read_bytes())
        assert deletions(bundle) == [f"Patient?identifier=urn:oid:1.2.250.1.999.1.1|{IPP}"]
    converter = Converter(
        ConverterConfig(
            default_timezone="Europe/Paris", request_modes=(("Patient", "conditional-update"),)
        )
    )
    bundle, _ = convert_one(converter, A29.read_bytes())
    assert deletions(bundle) == [f"Patient?identifier=urn:oid:1.2.250.1.999.1.1|{IPP}"]
    # The other types stay PUT by id.
    assert {e["request"]["method"] for e in bundle["entry"]} == {"PUT", "DELETE"}


def test_a29_without_a_patient_identifier_is_refused_naming_pid3(converter: Converter) -> None:
    data = set_field(A29.read_bytes(), "PID", 3, "")
    with pytest.raises(MappingError) as caught:
        converter.convert(data)
    assert caught.value.location == "PID-3"
    assert caught.value.hl7_error_code == "101"
    root = ROOT.read_text(encoding="utf-8").splitlines()
    [line] = [n for n, text in enumerate(root, 1) if "the person to delete" in text]
    assert caught.value.template == f"hl7v2/messages/ADT_A29.j2:{line}"


def test_a23_deletes_the_encounter_an_a01_wrote_and_keeps_the_patient(
    converter: Converter, r4validator: R4Validator
) -> None:
    admitted, _ = convert_one(converter, visit_message("A01", "ADT_A01", "A23-TEST-A01"))
    [encounter] = written(admitted, "Encounter")
    [patient] = written(admitted, "Patient")

    bundle, _ = convert_one(converter, visit_message("A23", "ADT_A21", "A23-TEST-A23"))
    assert r4validator.validate(bundle) == []
    assert deletions(bundle) == [f"Encounter/{encounter['id']}"]
    # The Patient is written as in any ADT message (same id), not deleted.
    assert [p["id"] for p in written(bundle, "Patient")] == [patient["id"]]
    # What the visit named (attending doctor, location, organization) is shared: written,
    # never deleted.
    assert written(bundle, "Practitioner") and written(bundle, "Location")
    [provenance] = written(bundle, "Provenance")
    targets = {t["reference"] for t in provenance["target"]}
    assert f"Patient/{patient['id']}" in targets
    assert f"Encounter/{encounter['id']}" not in targets


def test_a23_finds_a_visit_without_number_by_the_patient_and_admit_time(
    converter: Converter,
) -> None:
    pv1 = PV1.replace(f"{VISIT}^^^{CHU}^VN", "")
    admitted, _ = convert_one(converter, visit_message("A01", "ADT_A01", "A23-T-A01", pv1))
    [encounter] = written(admitted, "Encounter")
    bundle, _ = convert_one(converter, visit_message("A23", "ADT_A21", "A23-T-A23", pv1))
    assert deletions(bundle) == [f"Encounter/{encounter['id']}"]


def test_a23_without_a_visit_to_name_is_refused_naming_pv1_19(converter: Converter) -> None:
    with pytest.raises(MappingError) as caught:
        converter.convert(visit_message("A23", "ADT_A21", "A23-T-NONE", "PV1|1|I"))
    assert caught.value.location == "PV1-19"
    assert caught.value.hl7_error_code == "101"
    assert "visit to delete" in caught.value.reason


@pytest.mark.parametrize("path", CORPUS_A29, ids=lambda p: p.name)
def test_corpus_a29_messages_delete_only_their_patient(
    converter: Converter, r4validator: R4Validator, path: Path
) -> None:
    bundle, _ = convert_one(converter, path.read_bytes())
    assert r4validator.validate(bundle) == []
    [deleted] = deletions(bundle)
    assert deleted.startswith("Patient/")
    # Unlike the peer's output: the shared resources it names are written, not deleted.
    assert written(bundle, "Practitioner") and written(bundle, "Organization")
    assert written(bundle, "Encounter") == []


def test_the_corpus_has_a29_messages() -> None:
    if not SHARED_DIR.is_dir():
        pytest.skip("the shared corpus is absent")
    assert len(CORPUS_A29) == 2


# --- on a FHIR server ---------------------------------------------------------------------


def post(server: FhirServer, converter: Converter, data: bytes) -> httpx.Response:
    bundle = converter.convert_message(data).bundle
    return httpx.post(
        server.base_url,
        content=json_dumps(bundle),
        headers={"Content-Type": "application/fhir+json"},
        timeout=30,
    )


def status_of(server: FhirServer, url: str) -> int:
    token = server.ready["adminToken"]
    response = httpx.get(
        f"{server.base_url}/{url}", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    return response.status_code


def test_on_a_fhir_server_a28_then_a29_leaves_no_patient(
    converter: Converter, fhir_server: FhirServer
) -> None:
    fhir_server.reset()
    added, _ = convert_one(converter, A28.read_bytes())
    [patient] = written(added, "Patient")
    assert post(fhir_server, converter, A28.read_bytes()).status_code == 200
    assert status_of(fhir_server, f"Patient/{patient['id']}") == 200

    assert post(fhir_server, converter, A29.read_bytes()).status_code == 200
    assert status_of(fhir_server, f"Patient/{patient['id']}") in (404, 410)
    assert fhir_server.count("Patient") == 0
    # The shared resources and the messages' own records stay.
    assert fhir_server.count("Organization") > 0
    assert fhir_server.count("Provenance") == 2


def test_on_a_fhir_server_a01_then_a23_removes_the_visit_only(
    converter: Converter, fhir_server: FhirServer
) -> None:
    fhir_server.reset()
    a01 = visit_message("A01", "ADT_A01", "A23-S-A01")
    admitted, _ = convert_one(converter, a01)
    [encounter] = written(admitted, "Encounter")
    [patient] = written(admitted, "Patient")
    assert post(fhir_server, converter, a01).status_code == 200
    assert status_of(fhir_server, f"Encounter/{encounter['id']}") == 200

    response = post(fhir_server, converter, visit_message("A23", "ADT_A21", "A23-S-A23"))
    assert response.status_code == 200, response.text[:500]
    assert status_of(fhir_server, f"Encounter/{encounter['id']}") in (404, 410)
    assert status_of(fhir_server, f"Patient/{patient['id']}") == 200
    assert fhir_server.count("Encounter") == 0


def test_a_refused_deletion_is_a_rejection_naming_the_status(
    converter: Converter, fhir_server: FhirServer
) -> None:
    # A server keeping references whole (HAPI) answers 409 when an Encounter still names
    # the Patient: the delivery is rejected (dead letter), with the status as reason and
    # the server's OperationOutcome kept apart (it may quote patient data).
    fhir_server.reset()
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "conflict",
                "diagnostics": "Unable to delete Patient: Encounter/x refers to it",
            }
        ],
    }
    fhir_server.fail(409, outcome=outcome)
    bundle = converter.convert_message(A29.read_bytes()).bundle

    async def deliver() -> None:
        async with FhirServerSink(destination(fhir_server)) as sink:
            await sink.deliver(bundle, make_envelope())

    with pytest.raises(RejectedDeliveryError) as caught:
        asyncio.run(deliver())
    assert caught.value.status == 409
    assert str(caught.value) == "destination test: HTTP 409 Conflict"
    assert caught.value.outcome == outcome
