"""Blocked and opened schedule time slots (SIU^S23, SIU^S24; HL7 v2.5 ch. 10 §10.3.23 and
§10.3.24, structure SIU_S12; no IG map): one Slot per blocked resource (AIG / AIL / AIP)
on that resource's Schedule, whose actor is the resource SIU.j2 gives the appointments
(same Practitioner and Location ids), with the status of the event, the times of the
block or of the resource, and an identity that lets the S24 update the Slot the S23
wrote. Every bundle is checked by the R4 validator; an S23 then an S24 are posted to a
real FHIR server."""

from __future__ import annotations

from typing import Any

import pytest

from converter import Converter, ConverterConfig, MappingError
from converter.assembly.bundle import RequestMode
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import insert_after, resources, segment, set_field
from tests.support.r4validator import R4Validator

CHU = "CHU-LYON&1.2.250.1.999.1.1&ISO"
RPPS = "^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS"
FAURE = f"10103456785^FAURE^Étienne^^^Pr{RPPS}"
LEROY = f"10101234563^LEROY^Paul^^^Dr{RPPS}"
ROOM = f"CARDIO^ECHO-01^^{CHU}^^C^BAT-C^1^Salle d'échocardiographie"
MIN = "min^minutes^ISO+"
START = "20240620090000+0200"
END = "20240620110000+0200"
#: An invented block id of the filler, with its namespace.
FILLER = "BLOC-2024-0211^AGENDA-TILLEUL^1.2.250.1.999.1.40^ISO"


def default_resources() -> list[str]:
    return [
        "RGS|1|A",
        segment("AIS", {1: "1", 2: "A", 3: "ETT^Échocardiographie transthoracique^L"}),
        segment("AIG", {1: "1", 2: "A", 3: "ECHO-02^Échographe n°2^L", 4: "EQ^Équipement^L"}),
        segment("AIL", {1: "1", 2: "A", 3: ROOM}),
        segment("AIP", {1: "1", 2: "A", 3: FAURE, 4: "CARD^Cardiologue^L"}),
    ]


def message(
    event: str = "S23",
    sch: dict[int, str] | None = None,
    resource_segments: list[str] | None = None,
    *,
    tq1: dict[int, str] | None = None,
    patient: bool = False,
    version: str = "2.5",
    control_id: str = "SLOT-1",
) -> bytes:
    """An SIU S23/S24 (v2.5 unless told) blocking an echography room, its device and a
    cardiologist for maintenance."""
    fields = {2: FILLER, 6: "MAINT^Maintenance de l'échographe^L", 11: f"^^^{START}^{END}"}
    fields.update(sch or {})
    structure = "" if version == "2.3" else "^SIU_S12"
    lines = [
        "MSH|^~\\&|AGENDA-TILLEUL^1.2.250.1.999.1.40^ISO|CHU-LYON^1.2.250.1.999.1.1^ISO"
        f"|PASSERELLE|GHT|20240612083015+0200||SIU^{event}{structure}|{control_id}|P|{version}"
        "|||AL|NE|FRA|UNICODE UTF-8",
        segment("SCH", {k: v for k, v in fields.items() if v is not None}),
    ]
    if tq1 is not None:
        lines.append(segment("TQ1", tq1))
    lines.append("NTE|1||Ne rien programmer pendant l'intervention.")
    if patient:
        lines.append(segment("PID", {1: "1", 3: f"0012380417^^^{CHU}^MR", 5: "LEFEBVRE^Hélène"}))
    lines += default_resources() if resource_segments is None else resource_segments
    return ("\r".join(lines) + "\r").encode("utf-8")


def convert(
    converter: Converter, r4validator: R4Validator, data: bytes
) -> tuple[dict[str, Any], tuple[str, ...]]:
    conversion = converter.convert_message(data)
    assert conversion.root_template == "hl7v2/messages/SIU_slots.j2"
    assert r4validator.validate(conversion.bundle) == []
    return conversion.bundle, conversion.warnings


