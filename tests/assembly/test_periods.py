"""FHIR R4 per-1: a Period that ends before it starts loses its end, with a warning.

A validating server refuses a whole transaction for one reversed Period (PV1-45 before
PV1-44, PRA-10 before PRA-8, a CDA ``high`` before its ``low``); assembly keeps the start,
drops the end and says where, never what. The values compare as FHIR dateTimes: a
partial date is the interval it names and only a certain reversal counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from converter.assembly.bundle import build_bundle
from converter.assembly.periods import drop_reversed_period_ends
from tests.cda._support import cda, convert_document
from tests.support.hl7_edit import convert_one, resources, segment, set_field

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"


def reversed_after_check(start: str, end: str) -> bool:
    """Whether the check drops the end of ``{start, end}`` (and warns)."""
    period = {"start": start, "end": end}
    warnings: list[str] = []
    drop_reversed_period_ends([{"resourceType": "Encounter", "period": period}], warnings)
    assert ("end" not in period) == bool(warnings)
    return "end" not in period


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2026-01-02T10:00:00+01:00", "2026-01-01T10:00:00+01:00"),
        ("2026-01-02T10:00:00+01:00", "2026-01-02T09:59:59+01:00"),
        # One instant written with two offsets orders by the instant, not the text.
        ("2026-01-02T10:00:00+01:00", "2026-01-02T08:30:00Z"),
        ("2026-01-02T10:00:00Z", "2026-01-02T10:30:00+01:00"),
        ("2026-01-02T10:00:00.5+01:00", "2026-01-02T10:00:00+01:00"),
        ("2026-01-02", "2026-01-01"),
        ("2026-02", "2026-01-31"),
        ("2026", "2025-12"),
        ("2026-03-05", "2026-02"),
        # A date may be in any zone (UTC+14:00 to UTC-12:00): two days before is certain.
        ("2026-01-03T00:00:00+01:00", "2025-12-31"),
        ("2026-01-03", "2026-01-01T10:00:00Z"),
    ],
)
def test_an_end_certainly_before_the_start_is_dropped(start: str, end: str) -> None:
    assert reversed_after_check(start, end)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2026-01-01T10:00:00+01:00", "2026-01-02T10:00:00+01:00"),
        ("2026-01-01T10:00:00+01:00", "2026-01-01T10:00:00+01:00"),
        # 10:00+01:00 is 09:00Z: the end is after the start, though its text sorts before.
        ("2026-01-02T10:00:00+01:00", "2026-01-02T09:30:00-02:00"),
        ("2026-01-02T10:00:00+01:00", "2026-01-02T09:30:00+00:00"),
        ("2026-01-02T10:00:00+01:00", "2026-01-02T10:00:00.5+01:00"),
        # A partial date is an interval: each of these may hold the start.
        ("2026-03-05", "2026-03"),
        ("2026-03-05T10:00:00+01:00", "2026-03-05"),
        ("2026-03-05T10:00:00+01:00", "2026-03"),
        ("2026-12", "2026"),
        # Across a day boundary a zoneless date is not certainly before an instant.
        ("2026-01-02T01:00:00+02:00", "2026-01-01"),
        ("2026-01-02", "2026-01-01T23:00:00Z"),
        ("2026-01-01", "2026-01-01"),
    ],
)
def test_an_end_that_may_follow_the_start_is_kept(start: str, end: str) -> None:
    assert not reversed_after_check(start, end)


def test_not_a_datetime_is_left_to_the_validator() -> None:
    assert not reversed_after_check("yesterday", "2026-01-01")
    assert not reversed_after_check("2026-13-01T10:00:00+01:00", "2026-01-01")


def test_the_warning_names_the_element_never_the_values() -> None:
    encounter: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": "e1",
        "period": {"start": "2026-01-02T10:00:00+01:00", "end": "2026-01-01T10:00:00+01:00"},
        "participant": [
            {"period": {"start": "2026-01-01"}},
            {"period": {"start": "2026-01-05", "end": "2026-01-04"}},
        ],
        "location": [{"period": {"start": "2026-01-02", "end": "2026-01-03"}}],
    }
    warnings: list[str] = []
    build_bundle("b", [encounter], mode="put", warnings=warnings)
    assert sorted(warnings) == [
        "Encounter.participant[1].period: end before start; end dropped",
        "Encounter.period: end before start; end dropped",
    ]
    assert encounter["period"] == {"start": "2026-01-02T10:00:00+01:00"}
    assert encounter["participant"][1]["period"] == {"start": "2026-01-05"}
    assert encounter["location"][0]["period"] == {"start": "2026-01-02", "end": "2026-01-03"}


def test_a_resources_own_start_and_end_are_not_a_period() -> None:
    # Appointment.start / end are instants of the resource itself, outside per-1.
    appointment = {
        "resourceType": "Appointment",
        "id": "a1",
        "start": "2026-01-02T10:00:00+01:00",
        "end": "2026-01-02T09:00:00+01:00",
    }
    warnings: list[str] = []
    build_bundle("b", [appointment], mode="put", warnings=warnings)
    assert "end" in appointment and warnings == []


def test_a_deleted_resource_is_not_checked() -> None:
    encounter = {
        "resourceType": "Encounter",
        "id": "e1",
        "period": {"start": "2026-01-02", "end": "2026-01-01"},
    }
    warnings: list[str] = []
    bundle = build_bundle(
        "b", [encounter], mode="put", warnings=warnings, deleted={("Encounter", "e1")}
    )
    assert bundle["entry"] == [{"request": {"method": "DELETE", "url": "Encounter/e1"}}]
    assert warnings == []


def visit(admit: str, discharge: str) -> bytes:
    """An A03 discharge with PV1-44 admit and PV1-45 discharge times."""
    return "\r".join(
        [
            "MSH|^~\\&|APP|FAC|PASS|GHT|20260102120000+0100||ADT^A03^ADT_A03|T1|P|2.5.1",
            "EVN|A03|20260102120000+0100",
            "PID|1||123^^^FAC^MR||DOE^JOHN||19800101|M",
            segment(
                "PV1",
                {1: "1", 2: "I", 3: "CARD^101^1^FAC", 19: "V1^^^FAC^VN", 44: admit, 45: discharge},
            ),
            "",
        ]
    ).encode()


def test_hl7v2_discharge_before_admission_keeps_the_admission() -> None:
    converter = Converter(ConverterConfig(default_timezone="Europe/Paris"))
    bundle, _ = convert_one(converter, visit("20260102100000+0100", "20260101100000+0100"))
    [encounter] = resources(bundle, "Encounter")
    assert encounter["period"] == {"start": "2026-01-02T10:00:00+01:00"}
    # The same instant written with another offset is no reversal.
    bundle, _ = convert_one(converter, visit("202601021000+0100", "202601020930+0000"))
    [encounter] = resources(bundle, "Encounter")
    assert encounter["period"]["end"] == "2026-01-02T09:30:00+00:00"


def test_hl7v2_pra_left_before_entered_keeps_the_entry() -> None:
    data = (SAMPLES / "MFN_M02_staff.hl7").read_bytes()
    data = set_field(data, "PRA", 8, "20250901")
    data = set_field(data, "PRA", 10, "20250101")
    bundle, _ = convert_one(Converter(ConverterConfig(default_timezone="Europe/Paris")), data)
    periods = [role.get("period") for role in resources(bundle, "PractitionerRole")]
    assert {"start": "2025-09-01"} in periods
    assert all(p is None or "end" not in p or p["end"] >= p["start"] for p in periods)


def test_cda_high_before_low_keeps_the_low() -> None:
    header = (
        '<componentOf><encompassingEncounter><id root="1.2.250.1.999.1.1.3" extension="V-42"/>'
        '<effectiveTime><low value="20240312143000+0100"/><high value="20240311090000+0100"/>'
        "</effectiveTime></encompassingEncounter></componentOf>"
    )
    bundle, _ = convert_document(cda(header=header))
    [encounter] = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Encounter"
    ]
    assert encounter["period"] == {"start": "2024-03-12T14:30:00+01:00"}


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("0001-01-01T10:00:00+01:00", "0001-01-01"),
        ("9999-12-31", "9999-12-31T23:00:00-12:00"),
        ("9999-12-31T23:59:59-12:00", "9999-12-31T23:00:00-13:00"),
    ],
)
def test_the_ends_of_the_calendar_are_compared_without_error(start: str, end: str) -> None:
    assert not reversed_after_check(start, end)


SAID = "Encounter.period: end before start; end dropped"


def test_the_conversion_says_which_period_lost_its_end() -> None:
    converter = Converter(ConverterConfig(default_timezone="Europe/Paris"))
    _, warnings = convert_one(converter, visit("20260102100000+0100", "20260101100000+0100"))
    assert SAID in warnings
    assert not [w for w in warnings if "2026" in w]  # names the element, never the values
    _, warnings = convert_one(converter, visit("20260102100000+0100", "20260103100000+0100"))
    assert SAID not in warnings


def test_a_cda_document_says_it_too() -> None:
    header = (
        '<componentOf><encompassingEncounter><id root="1.2.250.1.999.1.1.3" extension="V-42"/>'
        '<effectiveTime><low value="20240312143000+0100"/><high value="20240311090000+0100"/>'
        "</effectiveTime></encompassingEncounter></componentOf>"
    )
    _, warnings = convert_document(cda(header=header))
    assert SAID in warnings


def test_a_period_made_of_two_merged_renderings_is_checked_too(tmp_path: Path) -> None:
    """Each rendering alone holds no object with both a start and an end (the walk is
    skipped for such resources); merged into one resource they make a reversed Period."""
    visit_template = (
        '{"resourceType": "Encounter", "_identity": "V1", "status": "finished",\n'
        ' "period": {"start": {{ start }}, "end": {{ end }}},}\n'
    )
    root = (
        '{% do emit("Visit", start="2026-01-02", end=none) %}\n'
        '{% do emit("Visit", start=none, end="2026-01-01") %}\n'
    )
    for name, text in {
        "hl7v2/messages/Two.j2": root,
        "hl7v2/resources/Visit.j2": visit_template,
    }.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    converter = Converter(ConverterConfig(template_dirs=(tmp_path,), validate=False))
    data = (SAMPLES / "ADT_A01_crlf.hl7").read_bytes()
    conversion = converter.convert_message(data.replace(b"\r\n", b"\r"), root_template="Two")
    [encounter] = [e["resource"] for e in conversion.bundle["entry"]]
    assert encounter["period"] == {"start": "2026-01-02"}
    assert SAID in conversion.warnings
