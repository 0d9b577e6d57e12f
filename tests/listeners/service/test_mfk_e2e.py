"""An original-mode MFN is answered with an MFK by the running service (real MLLP client)."""

from __future__ import annotations

from pathlib import Path

from listeners.mllp import AckInfo
from tests.listeners.service.support import bundle_posts, make_config, running, sample
from tests.support.fhirserver import FhirServer

RPPS = "urn:oid:1.2.250.1.71.4.2.1"
M02_CONTROL_ID = "CHU-MFN-20240315-000201"
#: MFE-4 of the sample's four records.
M02_KEYS = [
    "LEROYP^LEROY Paul^L",
    "FAUREE^FAURE Étienne^L",
    "ROUXC^ROUX Claire^L",
    "INTERIMJ^JOLY Marc^L",
]


def original_mode(message: bytes) -> bytes:
    """The sample with MSH-15 and MSH-16 emptied (they ask for enhanced mode: AL, NE)."""
    assert b"|AL|NE|FRA|" in message
    return message.replace(b"|AL|NE|FRA|", b"|||FRA|", 1)


def rows(ack: AckInfo, segment: str) -> list[list[str]]:
    return [s.split("|") for s in ack.segments if s.startswith(segment + "|")]


def test_mfn_m02_in_original_mode_gets_an_mfk_once_stored(tmp_path: Path, fhir: FhirServer) -> None:
    message = original_mode(sample("MFN_M02_staff.hl7"))
    with running(make_config(tmp_path, fhir_url=fhir.base_url)) as service:
        ack = service.send([message])[0]
        service.drained()
        metrics = service.metrics()
    assert [s[:3] for s in ack.segments] == ["MSH", "MSA", "MFI", "MFA", "MFA", "MFA", "MFA"]
    msh = ack.segments[0].split("|")
    assert msh[8] == "MFK^M02^MFK_M01"
    assert msh[4:6] == ["RH-ANNUAIRE^1.2.250.1.999.1.20^ISO", "CHU-LYON^1.2.250.1.999.1.1^ISO"]
    assert (ack.code, ack.acknowledged_id) == ("AA", M02_CONTROL_ID)
    assert ack.segments[2] == "MFI|PRA^Practitioner master file^HL70175||UPD|||AL"
    mfas = rows(ack, "MFA")
    assert [m[1] for m in mfas] == ["MAD", "MUP", "MDC", "MDL"]
    assert [m[2] for m in mfas] == [f"{M02_CONTROL_ID}-{n}" for n in range(1, 5)]
    assert all(m[3] == msh[6] and m[4] == "S" and m[6] == "CE" for m in mfas)
    assert [m[5] for m in mfas] == M02_KEYS
    assert metrics.value("passerelle_messages_acknowledged_total", code="AA") == 1
    # "S" meant stored: the records then reached the FHIR server.
    assert [p["status"] for p in bundle_posts(fhir)][-1] == 200
    leroy = fhir.search_by_identifier("Practitioner", RPPS, "10101234563")
    assert len(leroy) == 1 and leroy[0]["active"] is True


def test_enhanced_mode_mfn_keeps_the_accept_ack(tmp_path: Path, fhir: FhirServer) -> None:
    message = sample("MFN_M02_staff.hl7")  # MSH-15 AL, MSH-16 NE
    with running(make_config(tmp_path, fhir_url=fhir.base_url)) as service:
        ack = service.send([message])[0]
    assert ack.code == "CA" and ack.acknowledged_id == M02_CONTROL_ID
    assert ack.segments[0].split("|")[8] == "ACK^M02^ACK"
    assert [s[:3] for s in ack.segments] == ["MSH", "MSA"]


def test_delivery_mode_refused_bundle_makes_every_record_unsuccessful(
    tmp_path: Path, fhir: FhirServer
) -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "business-rule", "diagnostics": "staff frozen"}],
    }
    fhir.fail(422, outcome=outcome)
    config = make_config(
        tmp_path,
        {"mllp": {"ack_after": "delivery", "delivery_ack_timeout": 20}},
        fhir_url=fhir.base_url,
    )
    with running(config) as service:
        ack = service.send([original_mode(sample("MFN_M02_staff.hl7"))])[0]
    assert ack.code == "AE" and ack.acknowledged_id == M02_CONTROL_ID
    assert any("staff frozen" in text for text in ack.texts), ack.texts
    assert [s[:3] for s in ack.segments] == ["MSH", "MSA", "ERR", "MFI"] + ["MFA"] * 4
    mfas = rows(ack, "MFA")
    # One transaction: nothing was applied, every record is U, without a completion time.
    assert [(m[3], m[4]) for m in mfas] == [("", "U")] * 4
    assert [m[5] for m in mfas] == M02_KEYS


def test_delivery_mode_m05_locations_acknowledged_once_delivered(
    tmp_path: Path, fhir: FhirServer
) -> None:
    config = make_config(tmp_path, {"mllp": {"ack_after": "delivery"}}, fhir_url=fhir.base_url)
    with running(config) as service:
        ack = service.send([original_mode(sample("MFN_M05_locations.hl7"))])[0]
        # Checked right after the MFK: the server already has the locations.
        assert fhir.count("Location") == 5
    assert ack.code == "AA"
    assert ack.segments[0].split("|")[8] == "MFK^M05^MFK_M01"
    mfas = rows(ack, "MFA")
    assert [(m[1], m[4], m[6]) for m in mfas] == [
        ("MAD", "S", "PL"),
        ("MAD", "S", "PL"),
        ("MAD", "S", "PL"),
        ("MUP", "S", "PL"),
        ("MDC", "S", "PL"),
    ]
    assert mfas[3][5] == "CARDIO^412^1^CHU-LYON&1.2.250.1.999.1.1&ISO"


def test_unsupported_mfn_event_gets_an_mfk_reject(tmp_path: Path, fhir: FhirServer) -> None:
    message = original_mode(sample("MFN_M02_staff.hl7")).replace(
        b"|MFN^M02^MFN_M02|", b"|MFN^M08^MFN_M08|", 1
    )
    with running(make_config(tmp_path, fhir_url=fhir.base_url)) as service:
        ack = service.send([message])[0]
        assert service.depth() == 0  # nothing stored
    assert ack.code == "AR"
    assert ack.error_codes and ack.error_codes[0] in ("200", "201")
    assert ack.segments[0].split("|")[8] == "MFK^M08^MFK_M01"
    assert [m[4] for m in rows(ack, "MFA")] == ["U"] * 4


def test_mfn_without_mfi_gets_a_plain_ack(tmp_path: Path, fhir: FhirServer) -> None:
    message = original_mode(sample("MFN_M02_staff.hl7"))
    lines = [line for line in message.split(b"\r") if not line.startswith(b"MFI|")]
    with running(make_config(tmp_path, fhir_url=fhir.base_url)) as service:
        ack = service.send([b"\r".join(lines)])[0]
    assert ack.acknowledged_id == M02_CONTROL_ID
    assert ack.segments[0].split("|")[8] == "ACK^M02^ACK"
    assert not rows(ack, "MFI") and not rows(ack, "MFA")
