"""A field holding only empty or meaningless parts (blanks, a coding system or an assigning
authority alone, sub-components without text, an empty first repetition) names nothing:
it gives what an absent field gives, never an element FHIR requires written without its
content. Each case below used to make the whole message a BundleValidationError (AE, a
dead letter) although the rest of it was fine:

- Provenance.agent.who (R4 1..1): MSH-4 or EVN-5 naming nobody ("^^^^^^^^AUTH", " ");
- Observation.code / DiagnosticReport.code (1..1): OBX-3 / OBR-4 naming no code ("^^LN"),
  which now get the data-absent-reason code an empty OBX-3 / OBR-4 gets;
- ChargeItem.performer.actor (1..1): FT1-20 / FT1-21 naming nobody; ChargeItem.code
  (1..1): an FT1-7 naming nothing is an absent one (the FT1 is skipped with the warning
  an FT1 without FT1-7, FT1-8 and FT1-25 gets);
- MedicationRequest.medication[x] (1..1): an RXE-2 naming nothing falls back to RXO-1, as
  an absent RXE-2 does.

A required field naming nothing keeps failing where an absent one fails, now as the
located MappingError the absent field gives (RXA-5, RXO-1, RXD-2, A29's PID-3), not as an
invalid bundle."""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from converter import Converter, MappingError
from tests.support.hl7_edit import resources, set_field
from tests.support.r4validator import R4Validator

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
DATA_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"

Bundle = dict[str, Any]


def _sample(name: str) -> bytes:
    data = (SAMPLES / f"{name}.hl7").read_bytes().removeprefix(b"\xef\xbb\xbf")
    return data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")


def _agents(bundle: Bundle) -> list[str]:
    [provenance] = resources(bundle, "Provenance")
    return [agent["type"]["coding"][0]["code"] for agent in provenance["agent"]]


def _absent_code(concept: dict[str, Any]) -> bool:
    return concept == {"extension": [{"url": DATA_ABSENT, "valueCode": "unknown"}]}


def _codes(concept: dict[str, Any]) -> list[str]:
    return [coding.get("code", "") for coding in concept.get("coding", [])]


def _enterer_dropped(bundle: Bundle) -> None:
    assert _agents(bundle) == ["author", "assembler"]


def _author_dropped(bundle: Bundle) -> None:
    assert _agents(bundle) == ["enterer", "assembler"]
    [header] = resources(bundle, "MessageHeader")
    assert "sender" not in header


def _observation_without_code(value: str) -> Callable[[Bundle], None]:
    def check(bundle: Bundle) -> None:
        [found] = [
            obs
            for obs in resources(bundle, "Observation")
            if str(obs.get("valueQuantity", {}).get("value")) == value
        ]
        assert _absent_code(found["code"])

    return check


def _height_kept(bundle: Bundle) -> None:
    [height] = [obs for obs in resources(bundle, "Observation") if "8302-2" in _codes(obs["code"])]
    assert str(height["valueQuantity"]["value"]) == "165"


def _report_without_code(others: str) -> Callable[[Bundle], None]:
    def check(bundle: Bundle) -> None:
        reports = resources(bundle, "DiagnosticReport")
        assert [_absent_code(r["code"]) for r in reports].count(True) == 1
        assert any(others in _codes(r["code"]) for r in reports)
        assert all(r.get("result") for r in reports)

    return check


def _performers(bundle: Bundle, transaction: str) -> list[str]:
    [charge] = [
        c
        for c in resources(bundle, "ChargeItem")
        if any(i.get("value") == transaction for i in c["identifier"])
    ]
    return [p["function"]["coding"][0]["code"] for p in charge.get("performer", [])]


def _no_performer(bundle: Bundle) -> None:
    assert _performers(bundle, "ACT-2024-118734") == []


def _performer_kept_orderer_dropped(bundle: Bundle) -> None:
    assert _performers(bundle, "ACT-2024-118735") == ["PRF"]


def _charge_skipped(bundle: Bundle) -> None:
    values = [i.get("value") for c in resources(bundle, "ChargeItem") for i in c["identifier"]]
    assert "ACT-2024-118735" not in values
    assert "ACT-2024-118734" in values


def _medication_from_rxo(code: str) -> Callable[[Bundle], None]:
    def check(bundle: Bundle) -> None:
        medications = [
            _codes(r["medicationCodeableConcept"]) for r in resources(bundle, "MedicationRequest")
        ]
        assert [code] in medications

    return check


