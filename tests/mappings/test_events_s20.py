"""Session 20: immunization status and place, scheduling series, visit moves, master files.

- VXU: an RXA-20 outside table 0322 (an action code ``D`` in the wrong field, a local
  code) was written ``completed``: a dose whose status the sender stated, and which the
  converter could not read, counted as given. RXA-28 (administered-at address, IG row 28
  ``location[1](Location.address)``) was dropped: a dose given at an address only had no
  location at all.
- SIU: a TQ1-3 given by its RPT components (RPT.5/6 period, RPT.2 DW days) and no RPT.1
  code was read as no repetition: one Slot (or Appointment) lasting the whole series,
  two years, without a word. The 366 occurrences cap now says up to where and which field
  asked for more.
- ADT A45 with MRG-5 other than PV1-19 (a visit renumbered while moved) left the Encounter
  under MRG-5 in progress under the source patient: the visit twice, in two records.
- ADT A30 (merge person information, ADT_A30 up to v2.6) had no route: refused (201).
- MFN M02 / M05 with MFI-3 REP (replace the whole file) were applied as updates without a
  word: what the file no longer lists stays active.
"""

from __future__ import annotations

from typing import Any

import pytest

from converter import Converter, MappingError
from tests.support.hl7_edit import (
    convert_one,
    insert_after,
    lines,
    message,
    resources,
    segment,
    set_field,
)
from tests.support.r4validator import R4Validator

_MSH = "MSH|^~\\&|APP|FAC|PASSERELLE|GHT|20240315103000+0100||{type}|{control}|P|{version}"
_PID = "PID|1||0012422301^^^CHU-LYON&1.2.250.1.999.1.1&ISO^MR||GARNIER^Léa||20230915|F"


def _vxu(
    completion: str,
    *,
    action: str = "A",
    version: str = "2.5.1",
    place: tuple[str, str] | None = None,
) -> bytes:
    """One HepB dose with RXA-20 ``completion``, RXA-21 ``action`` and RXA-27, RXA-28
    ``place``."""
    return message(
        [
            _MSH.format(type="VXU^V04^VXU_V04", control="S20-VXU", version=version),
            _PID,
            "ORC|RE||IZ-S20-1^FAC",
            segment(
                "RXA",
                {
                    **{1: "0", 2: "1", 3: "20240315", 5: "08^HepB^CVX", 6: "0.5"},
                    **{7: "mL^mL^UCUM", 9: "00^New^NIP001", 20: completion, 21: action},
                    **({27: place[0], 28: place[1]} if place else {}),
                },
            ),
        ]
    )


def _dose(bundle: dict[str, Any]) -> dict[str, Any]:
    (dose,) = resources(bundle, "Immunization")
    return dose


@pytest.mark.parametrize("completion", ["D", "X", "Y"])
def test_unknown_completion_status_is_refused(converter: Converter, completion: str) -> None:
    with pytest.raises(MappingError) as failure:
        convert_one(converter, _vxu(completion))
    assert failure.value.location == "RXA-20"
    assert "completion status" in str(failure.value)
    # 103 table value not found: the field is valued (101 "required field missing" sent
    # the sender's team looking for an empty field).
    assert failure.value.hl7_error_code == "103"
    assert "not a code of its table" in str(failure.value)


def test_completion_statuses_of_table_0322(converter: Converter, r4validator: R4Validator) -> None:
    expected = {"CP": "completed", "PA": "completed", "RE": "not-done", "NA": "not-done"}
    for code, status in expected.items():
        for written in (code, code.lower()):
            bundle, _ = convert_one(converter, _vxu(written))
            dose = _dose(bundle)
            assert dose["status"] == status
            # Partially administered: completed, and subpotent (R4 isSubpotent).
            assert dose.get("isSubpotent") == (True if code == "PA" else None)
            assert r4validator.validate(bundle) == []
    # Empty: the IG's default; a deletion whatever RXA-20 holds.
    assert _dose(convert_one(converter, _vxu(""))[0])["status"] == "completed"
    deleted = _dose(convert_one(converter, _vxu("D", action="D"))[0])
    assert deleted["status"] == "entered-in-error"
    assert "isSubpotent" not in _dose(convert_one(converter, _vxu("PA", action="D"))[0])


