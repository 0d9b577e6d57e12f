"""IG rows of order timing and pharmacy fields that were dropped silently, on the synthetic
samples of samples/hl7v2 (each test edits one field of a sample):

- TQ1-2 quantity per occurrence (IG TQ1[MedicationRequest] row 2; TQ.1 of ORC-7, IG
  TQ[MedicationRequest] row 1) → doseAndRate.doseQuantity when RXE / RXO give no dose.
- RPT components of TQ1-3 (IG RPT[Timing]): RPT.2 DW + RPT.3/4 → dayOfWeek, RPT.5/6 →
  period / periodUnit, RPT.8 → when (EventRelatedPeriod), RPT.9/10 (else TQ1-5) → offset.
- TQ1-6 service duration beside TQ1-7 alone or TQ1-8 alone (IG TQ1 row 6, second and third
  conditions) → the missing end or start of boundsPeriod.
- RXD-13 dispense-to location → MedicationDispense.destination (no IG row).
- RXO-6 / RXO-7 / RXO-20 (the RXO's instructions and indication) and RXE-39 (initial dispense
  amount), which an order without an RXE (ORM, OMP) or any RDE dropped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter
from tests.mappings.pharmacy_support import medication_request as _request
from tests.support.hl7_edit import by_reference, resources, set_field
from tests.support.hl7_edit import convert_one as _convert
from tests.support.r4validator import R4Validator

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
ORM_MED = (SAMPLES / "ORM_O01_medication-order.hl7").read_bytes()
RDE = (SAMPLES / "RDE_O11_pharmacy-encoded-orders.hl7").read_bytes()
RDS = (SAMPLES / "RDS_O13_pharmacy-dispense.hl7").read_bytes()
OMP = (SAMPLES / "OMP_O09_pharmacy-order.hl7").read_bytes()
OMG = (SAMPLES / "OMG_O19_radiology-order.hl7").read_bytes()

RDE_1, RDE_2 = "PHA-2024-0316-11", "PHA-2024-0316-12"
OMP_1 = "PRESC-2024-1105-01"
UCUM = "http://unitsofmeasure.org"


def _dosage(request: dict[str, Any]) -> dict[str, Any]:
    dosage = request["dosageInstruction"][0]
    assert isinstance(dosage, dict)
    return dosage


def _repeat(request: dict[str, Any]) -> dict[str, Any]:
    repeat = _dosage(request)["timing"]["repeat"]
    assert isinstance(repeat, dict)
    return repeat


def _ct_request(bundle: dict[str, Any]) -> dict[str, Any]:
    """The OMG sample's first order (CT chest), whose TQ1 is the first."""
    return next(
        r
        for r in resources(bundle, "ServiceRequest")
        if r["code"]["coding"][0]["code"] == "24627-2"
    )


# ----------------------------------------------------------------------------------------
# TQ1-2 / TQ.1: the dose when the order gives none.


def _omp_without_dose() -> bytes:
    """The OMP sample's first order without RXO-2 (give amount) and RXO-4 (its units)."""
    return set_field(set_field(OMP, "RXO", 2, "", 1), "RXO", 4, "", 1)


def test_tq1_quantity_is_the_dose_when_the_order_gives_none(
    converter: Converter, r4validator: R4Validator
) -> None:
    data = set_field(_omp_without_dose(), "TQ1", 2, "40^mg&milligramme&UCUM", 1)
    bundle, _ = _convert(converter, data)
    [dose] = _dosage(_request(bundle, OMP_1))["doseAndRate"]
    assert dose["doseQuantity"] == {
        "value": 40,
        "unit": "milligramme",
        "system": UCUM,
        "code": "mg",
    }
    assert dose["type"]["coding"][0]["code"] == "ordered"
    assert r4validator.validate(bundle) == []


def test_without_tq1_quantity_an_order_without_dose_has_none(converter: Converter) -> None:
    bundle, _ = _convert(converter, _omp_without_dose())
    assert "doseAndRate" not in _dosage(_request(bundle, OMP_1))


def test_tq1_quantity_does_not_overwrite_an_encoded_dose(converter: Converter) -> None:
    """RXE-3 1000 mg is the dose; a TQ1-2 of 2 vials is not written over it, but said."""
    data = set_field(RDE, "TQ1", 2, "2^{flacon}&flacon&UCUM", 2)
    bundle, warnings = _convert(converter, data)
    [dose] = _dosage(_request(bundle, RDE_2))["doseAndRate"]
    assert (dose["doseQuantity"]["value"], dose["doseQuantity"]["code"]) == (1000, "mg")
    assert any(w.startswith("TQ1-2") and "not converted" in w for w in warnings)


