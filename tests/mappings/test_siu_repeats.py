"""Repeating scheduled times in SIU (HL7 v2.5 TQ1 §4.5.4: TQ1-3 repeat pattern, TQ1-8 end
date/time, TQ1-13 occurrence duration, TQ1-14 total occurrences; SCH-11 TQ before v2.7).

With a repeat pattern, TQ1-8 is when the series ends, not when an occurrence ends: read as
the occurrence's end it made a weekly two-hour block one Slot blocking the resource for
weeks, and a weekly appointment one Appointment lasting weeks. A blocked time (S23 / S24)
repeating at a fixed interval is expanded, one Slot per occurrence (the S24 of the same
series opens the same Slots); other patterns, and the Appointment (R4 has no recurrence),
are their first occurrence with a warning (scheduling.j2 Occurrences)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    twice_a_day = {3: "BID", 7: "20240620090000+0200", 8: "20240705110000+0200"}
    bundle, warnings = convert(converter, r4validator, block("S23", twice_a_day))
    assert slot_times(bundle) == [("2024-06-20T09:00:00+02:00", "2024-06-20T11:00:00+02:00")]
    [warning] = warnings
    assert "BID" in warning and "not expanded" in warning and "end of the series" in warning
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
        "blocked time of TQ1: repeat pattern Q1D expanded to its first 366 occurrences only",
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