def test_administered_at_address_is_the_location_address(
    converter: Converter, r4validator: R4Validator
) -> None:
    address = "10 rue Garibaldi^^Lyon^^69003^FRA"
    bundle, _ = convert_one(converter, _vxu("CP", version="2.7", place=("VACC^^^FAC", address)))
    locations = {f"Location/{r['id']}": r for r in resources(bundle, "Location")}
    place = locations[_dose(bundle)["location"]["reference"]]
    assert place["name"] == "VACC"
    assert place["address"]["city"] == "Lyon"
    assert place["address"]["line"] == ["10 rue Garibaldi"]
    # The facility above it is not given the unit's address.
    facility = locations[place["partOf"]["reference"]]
    assert "address" not in facility
    assert r4validator.validate(bundle) == []
    # An address alone: a Location of that address, the same on every message.
    alone, _ = convert_one(converter, _vxu("CP", version="2.7", place=("", address)))
    where = _dose(alone)["location"]["reference"]
    (location,) = [r for r in resources(alone, "Location") if f"Location/{r['id']}" == where]
    assert location["address"]["postalCode"] == "69003"
    again, _ = convert_one(converter, _vxu("CP", version="2.7", place=("", address)))
    assert _dose(again)["location"]["reference"] == where
    assert r4validator.validate(alone) == []


# -- SIU: repeat patterns given by their RPT components, and the 366 occurrences cap -------

_SIU_PATH = "samples/hl7v2/SIU_S23_block-slot.hl7"
_APPOINTMENT_PATH = "samples/hl7v2/SIU_S12_new-appointment.hl7"


def _block(rpt: str, end: str = "20260620110000+0200") -> bytes:
    """The S23 sample blocking its room (AIL) from 20 June 2024 09:00 to 11:00 with TQ1-3
    ``rpt`` until ``end`` (two years)."""
    with open(_SIU_PATH, "rb") as sample:
        found = lines(sample.read())
    kept = [line for line in found if not line.startswith(("AIP", "AIG", "NTE"))]
    tq1 = f"TQ1|1||{rpt}||||20240620090000+0200|{end}"
    return message([tq1 if line.startswith("TQ1|") else line for line in kept])


def _booking(rpt: str) -> bytes:
    """The S12 sample with a TQ1: TQ1-3 ``rpt`` from 18 June 2024 14:30 for two years."""
    with open(_APPOINTMENT_PATH, "rb") as sample:
        data = sample.read()
    return insert_after(data, "SCH|", f"TQ1|1||{rpt}||||20240618143000+0200|20260618151500+0200")


@pytest.mark.parametrize(
    ("rpt", "code", "count", "last"),
    [
        # A daily pattern for two years: the first 366 written, the warning says up to where.
        ("Q1D&Daily&HL70335", "Q1D", 366, "2025-06-20T09:00:00+02:00"),
        # RPT.5/6 alone: every day (Q1D), 366 at most.
        ("^^^^1^d", "Q1D", 366, "2025-06-20T09:00:00+02:00"),
        # RPT.2 DW, Monday to Friday, every day of the range (QJ12345).
        ("^DW^1^5^1^d", "QJ12345", 366, "2025-11-13T09:00:00+01:00"),
        # RPT.2 DW, Wednesdays, every other week (Q2J3): from the first Wednesday on.
        ("^DW^3^^2^wk", None, 52, "2026-06-17T09:00:00+02:00"),
    ],
)
def test_repeat_pattern_components_are_expanded(
    converter: Converter,
    r4validator: R4Validator,
    rpt: str,
    code: str | None,
    count: int,
    last: str,
) -> None:
    bundle, warnings = convert_one(converter, _block(rpt))
    slots = resources(bundle, "Slot")
    assert len(slots) == count
    # Each occurrence lasts two hours (SCH-9), never the two years of the series.
    assert all(s["end"][11:13] == "11" for s in slots)
    assert slots[-1]["start"] == last
    if count == 366:
        (cap,) = [w for w in warnings if "366" in w]
        assert f"repeat pattern {code}" in cap
        assert f"up to the one starting {last}" in cap and "TQ1-8" in cap
    else:
        assert not warnings
    assert r4validator.validate(bundle) == []
    appointment = resources(convert_one(converter, _booking(rpt))[0], "Appointment")[0]
    assert appointment["end"][:10] == appointment["start"][:10]


