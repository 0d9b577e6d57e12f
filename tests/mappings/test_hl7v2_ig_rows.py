"""IG rows of the HL7 v2 templates, one case per row: a field set in the full admission
sample, and where the HL7 v2-to-FHIR IG says it lands (segment maps in
../shared/reference/v2-to-fhir). The golden tests pin whole bundles; these name the row
each template line implements, so that a regression reads as the IG row it breaks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig, MappingError

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
SAMPLE = (SAMPLE_DIR / "ADT_A01_admission-full.hl7").read_bytes()
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
    when a step is missing. ``…reference->x.y`` goes on in the resource that reference
    names (``Provenance.location.reference->name``), as many times as written."""
    path, *hops = path.split("->")
    head, _, rest = path.partition(".")
    if head == "Bundle":
        node: Any = bundle
    else:
        rtype, _, index = head.partition("#")
        of_type = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]
        if int(index or 0) >= len(of_type):
            return ABSENT
        node = of_type[int(index or 0)]
    node = _walk(node, rest)
    for hop in hops:
        if node is ABSENT:
            return ABSENT
        rtype, _, rid = str(node).partition("/")
        named = [
            entry["resource"]
            for entry in bundle["entry"]
            if (entry["resource"]["resourceType"], entry["resource"]["id"]) == (rtype, rid)
        ]
        node = _walk(named[0], hop) if named else ABSENT
    return node


def _walk(node: Any, rest: str) -> Any:
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
#: An event facility that is not the facility of PV1-3 (whose Location would otherwise
#: supply the same name and type).
URGENT_CARE = "CHU-LYON-SAU^1.2.250.1.999.1.7^ISO"
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
    ("PID[Account] PID-18 → identifier", [], "Account.identifier[0].value", "CPT-2024-000101"),
    (
        "PID[Account] PID-18.4 → identifier.system (CX[Identifier])",
        [],
        "Account.identifier[0].system",
        "urn:oid:1.2.250.1.999.1.1",
    ),
    ("PID[Account] status active", [], "Account.status", "active"),
    (
        "ADT_A01 PID → Account.subject = Patient[1]",
        [],
        "Account.subject[0].reference->identifier[0].value",
        "0012345678",
    ),
    (
        "Encounter.account → the PID-18 Account (no IG row; our reading)",
        [],
        "Encounter.account[0].reference->identifier[0].value",
        "CPT-2024-000101",
    ),
    ("PID-18 empty: no Account", [("PID", 18, "")], "Account", ABSENT),
    ("PID-18 without CX.1: no Account", [("PID", 18, "^^^CHU-LYON")], "Account", ABSENT),
    ("PID-18 empty: no Encounter.account", [("PID", 18, "")], "Encounter.account", ABSENT),
    (
        "EVN[Provenance] EVN-5 → agent.who (Practitioner)",
        [],
        "Provenance.agent[1].who.reference->identifier[0].value",
        "10109012341",
    ),
    (
        "EVN[Provenance] EVN-7 → location (Location)",
        [],
        "Provenance.location.reference",
        re.compile(r"Location/"),
    ),
    (
        "HD[Location] HD.1 → name",
        [("EVN", 7, URGENT_CARE)],
        "Provenance.location.reference->name",
        "CHU-LYON-SAU",
    ),
    (
        "HD[Location] HD.2 (HD.3 ISO) → identifier.value",
        [],
        "Provenance.location.reference->identifier[0].value",
        "urn:oid:1.2.250.1.999.1.1",
    ),
    (
        "HD[Location] physicalType si",
        [("EVN", 7, URGENT_CARE)],
        "Provenance.location.reference->physicalType.coding[0].code",
        "si",
    ),
    (
        "HD[Location] HD.2 needs HD.3 ISO or UUID",
        # a facility no PL names: PV1-3.4 gives CHU-LYON's OID as ISO (IG PL[Location] row 4)
        [("EVN", 7, "CHU-LYON-SAU^1.2.250.1.999.1.7^L")],
        "Provenance.location.reference->identifier",
        ABSENT,
    ),
    (
        "EVN-7 is the facility Location of PV1-3.4 (one resource)",
        [],
        "Provenance.location.reference",
        "Encounter.location[0].location.reference->partOf.reference->partOf.reference->partOf.reference",
    ),
    ("EVN-7 empty: no Provenance.location", [("EVN", 7, "")], "Provenance.location", ABSENT),
    (
        "PV1[Encounter] PV1-54 → episodeOfCare(EpisodeOfCare.identifier)",
        [("PV1", 54, "EP-2024-0042^^^CHU-LYON&1.2.250.1.999.1.1&ISO")],
        "Encounter.episodeOfCare[0].identifier.value",
        "EP-2024-0042",
    ),
]

