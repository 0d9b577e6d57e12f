"""IG rows of the HL7 v2 templates, one case per row: a field set in the full admission
sample, and where the HL7 v2-to-FHIR IG says it lands (segment maps in
../shared/reference/v2-to-fhir). The golden tests pin whole bundles; these name the row
each template line implements, so that a regression reads as the IG row it breaks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig

SAMPLE = (
    Path(__file__).resolve().parents[2] / "samples" / "hl7v2" / "ADT_A01_admission-full.hl7"
).read_bytes()
ABSENT = object()


def with_field(data: bytes, segment: str, position: int, value: str, occurrence: int = 1) -> bytes:
    """``data`` with field ``position`` of the ``occurrence``-th ``segment`` set to
    ``value`` (position 0: every field, ``value`` being the segment after its name)."""
    lines = data.decode("utf-8").split("\r")
    seen = 0
    for n, line in enumerate(lines):
        if line.startswith(segment + "|"):
            seen += 1
            if seen == occurrence and position == 0:
                lines[n] = f"{segment}|{value}"
                return "\r".join(lines).encode("utf-8")
            if seen == occurrence:
                fields = line.split("|")
                index = position - 1 if segment == "MSH" else position  # MSH-1 is the "|"
                fields += [""] * (index + 1 - len(fields))
                fields[index] = value
                lines[n] = "|".join(fields)
                return "\r".join(lines).encode("utf-8")
    raise AssertionError(f"no {segment} #{occurrence} in the sample")


def select(bundle: dict[str, Any], path: str) -> Any:
    """``Type#n.a.b[i].c`` in the bundle (``Bundle.…`` for the bundle itself); ABSENT
    when a step is missing."""
    head, _, rest = path.partition(".")
    if head == "Bundle":
        node: Any = bundle
    else:
        rtype, _, index = head.partition("#")
        of_type = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]
        if int(index or 0) >= len(of_type):
            return ABSENT
        node = of_type[int(index or 0)]
    for step in filter(None, rest.split(".")):
        match = re.fullmatch(r"(\w+)(?:\[(\d+)\])?", step)
        assert match, step
        node = node.get(match[1], ABSENT) if isinstance(node, dict) else ABSENT
        if match[2] is not None and node is not ABSENT:
            node = node[int(match[2])] if int(match[2]) < len(node) else ABSENT
        if node is ABSENT:
            return ABSENT
    return node


V2 = "http://terminology.hl7.org/CodeSystem/v2-"
EMPLOYER = (
    "3|DURAND SA^^^^^^L|EMR^Employeur^HL70063|1 rue de la Paix^^Lyon^^69002^FRA^O|||"
    "E^Employeur^HL70131||||||DURAND SA^L^^^^ACME&1.2.250.1.999.5&ISO^XX^^^552100554"
)

# (IG row, fields set as (segment, position, value[, occurrence]), path, expected value)
CASES: list[tuple[str, list[tuple[Any, ...]], str, Any]] = [
    (
        "MSH[Bundle] MSH-10 → Bundle.identifier",
        [],
        "Bundle.identifier.value",
        "CHU-ADT-20240314-000101",
    ),
    ("ADT_A01 OBX → Observation", [], "Observation#0.code.coding[0].code", "29463-7"),
    ("ADT_A01 OBX → Observation (third OBX)", [], "Observation#2.code.coding[0].code", "11329-0"),
    (
        "OBX in a visit → Observation.encounter",
        [],
        "Observation#1.encounter.reference",
        re.compile(r"Encounter/"),
    ),
    (
        "PV1-15 → hospitalization.specialArrangement (AmbulatoryStatus)",
        [("PV1", 15, "A2")],
        "Encounter.hospitalization.specialArrangement[0].coding[0].code",
        "wheel",
    ),
    (
        "PV1-15 keeps the v2 code",
        [("PV1", 15, "A2")],
        "Encounter.hospitalization.specialArrangement[0].coding[1].system",
        V2 + "0009",
    ),
    (
        "PV1-16 → hospitalization.specialCourtesy",
        [("PV1", 16, "VIP")],
        "Encounter.hospitalization.specialCourtesy[0].coding[0].system",
        V2 + "0099",
    ),
    (
        "PV2-22 Y → meta.security restricted",
        [("PV2", 22, "Y")],
        "Encounter.meta.security[0].code",
        "R",
    ),
    ("PV2-22 N → no security label", [("PV2", 22, "N")], "Encounter.meta", ABSENT),
    (
        "PV2-22 is not an ambulatory status",
        [("PV2", 22, "Y")],
        "Encounter.hospitalization.specialArrangement",
        ABSENT,
    ),
    (
        "DG1[Encounter] DG1-6 → diagnosis.use (DiagnosisType)",
        [],
        "Encounter.diagnosis[0].use.coding[0].code",
        "AD",
    ),
    ("DG1[Encounter] DG1-15 → diagnosis.rank", [], "Encounter.diagnosis[1].rank", 2),
    (
        "DG1[Encounter] diagnosis.condition",
        [],
        "Encounter.diagnosis[1].condition.reference",
        re.compile(r"Condition/"),
    ),
    ("DG1-15 = 0 is not ranked", [("DG1", 15, "0")], "Encounter.diagnosis[0].rank", ABSENT),
    ("NK1 person → RelatedPerson", [], "RelatedPerson#1.relationship[0].coding[0].code", "MTH"),
    (
        "NK1 employer → Patient.contact",
        [("NK1", 0, EMPLOYER, 2)],
        "Patient.contact[0].organization.reference",
        re.compile(r"Organization/"),
    ),
    (
        "NK1 employer → contact.relationship",
        [("NK1", 0, EMPLOYER, 2)],
        "Patient.contact[0].relationship[1].coding[0].code",
        "E",
    ),
    ("NK1 employer is no RelatedPerson", [("NK1", 0, EMPLOYER, 2)], "RelatedPerson#1", ABSENT),
    (
        "IN1[Coverage] IN1-4 → payor",
        [],
        "Coverage.payor[0].reference",
        re.compile(r"Organization/"),
    ),
    ("IN1[Coverage] IN1-12 → period.start", [], "Coverage.period.start", "2024-01-01"),
    ("IN1[Coverage] IN1-49 → subscriberId", [], "Coverage.subscriberId", "285036938204569"),
    ("IN1[Coverage] IN1-17 → relationship", [], "Coverage.relationship.coding[0].code", "ONESELF"),
    (
        "IN1[Coverage] IN1-17 self → subscriber",
        [],
        "Coverage.subscriber.reference",
        re.compile(r"Patient/"),
    ),
    (
        "IN1[Coverage] IN1-15 → type",
        [("IN1", 15, "PPO")],
        "Coverage.type.coding[0].system",
        V2 + "0086",
    ),
    ("IN1 without IN1-4: no payor, no Coverage", [("IN1", 4, "")], "Coverage", ABSENT),
    ("PR1[Procedure] PR1-3 → code", [], "Procedure.code.coding[0].code", "DZQM006"),
    ("PR1[Procedure] status unknown", [], "Procedure.status", "unknown"),
    (
        "PR1[Procedure] PR1-5 → performedDateTime",
        [],
        "Procedure.performedDateTime",
        "2024-03-14T09:30:00+01:00",
    ),
    ("PR1[Procedure] PR1-6 → category", [], "Procedure.category.coding[0].system", V2 + "0230"),
    (
        "PR1[Procedure] PR1-11 → surgeon",
        [],
        "Procedure.performer[0].function.coding[0].code",
        "304292004",
    ),
    ("PR1[Procedure] PR1-15 → reasonCode", [], "Procedure.reasonCode[0].coding[0].code", "I21.4"),
    ("PR1[Procedure] PR1-19 → identifier", [], "Procedure.identifier[0].value", "ECHO-20240314-01"),
    (
        "PR1-4 is the text without PR1-3",
        [("PR1", 3, ""), ("PR1", 4, "Échographie")],
        "Procedure.code.text",
        "Échographie",
    ),
]


def _message(fields: list[tuple[Any, ...]]) -> bytes:
    data = SAMPLE
    for segment, position, value, *occurrence in fields:
        data = with_field(data, segment, position, value, *occurrence)
    return data


@pytest.fixture(scope="module")
def converter() -> Converter:
    return Converter(ConverterConfig())


@pytest.mark.parametrize(("row", "fields", "path", "expected"), CASES, ids=[c[0] for c in CASES])
def test_ig_row(
    converter: Converter, row: str, fields: list[tuple[Any, ...]], path: str, expected: Any
) -> None:
    [conversion] = converter.convert(_message(fields))
    found = select(conversion.bundle, path)
    if isinstance(expected, re.Pattern):
        assert isinstance(found, str) and expected.match(found), f"{row}: {path} = {found!r}"
    else:
        assert found == expected, f"{row}: {path} = {found!r}"


def test_a_code_missing_from_its_map_is_a_warning_naming_field_and_map(
    converter: Converter,
) -> None:
    [conversion] = converter.convert(with_field(SAMPLE, "PID", 8, "Q"))
    patient = select(conversion.bundle, "Patient")
    assert "gender" not in patient
    assert "code not in code map AdministrativeSex at PID-8" in conversion.warnings
    assert not any("Q" in warning.split(" at ")[-1] for warning in conversion.warnings)


def test_a_code_the_map_marks_without_equivalent_is_no_warning(converter: Converter) -> None:
    # The criticality map has a row for MO (moderate) with no FHIR target: known, so
    # no warning, while the reaction severity map gives "moderate".
    [conversion] = converter.convert(with_field(SAMPLE, "AL1", 4, "MO^Modérée^HL70128"))
    assert not [w for w in conversion.warnings if "code map" in w]
    assert select(conversion.bundle, "AllergyIntolerance.reaction[0].severity") == "moderate"
    assert select(conversion.bundle, "AllergyIntolerance.criticality") is ABSENT
