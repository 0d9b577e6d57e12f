"""Repeating scheduled times in SIU (HL7 v2.5 TQ1 §4.5.4: TQ1-3 repeat pattern, TQ1-8 end
date/time, TQ1-13 occurrence duration, TQ1-14 total occurrences; SCH-11 TQ before v2.7).

With a repeat pattern, TQ1-8 is when the series ends, not when an occurrence ends: read as
the occurrence's end it made a weekly two-hour block one Slot blocking the resource for
weeks, and a weekly appointment one Appointment lasting weeks. A blocked time (S23 / S24)
repeating at a fixed interval, on days of the week (Q<n>J<days>) or at times of day (BID,
TID, QID, QAM, QPM, QHS: TQ1-4's times, else code map RepeatPattern-Times-Passerelle) is
expanded, one Slot per occurrence (the S24 of the same series opens the same Slots); other
patterns (months), and the Appointment (R4 has no recurrence), are their first occurrence
with a warning (scheduling.j2 Occurrences, filter repeat_occurrences; the arithmetic is
tested in tests/templates/test_repeat_patterns.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter
from tests.mappings.test_siu_slots import convert, message
from tests.support.hl7_edit import resources, set_field
from tests.support.r4validator import R4Validator

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
ROOM_ONLY = ["RGS|1|A", "AIL|1|A|CARDIO^ECHO-01^^CHU-LYON&1.2.250.1.999.1.1&ISO"]


def slot_times(bundle: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((s["start"], s["end"]) for s in resources(bundle, "Slot"))


def block(event: str, tq1: dict[int, str], sch: dict[int, str] | None = None) -> bytes:
    return message(event, {11: "", **(sch or {})}, ROOM_ONLY, tq1={1: "1", **tq1})


def test_a_weekly_block_until_a_date_is_one_slot_per_week_across_the_dst_change(
    converter: Converter, r4validator: R4Validator
) -> None:
    # Every Monday 9:00-11:00 from 21 October to 12 November 2024 (Paris leaves summer
    # time on 27 October): the wall-clock time stays 9:00.
    weekly = {3: "Q1W", 7: "20241021090000+0200", 8: "20241112110000+0100"}
    blocked, warnings = convert(converter, r4validator, block("S23", weekly))
    assert warnings == ()
    assert slot_times(blocked) == [
        ("2024-10-21T09:00:00+02:00", "2024-10-21T11:00:00+02:00"),
        ("2024-10-28T09:00:00+01:00", "2024-10-28T11:00:00+01:00"),
        ("2024-11-04T09:00:00+01:00", "2024-11-04T11:00:00+01:00"),
        ("2024-11-11T09:00:00+01:00", "2024-11-11T11:00:00+01:00"),
    ]
    # The S24 of the same series opens the same Slots.
    opened, _ = convert(converter, r4validator, block("S24", weekly))
    assert {s["id"] for s in resources(opened, "Slot")} == {
        s["id"] for s in resources(blocked, "Slot")
    }


def test_a_count_bounds_the_series_and_the_duration_gives_each_occurrence_its_end(
    converter: Converter, r4validator: R4Validator
) -> None:
    every_two_hours = {3: "Q2H", 7: "20240620080000+0200", 13: "30^min", 14: "3"}
    bundle, warnings = convert(converter, r4validator, block("S23", every_two_hours))
    assert warnings == ()
    assert slot_times(bundle) == [
        ("2024-06-20T08:00:00+02:00", "2024-06-20T08:30:00+02:00"),
        ("2024-06-20T10:00:00+02:00", "2024-06-20T10:30:00+02:00"),
        ("2024-06-20T12:00:00+02:00", "2024-06-20T12:30:00+02:00"),
    ]


def test_a_pattern_not_expanded_is_its_first_occurrence_with_a_warning(
    converter: Converter, r4validator: R4Validator
) -> None:
    # Monthly (table 0335 Q<n>L: months of a lunar cycle, no calendar date to repeat on).
    monthly = {3: "Q1L", 7: "20240620090000+0200", 8: "20241220110000+0100"}
    bundle, warnings = convert(converter, r4validator, block("S23", monthly))
    assert slot_times(bundle) == [("2024-06-20T09:00:00+02:00", "2024-06-20T11:00:00+02:00")]
    [warning] = warnings
    assert "Q1L" in warning and "not expanded" in warning and "end of the series" in warning
    assert "2024" not in warning, "warnings never quote the times"
    # No count and no end of the series: the first occurrence, said.
    open_ended = {3: "Q1W", 7: "20240620090000+0200", 13: "2^h"}
    bundle, warnings = convert(converter, r4validator, block("S23", open_ended))
    assert slot_times(bundle) == [("2024-06-20T09:00:00+02:00", "2024-06-20T11:00:00+02:00")]
    assert len(warnings) == 1 and "no count" in warnings[0]


def test_a_long_daily_series_is_capped_with_a_warning(
    converter: Converter, r4validator: R4Validator
) -> None:
    daily = {3: "Q1D", 7: "20240101090000+0100", 8: "20251231100000+0100", 13: "1^h"}
    bundle, warnings = convert(converter, r4validator, block("S23", daily))
    assert len(resources(bundle, "Slot")) == 366
    assert warnings == (
        "blocked time of TQ1: repeat pattern Q1D expanded to its first 366 occurrences only"
        " (up to the one starting 2024-12-31T09:00:00+01:00; the later ones TQ1-8 asks for"
        " are not written)",
    )


def test_a_weekly_appointment_is_its_first_occurrence_not_weeks_long(
    converter: Converter,
) -> None:
    data = SAMPLES.joinpath("SIU_S12_new-appointment.hl7").read_bytes()
    # Every week from 18 June to 9 July; each occurrence lasts SCH-9/10 (45 min).
    weekly = "TQ1|1||Q1W||||20240618143000+0200|20240709151500+0200"
    lines = data.decode("utf-8").split("\r")
    at = next(n for n, line in enumerate(lines) if line.startswith("SCH|")) + 1
    data = "\r".join([*lines[:at], weekly, *lines[at:]]).encode("utf-8")
    conversion = converter.convert_message(data)
    [appointment] = resources(conversion.bundle, "Appointment")
    assert appointment["start"] == "2024-06-18T14:30:00+02:00"
    assert appointment["end"] == "2024-06-18T15:15:00+02:00"
    assert any(
        "repeat pattern of the appointment" in w and "first occurrence of 4" in w
        for w in conversion.warnings
    )
    # Without a repeat pattern, TQ1-8 stays the appointment's end.
    once = set_field(data, "TQ1", 3, "")
    [appointment] = resources(converter.convert_message(once).bundle, "Appointment")
    assert appointment["end"] == "2024-07-09T15:15:00+02:00"


def test_without_any_occurrence_length_the_end_given_stays_and_is_said(
    converter: Converter, r4validator: R4Validator
) -> None:
    # Weekly, no TQ1-13, no SCH-9, TQ1-8 at the start's time of day: nothing tells how
    # long one occurrence is; the block is not refused (that would lose it), the warning
    # says its end may be the series'.
    weekly = {3: "Q1W", 7: "20240620090000+0200", 8: "20240711090000+0200"}
    bundle, warnings = convert(converter, r4validator, block("S23", weekly, {9: "", 10: ""}))
    assert slot_times(bundle) == [("2024-06-20T09:00:00+02:00", "2024-07-11T09:00:00+02:00")]
    [warning] = warnings
    assert "no occurrence duration" in warning and "may be the series'" in warning


def test_twice_a_day_at_the_default_times_then_at_the_times_given(
    converter: Converter, r4validator: R4Validator
) -> None:
    # BID from 20 June 8:00, four times, 30 minutes each: 08:00 and 20:00 (code map
    # RepeatPattern-Times-Passerelle) when TQ1-4 gives no time.
    twice_a_day = {3: "BID", 7: "20240620080000+0200", 13: "30^min", 14: "4"}
    blocked, warnings = convert(converter, r4validator, block("S23", twice_a_day))
    assert warnings == ()
    assert slot_times(blocked) == [
        ("2024-06-20T08:00:00+02:00", "2024-06-20T08:30:00+02:00"),
        ("2024-06-20T20:00:00+02:00", "2024-06-20T20:30:00+02:00"),
        ("2024-06-21T08:00:00+02:00", "2024-06-21T08:30:00+02:00"),
        ("2024-06-21T20:00:00+02:00", "2024-06-21T20:30:00+02:00"),
    ]
    opened, _ = convert(converter, r4validator, block("S24", twice_a_day))
    assert {s["id"] for s in resources(opened, "Slot")} == {
        s["id"] for s in resources(blocked, "Slot")
    }
    # TQ1-4 explicit times override the institution's: the first at or after the start.
    at_nine_and_five = {**twice_a_day, 4: "0900~1700"}
    bundle, warnings = convert(converter, r4validator, block("S23", at_nine_and_five))
    assert warnings == ()
    assert [start for start, _ in slot_times(bundle)] == [
        "2024-06-20T09:00:00+02:00",
        "2024-06-20T17:00:00+02:00",
        "2024-06-21T09:00:00+02:00",
        "2024-06-21T17:00:00+02:00",
    ]


def test_sch_11_explicit_times_place_the_occurrences(
    converter: Converter, r4validator: R4Validator
) -> None:
    # v2.3: no TQ1; SCH-11 TQ.2 repeat pattern & explicit times, TQ.12 total occurrences,
    # SCH-9/10 the occurrence's length.
    data = message(
        "S23",
        {9: "30", 10: "min", 11: "^TID&0700,1300,1900^^20240620080000+0200^^^^^^^^4"},
        ROOM_ONLY,
        version="2.3",
    )
    bundle, warnings = convert(converter, r4validator, data)
    assert warnings == ()
    assert [start for start, _ in slot_times(bundle)] == [
        "2024-06-20T13:00:00+02:00",
        "2024-06-20T19:00:00+02:00",
        "2024-06-21T07:00:00+02:00",
        "2024-06-21T13:00:00+02:00",
    ]


def test_monday_wednesday_friday_until_a_date(
    converter: Converter, r4validator: R4Validator
) -> None:
    # QJ135 (J1 = Monday) 9:00-11:00 from Monday 17 June to Friday 28 June.
    mwf = {3: "QJ135", 7: "20240617090000+0200", 8: "20240628110000+0200"}
    bundle, warnings = convert(converter, r4validator, block("S23", mwf))
    assert warnings == ()
    assert [start[:10] for start, _ in slot_times(bundle)] == [
        "2024-06-17",
        "2024-06-19",
        "2024-06-21",
        "2024-06-24",
        "2024-06-26",
        "2024-06-28",
    ]
    assert {(start[10:], end[10:]) for start, end in slot_times(bundle)} == {
        ("T09:00:00+02:00", "T11:00:00+02:00")
    }


def test_hourly_over_the_night_the_clocks_go_back_is_elapsed_time(
    converter: Converter, r4validator: R4Validator
) -> None:
    # Every hour from 00:00 (summer time) until 05:00 (winter time) on 27 October 2024:
    # six hours elapse, 02:00 comes twice; each Slot in the offset of its instant.
    hourly = {3: "Q1H", 7: "20241027000000+0200", 8: "20241027050000+0100", 13: "30^min"}
    bundle, warnings = convert(converter, r4validator, block("S23", hourly))
    assert warnings == ()
    assert [start for start, _ in slot_times(bundle)] == [
        "2024-10-27T00:00:00+02:00",
        "2024-10-27T01:00:00+02:00",
        "2024-10-27T02:00:00+01:00",
        "2024-10-27T02:00:00+02:00",
        "2024-10-27T03:00:00+01:00",
        "2024-10-27T04:00:00+01:00",
    ]


def test_an_appointment_on_given_weekdays_is_its_first_occurrence(
    converter: Converter,
) -> None:
    # Booked from Tuesday 18 June, Monday / Wednesday / Friday: the first is Wednesday.
    data = SAMPLES.joinpath("SIU_S12_new-appointment.hl7").read_bytes()
    weekly = "TQ1|1||QJ135||||20240618143000+0200|20240628151500+0200"
    lines = data.decode("utf-8").split("\r")
    at = next(n for n, line in enumerate(lines) if line.startswith("SCH|")) + 1
    data = "\r".join([*lines[:at], weekly, *lines[at:]]).encode("utf-8")
    conversion = converter.convert_message(data)
    [appointment] = resources(conversion.bundle, "Appointment")
    assert (appointment["start"], appointment["end"]) == (
        "2024-06-19T14:30:00+02:00",
        "2024-06-19T15:15:00+02:00",
    )
    assert any("first occurrence of 5" in w for w in conversion.warnings)


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        # No times in the message: TQ1-7 as the sender wrote it, not the institution's
        # default 20:00 the sender never said.
        ("", ("2024-06-18T14:30:00+02:00", "2024-06-18T15:15:00+02:00")),
        # Times given: the first of them at or after TQ1-7.
        ("0900~1700", ("2024-06-18T17:00:00+02:00", "2024-06-18T17:45:00+02:00")),
    ],
)
def test_an_appointment_twice_a_day_moves_only_to_times_the_message_gives(
    converter: Converter, times: str, expected: tuple[str, str]
) -> None:
    data = SAMPLES.joinpath("SIU_S12_new-appointment.hl7").read_bytes()
    twice = f"TQ1|1||BID|{times}|||20240618143000+0200|||||||4"
    lines = data.decode("utf-8").split("\r")
    at = next(n for n, line in enumerate(lines) if line.startswith("SCH|")) + 1
    data = "\r".join([*lines[:at], twice, *lines[at:]]).encode("utf-8")
    conversion = converter.convert_message(data)
    [appointment] = resources(conversion.bundle, "Appointment")
    assert (appointment["start"], appointment["end"]) == expected
