"""Order feeds over time: a change order (ORC-1 XO, XR, XX) with ORC-5 empty, exact doses
(RXO-2 / RXE-3 without a maximum) and TQ1 durations (TQ1-6 service duration, TQ1-13 occurrence
duration), on the synthetic samples of samples/hl7v2.

- The IG's OrderControlCode map leaves XO, XR, XX without a status, so a change to an active
  order was written "unknown" over it; OrderControlCode-*.status-Passerelle keeps it active.
- RXO-2 without RXO-3 is the exact dose (HL7 v2.5 RXO-2, RXE-3), a doseQuantity, not a
  doseRange with a low alone ("at least").
- TQ1-6 ("for 3 days") was dropped; it is Timing.repeat.boundsDuration when TQ1-7 and TQ1-8
  are empty (IG TQ1[MedicationRequest], TQ1[ServiceRequest] row 6), its unit in UCUM through
  TimeUnit-UCUM-Passerelle, as TQ1-13's now is (a "D" or "HR" unit dropped the duration).
- A repeat pattern (TQ1-3, ORC-7 TQ.2) was only Timing.code, a v2-0335 code a consumer must
  know to schedule doses; RepeatPattern-TimingRepeat-Passerelle adds repeat.frequency,
  period and periodUnit (Q8H: 1 per 8 h)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter
from tests.conftest import SHARED_DIR
from tests.mappings.pharmacy_support import medication_request as _request
from tests.support.hl7_edit import convert_one as _convert
from tests.support.hl7_edit import resources, set_field
from tests.support.r4validator import R4Validator

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
ORM_MED = (SAMPLES / "ORM_O01_medication-order.hl7").read_bytes()
ORM_RAD = (SAMPLES / "ORM_O01_radiology-order.hl7").read_bytes()
RDE = (SAMPLES / "RDE_O11_pharmacy-encoded-orders.hl7").read_bytes()
OMG = (SAMPLES / "OMG_O19_radiology-order.hl7").read_bytes()
PEER_RDS = SHARED_DIR / "corpus" / "hl7v2" / "ms-fhir-converter" / "input" / "RDS-O13-01.hl7"

ORDER_1, ORDER_2 = "PHA-2024-0316-11", "PHA-2024-0316-12"
UCUM = "http://unitsofmeasure.org"


def _control(data: bytes, code: str) -> bytes:
    """``data`` with every ORC's ORC-1 set to ``code`` and its ORC-5 emptied."""
    count = sum(1 for line in data.split(b"\r") if line.startswith(b"ORC|"))
    for n in range(1, count + 1):
        data = set_field(set_field(data, "ORC", 1, code, n), "ORC", 5, "", n)
    return data


# ----------------------------------------------------------------------------------------
# Change orders: the request stays active, under the id of the new order.


@pytest.mark.parametrize("code", ["XO", "XR", "XX"])
def test_a_changed_medication_order_stays_active(converter: Converter, code: str) -> None:
    new, _ = _convert(converter, ORM_MED)
    changed, _ = _convert(converter, _control(ORM_MED, code))
    before, after = _request(new, ORDER_1), _request(changed, ORDER_1)
    assert after["id"] == before["id"]
    assert after["status"] == "active"


@pytest.mark.parametrize("code", ["XO", "XR", "XX"])
def test_a_changed_service_order_stays_active(
    converter: Converter, r4validator: R4Validator, code: str
) -> None:
    new, _ = _convert(converter, ORM_RAD)
    changed, warnings = _convert(converter, _control(ORM_RAD, code))
    [before], [after] = resources(new, "ServiceRequest"), resources(changed, "ServiceRequest")
    assert after["id"] == before["id"]
    assert after["status"] == "active"
    assert not [w for w in warnings if "code map" in w]
    assert r4validator.validate(changed) == []


def test_a_status_change_without_status_is_still_unknown(converter: Converter) -> None:
    """SC says the status changed, not to what: the supplement does not guess."""
    changed, _ = _convert(converter, _control(ORM_RAD, "SC"))
    [request] = resources(changed, "ServiceRequest")
    assert request["status"] == "unknown"