ORM_SAMPLE = (SAMPLE_DIR / "ORM_O01_medication-order.hl7").read_bytes()
DOCTOR = "10101234563^LEROY^Paul^^^Dr^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS"
MR = "MedicationRequest#0"  # amoxicilline: RXO-2 only, RXR, NTE, DG1, OBX
MR2 = "MedicationRequest#1"  # paracétamol: RXO-2 and RXO-3, TQ.8 text

# RXO[MedicationRequest], RXR[MedicationRequest], TQ[MedicationRequest] and the ORC rows read
# for a MedicationRequest, on the ORM medication sample. Fields set in the first ORDER unless
# an occurrence says otherwise.
ORM_CASES: list[tuple[str, list[tuple[Any, ...]], str, Any]] = [
    (
        "RXO[MedicationRequest] RXO-1 → medication (CodeableConcept)",
        [],
        MR + ".medicationCodeableConcept.coding[0].code",
        "J01CR02",
    ),
    ("RXO[MedicationRequest] intent original-order", [], MR + ".intent", "original-order"),
    (
        "RXO-2 → dosageInstruction.doseAndRate[1].doseRange.low.value",
        [],
        MR2 + ".dosageInstruction[0].doseAndRate[0].doseRange.low.value",
        500,
    ),
    (
        "RXO-2 → doseAndRate[1].type ordered",
        [],
        MR + ".dosageInstruction[0].doseAndRate[0].type.coding[0].code",
        "ordered",
    ),
    (
        "RXO-3 → doseRange.high.value",
        [],
        MR2 + ".dosageInstruction[0].doseAndRate[0].doseRange.high.value",
        1000,
    ),
    (
        "RXO-4 → doseRange.low.code (CWE[Code])",
        [],
        MR2 + ".dosageInstruction[0].doseAndRate[0].doseRange.low.code",
        "mg",
    ),
    (
        "RXO-4 → doseRange.high.code (CWE[Code])",
        [],
        MR2 + ".dosageInstruction[0].doseAndRate[0].doseRange.high.code",
        "mg",
    ),
    (
        "RXO-4 without code → doseRange.low.unit (CWE[String])",
        [("RXO", 4, "^milligrammes", 2)],
        MR2 + ".dosageInstruction[0].doseAndRate[0].doseRange.low.unit",
        "milligrammes",
    ),
    (
        "RXO-4 without code → doseRange.high.unit (CWE[String])",
        [("RXO", 4, "^milligrammes", 2)],
        MR2 + ".dosageInstruction[0].doseAndRate[0].doseRange.high.unit",
        "milligrammes",
    ),
    (
        "RXO-9 → substitution.allowedCodeableConcept (AllowSubstitution)",
        [],
        MR + ".substitution.allowedCodeableConcept.coding[0].code",
        "G",
    ),
    ("RXO-11 → dispenseRequest.quantity.value", [], MR + ".dispenseRequest.quantity.value", 21),
    (
        "RXO-12 → dispenseRequest.quantity.code (CWE[Code])",
        [],
        MR + ".dispenseRequest.quantity.code",
        "{tbl}",
    ),
    (
        "RXO-12 without code → dispenseRequest.quantity.unit (CWE[String])",
        [("RXO", 12, "^boîtes")],
        MR + ".dispenseRequest.quantity.unit",
        "boîtes",
    ),
    (
        "RXO-13 → dispenseRequest.numberOfRepeatsAllowed",
        [("RXO", 13, "3")],
        MR + ".dispenseRequest.numberOfRepeatsAllowed",
        3,
    ),
    (
        "RXO-14 → requester (Practitioner) when ORC-12 is empty",
        [("ORC", 12, ""), ("RXO", 14, DOCTOR)],
        MR + ".requester.reference->identifier[0].value",
        "10101234563",
    ),
    (
        "RXO-23 (IG row RXE-19) → maxDosePerPeriod.numerator",
        [],
        MR + ".dosageInstruction[0].maxDosePerPeriod.numerator.value",
        3,
    ),
    (
        "RXO-23 → maxDosePerPeriod.denominator 1 d",
        [],
        MR + ".dosageInstruction[0].maxDosePerPeriod.denominator.code",
        "d",
    ),
    (
        "RXR-1 → dosageInstruction.route (RouteOfAdministration)",
        [],
        MR + ".dosageInstruction[0].route.coding[0].system",
        "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration",
    ),
    (
        "RXR-2 → dosageInstruction.site",
        [("RXR", 2, "LA^Bras gauche^HL70163")],
        MR + ".dosageInstruction[0].site.coding[0].code",
        "LA",
    ),
    (
        "RXR-4 → dosageInstruction.method (AdministrationMethod)",
        [("RXR", 4, "CH^Croquer^HL70165")],
        MR + ".dosageInstruction[0].method.coding[0].code",
        "419747000",
    ),
    (
        "RXR-5 → dosageInstruction.additionalInstruction",
        [("RXR", 5, "AVR^Avant le repas^L")],
        MR + ".dosageInstruction[0].additionalInstruction[0].coding[0].code",
        "AVR",
    ),
    ("No RXR: no route", [("RXR", 0, "", 1)], MR + ".dosageInstruction[0].route", ABSENT),
    (
        "ORC[ServiceRequest] ORC-2 → identifier PLAC",
        [],
        MR + ".identifier[0].value",
        "PHA-2024-0316-11",
    ),
    (
        "ORC[ServiceRequest] ORC-3 → identifier FILL",
        [("ORC", 3, "F-2024-889^PHARMA-SAULE")],
        MR + ".identifier[1].type.coding[0].code",
        "FILL",
    ),
    (
        "ORC-4 placer group number → groupIdentifier (PGN)",
        [("ORC", 4, "GRP-2024-0316-3^DPI-ERABLE")],
        MR + ".groupIdentifier.value",
        "GRP-2024-0316-3",
    ),
    ("ORC-1 NW, ORC-5 empty → status active (OrderControlCode)", [], MR + ".status", "active"),
    ("ORC-1 OC → status cancelled", [("ORC", 1, "OC")], MR + ".status", "cancelled"),
    ("ORC-1 DC → status stopped", [("ORC", 1, "DC")], MR + ".status", "stopped"),
    ("ORC-5 CA → status cancelled (OrderStatus)", [("ORC", 5, "CA")], MR + ".status", "cancelled"),
    ("ORC-5 DC → status stopped (OrderStatus)", [("ORC", 5, "DC")], MR + ".status", "stopped"),
    (
        "ORC-5 wins over ORC-1 (ORC-1 IF ORC-5 NOT VALUED)",
        [("ORC", 1, "OC"), ("ORC", 5, "HD")],
        MR + ".status",
        "on-hold",
    ),
    ("ORC-1 without a status (SN) → unknown", [("ORC", 1, "SN")], MR + ".status", "unknown"),
    (
        "ORC-9 → authoredOn IF ORC-1 IS NW",
        [],
        MR + ".authoredOn",
        "2024-03-16T08:05:00+01:00",
    ),
    ("ORC-9 is no authoredOn unless NW", [("ORC", 1, "XO")], MR + ".authoredOn", ABSENT),
    (
        "ORC-1 → businessEvent extension",
        [],
        MR + ".extension[0].extension[0].valueCodeableConcept.coding[0].code",
        "NW",
    ),
    (
        "ORC-12 → requester (Practitioner)",
        [],
        MR + ".requester.reference->identifier[0].value",
        "10102345674",
    ),
    (
        "ORC-16 (ORC-5 not valued) → statusReason",
        [("ORC", 1, "OD"), ("ORC", 16, "EI^Effet indésirable^L")],
        MR + ".statusReason.coding[0].code",
        "EI",
    ),
    (
        "TQ[MedicationRequest] TQ.2 → dosageInstruction.timing.code",
        [],
        MR + ".dosageInstruction[0].timing.code.coding[0].code",
        "Q8H",
    ),
    (
        "TQ.4 → timing.repeat.boundsPeriod.start",
        [],
        MR + ".dosageInstruction[0].timing.repeat.boundsPeriod.start",
        "2024-03-16T14:00:00+01:00",
    ),
    ("TQ.6 → priority (ExtendedPriorityCodes)", [], MR + ".priority", "routine"),
    ("TQ.8 → note", [], MR2 + ".note[0].text", "Si douleur (EVA > 3)"),
    ("NTE[ServiceRequest] → note", [], MR + ".note[0].text", "A prendre au milieu du repas."),
    (
        "ORM_O01 DG1 → reasonReference (Condition)",
        [],
        MR + ".reasonReference[0].reference->code.coding[0].code",
        "T84.5",
    ),
    (
        "ORM_O01 OBX → supportingInformation (Observation)",
        [],
        MR + ".supportingInformation[0].reference->code.coding[0].code",
        "29463-7",
    ),
    (
        "ORM_O01 subject = Patient[1]",
        [],
        MR + ".subject.reference->identifier[0].value",
        "PE00512344",
    ),
    ("ORM_O01 PV1 → encounter", [], MR + ".encounter.reference", re.compile(r"Encounter/")),
    ("An RXO order is no ServiceRequest", [], "ServiceRequest", ABSENT),
]


