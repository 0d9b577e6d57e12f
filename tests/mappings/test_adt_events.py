"""ADT events beyond the IG's message maps: HL7 v2.5 chapter 3 and IHE PAM with its French
national extension (A06 to A55, Z99). Each routed event gives the Encounter the status its
definition implies (code map Event-EncounterStatus), a cancellation (Event-CancelledEvent)
states that status whatever PV1-45 says and leaves the cancelled movement out of the
location history, and the ZBE movement segment decides whether PV1 is the visit as it is
now. Until these events were routed, every message here was refused (AR 201)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from tests.conftest import SHARED_DIR
from tests.support.hl7_edit import resources, segment

REPO = Path(__file__).resolve().parents[2]
IG_EVENT_STATUS = (
    SHARED_DIR
    / "reference/v2-to-fhir/mappings/codesystems"
    / "HL7 Concept Map_ Event[EncounterStatus] - Sheet1.csv"
)
BUILTIN_EVENT_STATUS = REPO / "mappings" / "codemaps" / "Event-EncounterStatus.csv"
#: The rows for the events the IG's map lacks: Passerelle's, in a map of their own (the
#: IG's maps are generated, scripts/import_codemaps.py, and never edited by hand).
PASSERELLE_EVENT_STATUS = REPO / "mappings" / "codemaps" / "Event-EncounterStatus-Passerelle.csv"

CHU = "CHU-LYON&1.2.250.1.999.1.1&ISO"
RPPS = "^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS"
#: Synthetic patient and places (invented).
CARDIO = f"CARDIO^312^1^{CHU}^^N^BAT-C^3^Cardiologie"
USIC = f"USIC^U05^1^{CHU}^^N^BAT-A^2^Soins intensifs cardiologiques"
REA = f"REA^R02^1^{CHU}^^N^BAT-A^1^Réanimation"
DISCHARGED = "20240620110000+0200"

#: v2.5 message structure of each event (hl7apy's table, converter/hl7v2/data).
STRUCTURES = {
    "A02": "ADT_A02",
    "A06": "ADT_A06",
    "A07": "ADT_A06",
    "A09": "ADT_A09",
    "A10": "ADT_A09",
    "A12": "ADT_A12",
    "A14": "ADT_A05",
    "A16": "ADT_A16",
    "A21": "ADT_A21",
    "A22": "ADT_A21",
    "A25": "ADT_A21",
    "A26": "ADT_A21",
    "A27": "ADT_A21",
    "A32": "ADT_A21",
    "A33": "ADT_A21",
    "A38": "ADT_A38",
    "A52": "ADT_A52",
    "A53": "ADT_A52",
    "A54": "ADT_A54",
    "A55": "ADT_A52",
    "Z99": "ADT_A01",
}


def message(
    event: str,
    pv1: dict[int, str] | None = None,
    zbe: dict[int, str] | None = None,
    control_id: str = "TEST-1",
) -> bytes:
    """An IHE PAM France (HL7 v2.5) message of ``event`` about one stay in cardiology."""
    visit = {
        1: "1",
        2: "I",
        3: CARDIO,
        7: f"10101234563^LEROY^Paul^^^Dr{RPPS}",
        19: f"2024000621^^^{CHU}^VN",
        44: "20240610091500+0200",
    }
    visit.update(pv1 or {})
    segments = [
        "MSH|^~\\&|SIH-ORCHIDEE|CHU-LYON^1.2.250.1.999.1.1^ISO|PASSERELLE|GHT|"
        f"20240614170512+0200||ADT^{event}^{STRUCTURES[event]}|{control_id}|P|2.5^FRA^2.11"
        "|||AL|NE|FRA|UNICODE UTF-8",
        f"EVN|{event}|20240614170512+0200",
        segment(
            "PID",
            {
                1: "1",
                3: f"0012380217^^^{CHU}^PI",
                5: "MARCHAND^Élise^^^Mme^^L",
                7: "19670923",
                8: "F",
                32: "PROV",
            },
        ),
        segment("PV1", {k: v for k, v in visit.items() if v is not None}),
    ]
    if zbe is not None:
        segments.append(segment("ZBE", zbe))
    return ("\r".join(segments) + "\r").encode("utf-8")


def zbe(action: str = "INSERT", historic: str = "N", original: str = "") -> dict[int, str]:
    return {
        1: "MVT-000621-04^CHU-LYON^1.2.250.1.999.1.1^ISO",
        2: "20240614170000+0200",
        4: action,
        5: historic,
        6: original,
        9: "HMS",
    }


@pytest.fixture(scope="module")
def strict_converter() -> Converter:
    """hl7apy's check of each message against its v2.5 structure (groups, cardinalities)."""
    return Converter(ConverterConfig(default_timezone="Europe/Paris", strict_hl7=True))


