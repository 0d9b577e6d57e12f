"""TXA-8 / TXA-21 (IG TXA[Provenance]) and PID-21 (IG CX[RelatedPerson-Mother])."""

from __future__ import annotations

from typing import Any

from converter import Converter, ConverterConfig
from tests.hl7v2._support import SAMPLES
from tests.support.r4validator import R4Validator

T02 = (SAMPLES / "MDM_T02_discharge-summary.hl7").read_bytes()
A08 = (SAMPLES / "ADT_A08_update-patient.hl7").read_bytes()
REASON = "Erreur de posologie corrigée"


def _with_field(data: bytes, segment: str, number: int, value: str) -> bytes:
    """``data`` with field ``number`` of its first ``segment`` set to ``value``."""
    lines = data.replace(b"\n", b"\r").split(b"\r")
    for index, line in enumerate(lines):
        if line.startswith(segment.encode() + b"|"):
            fields = line.split(b"|")
            fields += [b""] * (number + 1 - len(fields))
            fields[number] = value.encode("utf-8")
            lines[index] = b"|".join(fields)
            break
    return b"\r".join(lines)


def _msh_field(data: bytes, number: int, value: str) -> bytes:
    """MSH-n is field n - 1 once split on "|" (MSH-1 is the separator itself)."""
    return _with_field(data, "MSH", number - 1, value)


def _resources(data: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    [conversion] = Converter(ConverterConfig()).convert(data)
    return conversion.bundle, [entry["resource"] for entry in conversion.bundle["entry"]]


def _t08(edits: str, control_id: str = "HPE-MDM-T08-1") -> bytes:
    data = _msh_field(T02, 9, "MDM^T08^MDM_T02")
    data = _msh_field(data, 10, control_id)
    data = _with_field(data, "TXA", 8, edits)
    return _with_field(data, "TXA", 21, REASON)


def _edit_provenances(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        r
        for r in resources
        if r["resourceType"] == "Provenance"
        and [t["reference"].split("/")[0] for t in r["target"]] == ["DocumentReference"]
    ]


def test_a_t08_keeps_the_edit_time_and_why_the_document_changed(
    r4validator: R4Validator,
) -> None:
    bundle, resources = _resources(_t08("20240713101500+0200"))
    [document] = [r for r in resources if r["resourceType"] == "DocumentReference"]
    [edit] = _edit_provenances(resources)
    assert edit["target"] == [{"reference": f"DocumentReference/{document['id']}"}]
    assert edit["recorded"] == "2024-07-13T10:15:00+02:00"
    assert edit["reason"] == [{"text": REASON}]
    # TXA-9 originator (MOREL) is the agent, as DocumentReference.author.
    authors = {ref["reference"] for ref in document["author"]}
    assert [a["who"]["reference"] in authors for a in edit["agent"]] == [True]
    assert r4validator.validate_all(bundle) == []


def test_each_edit_time_is_one_provenance_kept_across_messages() -> None:
    _, first = _resources(_t08("20240713101500+0200~20240714080000+0200"))
    edits = _edit_provenances(first)
    assert sorted(e["recorded"] for e in edits) == [
        "2024-07-13T10:15:00+02:00",
        "2024-07-14T08:00:00+02:00",
    ]
    # A later message repeating the first edit (new control id) updates it, not a copy.
    _, later = _resources(_t08("20240713101500+0200", control_id="HPE-MDM-T08-2"))
    [again] = _edit_provenances(later)
    assert again["id"] in {e["id"] for e in edits}


def test_a_date_only_edit_time_is_said_not_failed() -> None:
    """A date-only DTM is valid HL7 but names no instant (Provenance.recorded)."""
    [conversion] = Converter(ConverterConfig()).convert(_t08("20240713~20240714101500+0200"))
    resources = [entry["resource"] for entry in conversion.bundle["entry"]]
    assert [e["recorded"] for e in _edit_provenances(resources)] == ["2024-07-14T10:15:00+02:00"]
    assert any("TXA-8 has no time of day" in str(w) for w in conversion.warnings)


def _a08_with_mother(mother: str, patient_id: str | None = None) -> bytes:
    data = _with_field(A08, "PID", 21, mother)
    if patient_id is not None:
        data = _with_field(data, "PID", 3, patient_id)
    return data


MOTHER = "MERE-778^^^CHU-LYON&1.2.250.1.999.1.1&ISO^MR"


def _mothers(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        r
        for r in resources
        if r["resourceType"] == "RelatedPerson"
        and any(c.get("code") == "MTH" for rel in r["relationship"] for c in rel["coding"])
    ]


def test_pid21_is_the_patients_mother(r4validator: R4Validator) -> None:
    bundle, resources = _resources(_a08_with_mother(MOTHER))
    [patient] = [r for r in resources if r["resourceType"] == "Patient"]
    [mother] = _mothers(resources)
    assert mother["patient"] == {"reference": f"Patient/{patient['id']}"}
    assert [(i["system"], i["value"]) for i in mother["identifier"]] == [
        ("urn:oid:1.2.250.1.999.1.1", "MERE-778")
    ]
    assert mother["relationship"] == [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                    "code": "MTH",
                    "display": "mother",
                }
            ]
        }
    ]
    assert r4validator.validate_all(bundle) == []


def test_pid21_id_is_the_identifier_within_its_authority_and_the_patient() -> None:
    [first] = _mothers(_resources(_a08_with_mother(MOTHER))[1])
    [again] = _mothers(_resources(_msh_field(_a08_with_mother(MOTHER), 10, "OTHER-1"))[1])
    assert again["id"] == first["id"]
    other_authority = MOTHER.replace("CHU-LYON&1.2.250.1.999.1.1", "HCL&1.2.250.1.999.3.1")
    [elsewhere] = _mothers(_resources(_a08_with_mother(other_authority))[1])
    assert elsewhere["id"] != first["id"]
    sibling = "SIB-1^^^CHU-LYON&1.2.250.1.999.1.1&ISO^PI"
    [of_sibling] = _mothers(_resources(_a08_with_mother(MOTHER, patient_id=sibling))[1])
    assert of_sibling["id"] != first["id"]


def test_pid21_repetitions_are_identifiers_of_one_mother() -> None:
    """PID-21 repeats as PID-3 does: several identifiers of one person, keyed on the MR."""
    [alone] = _mothers(_resources(_a08_with_mother(MOTHER))[1])
    national = "N9^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS"
    [both] = _mothers(_resources(_a08_with_mother(f"{national}~{MOTHER}~{MOTHER}"))[1])
    assert both["id"] == alone["id"]
    # The key (the MR) first, as Patient.j2 lists a patient's: the conditional modes
    # search a RelatedPerson by its first identifier, and the mother's INS is the one
    # every hospital's records of her hold (session 22).
    assert [i["value"] for i in both["identifier"]] == ["MERE-778", "N9"]