def test_a_tq1_quantity_of_one_beside_a_dose_is_silent(converter: Converter) -> None:
    bundle, warnings = _convert(converter, set_field(RDE, "TQ1", 2, "1", 2))
    assert _dosage(_request(bundle, RDE_2))["doseAndRate"][0]["doseQuantity"]["value"] == 1000
    assert not [w for w in warnings if w.startswith("TQ1-2")]


def test_an_orc_7_quantity_is_the_dose_when_rxo_gives_none(converter: Converter) -> None:
    """ORM: ORC-7 TQ.1 (IG TQ[MedicationRequest] row 1), RXO-2 emptied."""
    data = set_field(ORM_MED, "RXO", 2, "", 1)
    data = set_field(data, "ORC", 7, "2&g^Q8H^^20240316140000+0100^20240323140000+0100^R", 1)
    bundle, _ = _convert(converter, data)
    [dose] = _dosage(_request(bundle, RDE_1))["doseAndRate"]
    assert dose["doseQuantity"]["value"] == 2
    assert dose["doseQuantity"]["unit"] == "g"


# ----------------------------------------------------------------------------------------
# RPT components (TQ1-3).


def _rpt(pattern: str, occurrence: int = 2, data: bytes = RDE) -> bytes:
    return set_field(data, "TQ1", 3, pattern, occurrence)


def test_a_day_of_week_and_period_give_the_rhythm(
    converter: Converter, r4validator: R4Validator
) -> None:
    """HL7's own example: Q2J2 "every second Tuesday" = ^DW^2^^2^wk."""
    bundle, _ = _convert(converter, _rpt("Q2J2&Un mardi sur deux&HL70335^DW^2^^2^wk"))
    repeat = _repeat(_request(bundle, RDE_2))
    assert repeat["dayOfWeek"] == ["tue"]
    assert (repeat["period"], repeat["periodUnit"]) == (2, "wk")
    assert "frequency" not in repeat
    assert r4validator.validate(bundle) == []


@pytest.mark.parametrize(
    ("phase", "days"),
    [
        ("1^5", ["mon", "tue", "wed", "thu", "fri"]),
        ("6^1", ["sat", "sun", "mon"]),
        ("7^", ["sun"]),
    ],
)
def test_a_phase_range_lists_every_day_of_the_window(
    converter: Converter, phase: str, days: list[str]
) -> None:
    bundle, _ = _convert(converter, _rpt(f"Q1W^DW^{phase}^1^wk"))
    assert _repeat(_request(bundle, RDE_2))["dayOfWeek"] == days


def test_a_day_out_of_the_week_is_dropped_with_a_warning(converter: Converter) -> None:
    bundle, warnings = _convert(converter, _rpt("Q1W^DW^8^^1^wk"))
    assert "dayOfWeek" not in _repeat(_request(bundle, RDE_2))
    assert any("TQ1-3.3" in w for w in warnings)


def test_a_second_repeat_pattern_is_a_warning(converter: Converter) -> None:
    bundle, warnings = _convert(converter, _rpt("Q8H~Q1D^^^^1^d^^HS"))
    repeat = _repeat(_request(bundle, RDE_2))
    assert (repeat["frequency"], repeat["period"], repeat["periodUnit"]) == (1, 8, "h")
    assert "when" not in repeat
    assert any(w.startswith("TQ1-3: only the first of 2") for w in warnings)


def test_an_explicit_period_replaces_the_rhythm_of_the_code(converter: Converter) -> None:
    """BID^^^^12^h (HL7's example): one every 12 h, not 2 per 12 h."""
    bundle, _ = _convert(converter, _rpt("BID^^^^12^h"))
    repeat = _repeat(_request(bundle, RDE_2))
    assert (repeat["period"], repeat["periodUnit"]) == (12, "h")
    assert "frequency" not in repeat


def test_a_period_in_an_unknown_unit_keeps_the_rhythm_of_the_code(converter: Converter) -> None:
    bundle, _ = _convert(converter, _rpt("BID^^^^3^cycles"))
    repeat = _repeat(_request(bundle, RDE_2))
    assert (repeat["frequency"], repeat["period"], repeat["periodUnit"]) == (2, 1, "d")


@pytest.mark.parametrize(
    ("pattern", "when", "offset"),
    [
        ("QAM&Avant le petit-déjeuner&HL70335^^^^^^^ACM^30^min", ["ACM"], 30),
        ("Q1D^^^^1^d^^AC^1^HR", ["AC"], 60),
        ("Q1D^^^^1^d^^HS", ["HS"], None),
    ],
)
def test_an_event_gives_when_and_its_offset(
    converter: Converter,
    r4validator: R4Validator,
    pattern: str,
    when: list[str],
    offset: int | None,
) -> None:
    bundle, _ = _convert(converter, _rpt(pattern))
    repeat = _repeat(_request(bundle, RDE_2))
    assert repeat["when"] == when
    assert repeat.get("offset") == offset
    assert r4validator.validate(bundle) == []


