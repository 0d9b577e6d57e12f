"""Appointment.status per SIU trigger (S12 to S22, S26) and what a later message about a
cancelled appointment does to it.

Each SIU bundle replaces the whole Appointment (PUT), so the status a message gives is the
status stored. Rules (scheduling.j2 AppointmentStatus): the event when it states the
appointment's status (S15, S16 cancelled, S17 entered-in-error, S26 noshow); else SCH-25
(IG SCH[Appointment], FillerStatusCodes[Appointment]), read in its first triplet, else
its alternate one (table 0278 often comes second, after the sender's own code); else
AIS-10; else booked. S18 to S22 notify a change to one service or resource: a cancelled
service is passed over unless every service and resource left is cancelled too (the
S20 of an appointment an S15 cancelled). Messages are built here, invented patient and
staff; every bundle is checked by the R4 validator, and a sequence is sent to a FHIR
server."""

from __future__ import annotations

from typing import Any

import pytest

from converter import Converter
from tests.mappings.test_siu import convert
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import segment
from tests.support.r4validator import R4Validator

CHU = "CHU-NANTES&1.2.250.1.999.1.2&ISO"
DOCTOR = f"DR-0042^MOREAU^Agathe^^^Dr^^^{CHU}^L"
NURSE = f"IDE-0311^PERRIN^Lucas^^^M^^^{CHU}^L"
ROOM = f"RADIO^SALLE-2^^{CHU}^^C"
PLACER = "DPI-RDV-9001^SIH-TEST^1.2.250.1.999.1.20^ISO"
FILLER = "RDV-9001^AGENDA-TEST^1.2.250.1.999.1.41^ISO"
#: SCH-25 (or AIx-12) with the sender's own code first, table 0278's second.
LOCAL_THEN_CANCELLED = "ANN^Annulé^L^Cancelled^Annulé^HL70278"
CANCELLED = "Cancelled^Annulé^HL70278"


def siu(
    event: str,
    filler_status: str,
    resources: list[str],
    *,
    control_id: str = "S26-1",
) -> bytes:
    """An SIU v2.5 about a radiology appointment of an invented patient, with a visit."""
    lines = [
        "MSH|^~\\&|AGENDA-TEST^1.2.250.1.999.1.41^ISO|CHU-NANTES^1.2.250.1.999.1.2^ISO|"
        f"PASSERELLE|GHT|20250303101500+0100||SIU^{event}^SIU_S12|{control_id}|P|2.5"
        "|||AL|NE|FRA|UNICODE UTF-8",
        segment(
            "SCH",
            {
                1: PLACER,
                2: FILLER,
                6: "PAT^Demande du patient^L",
                9: "30",
                10: "min^minutes^ISO+",
                11: "^^^20250310090000+0100^20250310093000+0100",
                25: filler_status,
            },
        ),
        segment("PID", {1: "1", 3: f"0099001234^^^{CHU}^MR", 5: "MARCHAND^Inès^^^Mme^^L"}),
        segment("PV1", {1: "1", 2: "O", 19: f"2025009001^^^{CHU}^VN"}),
        *resources,
    ]
    return ("\r".join(lines) + "\r").encode("utf-8")


def parts(
    service: str, doctor: str, nurse: str, room: str, *, nurse_action: str = "X"
) -> list[str]:
    """One resource group: a service, the room, the doctor and the nurse, each with its
    filler status (AIS-10, AIL-12, AIP-12); the nurse with its segment action code."""
    return [
        "RGS|1|X",
        segment("AIS", {1: "1", 2: "X", 3: "ECHO^Échographie abdominale^L", 10: service}),
        segment("AIL", {1: "1", 2: "X", 3: ROOM, 12: room}),
        segment("AIP", {1: "1", 2: "X", 3: DOCTOR, 4: "RAD^Radiologue^L", 12: doctor}),
        segment("AIP", {1: "2", 2: nurse_action, 3: NURSE, 4: "INF^Infirmier^L", 12: nurse}),
    ]


def only(bundle: dict[str, Any], rtype: str) -> dict[str, Any]:
    (found,) = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]
    return found


