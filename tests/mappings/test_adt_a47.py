"""ADT^A47 (change patient identifier list; IHE PAM France: correction of an IPP).

MRG-1 holds the incorrect identifier, PID-3 the correct one. The Patient id derives from
the MR / PI identifier (resources/Patient.j2), so the A47 goes through the merge root
(ADT_A39): the Patient under the incorrect identifier (the one earlier messages wrote) is
retired, ``active: false`` and replaced-by the Patient under the corrected one, which
``replaces`` it. The golden sample ``ADT_A47_change-identifier`` pins the whole bundle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converter import Converter
from tests.support.hl7_edit import convert_one, lines, message, resources, set_field
from tests.support.r4validator import R4Validator

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "hl7v2" / "ADT_A47_change-identifier.hl7"
CHU = "CHU-LYON&1.2.250.1.999.1.1&ISO"
WRONG_IPP = "0012347111"
RIGHT_IPP = "0012347222"
INS = "288043818504292^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS"


def a47() -> bytes:
    return SAMPLE.read_bytes()


def registration(ipp: str, control_id: str) -> bytes:
    """The A04 of the same patient (the A47's PID) under ``ipp``, with an outpatient visit."""
    data = message([line for line in lines(a47()) if not line.startswith("MRG|")])
    data = set_field(data, "MSH", 9, "ADT^A04^ADT_A01")
    data = set_field(data, "MSH", 10, control_id)
    data = set_field(data, "EVN", 1, "A04")
    data = set_field(data, "PID", 3, f"{ipp}^^^{CHU}^PI~{INS}")
    return message([*lines(data), f"PV1|1|O||||||||||||||||||CHU2025031201^^^{CHU}^VN"])


def by_id(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["id"]: p for p in resources(bundle, "Patient")}


def values(patient: dict[str, Any]) -> set[str]:
    return {i["value"] for i in patient.get("identifier", [])}


def test_a47_retires_the_patient_written_under_the_wrong_identifier(
    converter: Converter, r4validator: R4Validator
) -> None:
    registered, _ = convert_one(converter, registration(WRONG_IPP, "A47-TEST-A04"))
    [wrong] = resources(registered, "Patient")
    assert WRONG_IPP in values(wrong)

    bundle, warnings = convert_one(converter, a47())
    assert warnings == []
    assert r4validator.validate(bundle) == []
    patients = by_id(bundle)
    assert len(patients) == 2
    retired = patients[wrong["id"]]
    [survivor] = [p for pid, p in patients.items() if pid != wrong["id"]]

    assert retired["active"] is False
    assert values(retired) == {WRONG_IPP}
    assert retired["link"] == [
        {"other": {"reference": f"Patient/{survivor['id']}"}, "type": "replaced-by"}
    ]
    assert values(survivor) == {RIGHT_IPP, "288043818504292"}
    assert "active" not in survivor
    assert survivor["name"][0]["family"] == "BRUNEL"
    assert survivor["link"] == [
        {"other": {"reference": f"Patient/{wrong['id']}"}, "type": "replaces"}
    ]
    # No visit in an A47 (structure ADT_A30 has no PV1).
    assert resources(bundle, "Encounter") == []

    # Later messages under the corrected IPP update the surviving Patient, not a third one.
    corrected, _ = convert_one(converter, registration(RIGHT_IPP, "A47-TEST-A08"))
    assert [p["id"] for p in resources(corrected, "Patient")] == [survivor["id"]]


def test_a47_of_v2_7_links_each_patient_group(converter: Converter) -> None:
    """From v2.7 an A47 is structure ADT_A44: PATIENT groups, each with its PID and MRG."""
    msh, evn, pid, mrg = lines(a47())
    second_pid = set_field(message([pid]), "PID", 3, f"0012348222^^^{CHU}^PI")
    second_pid = set_field(second_pid, "PID", 5, "ROCHE^Bastien^^^M.^^L")
    data = message([msh, evn, pid, mrg, *lines(second_pid), f"MRG|0012348111^^^{CHU}^PI"])
    data = set_field(data, "MSH", 9, "ADT^A47^ADT_A44")
    data = set_field(data, "MSH", 12, "2.7")

    bundle, _ = convert_one(converter, data)
    patients = resources(bundle, "Patient")
    assert len(patients) == 4
    ids = {next(iter(values(p) - {"288043818504292"})): p["id"] for p in patients}
    links = {p["id"]: [(x["type"], x["other"]["reference"]) for x in p["link"]] for p in patients}
    for wrong, right in (("0012347111", "0012347222"), ("0012348111", "0012348222")):
        assert links[ids[right]] == [("replaces", f"Patient/{ids[wrong]}")]
        assert links[ids[wrong]] == [("replaced-by", f"Patient/{ids[right]}")]
    assert {p["id"] for p in patients if p.get("active") is False} == {
        ids["0012347111"],
        ids["0012348111"],
    }


def test_a47_naming_the_corrected_identifier_itself_retires_nothing(
    converter: Converter,
) -> None:
    data = set_field(a47(), "MRG", 1, f"{RIGHT_IPP}^^^{CHU}^PI")

    bundle, warnings = convert_one(converter, data)

    [survivor] = resources(bundle, "Patient")
    assert "link" not in survivor and "active" not in survivor
    assert any("MRG-1 names the surviving patient" in w for w in warnings), warnings
