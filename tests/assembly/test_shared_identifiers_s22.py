"""Resources whose identifiers several patients share are written by id in every request
mode, on the FHIR server.

A conditional write (``PUT Type?identifier=…`` or ``ifNoneExist``) matched the first
patient's resource and gave it to the next: twins' mother (PID-21, the same identifier on
both records) became one RelatedPerson whose ``patient`` was the second twin, and two
members of one health plan (IN1-2 with its coding system) one Coverage, both patients'
Accounts pointing at it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from converter import Converter, ConverterConfig
from converter.assembly.bundle import RequestMode
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import convert_one, lines, message, set_field

_SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
_MODES: list[RequestMode] = ["conditional-update", "conditional-create"]


def _twin(n: str) -> bytes:
    return message(
        [
            f"MSH|^~\\&|GAM|HOP-A|||20240315101522+0100||ADT^A04^ADT_A01|TWIN-{n}|P|2.5",
            "EVN|A04|20240315101522+0100",
            f"PID|1||BB-{n}^^^HOP-A&1.2.250.1.999.1.1&ISO^PI||MARTIN^Bebe{n}||20240301|M"
            "|||||||||||||MERE-778^^^HOP-A&1.2.250.1.999.1.1&ISO^PI|||Y|" + n,
        ]
    )


def _member(n: str) -> bytes:
    """The BAR sample's patient (MSH, PID, first IN1), another one for ``n`` = 2, both
    members of plan 12345 (IN1-2 with its coding system)."""
    kept = [
        line
        for line in lines((_SAMPLES / "BAR_P01_add-account.hl7").read_bytes())
        if line[:3] in ("MSH", "PID", "IN1")
    ][:3]
    data = set_field(message(kept), "IN1", 2, "12345^Plan^HL70072", 1)
    if n == "1":
        return data
    data = set_field(data, "PID", 3, "0099^^^CHU-NANTES&1.2.250.1.999.2.1&ISO^PI")
    data = set_field(data, "PID", 5, "AUTRE^Jean")
    data = set_field(data, "PID", 18, "CPT-2024-0099^^^CHU-NANTES&1.2.250.1.999.2.1&ISO^AN")
    return set_field(data, "MSH", 10, "MEMBER-2")


def _patient_of(resource: dict[str, object], field: str) -> str:
    reference = resource[field]
    assert isinstance(reference, dict)
    return str(reference["reference"]).split("/")[1]


def _stored_patients(
    server: FhirServer, mode: RequestMode, build: Callable[[str], bytes]
) -> set[str]:
    """The ids of the Patients stored after ``build("1")`` and ``build("2")``,
    converted in ``mode``, were sent to a fresh server."""
    server.reset()
    converter = Converter(ConverterConfig(default_timezone="Europe/Paris", request_mode=mode))
    for n in ("1", "2"):
        bundle, _ = convert_one(converter, build(n))
        server.transact(bundle)
    return {e["resource"]["id"] for e in server.search("Patient")["entry"]}


@pytest.mark.parametrize("mode", _MODES)
def test_twins_keep_one_mother_each(fhir_server: FhirServer, mode: RequestMode) -> None:
    patients = _stored_patients(fhir_server, mode, _twin)
    mothers = [e["resource"] for e in fhir_server.search("RelatedPerson")["entry"]]
    assert len(patients) == 2
    assert sorted(_patient_of(m, "patient") for m in mothers) == sorted(patients)


@pytest.mark.parametrize("mode", _MODES)
def test_members_of_one_plan_keep_their_own_coverage(
    fhir_server: FhirServer, mode: RequestMode
) -> None:
    patients = _stored_patients(fhir_server, mode, _member)
    coverages = [e["resource"] for e in fhir_server.search("Coverage")["entry"]]
    assert len(patients) == 2
    assert sorted(_patient_of(c, "beneficiary") for c in coverages) == sorted(patients)
    for entry in fhir_server.search("Account")["entry"]:
        account = entry["resource"]
        [listed] = [c["coverage"]["reference"].split("/")[1] for c in account["coverage"]]
        [coverage] = [c for c in coverages if c["id"] == listed]
        assert _patient_of(coverage, "beneficiary") == _patient_of(
            {"subject": account["subject"][0]}, "subject"
        )
