"""The patient's participation status in a cancelled SIU appointment.

R4 participationstatus is the participant's own answer (`declined`: the participant has
declined the appointment); the IG maps no status for the patient (PID[Appointment] gives
the actor only). The patient of a cancelled appointment is `declined` only when SCH-6 says
the patient called it off in the R4 code system appointment-cancellation-reason (`pat`,
`pat-…`), in its first or alternate triplet; otherwise the patient stays `accepted`, the
cancellation being Appointment.status. Booked appointments are unchanged. Invented patient
and staff (tests/mappings/test_siu.py builds the messages)."""

from __future__ import annotations

from typing import Any

import pytest

from converter import Converter
from tests.mappings.test_siu import LEROY, appointment, convert, message
from tests.support.hl7_edit import segment
from tests.support.r4validator import R4Validator

REASONS = "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason"


def patient_status(bundle: dict[str, Any]) -> str:
    (found,) = [
        p
        for p in appointment(bundle)["participant"]
        if p.get("actor", {}).get("reference", "").startswith("Patient/")
    ]
    return str(found["status"])


#: A cancellation the patient called off (R4 appointment-cancellation-reason, patient branch).
BY_THE_PATIENT = [
    f"pat-mv^Patient moved^{REASONS}",
    f"pat^Patient^{REASONS}",
    f"ANN-PAT^Annulé par le patient^L^pat-swl^Patient: Schedule^{REASONS}",
]

OTHERS = [
    # (event, SCH-6 event reason, why the patient stays accepted)
    ("S15", f"prov-dch^Provider: Discharged^{REASONS}", "the doctor called it off"),
    ("S15", f"PAT-X^Patient^{REASONS}", "not a code of that system (case-sensitive)"),
    ("S15", "PAT^Annulation à la demande du patient^L", "a local code: nobody can read it"),
    ("S15", None, "no reason: who cancelled is unknown"),
    ("S12", f"pat^Patient^{REASONS}", "booked: unchanged"),
    ("S26", f"pat^Patient^{REASONS}", "no-show: the patient had not declined"),
]


@pytest.mark.parametrize("reason", BY_THE_PATIENT)
@pytest.mark.parametrize(("event", "other", "why"), OTHERS, ids=[f"{c[0]}-{c[2]}" for c in OTHERS])
def test_the_patient_declines_only_a_cancellation_of_his_own(
    converter: Converter,
    r4validator: R4Validator,
    reason: str,
    event: str,
    other: str | None,
    why: str,
) -> None:
    """Each case beside a cancellation of the patient's own: only the latter declines."""
    own, _ = convert(converter, r4validator, message("S15", {6: reason}))
    bundle, _ = convert(converter, r4validator, message(event, {6: other}))
    assert (patient_status(own), patient_status(bundle)) == ("declined", "accepted"), why


def test_a_resource_event_that_ends_everything_with_a_patient_reason(
    converter: Converter, r4validator: R4Validator
) -> None:
    """S20 after which every service and resource is cancelled: the appointment is
    cancelled (scheduling.AppointmentStatus), and with a patient's reason the patient has
    declined; the doctor keeps the status of his own filler status."""
    resources = [
        "RGS|1|U",
        segment("AIS", {1: "1", 2: "U", 3: "CS-CARDIO^Consultation^L", 10: "Cancelled"}),
        segment("AIP", {1: "1", 2: "U", 3: LEROY, 4: "CARD^Cardiologue^L", 12: "Cancelled"}),
    ]
    sch = {6: f"pat-crs^Patient: Canceled via automated reminder system^{REASONS}", 25: None}
    bundle, _ = convert(converter, r4validator, message("S20", sch, resources))
    found = appointment(bundle)
    assert found["status"] == "cancelled"
    assert patient_status(bundle) == "declined"
    assert [p["status"] for p in found["participant"]] == ["declined", "declined"]