def encounter(bundle: dict[str, Any]) -> dict[str, Any]:
    (found,) = resources(bundle, "Encounter")
    return found


def location_history(bundle: dict[str, Any]) -> list[tuple[str, str]]:
    """(ward code, status) of each Encounter.location: the ward is the Location chain's
    point-of-care level (PL.1)."""
    by_id = {r["id"]: r for r in resources(bundle, "Location")}
    out = []
    for entry in encounter(bundle).get("location", []):
        place = by_id[entry["location"]["reference"].split("/")[1]]
        while place["physicalType"]["coding"][0]["code"] != "wa":
            place = by_id[place["partOf"]["reference"].split("/")[1]]
        out.append((place["name"], entry["status"]))
    return out


# --- Encounter.status per event -----------------------------------------------------------

STATUS_CASES = [
    # (event, PV1 fields, ZBE, expected status, why)
    ("A06", {}, None, "in-progress", "outpatient becomes inpatient"),
    ("A07", {2: "O"}, None, "in-progress", "inpatient becomes outpatient, still seen"),
    ("A09", {6: USIC}, None, "in-progress", "departing, tracking"),
    ("A10", {6: USIC}, None, "in-progress", "arriving, tracking"),
    ("A12", {6: USIC}, None, "in-progress", "cancel transfer: still admitted"),
    ("A14", {}, None, "planned", "pending admit, even with PV1-2 = I (IHE PAM France)"),
    ("A16", {}, None, "in-progress", "pending discharge: still admitted"),
    ("A21", {}, None, "onleave", "leave of absence"),
    ("A22", {}, None, "in-progress", "back from leave"),
    ("A25", {45: DISCHARGED}, None, "in-progress", "cancel pending discharge"),
    ("A26", {42: USIC}, None, "in-progress", "cancel pending transfer"),
    ("A27", {2: "P"}, None, "cancelled", "cancel pending admit"),
    ("A32", {}, None, "in-progress", "cancel arriving"),
    ("A33", {}, None, "in-progress", "cancel departing"),
    ("A38", {2: "P"}, None, "cancelled", "cancel pre-admit"),
    ("A52", {45: DISCHARGED}, None, "in-progress", "cancel leave: whatever PV1-45 says"),
    ("A53", {45: DISCHARGED}, None, "onleave", "cancel return: on leave again"),
    ("A54", {}, None, "in-progress", "change attending doctor"),
    ("A55", {}, None, "in-progress", "cancel change attending doctor"),
    ("A21", {}, zbe("INSERT"), "onleave", "a current movement's ZBE changes nothing"),
    ("Z99", {}, zbe("UPDATE", original="A21"), "onleave", "Z99: the corrected movement's event"),
    ("Z99", {}, zbe("UPDATE", original="A05"), "planned", "Z99 of a pre-admission (PV1-2 I)"),
    ("Z99", {45: DISCHARGED}, zbe("UPDATE", original="A03"), "finished", "Z99 of a discharge"),
    ("Z99", {}, zbe("UPDATE"), "in-progress", "no ZBE-6: as A08, from PV1-2"),
]


@pytest.mark.parametrize(
    ("event", "pv1", "movement", "status", "why"),
    STATUS_CASES,
    ids=[f"{case[0]}-{case[4]}" for case in STATUS_CASES],
)
def test_event_gives_the_encounter_status_of_its_definition(
    strict_converter: Converter,
    event: str,
    pv1: dict[int, str],
    movement: dict[int, str] | None,
    status: str,
    why: str,
) -> None:
    conversion = strict_converter.convert_message(message(event, pv1, movement))
    assert conversion.root_template == "hl7v2/messages/ADT.j2"
    assert encounter(conversion.bundle)["status"] == status, why
    assert conversion.warnings == ()


def test_a_cancelled_discharge_date_is_no_period_end(converter: Converter) -> None:
    # A52 after a discharge time was sent: the stay goes on, so PV1-45 is no end.
    bundle = converter.convert_message(message("A52", {45: DISCHARGED})).bundle
    assert "end" not in encounter(bundle)["period"]


# --- Location history of cancellations --------------------------------------------------


def test_a12_leaves_the_cancelled_transfer_out_of_the_location_history(
    converter: Converter,
) -> None:
    # A02: cardiology -> intensive care; the A12 cancelling it gives the location before
    # it in PV1-3 and the cancelled transfer's location in PV1-6.
    transfer = converter.convert_message(message("A02", {3: USIC, 6: CARDIO}, control_id="T1"))
    assert location_history(transfer.bundle) == [("USIC", "active"), ("CARDIO", "completed")]
    cancel = converter.convert_message(message("A12", {3: CARDIO, 6: USIC}, control_id="T2"))
    assert location_history(cancel.bundle) == [("CARDIO", "active")]
    # The same visit: the A12's Encounter replaces the A02's, history included.
    assert encounter(cancel.bundle)["id"] == encounter(transfer.bundle)["id"]
    assert "USIC" not in {r["name"] for r in resources(cancel.bundle, "Location")}