# (sample, segment, occurrence, field, value, resources lost, new warning, check)
CASES: list[
    tuple[str, str, int, int, str, dict[str, int], str | None, Callable[[Bundle], None]]
] = [
    # The enterer's Practitioner is written only for the Provenance.
    (
        "ADT_A01_admission-full",
        "EVN",
        1,
        5,
        "^^^^^^^^AUTH",
        {"Practitioner": 1},
        None,
        _enterer_dropped,
    ),
    ("ADT_A01_admission-full", "EVN", 1, 5, " ", {"Practitioner": 1}, None, _enterer_dropped),
    (
        "ADT_A03_discharge",
        "EVN",
        1,
        5,
        "^^^^^^^^^^^^^^^^^^^FOO",
        {"Practitioner": 1},
        None,
        _enterer_dropped,
    ),
    ("ADT_A02_transfer", "MSH", 1, 4, "^^X", {}, None, _author_dropped),
    ("ADT_A08_update-patient", "MSH", 1, 4, " ", {}, None, _author_dropped),
    ("ADT_A01_admission-full", "OBX", 1, 3, "^^X", {}, None, _observation_without_code("68.5")),
    ("ADT_A01_admission-full", "OBX", 2, 3, "~8302-2^Body height^LN", {}, None, _height_kept),
    ("ADT_A17_swap-beds", "OBX", 1, 3, "&&X", {}, None, _observation_without_code("91")),
    (
        "ORU_R01_20-obx",
        "OBX",
        5,
        3,
        "^^^^^^^^^^^^^^^^^^^FOO",
        {},
        None,
        _observation_without_code("86.1"),
    ),
    ("ORU_R01_lab-results", "OBR", 2, 4, "^^X", {}, None, _report_without_code("24323-8")),
    ("OUL_R22_lab-results", "OBR", 1, 4, " ", {}, None, _report_without_code("1988-5")),
    ("DFT_P03_charges", "FT1", 1, 20, "^^^^^^^^AUTH", {}, None, _no_performer),
    # FT1 2's FT1-21 doctor (PERRIN) is named nowhere else.
    (
        "DFT_P03_charges",
        "FT1",
        2,
        21,
        "^^^^^^^^AUTH",
        {"Practitioner": 1},
        None,
        _performer_kept_orderer_dropped,
    ),
    (
        "DFT_P03_charges",
        "FT1",
        2,
        7,
        "^^X",
        {"ChargeItem": 1, "Practitioner": 1},
        "FT1 2: no transaction code (FT1-7)",
        _charge_skipped,
    ),
    (
        "RDE_O11_pharmacy-encoded-orders",
        "RXE",
        1,
        2,
        "^^X",
        {},
        None,
        _medication_from_rxo("J01CR02"),
    ),
    ("RDS_O13_pharmacy-dispense", "RXE", 1, 2, " ", {}, None, _medication_from_rxo("J01CR02")),
]


def _types(bundle: Bundle) -> collections.Counter[str]:
    return collections.Counter(
        e["resource"]["resourceType"] for e in bundle["entry"] if "resource" in e
    )


@pytest.mark.parametrize(
    ("sample", "name", "occurrence", "field", "value", "lost", "warning", "check"),
    CASES,
    ids=[f"{c[0]}-{c[1]}[{c[2]}]-{c[3]}={c[4]!r}" for c in CASES],
)
def test_a_field_naming_nothing_is_left_out(
    converter: Converter,
    r4validator: R4Validator,
    sample: str,
    name: str,
    occurrence: int,
    field: int,
    value: str,
    lost: dict[str, int],
    warning: str | None,
    check: Callable[[Bundle], None],
) -> None:
    data = _sample(sample)
    [before] = converter.convert(data)
    [after] = converter.convert(set_field(data, name, field, value, occurrence=occurrence))
    bundle = after.bundle
    assert r4validator.validate(bundle) == []
    # The rest of the message is still there: only what the field alone gave is gone.
    assert _types(before.bundle) - _types(bundle) == collections.Counter(lost)
    assert not _types(bundle) - _types(before.bundle)
    new_warnings = [w for w in after.warnings if w not in before.warnings]
    if warning is None:
        assert new_warnings == []
    else:
        [new_warning] = new_warnings
        assert new_warning.startswith(warning)
    check(bundle)


@pytest.mark.parametrize(
    ("sample", "name", "field", "value", "missing"),
    [
        ("VXU_V04_immunization", "RXA", 5, "^^CVX", "the vaccine administered (RXA-5) is missing"),
        ("OMP_O09_pharmacy-order", "RXO", 1, " ", "the requested give code (RXO-1) is missing"),
        ("ORM_O01_medication-order", "RXO", 1, "&&X", "the requested give code (RXO-1) is missing"),
        (
            "RDS_O13_pharmacy-dispense",
            "RXD",
            2,
            "^^99UCD",
            "the dispense/give code (RXD-2) is missing",
        ),
        (
            "ADT_A29_delete-person",
            "PID",
            3,
            "^^^^^^^^AUTH",
            "the person to delete (PID-3 patient identifier) is missing",
        ),
        (
            "ADT_A29_delete-person",
            "PID",
            3,
            "^^^CHU&1.2.3&ISO^MR",
            "the person to delete (PID-3 patient identifier) is missing",
        ),
    ],
)
def test_a_required_field_naming_nothing_fails_as_an_absent_one(
    converter: Converter, sample: str, name: str, field: int, value: str, missing: str
) -> None:
    data = _sample(sample)
    with pytest.raises(MappingError) as naming_nothing:
        list(converter.convert(set_field(data, name, field, value)))
    with pytest.raises(MappingError) as absent:
        list(converter.convert(set_field(data, name, field, "")))
    assert missing in str(naming_nothing.value)
    assert (
        str(naming_nothing.value).split(" in template")[0]
        == str(absent.value).split(" in template")[0]
    )