@pytest.mark.parametrize("rpt", ["^DW^1^5", "^DW^1^5^1^wk", "^^^^^^^AC", "^DM^1^1^1^mo"])
def test_repeat_pattern_components_not_expanded_are_said(
    converter: Converter, r4validator: R4Validator, rpt: str
) -> None:
    bundle, warnings = convert_one(converter, _block(rpt))
    (slot,) = resources(bundle, "Slot")
    assert (slot["start"], slot["end"]) == (
        "2024-06-20T09:00:00+02:00",
        "2024-06-20T11:00:00+02:00",
    )
    assert [w for w in warnings if "TQ1-3 (RPT.2-11)" in w and "first occurrence only" in w]
    assert r4validator.validate(bundle) == []
    booked, warnings = convert_one(converter, _booking(rpt))
    appointment = resources(booked, "Appointment")[0]
    assert appointment["end"] == "2024-06-18T15:15:00+02:00"
    assert [w for w in warnings if "TQ1-3 (RPT.2-11)" in w]


# -- ADT A45: a visit renumbered while moved -------------------------------------------------

_CHU = "CHU-LYON&1.2.250.1.999.1.1&ISO"


def test_a45_renumbered_visit_is_not_left_under_the_source_patient(
    converter: Converter, r4validator: R4Validator
) -> None:
    with open("samples/hl7v2/ADT_A45_move-visit.hl7", "rb") as sample:
        move = sample.read()
    # The visit as the source patient's admission wrote it (PV1-19 = the A45's MRG-5).
    admission = message(
        [
            _MSH.format(type="ADT^A01^ADT_A01", control="S20-A01", version="2.5"),
            "EVN|A01|20250414140000+0200",
            f"PID|1||0012352198^^^{_CHU}^PI||MARCHAND^Clara||19600714|F",
            f"PV1|1|O|CS-DERMATO^^^{_CHU}||||||||||||||||2025041420^^^{_CHU}^VN",
        ]
    )
    [stored] = resources(convert_one(converter, admission)[0], "Encounter")
    renumbered = set_field(move, "PV1", 19, f"2025041499^^^{_CHU}^VN")
    bundle, warnings = convert_one(converter, renumbered)
    encounters = {e["id"]: e for e in resources(bundle, "Encounter")}
    # The visit once, in progress, under the target patient; the record under MRG-5 retired.
    assert [e["status"] for e in encounters.values()].count("in-progress") == 1
    assert encounters[stored["id"]]["status"] == "entered-in-error"
    [target] = resources(bundle, "Patient")
    assert {e["subject"]["reference"] for e in encounters.values()} == {f"Patient/{target['id']}"}
    assert any("retired (entered-in-error)" in w for w in warnings)
    assert r4validator.validate(bundle) == []
    # Not renumbered: the one Encounter moves, nothing retired.
    bundle, _ = convert_one(converter, move)
    [moved] = resources(bundle, "Encounter")
    assert moved["id"] == stored["id"] and moved["status"] == "in-progress"


# -- ADT A30 merge person information ----------------------------------------------------


@pytest.mark.parametrize("version", ["2.3", "2.5"])
def test_a30_merges_as_a34(converter: Converter, r4validator: R4Validator, version: str) -> None:
    def merge(event: str) -> dict[str, Any]:
        data = message(
            [
                _MSH.format(type=f"ADT^{event}^ADT_A30", control=f"S20-{event}", version=version),
                f"EVN|{event}|20250415114205+0200",
                f"PID|1||0012352205^^^{_CHU}^PI||MARCHAND^Claire||19600714|F",
                f"MRG|0012352198^^^{_CHU}^PI",
            ]
        )
        bundle, warnings = convert_one(converter, data)
        assert warnings == []
        return bundle

    bundle = merge("A30")
    survivor, retired = resources(bundle, "Patient")
    assert retired["active"] is False
    assert retired["link"] == [
        {"other": {"reference": f"Patient/{survivor['id']}"}, "type": "replaced-by"}
    ]
    assert survivor["link"][0]["type"] == "replaces"
    assert r4validator.validate(bundle) == []
    # The same Patients, links and statuses as the A34 that replaced it.
    assert resources(merge("A34"), "Patient") == [survivor, retired]


# -- MFN: MFI-3 REP (replace the whole master file) ----------------------------------------


