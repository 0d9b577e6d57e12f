"""Corpus tests over ../shared/corpus/hl7v2: real messages written by other projects.

Every message whose type Passerelle routes converts to a bundle that validates (with
fhir.resources during conversion, and with the independent R4 validator here); every
other message fails cleanly with UnsupportedMessageError, never a crash. Messages that
hold invalid values convert in lenient mode, and fail in strict mode with a located
error. Key content is compared with Microsoft FHIR-Converter's outputs and the agreement
printed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from converter import (
    Converter,
    ConverterConfig,
    MappingError,
    ParseError,
    UnsupportedMessageError,
)
from converter.hl7v2 import peek_header
from tests.conftest import SHARED_DIR
from tests.corpus.peer import Agreement, peer_pairs, resources
from tests.support.r4validator import R4Validator

CORPUS = SHARED_DIR / "corpus" / "hl7v2"
PEER_INPUT = CORPUS / "ms-fhir-converter" / "input"
PEER_EXPECTED = CORPUS / "ms-fhir-converter" / "expected"

#: The first coverage list (issue "Conversion core"), by MSH-9 event.
CORE = {
    f"ADT^{t}"
    for t in ("A01", "A02", "A03", "A04", "A05", "A08", "A11", "A13", "A28", "A31", "A40")
} | {"ORU^R01", "ORM^O01", "VXU^V04", "MDM^T02"}
#: The IHE PAM events of a French ADT feed (ITI-31 and its national extension), routed
#: since: the corpus holds A06, A07, A09, A10, A14, A15, A16, A25, A26 and A27 messages,
#: and two A47 (change patient identifier list, root ADT_A39; v2.8, PATIENT groups).
PAM = {
    f"ADT^{t}"
    for t in (
        *("A06", "A07", "A09", "A10", "A12", "A14", "A15", "A16", "A21", "A22", "A25"),
        *("A26", "A27", "A32", "A33", "A38", "A47", "A52", "A53", "A54", "A55", "Z99"),
    )
}
#: Merges, identifier changes and moves (roots ADT_A39, ADT_A45), swaps (ADT_A17), links
#: (ADT_A24): the corpus holds A18, A34 (2), A41 and A45 (2).
MERGES = {
    f"ADT^{t}"
    for t in (
        *("A17", "A18", "A24", "A34", "A35", "A36", "A37", "A39", "A41", "A42"),
        *("A43", "A44", "A45", "A46", "A48", "A49"),
    )
}
#: Deletions (root ADT_A29): the corpus holds two A29 (delete person information).
DELETIONS = {"ADT^A23", "ADT^A29"}
#: Laboratory orders (IHE LTW LAB-1): the corpus holds seven OML^O21 messages.
LAB_ORDERS = {"OML^O21"}
#: Unsolicited laboratory results (IHE LTW LAB-3, root OUL): one R22, R23 and R24 message.
LAB_RESULTS = {"OUL^R22", "OUL^R23", "OUL^R24"}
#: Scheduling notifications (roots SIU, SIU_slots for S23/S24): the corpus holds S12 to
#: S17 and S26 messages.
SCHEDULING = {f"SIU^S{n}" for n in (*range(12, 25), 26)}
#: Medical documents with and without content (root MDM_T02): the corpus holds T01, T02,
#: T05, T06, T09 and T10. Patient problems (root PPR_PC1): PC1, PC2 and PC3.
DOCUMENTS = {f"MDM^T{n:02d}" for n in range(1, 12)}
PROBLEMS = {"PPR^PC1", "PPR^PC2", "PPR^PC3"}
#: Pharmacy (roots RDE_O11, RDS_O13): the corpus holds 27 RDE^O11, 3 RDE^O25, 2 RDS^O13,
#: and 20 OMP^O09 (root RDE_O11; 9 of them unreadable: MSH-2 "^~\\\\&").
PHARMACY = {"RDE^O11", "RDE^O25", "RDS^O13", "OMP^O09"}
#: General orders (root OMG_O19) and referrals (root REF_I12): the corpus holds two
#: OMG^O19, one REF^I12 and two REF^I14.
ORDERS_AND_REFERRALS = {"OMG^O19", "REF^I12", "REF^I13", "REF^I14", "REF^I15"}
#: Patient accounting (roots BAR, DFT): the corpus holds BAR^P01, P02, P12, DFT^P03, P11.
FINANCIAL = {f"BAR^{t}" for t in ("P01", "P02", "P05", "P06", "P10", "P12")} | {
    "DFT^P03",
    "DFT^P11",
}
#: Master files (roots MFN_M02, MFN_M05): none in the corpus.
MASTER_FILES = {"MFN^M02", "MFN^M05"}
COVERAGE = (
    CORE
    | PAM
    | LAB_ORDERS
    | LAB_RESULTS
    | SCHEDULING
    | DOCUMENTS
    | PROBLEMS
    | PHARMACY
    | FINANCIAL
    | ORDERS_AND_REFERRALS
    | MERGES
    | DELETIONS
    | MASTER_FILES
)


def _files() -> list[Path]:
    return sorted(CORPUS.rglob("*.hl7")) if CORPUS.is_dir() else []


@dataclass
class Outcome:
    """What happened to each message of one corpus file."""

    bundles: list[dict[str, Any]] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    invalid_values: list[MappingError] = field(default_factory=list)
    unreadable: list[ParseError] = field(default_factory=list)


@pytest.fixture(scope="module")
def converters() -> tuple[Converter, Converter]:
    if not CORPUS.is_dir():
        pytest.skip(f"{CORPUS} is absent: the shared HL7 v2 corpus is not available here")
    strict = Converter(ConverterConfig(default_timezone="Europe/Paris"))
    lenient = Converter(ConverterConfig(default_timezone="Europe/Paris", strict_values=False))
    return strict, lenient


def _invalid_msh2(data: bytes) -> bool:
    start = data.find(b"MSH")
    chars = data[start + 4 :].split(data[start + 3 : start + 4], 1)[0]
    return len(set(chars)) != len(chars) or any(chr(c).isalnum() for c in chars)


def convert_file(path: Path, strict: Converter, lenient: Converter) -> Outcome:
    outcome = Outcome()
    data = path.read_bytes()
    for raw in strict.split(data):
        header = None
        try:
            header = peek_header(raw.data)
            outcome.bundles.append(strict.convert_message(raw.data).bundle)
        except UnsupportedMessageError as exc:
            outcome.unsupported.append(exc.message_type or "?")
            assert header is not None
            assert header.event not in COVERAGE, f"{header.event} is in the coverage list"
            assert exc.hl7_error_code in ("200", "201", "203")
        except MappingError as exc:
            # Strict mode refuses an invalid value with its HL7 path and template line;
            # lenient mode drops it with a warning and converts the rest.
            assert exc.location and exc.template, f"unlocated error: {exc}"
            outcome.invalid_values.append(exc)
            try:
                conversion = lenient.convert_message(raw.data)
            except MappingError as missing:
                # A required element whose only source is empty or invalid (RXA-5, MDM
                # without OBX): rejected in lenient mode too, naming the field.
                assert missing.reason.endswith("is missing") and missing.location, missing
                continue
            assert any(exc.location in w for w in conversion.warnings), conversion.warnings
            outcome.bundles.append(conversion.bundle)
        except ParseError as exc:
            # Only input that is not HL7 v2 may fail to parse (e.g. MSH-2 "^~\\\\&", a
            # Java string-escaping artefact in some extracted test messages).
            assert _invalid_msh2(raw.data), f"parse error on a readable message: {exc}"
            assert exc.location == "MSH-2"
            outcome.unreadable.append(exc)
    return outcome


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(CORPUS)))
def test_corpus_message_converts_or_fails_cleanly(
    path: Path, converters: tuple[Converter, Converter], r4validator: R4Validator
) -> None:
    outcome = convert_file(path, *converters)
    parts = (outcome.bundles, outcome.unsupported, outcome.invalid_values, outcome.unreadable)
    assert any(parts), f"{path.name}: no message found in the file"
    for bundle in outcome.bundles:
        issues = r4validator.validate(bundle)
        assert issues == [], json.dumps(issues[:5], indent=1, ensure_ascii=False)


def _appointment_facts(bundle: dict[str, Any]) -> dict[str, Any]:
    """Status, start and end (as instants: the peer writes them in its machine's offset),
    identifiers and the family names of the Practitioner participants (the peer leaves the
    SCH contacts out of the participants: agreement when one side contains the other)."""
    appointments = resources(bundle, "Appointment")
    if not appointments:
        return {}
    a = appointments[0]
    by_reference = {f"{r['resourceType']}/{r['id']}": r for r in resources(bundle, "Practitioner")}
    people = [
        by_reference.get((p.get("actor") or {}).get("reference", "")) for p in a["participant"]
    ]
    return {
        "Appointment.status": a.get("status"),
        "Appointment.start": _instant(a.get("start")),
        "Appointment.end": _instant(a.get("end")),
        "Appointment.identifier": frozenset(i.get("value") for i in a.get("identifier", [])),
        "Appointment.practitioners": frozenset(
            n.get("family") for p in people if p for n in p.get("name", []) if n.get("family")
        ),
    }


def _instant(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _add_appointment_facts(
    agreement: Agreement, name: str, ours: dict[str, Any], peer: dict[str, Any]
) -> None:
    mine, theirs = _appointment_facts(ours), _appointment_facts(peer)
    for kind in sorted(set(mine) | set(theirs)):
        a, b = mine.get(kind), theirs.get(kind)
        if a in (None, frozenset()) and b in (None, frozenset()):
            continue
        agreement.total[kind] += 1
        contained = isinstance(a, frozenset) and isinstance(b, frozenset) and (a <= b or b <= a)
        if a == b or (kind == "Appointment.practitioners" and contained and a and b):
            agreement.equal[kind] += 1
        else:
            agreement.differences.append((name, kind, a, b))


def test_key_content_agrees_with_the_peer_converter(
    converters: tuple[Converter, Converter], capsys: pytest.CaptureFixture[str]
) -> None:
    strict, lenient = converters
    agreement = Agreement()
    compared = 0
    for source, expected in peer_pairs(PEER_INPUT, PEER_EXPECTED, ".hl7"):
        try:
            header = peek_header(source.read_bytes())
        except ParseError:
            continue
        if header.event not in COVERAGE:
            continue
        if header.event in DELETIONS:
            continue  # the peer keeps the deleted resources in its DELETE entries; ours carry none
        outcome = convert_file(source, strict, lenient)
        if not outcome.bundles:
            continue
        peer = json.loads(expected.read_text(encoding="utf-8"))
        agreement.add(source.name, outcome.bundles[0], peer)
        _add_appointment_facts(agreement, source.name, outcome.bundles[0], peer)
        compared += 1
    assert compared >= 20, f"only {compared} peer outputs compared"
    with capsys.disabled():
        print(f"\nAgreement with Microsoft FHIR-Converter on {compared} messages:")
        print(agreement.report())
    floors = {
        "Patient.birthDate": 0.9,
        "Patient.gender": 0.9,
        "Patient.name": 0.8,
        "Patient.identifier": 0.6,
        "Encounter.class": 0.8,
        "Encounter.period": 0.8,
        "Observation.value": 0.8,
        "Observation.unit": 0.8,
        "Observation.status": 0.7,
        "Immunization.vaccineCode": 0.8,
        "Immunization.occurrence": 0.8,
        "Appointment.status": 0.9,
        "Appointment.start": 0.9,
    }
    low = {
        kind: round(agreement.ratio(kind), 2)
        for kind, floor in floors.items()
        if agreement.total[kind] and agreement.ratio(kind) < floor
    }
    assert not low, f"agreement below the floor: {low}"
    absent = [kind for kind in floors if not agreement.total[kind]]
    assert not absent, f"facts no longer compared (their floor checks nothing): {absent}"