def participant_statuses(
    bundle: dict[str, Any], appointment: dict[str, Any], family: str
) -> list[str]:
    """The statuses of the Practitioner participants named ``family``."""
    names = {
        e["resource"]["id"]: e["resource"]["name"][0]["family"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Practitioner"
    }
    return [
        str(p["status"])
        for p in appointment["participant"]
        if names.get(p.get("actor", {}).get("reference", "/").split("/")[1]) == family
    ]


# --- the status each trigger gives without SCH-25 nor any filler status ----------------

TRIGGER_CASES = [
    ("S12", "booked", "notification of a new appointment booking"),
    ("S13", "booked", "rescheduling: the booking moved"),
    ("S14", "booked", "modification of a booked appointment"),
    ("S15", "cancelled", "cancellation of the appointment"),
    ("S16", "cancelled", "discontinuation: what remains will not take place"),
    ("S17", "entered-in-error", "deletion: entered in error"),
    ("S18", "booked", "a service or resource added to a booked appointment"),
    ("S19", "booked", "one modified"),
    ("S20", "booked", "one cancelled, the rest still takes place"),
    ("S21", "booked", "one discontinued"),
    ("S22", "booked", "one deleted"),
    ("S26", "noshow", "the patient did not show up"),
]


@pytest.mark.parametrize(
    ("event", "status", "why"), TRIGGER_CASES, ids=[c[0] for c in TRIGGER_CASES]
)
def test_the_status_each_trigger_implies(
    converter: Converter, r4validator: R4Validator, event: str, status: str, why: str
) -> None:
    bundle, _ = convert(converter, r4validator, siu(event, "", parts("", "", "", "")))
    assert only(bundle, "Appointment")["status"] == status, why


# --- SCH-25 Cancelled keeps the appointment cancelled -------------------------------------


@pytest.mark.parametrize("event", ["S14", "S18", "S20", "S22"])
def test_cancelled_in_the_alternate_triplet_of_sch_25(
    converter: Converter, r4validator: R4Validator, event: str
) -> None:
    """The sender's code first (unknown to the IG's map), table 0278's Cancelled second:
    the appointment is cancelled (it was booked, with a warning about SCH-25.1)."""
    bundle, warnings = convert(
        converter, r4validator, siu(event, LOCAL_THEN_CANCELLED, parts("", "", "", ""))
    )
    assert only(bundle, "Appointment")["status"] == "cancelled"
    assert only(bundle, "Encounter")["status"] == "cancelled"
    assert not any("FillerStatusCodes" in w for w in warnings), warnings


def test_a_filler_status_no_triplet_maps_still_warns(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle, warnings = convert(
        converter, r4validator, siu("S14", "ANN^Annulé^L^XANN^^99LOC", parts("", "", "", ""))
    )
    assert only(bundle, "Appointment")["status"] == "booked"
    assert any("FillerStatusCodes-Appointment at SCH-25.1" in w for w in warnings)
    assert not any("ANN" in w for w in warnings), "warnings never quote the value"


def test_a_participant_cancelled_in_the_alternate_triplet_is_declined(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle, warnings = convert(
        converter,
        r4validator,
        siu("S20", "Booked", parts("Booked", "Booked", LOCAL_THEN_CANCELLED, "Booked")),
    )
    appointment = only(bundle, "Appointment")
    assert appointment["status"] == "booked"
    assert participant_statuses(bundle, appointment, "PERRIN") == ["declined"]
    assert participant_statuses(bundle, appointment, "MOREAU") == ["accepted"]
    assert not any("FillerStatusCodes" in w for w in warnings), warnings


# --- S18-S22 about an appointment already cancelled ------------------------------------


@pytest.mark.parametrize(
    ("event", "nurse"),
    [("S20", "declined"), ("S21", "declined"), ("S22", None)],
    ids=["S20", "S21", "S22"],
)
def test_a_resource_event_of_a_cancelled_appointment_without_sch_25(
    converter: Converter, r4validator: R4Validator, event: str, nurse: str | None
) -> None:
    """Everything the S15 cancelled is still Cancelled, SCH-25 left empty, the nurse
    notified with D: nothing of the appointment takes place, it stays cancelled (it was
    written booked over the S15's cancelled)."""
    resources = parts(CANCELLED, CANCELLED, CANCELLED, CANCELLED, nurse_action="D")
    bundle, _ = convert(converter, r4validator, siu(event, "", resources))
    appointment = only(bundle, "Appointment")
    assert appointment["status"] == "cancelled"
    assert appointment["cancelationReason"]["coding"][0]["code"] == "PAT"
    assert only(bundle, "Encounter")["status"] == "cancelled"
    assert participant_statuses(bundle, appointment, "MOREAU") == ["declined"]
    # S22: the deleted resource is no participant any more; S20 / S21: it stays, declined.
    assert participant_statuses(bundle, appointment, "PERRIN") == ([nurse] if nurse else [])


@pytest.mark.parametrize(
    ("service", "doctor", "room", "why"),
    [
        (CANCELLED, "Booked", CANCELLED, "the doctor is still booked"),
        (CANCELLED, "", CANCELLED, "the doctor's status is not given: nothing says it ended"),
        ("", CANCELLED, CANCELLED, "the service's status is not given"),
        (CANCELLED, CANCELLED, "Booked", "the room is still booked"),
    ],
)
def test_one_part_still_booked_keeps_the_appointment_booked(
    converter: Converter,
    r4validator: R4Validator,
    service: str,
    doctor: str,
    room: str,
    why: str,
) -> None:
    """S20 cancels one service or resource of an appointment that goes on (HL7 v2.5 ch.
    10): a cancelled service alone does not cancel it while another part is booked."""
    resources = parts(service, doctor, CANCELLED, room, nurse_action="D")
    bundle, _ = convert(converter, r4validator, siu("S20", "", resources))
    assert only(bundle, "Appointment")["status"] == "booked", why


def test_only_the_deleted_resource_sent_does_not_cancel_the_appointment(
    converter: Converter, r4validator: R4Validator
) -> None:
    """A sender that sends only the resource its S20 cancels (AIP-2 D): no service left,
    nothing says the rest ended; the appointment stays booked."""
    resources = [
        "RGS|1|X",
        segment("AIP", {1: "1", 2: "D", 3: NURSE, 4: "INF^Infirmier^L", 12: CANCELLED}),
    ]
    bundle, _ = convert(converter, r4validator, siu("S20", "", resources))
    assert only(bundle, "Appointment")["status"] == "booked"


# --- on a FHIR server: the stored appointment after S12, S15, S20 ------------------------


def test_on_a_fhir_server_an_s20_after_the_s15_keeps_it_cancelled(
    converter: Converter, r4validator: R4Validator, fhir_server: FhirServer
) -> None:
    """S12 books, S15 cancels, then S20s cancel the nurse: one with SCH-25 Cancelled in
    its alternate triplet, one with SCH-25 empty and every part Cancelled. The stored
    Appointment stays cancelled. Limit (whole-resource PUT, no PATCH): a later S20
    without SCH-25 whose parts say Booked writes it booked again."""
    fhir_server.reset()
    sequence = [
        ("S12", "Booked", parts("Booked", "Booked", "Booked", "Booked"), "booked"),
        ("S15", CANCELLED, parts(CANCELLED, CANCELLED, CANCELLED, CANCELLED), "cancelled"),
        (
            "S20",
            LOCAL_THEN_CANCELLED,
            parts("", "", "", "", nurse_action="D"),
            "cancelled",
        ),
        (
            "S20",
            "",
            parts(CANCELLED, CANCELLED, CANCELLED, CANCELLED, nurse_action="D"),
            "cancelled",
        ),
        ("S20", "", parts("Booked", "Booked", "", "Booked", nurse_action="D"), "booked"),
    ]
    stored_statuses = []
    for n, (event, filler_status, resources, _) in enumerate(sequence):
        bundle, _ = convert(
            converter, r4validator, siu(event, filler_status, resources, control_id=f"S26-{n}")
        )
        fhir_server.transact(bundle)
        (entry,) = fhir_server.search("Appointment")["entry"]
        stored_statuses.append(entry["resource"]["status"])
    assert stored_statuses == [expected for *_, expected in sequence]
