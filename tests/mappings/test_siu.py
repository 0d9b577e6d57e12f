"""Scheduling notifications (SIU^S12 to S22, S26; IG message map SIU_S12): the Appointment's
status per event and filler status, its identity across the notifications about one
appointment, one participant per resource read from its own RESOURCES group, the
segment action codes (table 0206) of S14 and S18 to S22, the Provenance of SCH-20 (IG
SCH[Provenance]), and the start and end from TQ1, SCH-11 or the resources, with
durations. Every bundle is also checked by the independent R4 validator (Appointment
invariants app-1 to app-4), and one sequence is posted to a real FHIR server."""

from __future__ import annotations

from typing import Any

import pytest

from converter import (
    Converter,
    ConverterConfig,
    MappingError,
    UnsupportedMessageError,
)
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import segment
from tests.support.r4validator import R4Validator

CHU = "CHU-LYON&1.2.250.1.999.1.1&ISO"
RPPS = "^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS"
LEROY = f"10101234563^LEROY^Paul^^^Dr{RPPS}"
FAURE = f"10103456785^FAURE^Étienne^^^Pr{RPPS}"
NURSE = f"IDE-0117^ROUSSEL^Claire^^^Mme^^^{CHU}^L"
MIN = "min^minutes^ISO+"
START = "20240618143000+0200"
END = "20240618151500+0200"
#: Synthetic appointment ids (invented), the filler's with its namespace and OID.
PLACER = "DPI-RDV-0417^SIH-ORCHIDEE^1.2.250.1.999.1.10^ISO"
FILLER = "RDV-000417^AGENDA-TILLEUL^1.2.250.1.999.1.40^ISO"


def message(
    event: str = "S12",
    sch: dict[int, str] | None = None,
    resources: list[str] | None = None,
    *,
    tq1: dict[int, str] | None = None,
    patient: bool = True,
    pv1: dict[int, str] | None = None,
    version: str = "2.5",
    control_id: str = "SIU-1",
    facility: str = "CHU-LYON^1.2.250.1.999.1.1^ISO",
) -> bytes:
    """An SIU (v2.5 unless told) about a cardiology appointment of an invented patient."""
    fields = {1: PLACER, 2: FILLER, 6: "NEW^Nouveau^L", 11: f"^^^{START}^{END}", 25: "Booked"}
    fields.update(sch or {})
    structure = "" if version == "2.3" else "^SIU_S12"
    lines = [
        f"MSH|^~\\&|AGENDA-TILLEUL^1.2.250.1.999.1.40^ISO|{facility}|PASSERELLE|GHT|"
        f"20240610094512+0200||SIU^{event}{structure}|{control_id}|P|{version}"
        "|||AL|NE|FRA|UNICODE UTF-8",
        segment("SCH", {k: v for k, v in fields.items() if v is not None}),
    ]
    if tq1 is not None:
        lines.append(segment("TQ1", tq1))
    lines.append("NTE|1||Apporter l'ordonnance en cours.")
    if patient:
        lines.append(
            segment(
                "PID",
                {1: "1", 3: f"0012380417^^^{CHU}^MR", 5: "LEFEBVRE^Hélène^^^Mme^^L", 8: "F"},
            )
        )
        if pv1 is not None:
            lines.append(segment("PV1", pv1))
    lines += (
        resources
        if resources is not None
        else [
            "RGS|1|A",
            segment("AIS", {1: "1", 2: "A", 3: "CS-CARDIO^Consultation de cardiologie^L"}),
            segment("AIP", {1: "1", 2: "A", 3: LEROY, 4: "CARD^Cardiologue^L"}),
        ]
    )
    return ("\r".join(lines) + "\r").encode("utf-8")


@pytest.fixture(scope="module")
def lenient() -> Converter:
    return Converter(ConverterConfig(default_timezone="Europe/Paris", strict_values=False))


