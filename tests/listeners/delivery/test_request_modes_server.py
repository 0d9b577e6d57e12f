"""Request modes per resource type, against the real test FHIR server.

A data-engineer probe found that a result message whose PID holds only the identifier,
name, birth date and sex erases the address the admission feed stored: each bundle
``PUT``s the whole Patient. With ``request_modes``, the admission feed writes its Patient
``conditional-update`` (matched on its identifier) and the result feed writes it
``conditional-create`` (left alone when the server has it). The first test shows the
problem with the default mode, so the second can fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from converter.assembly.bundle import RequestMode
from listeners.delivery import FhirServerSink
from tests.listeners.delivery.helpers import destination, make_envelope
from tests.support.fhirserver import FhirServer

pytestmark = pytest.mark.anyio

SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "hl7v2"
PATIENT_SYSTEM = "urn:oid:1.2.250.1.999.1.1"
MRN = "0012345678"
#: The lab feed's PID for the admission sample's patient: identifier, name, birth, sex.
SHORT_PID = f"PID|1||{MRN}^^^CHU-LYON&1.2.250.1.999.1.1&ISO^MR||DUPONT^Marie||19850312|F"


def _lab_result() -> bytes:
    segments = (SAMPLES / "ORU_R01_lab-results.hl7").read_bytes().decode("utf-8")
    lines = [line for line in segments.replace("\r\n", "\r").split("\r") if line]
    lines = [SHORT_PID if line.startswith("PID|") else line for line in lines]
    return ("\r".join(lines) + "\r").encode("utf-8")


def _bundle(data: bytes, modes: tuple[tuple[str, RequestMode], ...]) -> dict[str, Any]:
    config = ConverterConfig(default_timezone="Europe/Paris", request_modes=modes)
    bundle: dict[str, Any] = Converter(config).convert(data)[0].bundle
    return bundle


async def _deliver(server: FhirServer, *bundles: dict[str, Any]) -> None:
    async with FhirServerSink(destination(server)) as sink:
        for bundle in bundles:
            await sink.deliver(bundle, make_envelope())


async def test_in_put_mode_a_short_pid_erases_the_admission_address(
    batch_server: FhirServer,
) -> None:
    admission = _bundle((SAMPLES / "ADT_A01_admission-full.hl7").read_bytes(), ())
    await _deliver(batch_server, admission, _bundle(_lab_result(), ()))
    (patient,) = batch_server.search_by_identifier("Patient", PATIENT_SYSTEM, MRN)
    assert "address" not in patient  # the problem the modes below solve


async def test_a_result_feed_writing_patient_create_only_keeps_the_admission_data(
    batch_server: FhirServer,
) -> None:
    admission = _bundle(
        (SAMPLES / "ADT_A01_admission-full.hl7").read_bytes(),
        (("Patient", "conditional-update"),),
    )
    result = _bundle(_lab_result(), (("Patient", "conditional-create"),))
    patient_entry = next(e for e in result["entry"] if e["resource"]["resourceType"] == "Patient")
    assert patient_entry["request"]["method"] == "POST"
    assert patient_entry["request"]["ifNoneExist"] == f"identifier={PATIENT_SYSTEM}|{MRN}"
    assert all(  # everything else keeps its stable id
        e["request"]["method"] == "PUT" and "?" not in e["request"]["url"]
        for e in result["entry"]
        if e["resource"]["resourceType"] != "Patient"
    )
    await _deliver(batch_server, admission, result)
    (patient,) = batch_server.search_by_identifier("Patient", PATIENT_SYSTEM, MRN)
    assert patient["address"][0]["city"]  # the admission's address is still there
    assert len(patient["name"]) == 2  # and its two names (the lab sent one)
    # The results point at that Patient (the urn:uuid references were resolved to it).
    observations = [e["resource"] for e in batch_server.search("Observation")["entry"]]
    assert observations
    assert {o["subject"]["reference"] for o in observations} == {f"Patient/{patient['id']}"}
    # Sent again, the result creates nothing new.
    await _deliver(batch_server, result)
    assert batch_server.count("Patient") == 1
