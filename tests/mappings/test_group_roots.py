"""Roots reading parsed groups (OML_O21, OMG_O19, RDS_O13): group names they rely on, and
what the grammar, not the segment order, decides."""

from __future__ import annotations

from pathlib import Path

import pytest

from converter import Converter
from tests.support.hl7_edit import convert_one, lines, message, resources, set_field

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
OML = (SAMPLES / "OML_O21_lab-order.hl7").read_bytes()
RDS = (SAMPLES / "RDS_O13_pharmacy-dispense.hl7").read_bytes()


@pytest.mark.parametrize("version", ["2.5", "2.6"])
def test_oml_timing_group_has_the_standard_name(converter: Converter, version: str) -> None:
    """hl7apy's 2.5 / 2.6 tables spell it TIIMING; the root reads order.find("TIMING")."""
    parsed = converter.parse(set_field(OML, "MSH", 12, version))
    second = parsed.find("ORDER")[1]
    [timing] = second.find("TIMING")
    assert str(timing.TQ1[9][1]) == "S"
    bundle, _ = convert_one(converter, set_field(OML, "MSH", 12, version))
    assert [r.get("priority") for r in resources(bundle, "ServiceRequest")] == [None, "stat"]


def test_rds_note_after_the_encoded_rxr_is_the_dispense_s(converter: Converter) -> None:
    """RDS_O13's ENCODING is RXE, NTE*, TIMING_ENCODED, RXR+: an NTE after its RXR is in
    the dispense's place (RXD, NTE*, RXR+), so without an RXD it is not the request's."""
    without_rxd = message([line for line in lines(RDS) if not line.startswith("RXD|")])
    bundle, warnings = convert_one(converter, without_rxd)
    [request] = resources(bundle, "MedicationRequest")
    assert [n["text"] for n in request["note"]] == [
        "A prendre au milieu du repas.",
        "Validé par la pharmacie : forme pelliculée délivrée (équivalente au comprimé prescrit).",
    ]
    assert resources(bundle, "MedicationDispense") == []
    assert "ORDER 1: no RXD, so no MedicationDispense" in warnings