@pytest.mark.parametrize(
    ("event", "history"),
    [
        # A movement: the prior location completed, the pending one reserved (IG PV1 rows).
        ("A09", [("CARDIO", "active"), ("USIC", "completed"), ("REA", "reserved")]),
        ("A10", [("CARDIO", "active"), ("USIC", "completed"), ("REA", "reserved")]),
        # Its cancellation: where the patient is again, nothing of the voided movement.
        ("A12", [("CARDIO", "active")]),
        ("A26", [("CARDIO", "active")]),
        ("A32", [("CARDIO", "active")]),
        ("A33", [("CARDIO", "active")]),
        ("A52", [("CARDIO", "active")]),
    ],
)
def test_a_cancellation_lists_no_prior_nor_pending_location(
    converter: Converter, event: str, history: list[tuple[str, str]]
) -> None:
    bundle = converter.convert_message(message(event, {6: USIC, 42: REA})).bundle
    assert location_history(bundle) == history


# --- ZBE: historic movements and Z99 ------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "movement", "warning"),
    [
        # IHE PAM France 5.3.7: an A12 cancelling a movement after the discharge; its PV1-3
        # is where the patient was before that movement, not where he is now.
        ("A12", zbe("CANCEL", historic="Y", original="A02"), "ZBE-5 = Y"),
        ("Z99", zbe("UPDATE", historic="Y", original="A02"), "ZBE-5 = Y"),
        # Z99 is only ever the correction of a movement (IHE PAM France 5.3.2).
        ("Z99", zbe("CANCEL", original="A02"), "Z99 with ZBE-4 CANCEL"),
        ("Z99", zbe("INSERT"), "Z99 with ZBE-4 INSERT"),
        ("Z99", None, "Z99 without ZBE-4"),
    ],
)
def test_a_pv1_that_is_not_the_visit_now_gives_no_encounter(
    converter: Converter, event: str, movement: dict[int, str] | None, warning: str
) -> None:
    conversion = converter.convert_message(message(event, {3: REA, 6: USIC}, movement))
    assert resources(conversion.bundle, "Encounter") == []
    assert not [r for r in resources(conversion.bundle, "Location") if r["name"] == "REA"]
    # The patient is the current one: converted as usual.
    assert len(resources(conversion.bundle, "Patient")) == 1
    assert [w for w in conversion.warnings if w.startswith(warning)], conversion.warnings


# --- The code map ---------------------------------------------------------------------------


def _rows(path: Path, skip: int) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))[skip:]


def test_event_status_rows_beyond_the_ig_say_where_they_come_from() -> None:
    rows = {row[0]: row for row in _rows(BUILTIN_EVENT_STATUS, 1)}
    if IG_EVENT_STATUS.is_file():
        ig = {row[0]: row[6] for row in _rows(IG_EVENT_STATUS, 2) if row and row[0]}
        # The IG's map is the IG's, row for row.
        assert {code: row[2] for code, row in rows.items()} == ig
    else:
        ig = {code: row[2] for code, row in rows.items()}
    added = {row[0]: row for row in _rows(PASSERELLE_EVENT_STATUS, 1)}
    assert not set(added) & set(ig), "an IG event is mapped in the IG's map only"
    assert set(STRUCTURES) - {"A02"} <= set(added)
    for code, row in added.items():
        assert "HL7 v2.5 3.3." in row[5] or "IHE PAM France" in row[5], code


# --- Locally defined (Z) trigger events -----------------------------------------------------


@pytest.mark.parametrize(
    ("event", "system"),
    [("A21", "http://terminology.hl7.org/CodeSystem/v2-0003"), ("Z99", None)],
)
def test_a_z_trigger_event_is_not_coded_in_table_0003(
    converter: Converter, event: str, system: str | None
) -> None:
    """Z triggers are defined by a site or a country (IHE PAM France's Z99), not by HL7
    table 0003: the MessageHeader event and the Provenance activity keep the code alone."""
    bundle = converter.convert_message(message(event, zbe=zbe("UPDATE", original="A21"))).bundle
    (header,) = resources(bundle, "MessageHeader")
    (provenance,) = resources(bundle, "Provenance")
    codings = [header["eventCoding"], *provenance["activity"]["coding"]]
    assert [(c.get("system"), c["code"]) for c in codings] == [(system, event)] * 2