def test_order_status_still_wins_over_a_change_code(converter: Converter) -> None:
    data = set_field(_control(ORM_MED, "XO"), "ORC", 5, "HD", 1)
    bundle, _ = _convert(converter, data)
    assert _request(bundle, ORDER_1)["status"] == "on-hold"


# ----------------------------------------------------------------------------------------
# Exact doses.


def _dose(request: dict[str, Any]) -> dict[str, Any]:
    [dose] = request["dosageInstruction"][0]["doseAndRate"]
    assert isinstance(dose, dict)
    return dose


def test_a_dose_without_maximum_is_the_exact_dose(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle, _ = _convert(converter, ORM_MED)
    exact, ranged = _dose(_request(bundle, ORDER_1)), _dose(_request(bundle, ORDER_2))
    assert "doseRange" not in exact
    assert exact["doseQuantity"] == {"value": 1, "unit": "gramme", "system": UCUM, "code": "g"}
    # RXO-2 500 to RXO-3 1000 mg: a range.
    assert "doseQuantity" not in ranged
    assert ranged["doseRange"]["low"]["value"] == 500
    assert ranged["doseRange"]["high"]["value"] == 1000
    assert r4validator.validate(bundle) == []


def test_an_encoded_exact_dose_is_the_exact_dose(converter: Converter) -> None:
    """RXE-3 1000 mg without RXE-4 wins over the RXO's 500-1000 mg range."""
    bundle, _ = _convert(converter, RDE)
    dose = _dose(_request(bundle, ORDER_2))
    assert "doseRange" not in dose
    assert dose["doseQuantity"]["value"] == 1000
    assert dose["doseQuantity"]["code"] == "mg"


def test_a_maximum_alone_is_a_range_with_a_high(converter: Converter) -> None:
    data = set_field(ORM_MED, "RXO", 2, "", 2)
    bundle, _ = _convert(converter, data)
    dose = _dose(_request(bundle, ORDER_2))
    assert "doseQuantity" not in dose
    assert dose["doseRange"]["high"]["value"] == 1000
    assert "low" not in dose["doseRange"]


# ----------------------------------------------------------------------------------------
# TQ1 durations.


def _repeat(request: dict[str, Any]) -> dict[str, Any]:
    repeat = request["dosageInstruction"][0]["timing"]["repeat"]
    assert isinstance(repeat, dict)
    return repeat


def _without_bounds(data: bytes, occurrence: int) -> bytes:
    """``data`` with the ``occurrence``-th TQ1's start and end (TQ1-7, TQ1-8) emptied."""
    return set_field(set_field(data, "TQ1", 7, "", occurrence), "TQ1", 8, "", occurrence)


@pytest.mark.parametrize(
    ("unit", "code"), [("3^d&jour&UCUM", "d"), ("3^D&day&ISO", "d"), ("3^WK", "wk")]
)
def test_a_service_duration_bounds_the_timing(
    converter: Converter, r4validator: R4Validator, unit: str, code: str
) -> None:
    data = set_field(_without_bounds(RDE, 2), "TQ1", 6, unit, 2)
    bundle, _ = _convert(converter, data)
    repeat = _repeat(_request(bundle, ORDER_2))
    assert "boundsPeriod" not in repeat
    assert repeat["boundsDuration"]["value"] == 3
    assert repeat["boundsDuration"]["system"] == UCUM
    assert repeat["boundsDuration"]["code"] == code
    assert r4validator.validate(bundle) == []


def test_a_service_duration_beside_a_start_is_not_a_second_bound(converter: Converter) -> None:
    """bounds[x] is a choice: with TQ1-7 valued the period is kept, and TQ1-6 gives its end
    (IG TQ1 row 6; tested in test_pharmacy_timing_rows)."""
    data = set_field(RDE, "TQ1", 6, "3^d&jour&UCUM", 2)
    bundle, _ = _convert(converter, data)
    repeat = _repeat(_request(bundle, ORDER_2))
    assert "boundsDuration" not in repeat
    assert repeat["boundsPeriod"]["start"] == "2024-03-16T10:00:00+01:00"


def test_a_duration_in_an_unknown_unit_is_dropped_with_a_warning(converter: Converter) -> None:
    data = set_field(_without_bounds(RDE, 2), "TQ1", 6, "3^cycles", 2)
    bundle, warnings = _convert(converter, data)
    assert "boundsDuration" not in _repeat(_request(bundle, ORDER_2))
    assert any("TimeUnit-UCUM-Passerelle" in w and "TQ1[2]-6.2" in w for w in warnings)


def test_an_occurrence_duration_in_a_non_ucum_unit_is_converted(converter: Converter) -> None:
    data = set_field(RDE, "TQ1", 13, "2^HR&hour&ISO", 2)
    bundle, _ = _convert(converter, data)
    repeat = _repeat(_request(bundle, ORDER_2))
    assert (repeat["duration"], repeat["durationUnit"]) == (2, "h")


def test_a_service_order_duration_bounds_its_occurrence(converter: Converter) -> None:
    data = set_field(_without_bounds(OMG, 1), "TQ1", 6, "5^d&jour&UCUM", 1)
    bundle, _ = _convert(converter, data)
    request = next(
        r
        for r in resources(bundle, "ServiceRequest")
        if r["code"]["coding"][0]["code"] == "24627-2"
    )
    bounds = request["occurrenceTiming"]["repeat"]["boundsDuration"]
    assert (bounds["value"], bounds["code"]) == (5, "d")


def test_the_peer_corpus_dispense_keeps_its_treatment_length(converter: Converter) -> None:
    """ms-fhir-converter RDS-O13-01: TQ1-6 3^D&day&ISO, no TQ1-7/8; the peer writes
    boundsDuration 3 days too (with "D", not a UCUM code)."""
    if not PEER_RDS.is_file():
        pytest.skip("shared corpus not available")
    bundle, _ = _convert(converter, PEER_RDS.read_bytes())
    [request] = resources(bundle, "MedicationRequest")
    bounds = _repeat(request)["boundsDuration"]
    assert (bounds["value"], bounds["system"], bounds["code"]) == (3, UCUM, "d")


# ----------------------------------------------------------------------------------------
# Repeat patterns: the rhythm in Timing.repeat, not only the v2-0335 code.


@pytest.mark.parametrize(
    ("pattern", "rhythm"),
    [
        ("Q8H", (1, 8, "h")),
        ("q12h", (1, 12, "h")),
        ("Q2D", (1, 2, "d")),
        ("Q30M", (1, 30, "min")),
        ("BID", (2, 1, "d")),
        ("TID&trois fois par jour&HL70335", (3, 1, "d")),
        ("5ID", (5, 1, "d")),
        ("QOD", (1, 2, "d")),
    ],
)
def test_a_repeat_pattern_gives_the_rhythm(
    converter: Converter, r4validator: R4Validator, pattern: str, rhythm: tuple[Any, ...]
) -> None:
    bundle, _ = _convert(converter, set_field(RDE, "TQ1", 3, pattern, 2))
    repeat = _repeat(_request(bundle, ORDER_2))
    assert (repeat["frequency"], repeat["period"], repeat["periodUnit"]) == rhythm
    assert r4validator.validate(bundle) == []


@pytest.mark.parametrize("pattern", ["PRN", "Once", "C", "Q0H", "QXH"])
def test_a_pattern_without_a_fixed_rhythm_gives_none(converter: Converter, pattern: str) -> None:
    bundle, _ = _convert(converter, set_field(RDE, "TQ1", 3, pattern, 2))
    repeat = _repeat(_request(bundle, ORDER_2))
    assert not {"frequency", "period", "periodUnit"} & set(repeat)


def test_an_orc_7_interval_gives_the_rhythm(converter: Converter) -> None:
    """ORM: ORC-7 1^Q8H^^… (TQ.2 RI.1), with its code kept."""
    bundle, _ = _convert(converter, ORM_MED)
    timing = _request(bundle, ORDER_1)["dosageInstruction"][0]["timing"]
    assert timing["code"]["coding"][0]["code"] == "Q8H"
    repeat = timing["repeat"]
    assert (repeat["frequency"], repeat["period"], repeat["periodUnit"]) == (1, 8, "h")