def test_an_event_beside_explicit_times_keeps_the_event(
    converter: Converter, r4validator: R4Validator
) -> None:
    """R4 tim-10: timeOfDay and when exclude each other (a corpus RDS gave both, and its
    bundle failed validation); the event wins, the times are said in a warning."""
    data = set_field(_rpt("Q1D^^^^1^d^^PC^15^min"), "TQ1", 4, "0800~1200", 2)
    bundle, warnings = _convert(converter, data)
    repeat = _repeat(_request(bundle, RDE_2))
    assert repeat["when"] == ["PC"] and "timeOfDay" not in repeat
    assert any(w.startswith("TQ1-4: explicit times not converted") for w in warnings)
    assert r4validator.validate(bundle) == []


def test_an_event_outside_event_timing_is_dropped_with_a_warning(converter: Converter) -> None:
    """IC (between meals) maps to v2-0528, not to R4's required EventTiming codes."""
    bundle, warnings = _convert(converter, _rpt("Q1D^^^^1^d^^IC^30^min"))
    repeat = _repeat(_request(bundle, RDE_2))
    assert "when" not in repeat
    assert "offset" not in repeat
    assert any("TQ1-3.8" in w and "EventTiming" in w for w in warnings)


def test_tq1_5_is_the_offset_when_the_pattern_has_none(converter: Converter) -> None:
    data = set_field(_rpt("Q1D^^^^1^d^^PC"), "TQ1", 5, "15^min&minute&UCUM", 2)
    bundle, _ = _convert(converter, data)
    repeat = _repeat(_request(bundle, RDE_2))
    assert (repeat["when"], repeat["offset"]) == (["PC"], 15)