def _message(fields: list[tuple[Any, ...]], sample: bytes = SAMPLE) -> bytes:
    data = sample
    for segment, position, value, *occurrence in fields:
        data = with_field(data, segment, position, value, *occurrence)
    return data


@pytest.fixture(scope="module")
def converter() -> Converter:
    return Converter(ConverterConfig())


def _check(bundle: dict[str, Any], row: str, path: str, expected: Any) -> None:
    found = select(bundle, path)
    if isinstance(expected, re.Pattern):
        assert isinstance(found, str) and expected.match(found), f"{row}: {path} = {found!r}"
    elif isinstance(expected, str) and "->" in expected:
        # Two paths that must name the same thing.
        other = select(bundle, expected)
        assert found is not ABSENT and found == other, f"{row}: {path} = {found!r} ≠ {other!r}"
    else:
        assert found == expected, f"{row}: {path} = {found!r}"


@pytest.mark.parametrize(("row", "fields", "path", "expected"), CASES, ids=[c[0] for c in CASES])
def test_ig_row(
    converter: Converter, row: str, fields: list[tuple[Any, ...]], path: str, expected: Any
) -> None:
    [conversion] = converter.convert(_message(fields))
    _check(conversion.bundle, row, path, expected)


@pytest.mark.parametrize(
    ("row", "fields", "path", "expected"), ORM_CASES, ids=[c[0] for c in ORM_CASES]
)
def test_ig_row_medication_order(
    converter: Converter, row: str, fields: list[tuple[Any, ...]], path: str, expected: Any
) -> None:
    [conversion] = converter.convert(_message(fields, ORM_SAMPLE))
    _check(conversion.bundle, row, path, expected)


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