@pytest.mark.parametrize(
    ("name", "version", "what"),
    [
        ("MFN_M05_locations", "2.5", "locations"),
        ("MFN_M05_locations", "2.3.1", "locations"),
        ("MFN_M02_staff", "2.5", "staff"),
    ],
)
def test_a_whole_file_replacement_says_what_it_does_not_do(
    converter: Converter, name: str, version: str, what: str
) -> None:
    with open(f"samples/hl7v2/{name}.hl7", "rb") as sample:
        data = set_field(sample.read(), "MSH", 12, version)
    updated, before = convert_one(converter, data)
    replaced, warnings = convert_one(converter, set_field(data, "MFI", 3, "REP"))
    said = f"MFI-3 REP (replace the whole master file) applied record by record: {what}"
    assert [w for w in warnings if w.startswith(said)]
    assert not [w for w in before if w.startswith("MFI-3")]

    # The records themselves are written as an update writes them.
    def records(bundle: dict[str, Any]) -> list[str]:
        found = [e.get("resource") for e in bundle["entry"]]
        kept = [r for r in found if r and r["resourceType"] not in ("MessageHeader", "Provenance")]
        return [f"{r['resourceType']}/{r['id']}" for r in kept]

    assert records(replaced) == records(updated) != []


def test_several_timings_over_the_cap_say_up_to_where(converter: Converter) -> None:
    with open(_SIU_PATH, "rb") as sample:
        found = [line for line in lines(sample.read()) if not line.startswith(("AIP", "AIG"))]
    at = next(n for n, line in enumerate(found) if line.startswith("TQ1|"))
    # Two daily series of 200 occurrences each: 400, of which 366 are written.
    found[at : at + 1] = [
        f"TQ1|{n}||Q1D||||{year}0620090000+0200|||||||200" for n, year in ((1, 2024), (2, 2025))
    ]
    bundle, warnings = convert_one(converter, message(found))
    assert len(resources(bundle, "Slot")) == 366
    assert warnings == [
        "blocked time of the message (every TQ1, else every SCH-11 repetition): 400"
        " occurrences, only the first 366 written (up to the one starting"
        " 2025-12-02T09:00:00+01:00)"
    ]


# -- VXU: one order number on two doses ----------------------------------------------------


def test_a_repeated_order_number_does_not_swallow_the_second_dose(
    converter: Converter, r4validator: R4Validator
) -> None:
    with open("samples/hl7v2/VXU_V04_immunization.hl7", "rb") as sample:
        data = sample.read()
    number = "IZ-20240315-0001^CENTRE-PMI-LYON3"
    bundle, warnings = convert_one(converter, set_field(data, "ORC", 3, number, occurrence=2))
    doses = resources(bundle, "Immunization")
    # Both doses, each its vaccine and date; the number stays the first dose's.
    assert [d["vaccineCode"]["coding"][0]["code"] for d in doses] == ["146", "03"]
    assert [d["status"] for d in doses] == ["completed", "not-done"]
    assert "identifier" not in doses[1]
    assert not [w for w in warnings if "emitted twice" in w]
    assert [w for w in warnings if w.startswith("ORC[2]: the order number (ORC-3)")]
    assert r4validator.validate(bundle) == []
    # The first dose keeps the id the number gives it.
    [alone] = [d for d in resources(convert_one(converter, data)[0], "Immunization")][:1]
    assert doses[0]["id"] == alone["id"]
    # The same dose sent twice under its number stays one Immunization.
    found = lines(data)
    first = [line for line in found if line.startswith(("ORC", "RXA", "RXR"))][:3]
    twice, warnings = convert_one(converter, message([*found, *first]))
    assert len(resources(twice, "Immunization")) == 2
    assert not [w for w in warnings if "order number" in w]


def test_an_appointment_without_ids_is_said(converter: Converter) -> None:
    with open(_APPOINTMENT_PATH, "rb") as sample:
        data = set_field(set_field(sample.read(), "SCH", 1, ""), "SCH", 2, "")
    first, warnings = convert_one(converter, data)
    said = "SCH-1 and SCH-2 (placer and filler appointment ids) empty"
    assert [w for w in warnings if w.startswith(said)]
    # Why it matters: the cancel of that appointment names another one.
    cancel = set_field(set_field(data, "MSH", 9, "SIU^S15^SIU_S12"), "MSH", 10, "S20-S15")
    second, _ = convert_one(converter, cancel)
    ids = [resources(b, "Appointment")[0]["id"] for b in (first, second)]
    assert ids[0] != ids[1]
    with open(_APPOINTMENT_PATH, "rb") as sample:
        assert not [w for w in convert_one(converter, sample.read())[1] if w.startswith(said)]
