"""SIU review fixes (SIU.j2, scheduling.j2): table 0278's Dc filler status, and a visit
that nothing identifies."""

from __future__ import annotations

import pytest

from converter import Converter
from tests.mappings.test_siu import CHU, appointment, convert, message, resources_of
from tests.support.r4validator import R4Validator


@pytest.mark.parametrize("where", ["SCH-25", "AIS-10"])
@pytest.mark.parametrize("code", ["Dc^Discontinued^HL70278", "Discontinued"])
def test_a_discontinued_appointment_is_not_booked(
    converter: Converter, r4validator: R4Validator, where: str, code: str
) -> None:
    # Dc is table 0278's code (HL7 v2.5 ch. 10); the IG's map names it by its text and
    # maps it to nothing, which left an appointment that will not go on "booked".
    resources = [
        "RGS|1|A",
        f"AIS|1|A|CS-CARDIO^Consultation^L|||||||{code if where == 'AIS-10' else ''}",
        f"AIP|1|A|10101234563^LEROY^Paul^^^Dr^^^{CHU}^L",
    ]
    sch = {25: code if where == "SCH-25" else ""}
    bundle, warnings = convert(converter, r4validator, message("S14", sch, resources))
    assert appointment(bundle)["status"] == "cancelled"
    assert not any("FillerStatusCodes" in w for w in warnings)


def test_a_visit_without_number_nor_admit_time_writes_no_encounter_per_message(
    converter: Converter, r4validator: R4Validator
) -> None:
    # A consultation booked before the patient is registered: PV1 has a class and a
    # location, no visit number. Each S12/S13/S14 made a new Encounter (its id derived
    # from the message), a pile of planned visits never ended.
    pv1 = {1: "1", 2: "O", 3: f"CARDIO^CS-02^^{CHU}"}
    ids = set()
    for n, event in enumerate(["S12", "S13", "S14"]):
        bundle, warnings = convert(
            converter, r4validator, message(event, pv1=pv1, control_id=f"SIU-{n}")
        )
        assert resources_of(bundle, "Encounter") == []
        assert any("PV1 without visit number" in w for w in warnings)
        ids.add(appointment(bundle)["id"])
    assert len(ids) == 1
    # With a visit number the Encounter is written, one for every message.
    numbered = {**pv1, 19: f"2024000417^^^{CHU}^VN"}
    first, _ = convert(converter, r4validator, message("S12", pv1=numbered, control_id="A"))
    second, _ = convert(converter, r4validator, message("S14", pv1=numbered, control_id="B"))
    [one] = resources_of(first, "Encounter")
    [two] = resources_of(second, "Encounter")
    assert one["id"] == two["id"]


def test_a_location_booked_by_its_type_only_is_said_to_be_left_out(
    converter: Converter, r4validator: R4Validator
) -> None:
    # AIL-3 empty, AIL-4 "a clinic room": the participant cannot be written (R4 app-1),
    # and it went without a word.
    resources = [
        "RGS|1|A",
        "AIS|1|A|CS-CARDIO^Consultation^L",
        "AIL|1|A||C^Clinique^HL70305",
        f"AIP|1|A|10101234563^LEROY^Paul^^^Dr^^^{CHU}^L",
    ]
    bundle, warnings = convert(converter, r4validator, message("S12", None, resources))
    assert len(appointment(bundle)["participant"]) == 2
    assert any(w.startswith("AIL without a location (AIL-3)") for w in warnings)


def test_a_visit_number_without_its_number_is_no_visit_number(
    converter: Converter, r4validator: R4Validator
) -> None:
    # PV1-19 naming only its authority and type: nothing identifies the visit either.
    pv1 = {1: "1", 2: "O", 3: f"CARDIO^CS-02^^{CHU}", 19: f"^^^{CHU}^VN"}
    bundle, warnings = convert(converter, r4validator, message("S12", pv1=pv1))
    assert resources_of(bundle, "Encounter") == []
    assert any("PV1 without visit number" in w for w in warnings)