def test_an_account_id_comes_from_its_number_and_authority(converter: Converter) -> None:
    # Another message (control id, patient) with the same PID-18: the same Account.
    other = with_field(with_field(SAMPLE, "MSH", 10, "CHU-ADT-OTHER"), "PID", 3, "0099^^^CHU-LYON")
    [first] = converter.convert(SAMPLE)
    [second] = converter.convert(other)
    assert select(first.bundle, "Account.id") == select(second.bundle, "Account.id")
    # The same number from another authority is another account.
    elsewhere = with_field(
        SAMPLE, "PID", 18, "CPT-2024-000101^^^HOP-PARIS-EST&1.2.250.1.999.2.1&ISO^AN"
    )
    [third] = converter.convert(elsewhere)
    assert select(third.bundle, "Account.id") not in (ABSENT, select(first.bundle, "Account.id"))


def test_a_medication_order_id_comes_from_its_placer_number(converter: Converter) -> None:
    # The discontinuation of the order, in a later message: the same MedicationRequest.
    later = with_field(with_field(ORM_SAMPLE, "MSH", 10, "HPE-ORM-LATER"), "ORC", 1, "DC")
    [first] = converter.convert(ORM_SAMPLE)
    [second] = converter.convert(later)
    assert select(first.bundle, MR + ".id") == select(second.bundle, MR + ".id")
    assert select(second.bundle, MR + ".status") == "stopped"
    # Without a placer number, the filler number gives the identity.
    no_placer = with_field(
        with_field(ORM_SAMPLE, "ORC", 2, ""), "ORC", 3, "F-2024-889^PHARMA-SAULE"
    )
    [third] = converter.convert(no_placer)
    [fourth] = converter.convert(with_field(no_placer, "MSH", 10, "HPE-ORM-OTHER"))
    assert select(third.bundle, MR + ".id") == select(fourth.bundle, MR + ".id")
    assert select(third.bundle, MR + ".id") != select(first.bundle, MR + ".id")


