"""BAR reads ROL as ADT does (IG ADT_A01 rows 13 and 19, the wiring BAR.j2 mirrors): the
patient's ROL-3 PP is ``Patient.generalPractitioner``, a visit's ROL an
``Encounter.participant``; ROL-2 DE is left out. Before, BAR dropped ROL without a word."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converter import Converter
from tests.support.hl7_edit import by_reference, convert_one, insert_after, resources
from tests.support.r4validator import R4Validator

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "hl7v2" / "BAR_P01_add-account.hl7"
RPPS = "ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS"


def _identifier(bundle: dict[str, Any], ref: dict[str, str]) -> str:
    return str(by_reference(bundle, ref["reference"])["identifier"][0]["value"])


def test_bar_roles_are_the_general_practitioner_and_visit_participants(
    converter: Converter, r4validator: R4Validator
) -> None:
    data = insert_after(
        SAMPLE.read_bytes(),
        "PID",
        f"ROL|1|AD|PP^Primary care provider^HL70443|10003456789^MARTIN^Paul^^^Dr^^^{RPPS}",
        f"ROL|2|AD|FHCP^Family health care professional^HL70443|10001111111^ROUX^Léa^^^Dr^^^{RPPS}",
    )
    data = insert_after(
        data,
        "PV1",
        f"ROL|3|AD|CP^Consulting provider^HL70443|10009999999^DURAND^Anne^^^Dr^^^{RPPS}",
        f"ROL|4|DE|CP^Consulting provider^HL70443|10008888888^PETIT^Marc^^^Dr^^^{RPPS}",
    )
    bundle, warnings = convert_one(converter, data)
    [patient] = resources(bundle, "Patient")
    assert [_identifier(bundle, gp) for gp in patient["generalPractitioner"]] == ["10003456789"]
    [encounter] = resources(bundle, "Encounter")
    people = {_identifier(bundle, p["individual"]) for p in encounter["participant"]}
    assert "10009999999" in people and "10008888888" not in people
    assert [w for w in warnings if w.startswith("ROL FHCP after PID")]
    assert r4validator.validate(bundle) == []