def test_a_service_order_reads_the_pattern_components_too(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle, _ = _convert(converter, _rpt("Q1W^DW^1^5^1^wk", 1, OMG))
    repeat = _ct_request(bundle)["occurrenceTiming"]["repeat"]
    assert repeat["dayOfWeek"] == ["mon", "tue", "wed", "thu", "fri"]
    assert (repeat["period"], repeat["periodUnit"]) == (1, "wk")
    assert r4validator.validate(bundle) == []


# ----------------------------------------------------------------------------------------
# TQ1-6 beside a start or an end.


@pytest.mark.parametrize(
    ("duration", "end"),
    [
        ("3^d&jour&UCUM", "2024-03-19T10:00:00+01:00"),
        ("12^HR&heure&ISO+", "2024-03-16T22:00:00+01:00"),
        ("2^WK", "2024-03-30T10:00:00+01:00"),
    ],
)
def test_a_service_duration_after_a_start_gives_the_end(
    converter: Converter, r4validator: R4Validator, duration: str, end: str
) -> None:
    data = set_field(set_field(RDE, "TQ1", 8, "", 2), "TQ1", 6, duration, 2)
    bundle, _ = _convert(converter, data)
    repeat = _repeat(_request(bundle, RDE_2))
    assert repeat["boundsPeriod"] == {"start": "2024-03-16T10:00:00+01:00", "end": end}
    assert "boundsDuration" not in repeat
    assert r4validator.validate(bundle) == []


def test_a_service_duration_before_an_end_gives_the_start(converter: Converter) -> None:
    data = set_field(set_field(RDE, "TQ1", 7, "", 2), "TQ1", 6, "2^d", 2)
    bundle, _ = _convert(converter, data)
    bounds = _repeat(_request(bundle, RDE_2))["boundsPeriod"]
    assert bounds == {"start": "2024-03-16T10:00:00+01:00", "end": "2024-03-18T10:00:00+01:00"}


def test_a_start_and_an_end_are_kept_beside_a_service_duration(converter: Converter) -> None:
    data = set_field(RDE, "TQ1", 6, "1^d", 2)
    bundle, _ = _convert(converter, data)
    bounds = _repeat(_request(bundle, RDE_2))["boundsPeriod"]
    assert bounds["end"] == "2024-03-18T10:00:00+01:00"


def test_a_duration_in_months_after_a_start_is_not_converted(converter: Converter) -> None:
    """A month has no fixed length: no end is derived, and the warning says so."""
    data = set_field(set_field(RDE, "TQ1", 8, "", 2), "TQ1", 6, "1^mo", 2)
    bundle, warnings = _convert(converter, data)
    repeat = _repeat(_request(bundle, RDE_2))
    assert repeat["boundsPeriod"] == {"start": "2024-03-16T10:00:00+01:00"}
    assert any(w.startswith("TQ1-6") for w in warnings)


def test_a_service_order_duration_after_its_start_gives_the_end(converter: Converter) -> None:
    data = set_field(OMG, "TQ1", 6, "45^min", 1)
    bundle, _ = _convert(converter, data)
    bounds = _ct_request(bundle)["occurrenceTiming"]["repeat"]["boundsPeriod"]
    assert bounds == {"start": "2024-05-24T09:00:00+02:00", "end": "2024-05-24T09:45:00+02:00"}


# ----------------------------------------------------------------------------------------
# RXD-13 dispense-to location.


def test_the_dispense_to_location_is_the_destination(
    converter: Converter, r4validator: R4Validator
) -> None:
    data = set_field(RDS, "RXD", 13, "CHIR-ORTHO^214^^HOP-PARIS-EST&1.2.250.1.999.2.1&ISO")
    bundle, _ = _convert(converter, data)
    [dispense] = resources(bundle, "MedicationDispense")
    room = by_reference(bundle, dispense["destination"]["reference"])
    assert room["name"] == "214"
    ward = by_reference(bundle, room["partOf"]["reference"])
    assert ward["name"] == "CHIR-ORTHO"
    # The room of the patient's bed (PV1-3 CHIR-ORTHO^214^2): one Location.
    [encounter] = resources(bundle, "Encounter")
    bed = by_reference(bundle, encounter["location"][0]["location"]["reference"])
    assert bed["partOf"]["reference"] == dispense["destination"]["reference"]
    assert r4validator.validate(bundle) == []


@pytest.mark.parametrize(
    "place", ["^^^^^^^^12 rue des Vinaigriers^^Paris", "CHIR-ORTHO^214^^^^^^^12 rue Saint-Maur"]
)
def test_a_dispense_to_address_names_no_destination(converter: Converter, place: str) -> None:
    """An address (LA2.9-16) would become the description of the ward's shared Location."""
    bundle, warnings = _convert(converter, set_field(RDS, "RXD", 13, place))
    [dispense] = resources(bundle, "MedicationDispense")
    assert "destination" not in dispense
    assert any(w.startswith("RXD-13") for w in warnings)
    assert all(r.get("description") != "12 rue Saint-Maur" for r in resources(bundle, "Location"))


# ----------------------------------------------------------------------------------------
# RXO-6 / RXO-7 / RXO-20 and RXE-39.


def test_the_rxo_instructions_and_indication_are_kept(
    converter: Converter, r4validator: R4Validator
) -> None:
    data = set_field(OMP, "RXO", 6, "^Seringues préremplies uniquement", 1)
    data = set_field(data, "RXO", 7, "^Injecter à heure fixe, alterner les sites", 1)
    data = set_field(data, "RXO", 20, "I26.9^Embolie pulmonaire^I10", 1)
    bundle, _ = _convert(converter, data)
    request = _request(bundle, OMP_1)
    assert {"text": "Seringues préremplies uniquement"} in request["note"]
    assert _dosage(request)["additionalInstruction"] == [
        {"text": "Injecter à heure fixe, alterner les sites"}
    ]
    assert request["reasonCode"][0]["coding"][0]["code"] == "I26.9"
    assert r4validator.validate(bundle) == []


def test_the_encoded_instructions_and_indication_win_over_the_rxo_ones(
    converter: Converter,
) -> None:
    """RDE order 2: RXE-27 R52 and no RXE-7; order 1: RXE-7 "Au milieu du repas"."""
    data = set_field(RDE, "RXO", 20, "I26.9^Embolie pulmonaire^I10", 2)
    data = set_field(data, "RXO", 7, "^Avec un grand verre d'eau", 1)
    bundle, _ = _convert(converter, data)
    assert [c["coding"][0]["code"] for c in _request(bundle, RDE_2)["reasonCode"]] == ["R52"]
    assert _dosage(_request(bundle, RDE_1))["additionalInstruction"] == [
        {"text": "Au milieu du repas"}
    ]


def test_the_initial_dispense_amount_is_the_initial_fill(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle, _ = _convert(converter, set_field(RDE, "RXE", 39, "7", 1))
    request = _request(bundle, RDE_1)
    assert request["dispenseRequest"]["initialFill"]["quantity"] == {
        "value": 7,
        "unit": "comprimé",
        "system": UCUM,
        "code": "{tbl}",
    }
    assert request["dispenseRequest"]["quantity"]["value"] == 21
    assert r4validator.validate(bundle) == []