def actor_of(bundle: dict[str, Any], slot: dict[str, Any]) -> dict[str, Any]:
    """The actor of the Schedule a Slot is on."""
    reference = slot["schedule"]["reference"]
    (schedule,) = [s for s in resources(bundle, "Schedule") if f"Schedule/{s['id']}" == reference]
    (actor,) = schedule["actor"]
    return dict(actor)


def actor_name(bundle: dict[str, Any], slot: dict[str, Any]) -> str:
    """The blocked resource as text: Practitioner family, Location name, AIG identifier."""
    actor = actor_of(bundle, slot)
    if "reference" not in actor:
        return str(actor["identifier"]["value"])
    rtype, rid = actor["reference"].split("/")
    (found,) = [r for r in resources(bundle, rtype) if r["id"] == rid]
    return str(found["name"][0]["family"] if rtype == "Practitioner" else found["name"])


def periods(bundle: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {actor_name(bundle, s): (s["start"], s["end"]) for s in resources(bundle, "Slot")}


# --- S23: one Slot per blocked resource -------------------------------------------------------


@pytest.mark.parametrize("version", ["2.3", "2.5", "2.7"])
def test_s23_blocks_each_resource_on_its_own_schedule(
    converter: Converter, r4validator: R4Validator, version: str
) -> None:
    resource_segments = [
        *default_resources()[:-1],
        segment(
            "AIP",
            {1: "1", 2: "A", 3: FAURE, 4: "CARD^Cardiologue^L", 6: START, 9: "60", 10: MIN},
        ),
        "NTE|1||Le Pr Faure reprend ses échographies à 10 h.",
    ]
    bundle, warnings = convert(
        converter, r4validator, message("S23", {}, resource_segments, version=version)
    )
    assert warnings == ()
    assert resources(bundle, "Appointment") == []
    slots = resources(bundle, "Slot")
    assert [s["status"] for s in slots] == ["busy-unavailable"] * 3
    nine, ten, eleven = (f"2024-06-20T{h}:00:00+02:00" for h in ("09", "10", "11"))
    assert periods(bundle) == {
        "ECHO-02": (nine, eleven),  # AIG: the block's times (SCH-11)
        "ECHO-01": (nine, eleven),  # AIL
        "FAURE": (nine, ten),  # AIP: its own start and duration
    }
    # AIG-3 is a reference by identifier (as on the Appointment), AIL / AIP resources.
    assert actor_of(bundle, slots[0]) == {
        "identifier": {"value": "ECHO-02"},
        "display": "Échographe n°2",
    }
    assert [actor_of(bundle, s).get("reference", "").split("/")[0] for s in slots[1:]] == [
        "Location",
        "Practitioner",
    ]
    for slot in slots:
        assert "identifier" not in slot  # one block id, three Slots: see the next test
        assert slot["serviceType"][0]["coding"][0]["code"] == "ETT"
    # SCH-6 then the message's NTE, then the resource's own NTE.
    assert slots[0]["comment"] == (
        "Maintenance de l'échographe\nNe rien programmer pendant l'intervention."
    )
    assert slots[2]["comment"].endswith("\nLe Pr Faure reprend ses échographies à 10 h.")
    (provenance,) = resources(bundle, "Provenance")
    targets = {t["reference"] for t in provenance["target"]}
    assert {f"Slot/{s['id']}" for s in slots} <= targets


def test_the_resources_are_those_of_the_appointments(
    converter: Converter, r4validator: R4Validator
) -> None:
    """An S12 booking the room and Dr Faure and an S23 blocking them name the same
    Location and Practitioner: on a server a block and the appointments of a resource meet."""
    appointment = converter.convert_message(message("S12", {2: "RDV-000417"})).bundle
    (booking,) = resources(appointment, "Appointment")
    participants = {
        p["actor"].get("reference") or p["actor"]["identifier"]["value"]
        for p in booking["participant"]
    }
    bundle, _ = convert(converter, r4validator, message("S23"))
    actors = set()
    for slot in resources(bundle, "Slot"):
        actor = actor_of(bundle, slot)
        actors.add(actor.get("reference") or actor["identifier"]["value"])
    assert len(actors) == 3
    assert actors <= participants


@pytest.mark.parametrize("mode", ["conditional-create", "conditional-update"])
def test_the_slots_of_one_block_are_written_by_id_in_the_conditional_modes(
    r4validator: R4Validator, mode: RequestMode
) -> None:
    """The block id names the Slot of each resource: were it Slot.identifier, the three
    Slots would share the conditional request's search (a BundleValidationError). They are
    written PUT Slot/<id>, the id derived from the block id."""
    converter = Converter(ConverterConfig(default_timezone="Europe/Paris", request_mode=mode))
    bundle = converter.convert_message(message("S23")).bundle
    assert r4validator.validate(bundle) == []
    requests = [e["request"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Slot"]
    assert len(requests) == 3
    assert all(r["method"] == "PUT" and r["url"].startswith("Slot/") for r in requests)
    practitioner = [
        e["request"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Practitioner"
    ]
    # The Practitioner is still matched on its identifier.
    assert "identifier=" in (practitioner[0].get("ifNoneExist") or practitioner[0]["url"])


# --- S24: the same Slot, opened --------------------------------------------------------------


def slot_ids(bundle: dict[str, Any]) -> dict[str, str]:
    return {actor_name(bundle, s): s["id"] for s in resources(bundle, "Slot")}


@pytest.mark.parametrize(
    ("sch", "why"),
    [
        ({}, "the filler's block id SCH-2"),
        ({1: "DPI-BLOC-77^SIH-ORCHIDEE^1.2.250.1.999.1.10^ISO", 2: ""}, "else SCH-1"),
        ({2: ""}, "without any id: the resource and the start"),
    ],
    ids=["SCH-2", "SCH-1", "no-id"],
)
def test_s24_opens_the_slot_the_s23_blocked(
    converter: Converter, r4validator: R4Validator, sch: dict[int, str], why: str
) -> None:
    blocked, _ = convert(converter, r4validator, message("S23", sch, control_id="SLOT-1"))
    opened, _ = convert(converter, r4validator, message("S24", sch, control_id="SLOT-2"))
    assert slot_ids(opened) == slot_ids(blocked), why
    assert {s["status"] for s in resources(opened, "Slot")} == {"free"}
    assert {s["id"] for s in resources(opened, "Schedule")} == {
        s["id"] for s in resources(blocked, "Schedule")
    }


def test_s24_may_open_one_resource_of_a_block(
    converter: Converter, r4validator: R4Validator
) -> None:
    """Each resource has its own Slot: an S24 opening the room alone frees the room's Slot
    and leaves the device's and Dr Faure's blocked (their Slots are not in it)."""
    blocked = slot_ids(convert(converter, r4validator, message("S23"))[0])
    room_only = ["RGS|1|A", segment("AIL", {1: "1", 2: "A", 3: ROOM})]
    opened, _ = convert(converter, r4validator, message("S24", {}, room_only))
    assert slot_ids(opened) == {"ECHO-01": blocked["ECHO-01"]}


def test_another_block_of_the_same_resource_is_another_slot(
    converter: Converter, r4validator: R4Validator
) -> None:
    reference = slot_ids(convert(converter, r4validator, message("S23"))[0])
    other_id, _ = convert(converter, r4validator, message("S23", {2: "BLOC-2024-0212"}))
    assert set(slot_ids(other_id).values()).isdisjoint(reference.values())
    # Without ids, the start tells two blocks apart.
    morning = slot_ids(convert(converter, r4validator, message("S23", {2: ""}))[0])
    later = message("S23", {2: "", 11: "^^^20240620140000+0200^20240620150000+0200"})
    afternoon = slot_ids(convert(converter, r4validator, later)[0])
    assert set(morning.values()).isdisjoint(afternoon.values())
    # One Schedule per resource whatever the block.
    schedules = {s["id"] for s in resources(convert(converter, r4validator, later)[0], "Schedule")}
    first = {s["id"] for s in resources(convert(converter, r4validator, message())[0], "Schedule")}
    assert schedules == first


def test_appointment_reason_is_the_appointment_type(
    converter: Converter, r4validator: R4Validator
) -> None:
    """SCH-7 (table 0276) → Slot.appointmentType, bound to v2-0276 in R4: slots opened for
    walk-ins. An SCH-7 coded in table 0277 is not a reason: left out."""
    bundle, _ = convert(converter, r4validator, message("S24", {7: "WALKIN^Sans rendez-vous"}))
    slots = resources(bundle, "Slot")
    assert slots, "no Slot to carry the appointment type"
    for slot in slots:
        assert slot["appointmentType"] == {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v2-0276",
                    "code": "WALKIN",
                    "display": "Sans rendez-vous",
                }
            ]
        }
    other, _ = convert(converter, r4validator, message("S24", {7: "Normal^Normal^HL70277"}))
    others = resources(other, "Slot")
    assert len(others) == len(slots) and all("appointmentType" not in s for s in others)


# --- times -----------------------------------------------------------------------------------

TIME_CASES = [
    # (SCH fields, TQ1, AIS fields beyond 1-3, expected (start, end) of the room, why)
    ({}, {1: "1", 7: "20240620100000+0200", 8: "20240620120000+0200"}, {}, ("10", "12"), "TQ1"),
    ({9: "30", 10: MIN, 11: f"^^^{START}"}, None, {}, ("09", "09:30"), "SCH-11.4 + SCH-9/10"),
    ({11: ""}, {1: "1", 7: START, 13: f"45^{MIN}"}, {}, ("09", "09:45"), "TQ1-7 + TQ1-13"),
    ({11: ""}, None, {4: START, 7: "90", 8: MIN}, ("09", "10:30"), "the service's times"),
]


@pytest.mark.parametrize(
    ("sch", "tq1", "ais", "expected", "why"), TIME_CASES, ids=[c[-1] for c in TIME_CASES]
)
def test_the_block_times(
    converter: Converter,
    r4validator: R4Validator,
    sch: dict[int, str],
    tq1: dict[int, str] | None,
    ais: dict[int, str],
    expected: tuple[str, str],
    why: str,
) -> None:
    resource_segments = [
        "RGS|1|A",
        segment("AIS", {1: "1", 2: "A", 3: "ETT^Échocardiographie^L", **ais}),
        segment("AIL", {1: "1", 2: "A", 3: ROOM}),
    ]
    bundle, _ = convert(converter, r4validator, message("S23", sch, resource_segments, tq1=tq1))
    (slot,) = resources(bundle, "Slot")

    def at(hour: str) -> str:
        return f"2024-06-20T{hour}:00+02:00" if ":" in hour else f"2024-06-20T{hour}:00:00+02:00"

    assert (slot["start"], slot["end"]) == (at(expected[0]), at(expected[1])), why


def test_a_resource_offset_from_the_block_start(
    converter: Converter, r4validator: R4Validator
) -> None:
    resource_segments = [
        "RGS|1|A",
        segment("AIP", {1: "1", 2: "A", 3: LEROY, 7: "30", 8: MIN, 9: "45", 10: MIN}),
        segment("AIP", {1: "2", 2: "A", 3: FAURE, 7: "1", 8: "h^heure"}),
    ]
    bundle, _ = convert(converter, r4validator, message("S23", {}, resource_segments))
    assert periods(bundle) == {
        "LEROY": ("2024-06-20T09:30:00+02:00", "2024-06-20T10:15:00+02:00"),
        # An offset without a duration: blocked until the block's end.
        "FAURE": ("2024-06-20T10:00:00+02:00", "2024-06-20T11:00:00+02:00"),
    }


def test_a_block_without_times_is_refused(converter: Converter) -> None:
    with pytest.raises(MappingError) as caught:
        converter.convert_message(message("S23", {11: ""}))
    assert caught.value.reason.endswith("is missing")
    assert caught.value.location == "SCH-11"
    with pytest.raises(MappingError) as caught:
        converter.convert_message(message("S23", {11: f"^^^{START}"}))  # no end, no duration
    assert caught.value.location == "SCH-11"


# --- what is left out ------------------------------------------------------------------------


def test_deleted_resources_are_not_blocked_and_patients_not_converted(
    converter: Converter, r4validator: R4Validator
) -> None:
    resource_segments = [
        "RGS|1|A",
        segment("AIL", {1: "1", 2: "A", 3: ROOM}),
        segment("AIP", {1: "1", 2: "D", 3: LEROY}),
        "RGS|2|D",
        segment("AIP", {1: "1", 2: "A", 3: FAURE}),
    ]
    bundle, warnings = convert(
        converter, r4validator, message("S23", {}, resource_segments, patient=True)
    )
    assert list(periods(bundle)) == ["ECHO-01"]
    assert resources(bundle, "Practitioner") == []
    assert resources(bundle, "Patient") == []
    assert any("1 PATIENT group(s)" in w and "not converted" in w for w in warnings)


def test_a_block_of_no_resource_is_refused(converter: Converter) -> None:
    """Only a service (AIS): R4 Slot.schedule and Schedule.actor are required."""
    only_service = ["RGS|1|A", segment("AIS", {1: "1", 2: "A", 3: "ETT^Échographie^L"})]
    with pytest.raises(MappingError) as caught:
        converter.convert_message(message("S23", {}, only_service))
    assert caught.value.location == "SCH"
    assert "blocked resource" in caught.value.reason


# --- on a FHIR server --------------------------------------------------------------------------


def test_on_a_fhir_server_s24_frees_the_slot_s23_blocked(
    converter: Converter, r4validator: R4Validator, fhir_server: FhirServer
) -> None:
    """S23 blocks Dr Faure's morning, S24 opens it again: one Slot on the server, first
    busy-unavailable then free, on a Schedule whose actor is Dr Faure's Practitioner."""
    fhir_server.reset()
    one_person = ["RGS|1|A", segment("AIP", {1: "1", 2: "A", 3: FAURE, 4: "CARD^Cardiologue^L"})]
    statuses = []
    for n, event in enumerate(("S23", "S24")):
        bundle, _ = convert(
            converter, r4validator, message(event, {}, one_person, control_id=f"SLOT-{n}")
        )
        fhir_server.transact(bundle)
        (entry,) = fhir_server.search("Slot")["entry"]
        stored = entry["resource"]
        statuses.append(stored["status"])
        schedule = fhir_server.read(*stored["schedule"]["reference"].split("/"))
        assert schedule is not None
        (actor,) = schedule["actor"]
        practitioner = fhir_server.read(*actor["reference"].split("/"))
        assert practitioner is not None
        assert practitioner["name"][0]["family"] == "FAURE"
    assert statuses == ["busy-unavailable", "free"]
    assert fhir_server.count("Schedule") == 1


# --- occurrences, one resource twice, senders ----------------------------------------------------

NEXT_WEEK = ("20240627090000+0200", "20240627110000+0200")
OCCURRENCES = [(START, END), NEXT_WEEK]


def repeated(
    event: str,
    how: str,
    occurrences: list[tuple[str, str]],
    resource_segments: list[str],
    control_id: str = "SLOT-1",
) -> bytes:
    """A block over several periods: one TQ1 per occurrence (v2.5, TQ1 repeats in SIU_S12),
    or one repetition of SCH-11 per occurrence (v2.3, no TQ1: SCH-11 is a repeating TQ)."""
    if how == "TQ1":
        first, *others = occurrences
        data = message(
            event,
            {11: ""},
            resource_segments,
            tq1={1: "1", 7: first[0], 8: first[1]},
            control_id=control_id,
        )
        extra = [segment("TQ1", {1: str(n), 7: s, 8: e}) for n, (s, e) in enumerate(others, 2)]
        return insert_after(data, "TQ1|", *extra) if extra else data
    timing = "~".join(f"^^^{s}^{e}" for s, e in occurrences)
    return message(event, {11: timing}, resource_segments, version="2.3", control_id=control_id)


def by_time(bundle: dict[str, Any]) -> dict[tuple[str, str], str]:
    """Slot ids by (blocked resource, start)."""
    return {(actor_name(bundle, s), s["start"]): s["id"] for s in resources(bundle, "Slot")}


@pytest.mark.parametrize("how", ["TQ1", "SCH-11"])
def test_each_occurrence_of_a_block_is_its_own_slot(
    converter: Converter, r4validator: R4Validator, how: str
) -> None:
    """Two TQ1 (or two SCH-11 repetitions): the room and Dr Leroy are blocked on the 20th
    and on the 27th, Dr Leroy 30 minutes after each start for 45 minutes. An S24 that opens
    the 27th alone frees the Slots of the 27th, not those of the 20th."""
    resource_segments = [
        "RGS|1|A",
        segment("AIL", {1: "1", 2: "A", 3: ROOM}),
        segment("AIP", {1: "1", 2: "A", 3: LEROY, 7: "30", 8: MIN, 9: "45", 10: MIN}),
    ]
    blocked, warnings = convert(
        converter, r4validator, repeated("S23", how, OCCURRENCES, resource_segments)
    )
    assert warnings == ()
    slots = resources(blocked, "Slot")
    assert sorted((actor_name(blocked, s), s["start"], s["end"]) for s in slots) == [
        ("ECHO-01", "2024-06-20T09:00:00+02:00", "2024-06-20T11:00:00+02:00"),
        ("ECHO-01", "2024-06-27T09:00:00+02:00", "2024-06-27T11:00:00+02:00"),
        ("LEROY", "2024-06-20T09:30:00+02:00", "2024-06-20T10:15:00+02:00"),
        ("LEROY", "2024-06-27T09:30:00+02:00", "2024-06-27T10:15:00+02:00"),
    ]
    assert len({s["id"] for s in slots}) == 4
    second = [NEXT_WEEK]
    opened, _ = convert(
        converter, r4validator, repeated("S24", how, second, resource_segments, "SLOT-2")
    )
    ids = by_time(blocked)
    assert by_time(opened) == {key: ids[key] for key in ids if key[1].startswith("2024-06-27")}
    assert {s["status"] for s in resources(opened, "Slot")} == {"free"}


def test_a_resource_start_is_one_slot_and_a_weekly_block_is_expanded(
    converter: Converter, r4validator: R4Validator
) -> None:
    """A resource's own start (AIP-6) is one instant: one Slot for it whatever the number
    of occurrences, with a warning. A fixed-interval repeat pattern (TQ1-3 Q1W, TQ1-14
    four times) is expanded: one Slot per occurrence and resource (test_siu_repeats.py)."""
    resource_segments = [
        "RGS|1|A",
        segment("AIL", {1: "1", 2: "A", 3: ROOM}),
        segment("AIP", {1: "1", 2: "A", 3: FAURE, 6: START, 9: "60", 10: MIN}),
    ]
    bundle, warnings = convert(
        converter, r4validator, repeated("S23", "TQ1", OCCURRENCES, resource_segments)
    )
    assert sorted(by_time(bundle)) == [
        ("ECHO-01", "2024-06-20T09:00:00+02:00"),
        ("ECHO-01", "2024-06-27T09:00:00+02:00"),
        ("FAURE", "2024-06-20T09:00:00+02:00"),
    ]
    assert warnings == (
        "AIP-6 gives one start for a blocked time of 2 occurrences: one Slot for that "
        "resource, at its own start",
    )
    weekly = message("S23", {11: ""}, tq1={1: "1", 3: "Q1W", 7: START, 8: END, 14: "4"})
    bundle, warnings = convert(converter, r4validator, weekly)
    assert warnings == ()
    slots = resources(bundle, "Slot")
    assert len(slots) == 12 and len({s["id"] for s in slots}) == 12
    assert sorted({s["start"][:10] for s in slots}) == [
        "2024-06-20",
        "2024-06-27",
        "2024-07-04",
        "2024-07-11",
    ]


@pytest.mark.parametrize("sch", [{}, {2: ""}], ids=["SCH-2", "no-id"])
def test_one_room_in_two_groups_is_two_slots(
    converter: Converter, r4validator: R4Validator, sch: dict[int, str]
) -> None:
    """The room blocked 9:00-10:00 in one RESOURCES group and 14:00-15:00 in another: its
    own start (AIL-6) tells the two Slots apart; an S24 of the afternoon opens that one."""

    def group(n: int, hour: str) -> list[str]:
        own = {6: f"20240620{hour}0000+0200", 9: "60", 10: MIN}
        return [f"RGS|{n}|A", segment("AIL", {1: "1", 2: "A", 3: ROOM, **own})]

    both = [*group(1, "09"), *group(2, "14")]
    blocked, warnings = convert(converter, r4validator, message("S23", sch, both))
    assert warnings == ()
    assert sorted((s["start"], s["end"]) for s in resources(blocked, "Slot")) == [
        ("2024-06-20T09:00:00+02:00", "2024-06-20T10:00:00+02:00"),
        ("2024-06-20T14:00:00+02:00", "2024-06-20T15:00:00+02:00"),
    ]
    opened, _ = convert(converter, r4validator, message("S24", sch, group(1, "14")))
    afternoon = ("ECHO-01", "2024-06-20T14:00:00+02:00")
    assert by_time(opened) == {afternoon: by_time(blocked)[afternoon]}


def from_sender(data: bytes, application: str, facility: str) -> bytes:
    return set_field(set_field(data, "MSH", 3, application), "MSH", 4, facility)


LYON = ("AGENDA-TILLEUL^1.2.250.1.999.1.40^ISO", "CHU-LYON^1.2.250.1.999.1.1^ISO")
VILLEFRANCHE = ("AGENDA-VF^1.2.250.1.999.2.40^ISO", "CH-VILLEFRANCHE^1.2.250.1.999.2.1^ISO")
#: Another application of the CHU de Lyon (its imaging department's).
LYON_RIS = ("RIS-IMAGERIE^1.2.250.1.999.1.50^ISO", LYON[1])


@pytest.mark.parametrize(
    ("sch", "distinct"),
    [
        ({2: ""}, 3),
        ({2: "BLOC-1"}, 2),
        ({1: "BLOC-1", 2: ""}, 2),
        ({2: "BLOC-1^AGENDA-COMMUN^1.2.250.1.999.9.40^ISO"}, 1),
    ],
    ids=["no-id", "SCH-2-no-namespace", "SCH-1-no-namespace", "SCH-2-namespace"],
)
def test_the_blocks_of_one_practitioner_by_two_senders_are_not_one(
    converter: Converter, r4validator: R4Validator, sch: dict[int, str], distinct: int
) -> None:
    """Dr Faure (RPPS: one Practitioner, one Schedule for every hospital) blocked at the
    same start by Lyon's agenda, Villefranche's, and Lyon's imaging system. Without a
    block id, the Slot is each sender's (MSH-4 and MSH-3): the S24 of the one never
    frees the other's. A block id without namespace is scoped as an Appointment's (by
    the sending facility: Lyon's two applications share it); with a namespace, it names
    the block whoever sends it."""
    one_person = ["RGS|1|A", segment("AIP", {1: "1", 2: "A", 3: FAURE})]
    data = message("S23", sch, one_person)
    bundles = [
        convert(converter, r4validator, from_sender(data, *sender))[0]
        for sender in (LYON, VILLEFRANCHE, LYON_RIS)
    ]
    (schedules,) = {frozenset(s["id"] for s in resources(b, "Schedule")) for b in bundles}
    assert len(schedules) == 1
    slots = [tuple(s["id"] for s in resources(b, "Slot")) for b in bundles]
    assert len(set(slots)) == distinct
    # Two hospitals: one Slot only when the id's namespace names the block's issuer.
    assert (slots[0] == slots[1]) == (distinct == 1)
    assert (slots[0] == slots[2]) == (distinct < 3)


@pytest.mark.parametrize(("name", "field"), [("AIP", 3), ("AIL", 3), ("AIG", 3)])
def test_a_resource_without_id_is_left_out_with_a_warning(
    converter: Converter, r4validator: R4Validator, name: str, field: int
) -> None:
    """An AIx without its resource id names nothing to block: left out with a warning
    naming the segment and field only (its role, e.g. AIP-4, is not repeated)."""
    anonymous = segment(name, {1: "1", 2: "A", 4: "CARD^Cardiologue^L"})
    group = [anonymous if s.startswith(name) else s for s in default_resources()]
    bundle, warnings = convert(converter, r4validator, message("S23", {}, group))
    assert len(resources(bundle, "Slot")) == 2
    assert warnings == (
        f"{name} without a usable {name}-{field} (resource id) left out: no Schedule to "
        "block (R4 Schedule.actor is required)",
    )


def test_on_a_fhir_server_s24_frees_one_occurrence_of_one_sender(
    converter: Converter, r4validator: R4Validator, fhir_server: FhirServer
) -> None:
    """Lyon blocks Dr Faure on the 20th and the 27th without a block id; Villefranche blocks
    him on the 27th at the same time, then opens its own block; Lyon then opens the 27th.
    On the server: Lyon's 20th still blocked, Lyon's and Villefranche's 27th free."""
    fhir_server.reset()
    one_person = ["RGS|1|A", segment("AIP", {1: "1", 2: "A", 3: FAURE})]

    def send(event: str, occurrences: list[tuple[str, str]], sender: tuple[str, str]) -> None:
        data = repeated(event, "TQ1", occurrences, one_person, f"{event}-{sender[0][:4]}")
        bundle, _ = convert(
            converter, r4validator, from_sender(set_field(data, "SCH", 2, ""), *sender)
        )
        fhir_server.transact(bundle)

    send("S23", OCCURRENCES, LYON)
    send("S23", [NEXT_WEEK], VILLEFRANCHE)
    send("S24", [NEXT_WEEK], VILLEFRANCHE)
    stored = sorted(
        (e["resource"]["start"], e["resource"]["status"])
        for e in fhir_server.search("Slot")["entry"]
    )
    assert stored == [
        ("2024-06-20T09:00:00+02:00", "busy-unavailable"),
        ("2024-06-27T09:00:00+02:00", "busy-unavailable"),  # Lyon's
        ("2024-06-27T09:00:00+02:00", "free"),  # Villefranche's
    ]
    send("S24", [NEXT_WEEK], LYON)
    stored = sorted(
        (e["resource"]["start"], e["resource"]["status"])
        for e in fhir_server.search("Slot")["entry"]
    )
    assert stored == [
        ("2024-06-20T09:00:00+02:00", "busy-unavailable"),
        ("2024-06-27T09:00:00+02:00", "free"),
        ("2024-06-27T09:00:00+02:00", "free"),
    ]
    assert fhir_server.count("Schedule") == 1