def resources_of(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def appointment(bundle: dict[str, Any]) -> dict[str, Any]:
    (found,) = resources_of(bundle, "Appointment")
    return found


def convert(
    converter: Converter, r4validator: R4Validator, data: bytes
) -> tuple[dict[str, Any], tuple[str, ...]]:
    conversion = converter.convert_message(data)
    assert conversion.root_template == "hl7v2/messages/SIU.j2"
    assert r4validator.validate(conversion.bundle) == []
    return conversion.bundle, conversion.warnings


def actor_names(bundle: dict[str, Any], participant: dict[str, Any]) -> str:
    """A participant's actor as text: Practitioner family name, Location name, else its
    logical identifier or the resource type."""
    reference = participant.get("actor", {}).get("reference")
    if reference is None:
        return participant.get("actor", {}).get("identifier", {}).get("value", "")
    rtype, rid = reference.split("/")
    (found,) = [r for r in resources_of(bundle, rtype) if r["id"] == rid]
    if rtype == "Practitioner":
        return str(found["name"][0]["family"])
    return str(found["name"]) if rtype == "Location" else rtype


# --- Appointment.status per event and filler status ---------------------------------------

STATUS_CASES = [
    # (event, SCH-25, AIS-10, Appointment.status, Encounter.status, why)
    ("S12", "Booked", "", "booked", "planned", "new booking"),
    ("S12", "", "", "booked", "planned", "S12 notifies a booking: booked without SCH-25"),
    ("S12", "Pending", "", "pending", "planned", "SCH-25 through FillerStatusCodes"),
    ("S12", "", "Pending", "pending", "planned", "AIS-10 when SCH-25 is empty (IG AIS row)"),
    ("S13", "Waitlist", "", "waitlist", "planned", "rescheduled onto a waiting list"),
    ("S14", "Started", "", "checked-in", "in-progress", "modification: the visit began"),
    ("S14", "Complete", "", "fulfilled", "in-progress", "fulfilled: PV1-45 empty, not finished"),
    ("S14", "Overbook", "", "booked", "planned", "no FHIR equivalent in the IG: booked"),
    ("S15", "Cancelled", "", "cancelled", "cancelled", "cancellation"),
    ("S15", "Booked", "", "cancelled", "cancelled", "the event states it, not a stale SCH-25"),
    ("S16", "Dc", "Dc", "cancelled", "cancelled", "discontinued: what remains won't happen"),
    ("S17", "Deleted", "", "entered-in-error", "cancelled", "deleted: entered in error"),
    ("S17", "", "", "entered-in-error", "cancelled", "deletion without SCH-25"),
    ("S26", "Noshow", "", "noshow", "cancelled", "the patient did not show up"),
    ("S26", "Booked", "", "noshow", "cancelled", "no-show whatever SCH-25 says"),
]


@pytest.mark.parametrize(
    ("event", "filler_status", "service_status", "status", "visit", "why"),
    STATUS_CASES,
    ids=[f"{c[0]}-{c[1] or 'empty'}-{c[2] or 'empty'}" for c in STATUS_CASES],
)
def test_status_from_the_event_then_the_filler_status(
    converter: Converter,
    r4validator: R4Validator,
    event: str,
    filler_status: str,
    service_status: str,
    status: str,
    visit: str,
    why: str,
) -> None:
    resources = [
        "RGS|1|A",
        segment("AIS", {1: "1", 2: "A", 3: "CS-CARDIO^Consultation^L", 10: service_status}),
        segment("AIP", {1: "1", 2: "A", 3: LEROY}),
    ]
    bundle, _ = convert(
        converter,
        r4validator,
        message(
            event,
            {25: filler_status},
            resources,
            pv1={1: "1", 2: "O", 19: f"2024000417^^^{CHU}^VN"},
        ),
    )
    assert appointment(bundle)["status"] == status, why
    (visit_resource,) = resources_of(bundle, "Encounter")
    assert visit_resource["status"] == visit, why


def test_an_unknown_filler_status_warns_and_keeps_the_event_default(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle, warnings = convert(converter, r4validator, message("S14", {25: "ARRIVEE^Arrivée^L"}))
    assert appointment(bundle)["status"] == "booked"
    assert any("FillerStatusCodes-Appointment" in w and "SCH-25" in w for w in warnings)
    assert not any("ARRIVEE" in w for w in warnings), "warnings never quote the value"


@pytest.mark.parametrize("event", ["S27"])
def test_unrouted_events_are_refused(converter: Converter, event: str) -> None:
    """S27 (broadcast) is not routed: refused (AR 201), not half converted into an
    Appointment. S23/S24 (blocked / opened slots) have their own root: test_siu_slots.py."""
    with pytest.raises(UnsupportedMessageError) as caught:
        converter.convert_message(message(event))
    assert caught.value.hl7_error_code == "201"


@pytest.mark.parametrize("event", ["S23", "S24"])
def test_slot_events_write_no_appointment(converter: Converter, event: str) -> None:
    """S23/S24 go to their own root (SIU_slots.j2, Slot and Schedule), never SIU.j2."""
    conversion = converter.convert_message(message(event))
    assert conversion.root_template == "hl7v2/messages/SIU_slots.j2"
    assert resources_of(conversion.bundle, "Appointment") == []


def test_cancellation_reason_only_when_cancelled(
    converter: Converter, r4validator: R4Validator
) -> None:
    reason = {6: "PAT^Annulation à la demande du patient^L"}
    booked, _ = convert(converter, r4validator, message("S14", reason))
    cancelled, _ = convert(converter, r4validator, message("S15", reason))
    assert "cancelationReason" not in appointment(booked)  # R4 app-4
    assert appointment(cancelled)["cancelationReason"]["coding"][0]["code"] == "PAT"


# --- identity ------------------------------------------------------------------------------


def test_notifications_about_one_appointment_update_one_appointment(
    converter: Converter, r4validator: R4Validator
) -> None:
    booked, _ = convert(converter, r4validator, message("S12", control_id="SIU-1"))
    moved, _ = convert(
        converter,
        r4validator,
        message("S14", {11: "^^^20240619100000+0200^20240619104500+0200"}, control_id="SIU-2"),
    )
    cancelled, _ = convert(converter, r4validator, message("S15", control_id="SIU-3"))
    ids = {appointment(b)["id"] for b in (booked, moved, cancelled)}
    assert len(ids) == 1
    assert appointment(moved)["start"] == "2024-06-19T10:00:00+02:00"
    values = {
        (i["type"]["coding"][0]["code"], i["value"]) for i in appointment(booked)["identifier"]
    }
    assert values == {("PLAC", "DPI-RDV-0417"), ("FILL", "RDV-000417")}


def test_the_filler_id_is_the_identity_and_is_scoped(
    converter: Converter, r4validator: R4Validator
) -> None:
    def appointment_id(
        sch: dict[int, str], facility: str = "CHU-LYON^1.2.250.1.999.1.1^ISO"
    ) -> str:
        bundle, _ = convert(converter, r4validator, message("S12", sch, facility=facility))
        return str(appointment(bundle)["id"])

    reference = appointment_id({})
    # A placer id added or changed later does not make another appointment.
    assert appointment_id({1: "AUTRE-0001^SIH-ORCHIDEE^1.2.250.1.999.1.10^ISO"}) == reference
    # The same number in another filler's namespace is another appointment.
    assert appointment_id({2: "RDV-000417^AGENDA-X^1.2.250.1.999.7.40^ISO"}) != reference
    # Without any authority, the sending facility (MSH-4) scopes it.
    here = appointment_id({2: "RDV-000417"})
    assert here == appointment_id({2: "RDV-000417"})
    assert here != appointment_id({2: "RDV-000417"}, facility="HOP-PARIS-EST^1.2.250.1.999.2.1^ISO")
    # Only a placer id: it is the identity.
    placer_only = appointment_id({2: ""})
    assert placer_only == appointment_id({2: "", 25: "Pending"})
    assert placer_only != reference


# --- participants, group by group ------------------------------------------------------------


def test_each_resource_is_a_participant_from_its_own_group(
    converter: Converter, r4validator: R4Validator
) -> None:
    resources = [
        "RGS|1|A",
        segment("AIS", {1: "1", 2: "A", 3: "ECG^ECG^L", 4: START, 7: "15", 8: MIN, 10: "Booked"}),
        "NTE|1||Tenue permettant de dégager le thorax.",
        segment(
            "AIG",
            {1: "1", 2: "A", 3: "ECG-03^Électrocardiographe n°3^L", 4: "EQ^Équipement^L"}
            | {8: START, 11: "15", 12: MIN, 14: "Booked"},
        ),
        segment("AIL", {1: "1", 2: "A", 3: f"CARDIO^CS-01^^{CHU}", 12: "Booked"}),
        segment(
            "AIP",
            {1: "1", 2: "A", 3: NURSE, 4: "INF^Infirmière^L", 6: START, 9: "15", 10: MIN}
            | {12: "Booked"},
        ),
        "NTE|1||Infirmière d'accueil.",
        "RGS|2|A",
        segment("AIS", {1: "1", 2: "A", 3: "CS^Consultation^L", 5: "15", 6: MIN, 7: "30", 8: MIN}),
        segment(
            "AIL",
            {1: "1", 2: "A", 3: f"CARDIO^CS-02^^{CHU}", 7: "15", 8: MIN, 9: "30", 10: MIN},
        ),
        segment(
            "AIP",
            {1: "1", 2: "A", 3: LEROY, 4: "CARD^Cardiologue^L", 7: "15", 8: MIN, 9: "30"}
            | {10: MIN, 12: "Pending"},
        ),
        segment("AIP", {1: "2", 2: "D", 3: FAURE, 4: "CARD^Cardiologue^L", 12: "Booked"}),
        "RGS|3|D",
        segment("AIL", {1: "1", 2: "A", 3: f"CARDIO^CS-03^^{CHU}", 12: "Booked"}),
    ]
    bundle, warnings = convert(
        converter, r4validator, message("S12", {12: LEROY, 16: NURSE, 20: NURSE}, resources)
    )
    found = appointment(bundle)
    rows = [
        (
            actor_names(bundle, p),
            [c["code"] for t in p.get("type", []) for c in t.get("coding", [])],
            p["status"],
            p.get("period"),
        )
        for p in found["participant"]
    ]
    first = {"start": "2024-06-18T14:30:00+02:00", "end": "2024-06-18T14:45:00+02:00"}
    second = {"start": "2024-06-18T14:45:00+02:00", "end": "2024-06-18T15:15:00+02:00"}
    assert rows == [
        ("Patient", [], "accepted", None),
        ("LEROY", ["CALLBCK"], "accepted", None),  # SCH-12 placer contact
        ("ROUSSEL", ["CALLBCK"], "accepted", None),  # SCH-16 filler contact
        ("ROUSSEL", ["enterer"], "accepted", None),  # SCH-20
        ("ECG-03", ["EQ"], "accepted", first),  # AIG: by identifier, its own period
        ("CS-01", [], "accepted", None),  # AIL of group 1: no time given
        ("ROUSSEL", ["INF"], "accepted", first),  # AIP of group 1
        ("CS-02", [], "accepted", second),  # AIL of group 2: start offset + duration
        ("LEROY", ["CARD"], "needs-action", second),  # AIP-12 Pending
        # AIP-2 D (FAURE) and the AIL of group 3 (RGS-2 D) are deleted: not participants.
    ]
    assert not any(
        r.get("family") == "FAURE" for p in resources_of(bundle, "Practitioner") for r in p["name"]
    )
    # The services of both groups, NTEs of the message and of the SERVICE groups.
    assert [c["coding"][0]["code"] for c in found["serviceType"]] == ["ECG", "CS"]
    assert (
        found["comment"]
        == "Apporter l'ordonnance en cours.\nTenue permettant de dégager le thorax."
    )
    assert any("1 NTE of AIG, AIL or AIP resources not converted" in w for w in warnings)


def test_a_message_without_any_participant_is_refused(converter: Converter) -> None:
    with pytest.raises(MappingError) as caught:
        converter.convert_message(message("S12", patient=False, resources=["RGS|1|A"]))
    assert caught.value.reason.endswith("is missing")
    assert caught.value.location == "SCH"


def test_a_message_without_patient_keeps_its_resources(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle, _ = convert(converter, r4validator, message("S12", patient=False))
    assert resources_of(bundle, "Patient") == []
    assert [p["status"] for p in appointment(bundle)["participant"]] == ["accepted"]
    assert "extension" not in appointment(bundle)


# --- start, end and durations ----------------------------------------------------------------


def times(bundle: dict[str, Any]) -> tuple[Any, Any, Any]:
    found = appointment(bundle)
    return found.get("start"), found.get("end"), found.get("minutesDuration")


def test_tq1_wins_over_sch_11(converter: Converter, r4validator: R4Validator) -> None:
    bundle, _ = convert(
        converter,
        r4validator,
        message(
            "S12",
            {11: "^^^20200101080000+0100^20200101090000+0100"},
            tq1={1: "1", 7: "20240618143000+0200", 8: "20240618150000+0200"},
        ),
    )
    assert times(bundle)[:2] == ("2024-06-18T14:30:00+02:00", "2024-06-18T15:00:00+02:00")


def test_sch_11_of_a_v23_message(converter: Converter, r4validator: R4Validator) -> None:
    bundle, _ = convert(converter, r4validator, message("S12", version="2.3"))
    assert times(bundle)[:2] == ("2024-06-18T14:30:00+02:00", "2024-06-18T15:15:00+02:00")


DURATION_CASES = [
    # (start, SCH-9, SCH-10, end, minutesDuration)
    ("20240618143000+0200", "45", MIN, "2024-06-18T15:15:00+02:00", 45),
    ("202406181430", "45", "MIN", "2024-06-18T15:15:00+02:00", 45),  # zone offset, :00 added
    ("202401151430", "45", "min", "2024-01-15T15:15:00+01:00", 45),  # winter offset
    ("20241231233000+0100", "45", MIN, "2025-01-01T00:15:00+01:00", 45),  # new year
    ("20240228233000+0100", "90", MIN, "2024-02-29T01:00:00+01:00", 90),  # leap day
    ("20230228233000+0100", "90", MIN, "2023-03-01T01:00:00+01:00", 90),  # no leap day
    ("20240618143000+0200", "2", "h^hours^ISO+", "2024-06-18T16:30:00+02:00", 120),
    ("20240618143000+0200", "5400", "s^seconds^ISO+", "2024-06-18T16:00:00+02:00", 90),
    ("20240618143000+0200", "90", "s", "2024-06-18T14:31:30+02:00", None),  # not whole minutes
    ("20240618143000.25+0200", "1", "d", "2024-06-19T14:30:00.25+02:00", 1440),
    ("20240618143000+0545", "30", "min", "2024-06-18T15:00:00+05:45", 30),  # offset kept
]


@pytest.mark.parametrize(("start", "amount", "unit", "end", "minutes"), DURATION_CASES)
def test_an_end_not_given_is_the_start_plus_sch_9(
    converter: Converter,
    r4validator: R4Validator,
    start: str,
    amount: str,
    unit: str,
    end: str,
    minutes: int | None,
) -> None:
    bundle, _ = convert(
        converter, r4validator, message("S12", {9: amount, 10: unit, 11: f"^^^{start}"})
    )
    found_start, found_end, found_minutes = times(bundle)
    assert found_end == end
    assert found_minutes == minutes
    assert found_start is not None and found_start[:10] == f"{start[:4]}-{start[4:6]}-{start[6:8]}"


def test_tq1_13_occurrence_duration(converter: Converter, r4validator: R4Validator) -> None:
    bundle, _ = convert(
        converter,
        r4validator,
        message("S12", {11: ""}, tq1={1: "1", 7: START, 13: "40^min&minutes&ISO+"}),
    )
    assert times(bundle) == ("2024-06-18T14:30:00+02:00", "2024-06-18T15:10:00+02:00", None)


def test_the_first_service_start_when_sch_has_no_time(
    converter: Converter, r4validator: R4Validator
) -> None:
    resources = [
        "RGS|1|A",
        segment("AIS", {1: "1", 2: "A", 3: "CS^Consultation^L", 4: START, 7: "20", 8: MIN}),
        segment("AIP", {1: "1", 2: "A", 3: LEROY, 6: "20240618150000+0200", 9: "10", 10: MIN}),
    ]
    bundle, _ = convert(converter, r4validator, message("S12", {11: ""}, resources))
    assert times(bundle)[:2] == ("2024-06-18T14:30:00+02:00", "2024-06-18T14:50:00+02:00")


def test_a_start_without_an_end_cannot_make_a_booked_appointment(
    converter: Converter, lenient: Converter
) -> None:
    """R4 app-2 (start and end, or neither) and app-3 (a booked appointment has both): the
    message is refused with the field named, in strict and lenient mode alike."""
    data = message("S12", {11: f"^^^{START}"})  # no end, no SCH-9
    for mode in (converter, lenient):
        with pytest.raises(MappingError) as caught:
            mode.convert_message(data)
        assert caught.value.reason.startswith("the appointment's start and end")
        assert caught.value.reason.endswith("is missing")
        assert caught.value.location == "SCH-11"


def test_sch_without_any_time(converter: Converter, r4validator: R4Validator) -> None:
    """No TQ1, SCH-11 or resource time: a booked appointment is refused (named error);
    a cancelled one (R4 app-3 allows it) converts without start and end."""
    with pytest.raises(MappingError) as caught:
        converter.convert_message(message("S12", {11: ""}))
    assert caught.value.location == "SCH-11" and caught.value.hl7_error_code == "101"
    with pytest.raises(MappingError) as caught:
        converter.convert_message(message("S12", {11: ""}, tq1={1: "1"}))
    assert caught.value.location == "TQ1-7"
    bundle, warnings = convert(converter, r4validator, message("S15", {11: "", 25: "Cancelled"}))
    assert times(bundle) == (None, None, None)
    assert appointment(bundle)["status"] == "cancelled"
    bundle, warnings = convert(converter, r4validator, message("S15", {11: f"^^^{START}"}))
    assert times(bundle) == (None, None, None)
    assert any("start left out" in w for w in warnings)


def test_a_start_without_a_time_of_day_is_an_invalid_instant(
    converter: Converter, lenient: Converter
) -> None:
    data = message("S12", {11: "^^^20240618^20240618"})
    with pytest.raises(MappingError) as caught:
        converter.convert_message(data)
    assert caught.value.location == "SCH-11.4"
    with pytest.raises(MappingError) as caught:  # dropped in lenient mode, then missing
        lenient.convert_message(data)
    assert caught.value.reason.endswith("is missing")


# --- the PATIENT groups ------------------------------------------------------------------------


def test_each_patient_group_gives_its_patient_visit_diagnoses_and_observations(
    converter: Converter, r4validator: R4Validator
) -> None:
    """IG SIU_S12 rows 4.1 to 4.5; two PATIENT groups (a group appointment) are two patient
    participants, and no R5 subject extension (0..1)."""
    data = message("S12", pv1={1: "1", 2: "O", 19: f"2024000417^^^{CHU}^VN"}).replace(
        b"\rRGS|",
        "\r".join(
            [
                "",
                "DG1|1||I10^Hypertension essentielle^I10||20240610|W",
                "OBX|1|NM|29463-7^Body weight^LN||68|kg^kilogramme^UCUM|||||F",
                segment("PID", {1: "2", 3: f"0012380418^^^{CHU}^MR", 5: "LEFEBVRE^Paul^^^M.^^L"}),
                "RGS|",
            ]
        ).encode("utf-8"),
        1,
    )
    bundle, _ = convert(converter, r4validator, data)
    patients = resources_of(bundle, "Patient")
    assert len(patients) == 2
    (visit,) = resources_of(bundle, "Encounter")
    (condition,) = resources_of(bundle, "Condition")
    (observation,) = resources_of(bundle, "Observation")
    first = f"Patient/{patients[0]['id']}"
    assert visit["subject"]["reference"] == first and visit["status"] == "planned"
    assert condition["subject"]["reference"] == first
    assert observation["subject"]["reference"] == first
    assert observation["encounter"]["reference"] == f"Encounter/{visit['id']}"
    found = appointment(bundle)
    actors = [p["actor"]["reference"] for p in found["participant"] if "actor" in p]
    assert actors[:2] == [first, f"Patient/{patients[1]['id']}"]
    assert "extension" not in found


# --- S18 to S22: segment action codes ----------------------------------------------------------

DURAND = f"10104567892^DURAND^Anne^^^Dr{RPPS}"


def resource_changes() -> list[str]:
    """One service and five resources, each with another segment action code (table 0206)."""
    return [
        "RGS|1|U",
        segment("AIS", {1: "1", 2: "X", 3: "CS-CARDIO^Consultation de cardiologie^L"}),
        segment("AIS", {1: "2", 2: "D", 3: "ECG^ECG^L", 10: "Deleted"}),
        segment("AIG", {1: "1", 2: "D", 3: "ECG-03^Électrocardiographe n°3^L", 4: "EQ^Éq.^L"}),
        segment("AIL", {1: "1", 2: "U", 3: f"CARDIO^CS-02^^{CHU}"}),
        segment("AIP", {1: "1", 2: "X", 3: LEROY, 4: "CARD^Cardiologue^L"}),
        segment("AIP", {1: "2", 2: "A", 3: NURSE, 4: "INF^Infirmière^L"}),
        segment("AIP", {1: "3", 2: "U", 3: DURAND, 4: "CARD^Cardiologue^L", 12: "Pending"}),
        segment("AIP", {1: "4", 2: "D", 3: FAURE, 4: "CARD^Cardiologue^L"}),
        "RGS|2|D",
        segment("AIL", {1: "1", 2: "A", 3: f"CARDIO^CS-03^^{CHU}"}),
    ]


ACTION_CASES = [
    # (event, the D resources' fate, why)
    ("S14", "removed", "a modification may carry action codes too: D deletes"),
    ("S18", "removed", "addition of a resource (the A one): the rest is the appointment"),
    ("S19", "removed", "modification of a resource (the U ones)"),
    ("S20", "declined", "cancellation: the D resources took part and will not any more"),
    ("S21", "declined", "discontinuation: the D resources will not take part in the rest"),
    ("S22", "removed", "deletion: the D resources were entered in error"),
]


@pytest.mark.parametrize(("event", "fate", "why"), ACTION_CASES, ids=[c[0] for c in ACTION_CASES])
def test_segment_action_codes_give_the_participants_after_the_change(
    converter: Converter, r4validator: R4Validator, event: str, fate: str, why: str
) -> None:
    """A, U, X keep a resource; D (AIx-2, or RGS-2 for its group) leaves it out of the
    Appointment that replaces the stored one, except in S20/S21 where it stays declined.
    The appointment itself stays booked: the event concerns one resource."""
    bundle, _ = convert(converter, r4validator, message(event, {25: ""}, resource_changes()))
    found = appointment(bundle)
    assert found["status"] == "booked", why
    rows = [(actor_names(bundle, p), p["status"]) for p in found["participant"]]
    kept = [
        ("Patient", "accepted"),
        ("CS-02", "accepted"),  # AIL U
        ("LEROY", "accepted"),  # AIP X
        ("ROUSSEL", "accepted"),  # AIP A
        ("DURAND", "needs-action"),  # AIP U with its own filler status Pending
    ]
    if fate == "removed":
        assert rows == kept, why
        practitioners = {
            n["family"] for p in resources_of(bundle, "Practitioner") for n in p["name"]
        }
        assert "FAURE" not in practitioners, "a deleted resource is not written at all"
        assert "CS-03" not in {loc["name"] for loc in resources_of(bundle, "Location")}
    else:
        assert sorted(rows) == sorted(
            [*kept, ("ECG-03", "declined"), ("FAURE", "declined"), ("CS-03", "declined")]
        ), why
    # A deleted service is no service of the appointment in any event.
    assert [c["coding"][0]["code"] for c in found["serviceType"]] == ["CS-CARDIO"]


RESOURCE_EVENT_STATUS_CASES = [
    # (event, SCH-25, AIS-10 of the only remaining service, Appointment.status, why)
    ("S20", "", "Cancelled", "booked", "a cancelled service is not a cancelled appointment"),
    ("S21", "", "Discontinued", "booked", "nor a discontinued one"),
    ("S22", "", "Deleted", "booked", "nor a deleted one entered in error"),
    ("S19", "", "Started", "checked-in", "a service under way: the appointment is"),
    ("S18", "Pending", "Booked", "pending", "SCH-25 first, as in S12 to S14"),
    ("S20", "Cancelled", "", "cancelled", "SCH-25 may still say the whole is cancelled"),
]


@pytest.mark.parametrize(
    ("event", "filler_status", "service_status", "status", "why"),
    RESOURCE_EVENT_STATUS_CASES,
    ids=[f"{c[0]}-{c[1] or 'empty'}-{c[2] or 'empty'}" for c in RESOURCE_EVENT_STATUS_CASES],
)
def test_the_status_of_a_resource_event(
    converter: Converter,
    r4validator: R4Validator,
    event: str,
    filler_status: str,
    service_status: str,
    status: str,
    why: str,
) -> None:
    resources = [
        "RGS|1|U",
        segment("AIS", {1: "1", 2: "U", 3: "CS^Consultation^L", 10: service_status}),
        segment("AIS", {1: "2", 2: "D", 3: "ECG^ECG^L", 10: "Pending"}),  # deleted: ignored
        segment("AIP", {1: "1", 2: "X", 3: LEROY}),
    ]
    bundle, _ = convert(converter, r4validator, message(event, {25: filler_status}, resources))
    assert appointment(bundle)["status"] == status, why


def test_a_deleted_service_gives_neither_status_nor_notes(
    converter: Converter, r4validator: R4Validator
) -> None:
    resources = [
        "RGS|1|A",
        segment("AIS", {1: "1", 2: "D", 3: "ECG^ECG^L", 10: "Pending"}),
        "NTE|1||ECG retiré du rendez-vous.",
        segment("AIS", {1: "2", 2: "A", 3: "CS^Consultation^L"}),
        segment("AIP", {1: "1", 2: "A", 3: LEROY}),
    ]
    bundle, _ = convert(converter, r4validator, message("S14", {25: ""}, resources))
    found = appointment(bundle)
    assert found["status"] == "booked"  # not the deleted service's Pending
    assert found["comment"] == "Apporter l'ordonnance en cours."


def test_deleting_every_resource_keeps_the_patient(
    converter: Converter, r4validator: R4Validator
) -> None:
    resources = ["RGS|1|D", segment("AIP", {1: "1", 2: "A", 3: LEROY})]
    bundle, _ = convert(converter, r4validator, message("S22", {}, resources))
    assert [actor_names(bundle, p) for p in appointment(bundle)["participant"]] == ["Patient"]
    assert resources_of(bundle, "Practitioner") == []
    with pytest.raises(MappingError) as caught:  # nothing left at all: R4 participant 1..*
        converter.convert_message(message("S22", {}, resources, patient=False))
    assert caught.value.location == "SCH"


# --- SCH[Provenance]: the entered-by person ------------------------------------------------------


def test_sch_20_is_the_enterer_of_a_provenance_of_the_appointment(
    converter: Converter, r4validator: R4Validator
) -> None:
    """IG SCH[Provenance] (SIU_S12 row 2, Provenance[3]): agent[1].who = SCH-20 as a
    Practitioner, agent[1].type enterer; it targets the Appointment, apart from the
    message's own Provenance."""
    bundle, _ = convert(converter, r4validator, message("S14", {20: f"{NURSE}~{LEROY}"}))
    provenances = resources_of(bundle, "Provenance")
    assert len(provenances) == 2
    (entry,) = [
        p
        for p in provenances
        if p["target"] == [{"reference": f"Appointment/{appointment(bundle)['id']}"}]
    ]
    (agent,) = entry["agent"]
    assert agent["type"]["coding"] == [
        {
            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
            "code": "enterer",
            "display": "Enterer",
        }
    ]
    rtype, rid = agent["who"]["reference"].split("/")
    (who,) = [p for p in resources_of(bundle, rtype) if p["id"] == rid]
    assert who["name"][0]["family"] == "ROUSSEL"  # the first repetition (FHIR who 1..1)
    assert entry["recorded"] == "2024-06-10T09:45:12+02:00"  # MSH-7
    assert entry["activity"]["coding"][0]["code"] == "S14"
    (message_provenance,) = [p for p in provenances if p is not entry]
    assert {"reference": f"Provenance/{entry['id']}"} not in message_provenance["target"]
    # Another message about the same appointment: another Provenance of it.
    again, _ = convert(converter, r4validator, message("S14", {20: NURSE}, control_id="SIU-9"))
    assert entry["id"] not in {p["id"] for p in resources_of(again, "Provenance")}


def test_without_sch_20_there_is_only_the_message_provenance(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle, _ = convert(converter, r4validator, message("S12", {20: ""}))
    (provenance,) = resources_of(bundle, "Provenance")
    assert provenance["agent"][-1]["type"]["coding"][0]["code"] == "assembler"


# --- on a FHIR server --------------------------------------------------------------------------


def test_on_a_fhir_server_s22_leaves_one_practitioner(
    converter: Converter, r4validator: R4Validator, fhir_server: FhirServer
) -> None:
    """An S12 books Dr Leroy and Dr Faure; an S22 deletes Dr Faure (AIP-2 D) and sends Dr
    Leroy unchanged (X): the Appointment read back has one practitioner participant."""
    fhir_server.reset()
    booked = [
        "RGS|1|A",
        segment("AIS", {1: "1", 2: "A", 3: "CS-CARDIO^Consultation de cardiologie^L"}),
        segment("AIP", {1: "1", 2: "A", 3: LEROY, 4: "CARD^Cardiologue^L"}),
        segment("AIP", {1: "2", 2: "A", 3: FAURE, 4: "CARD^Cardiologue^L"}),
    ]
    deleted = [
        "RGS|1|X",
        segment("AIS", {1: "1", 2: "X", 3: "CS-CARDIO^Consultation de cardiologie^L"}),
        segment("AIP", {1: "1", 2: "X", 3: LEROY, 4: "CARD^Cardiologue^L"}),
        segment("AIP", {1: "2", 2: "D", 3: FAURE, 4: "CARD^Cardiologue^L"}),
    ]
    practitioners_after = []
    for n, (event, resources) in enumerate([("S12", booked), ("S22", deleted)]):
        bundle, _ = convert(
            converter, r4validator, message(event, {}, resources, control_id=f"SIU-{n}")
        )
        fhir_server.transact(bundle)
        (entry,) = fhir_server.search("Appointment")["entry"]
        stored = entry["resource"]
        assert stored["status"] == "booked"
        references = [
            p["actor"]["reference"]
            for p in stored["participant"]
            if p.get("actor", {}).get("reference", "").startswith("Practitioner/")
        ]
        families = []
        for reference in references:
            found = fhir_server.read(*reference.split("/"))
            assert found is not None
            families.append(found["name"][0]["family"])
        practitioners_after.append(families)
    assert practitioners_after == [["LEROY", "FAURE"], ["LEROY"]]