def test_a_medication_order_without_pid_is_a_warning(converter: Converter) -> None:
    data = b"\r".join(
        line for line in ORM_SAMPLE.split(b"\r") if not line.startswith((b"PID|", b"PV1|", b"AL1|"))
    )
    [conversion] = converter.convert(data)
    assert select(conversion.bundle, "MedicationRequest") is ABSENT
    assert (
        "ORDER 1: no PID, so no MedicationRequest (its subject is required)" in conversion.warnings
    )


def test_a_medication_order_needs_its_code(converter: Converter) -> None:
    with pytest.raises(MappingError) as failure:
        converter.convert(with_field(ORM_SAMPLE, "RXO", 1, ""))
    assert failure.value.location == "RXO-1"
    assert "RXO-1" in str(failure.value)


def test_a_control_id_of_blanks_alone_gives_no_bundle_identifier(converter: Converter) -> None:
    # MSH-10 `\.br\` decodes to a line break: a whitespace-only FHIR string is invalid,
    # and the R4 validator refused the bundle (found by the mutated-bundle tests).
    conversion = converter.convert_message(_message([("MSH", 10, "\\.br\\")]))
    assert "identifier" not in conversion.bundle


def _observations(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    ]


def test_adt_observations_keep_their_ids_when_the_message_comes_again(
    converter: Converter,
) -> None:
    # A data-engineer probe: each replay with a new MSH-10 (and each A08 repeating the
    # OBX) added a copy of the admission weight, its id derived from the message.
    first = _observations(converter.convert_message(_message([])).bundle)
    replay = _observations(
        converter.convert_message(
            _message([("MSH", 10, "REPLAY-1"), ("MSH", 7, "20240320")])
        ).bundle
    )
    assert len(first) == 3
    assert [o["id"] for o in replay] == [o["id"] for o in first]
    # A new measurement time is a new observation; the other two are the same.
    later = _observations(converter.convert_message(_message([("OBX", 14, "20240316")])).bundle)
    assert later[0]["id"] != first[0]["id"]
    assert [o["id"] for o in later[1:]] == [o["id"] for o in first[1:]]


def test_adt_observations_repeating_a_code_stay_apart(converter: Converter) -> None:
    first_obx = next(line for line in SAMPLE.decode().split("\r") if line.startswith("OBX|"))
    twice = SAMPLE.replace(first_obx.encode(), (first_obx + "\r" + first_obx).encode())
    observations = _observations(converter.convert_message(twice).bundle)
    assert len(observations) == 4
    assert len({o["id"] for o in observations}) == 4


def _related_people(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "RelatedPerson"
    ]


def test_a_corrected_nk1_relationship_updates_the_same_related_person(
    converter: Converter,
) -> None:
    # A data-engineer probe: an A08 correcting spouse → father made a second
    # RelatedPerson and left the stale one.
    before = _related_people(converter.convert_message(_message([])).bundle)
    corrected = _related_people(
        converter.convert_message(_message([("NK1", 3, "FTH^Father^HL70063")])).bundle
    )
    assert [p["id"] for p in corrected] == [p["id"] for p in before]
    assert corrected[0]["relationship"] != before[0]["relationship"]
