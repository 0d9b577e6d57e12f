"""Session 22: appointment identity, visit fields and document replacement.

- SIU: a filler that wrote its own appointment number in SCH-1 (placer appointment id) in
  the S12 and in SCH-2 (filler appointment id) from the S14 on made a second Appointment:
  the booking stayed `booked` for good while the cancel landed on a new resource.
- Visit: DG1-22 (parent diagnosis, IG DG1[Condition] condition-dueTo) and PV1-53 (service
  episode description, v2.7+) were dropped without a word.
- MDM: a status change without content (T03) does not rewrite the stored document; its
  edit time and reason (TXA-8, TXA-21: "restricted at the patient's request") were lost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from converter.assembly.bundle import RequestMode
from tests.support.hl7_edit import convert_one, resources, set_field
from tests.support.r4validator import R4Validator

_SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"


# -- SIU: one appointment whatever field carries its number ----------------------------------

_S12 = (_SAMPLES / "SIU_S12_new-appointment.hl7").read_bytes()
_PLACER = "DPI-RDV-2024-0417^SIH-ORCHIDEE^1.2.250.1.999.1.10^ISO"
_FILLER = "RDV-000417^AGENDA-TILLEUL^1.2.250.1.999.1.40^ISO"
_CANCELLED = "Cancelled^Annulé^HL70278"


def _siu(event: str, sch_1: str, sch_2: str, *, control: str, status: str = "") -> bytes:
    """The sample appointment as ``event`` with SCH-1 / SCH-2 (and SCH-25) as given."""
    data = set_field(_S12, "MSH", 9, f"SIU^{event}^SIU_S12")
    data = set_field(data, "MSH", 10, control)
    data = set_field(data, "SCH", 1, sch_1)
    data = set_field(data, "SCH", 2, sch_2)
    return set_field(data, "SCH", 25, status) if status else data


def _appointment_entry(bundle: dict[str, Any]) -> dict[str, Any]:
    entries: list[dict[str, Any]] = [
        e for e in bundle["entry"] if e["resource"]["resourceType"] == "Appointment"
    ]
    (entry,) = entries
    return entry


def test_filler_number_moving_from_sch_1_to_sch_2_is_one_appointment(
    converter: Converter, r4validator: R4Validator
) -> None:
    # The filler's own number in SCH-1 at booking, in both fields in the S14, in SCH-2
    # alone in the cancel: one Appointment, which the S15 cancels.
    messages = [
        _siu("S12", _FILLER, "", control="S22-SIU-1"),
        _siu("S14", _FILLER, _FILLER, control="S22-SIU-2"),
        _siu("S15", "", _FILLER, control="S22-SIU-3", status=_CANCELLED),
    ]
    entries = [_appointment_entry(convert_one(converter, data)[0]) for data in messages]
    assert {entry["request"]["url"] for entry in entries} == {entries[-1]["request"]["url"]}
    assert entries[-1]["resource"]["status"] == "cancelled"
    for data in messages:
        assert r4validator.validate(convert_one(converter, data)[0]) == []


def test_appointment_ids_of_a_filler_number_did_not_change(converter: Converter) -> None:
    # SCH-2 names the Appointment as it always did: stored appointments keep their id.
    bundle, _ = convert_one(converter, _S12)
    assert _appointment_entry(bundle)["request"]["url"] == (
        "Appointment/e5fce985-b1e1-512e-927e-42d7bba9f916"
    )


def test_placer_number_without_authority_is_not_a_filler_number(converter: Converter) -> None:
    # Without an assigning authority both numbers are scoped by the sending facility:
    # placer number 417 and filler number 417 may be two appointments.
    placer, _ = convert_one(converter, _siu("S12", "417", "", control="S22-SIU-4"))
    filler, _ = convert_one(converter, _siu("S12", "", "417", control="S22-SIU-5"))
    assert (
        _appointment_entry(placer)["request"]["url"]
        != (_appointment_entry(filler)["request"]["url"])
    )


def test_placer_and_filler_numbers_in_conditional_update(converter: Converter) -> None:
    # Two different numbers, the filler's added in the S14 and alone in the S15: in put
    # mode nothing in the S12 and the S15 is common (README); in conditional-update the
    # S14 matches the S12's Appointment on SCH-1 (listed first) and stores SCH-2 with it,
    # which the S15 then matches.
    conditional = Converter(
        ConverterConfig(default_timezone="Europe/Paris", request_mode="conditional-update")
    )
    messages = [
        _siu("S12", _PLACER, "", control="S22-SIU-6"),
        _siu("S14", _PLACER, _FILLER, control="S22-SIU-7"),
        _siu("S15", "", _FILLER, control="S22-SIU-8", status=_CANCELLED),
    ]
    urls = [
        _appointment_entry(convert_one(conditional, data)[0])["request"]["url"] for data in messages
    ]
    placer = "Appointment?identifier=urn:oid:1.2.250.1.999.1.10|DPI-RDV-2024-0417"
    filler = "Appointment?identifier=urn:oid:1.2.250.1.999.1.40|RDV-000417"
    assert urls == [placer, placer, filler]
    (s14,) = [_appointment_entry(convert_one(conditional, messages[1])[0])["resource"]]
    assert [i["value"] for i in s14["identifier"]] == ["DPI-RDV-2024-0417", "RDV-000417"]


def test_block_number_moving_from_sch_1_to_sch_2_opens_the_blocked_slots(
    converter: Converter,
) -> None:
    # The S23 with the block number in SCH-1, the S24 opening it with SCH-2: the S24
    # updates the S23's Slots (it wrote new free Slots beside the busy ones).
    block = "BLOC-2024-0211^AGENDA-TILLEUL^1.2.250.1.999.1.40^ISO"
    s23 = (_SAMPLES / "SIU_S23_block-slot.hl7").read_bytes()
    s23 = set_field(set_field(s23, "SCH", 2, ""), "SCH", 1, block)
    s24 = set_field(set_field(s23, "MSH", 9, "SIU^S24^SIU_S12"), "SCH", 1, "")
    s24 = set_field(set_field(s24, "SCH", 2, block), "MSH", 10, "S22-SIU-9")
    blocked, _ = convert_one(converter, s23)
    opened, _ = convert_one(converter, s24)
    busy = {slot["id"] for slot in resources(blocked, "Slot")}
    free = {slot["id"] for slot in resources(opened, "Slot")}
    assert busy and busy == free
    assert {slot["status"] for slot in resources(opened, "Slot")} == {"free"}


# -- Visit: parent diagnosis and service episode description ----------------------------------

_A01 = (_SAMPLES / "ADT_A01_admission-full.hl7").read_bytes()
_DIAGNOSES = "CHU-LYON^1.2.250.1.999.1.1^ISO"


def _conditions(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"Condition/{c['id']}": c for c in resources(bundle, "Condition")}


def _due_to(condition: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        extension["valueReference"]
        for extension in condition.get("extension", [])
        if extension["url"] == "http://hl7.org/fhir/StructureDefinition/condition-dueTo"
    ]


@pytest.mark.parametrize("mode", ["put", "conditional-update"])
@pytest.mark.parametrize("child", [1, 2])
def test_parent_diagnosis_in_the_message_is_a_reference_to_its_condition(
    r4validator: R4Validator, mode: RequestMode, child: int
) -> None:
    # The diabetes given as due to the infarction (DG1-20 D-1), the child listed after or
    # before its parent; in the conditional modes the reference is the parent's entry
    # (a Condition/<id> would name nothing the server stores).
    converter = Converter(ConverterConfig(default_timezone="Europe/Paris", request_mode=mode))
    parent_position = 3 - child
    data = set_field(_A01, "DG1", 20, "D-1^" + _DIAGNOSES, occurrence=parent_position)
    data = set_field(data, "DG1", 20, "D-2^" + _DIAGNOSES, occurrence=child)
    data = set_field(data, "DG1", 22, "D-1^" + _DIAGNOSES, occurrence=child)
    bundle, warnings = convert_one(converter, data)
    by_url = {e["fullUrl"]: e["resource"] for e in bundle["entry"] if "fullUrl" in e}
    by_url |= {f"Condition/{c['id']}": c for c in resources(bundle, "Condition") if "id" in c}
    (parent,) = [c for c in resources(bundle, "Condition") if c["identifier"][0]["value"] == "D-1"]
    (due,) = [c for c in resources(bundle, "Condition") if c["identifier"][0]["value"] == "D-2"]
    assert _due_to(parent) == []
    (reference,) = _due_to(due)
    assert by_url[reference["reference"]] is parent
    assert not any("emitted twice" in warning for warning in warnings)
    assert r4validator.validate(bundle) == []


def test_parent_diagnosis_of_another_message_is_named_by_its_identifier(
    converter: Converter, r4validator: R4Validator
) -> None:
    data = set_field(_A01, "DG1", 22, "D-9^" + _DIAGNOSES, occurrence=2)
    bundle, _ = convert_one(converter, data)
    (parent,) = [ref for c in resources(bundle, "Condition") for ref in _due_to(c)]
    assert parent == {
        "type": "Condition",
        "identifier": {"system": "urn:oid:1.2.250.1.999.1.1", "value": "D-9"},
    }
    assert r4validator.validate(bundle) == []


def test_diagnosis_naming_itself_as_parent_has_none(converter: Converter) -> None:
    data = set_field(_A01, "DG1", 20, "D-1^" + _DIAGNOSES, occurrence=1)
    data = set_field(data, "DG1", 22, "D-1^" + _DIAGNOSES, occurrence=1)
    bundle, _ = convert_one(converter, data)
    assert [ref for c in resources(bundle, "Condition") for ref in _due_to(c)] == []


def test_two_diagnoses_naming_each_other_end(converter: Converter) -> None:
    # A loop of DG1-22s: each refers to the other, the conversion ends.
    data = set_field(_A01, "DG1", 20, "D-1^" + _DIAGNOSES, occurrence=1)
    data = set_field(data, "DG1", 22, "D-2^" + _DIAGNOSES, occurrence=1)
    data = set_field(data, "DG1", 20, "D-2^" + _DIAGNOSES, occurrence=2)
    data = set_field(data, "DG1", 22, "D-1^" + _DIAGNOSES, occurrence=2)
    bundle, _ = convert_one(converter, data)
    conditions = _conditions(bundle)
    for condition in conditions.values():
        (parent,) = _due_to(condition)
        assert conditions[parent["reference"]] is not condition


@pytest.mark.parametrize("with_identifier", [True, False])
def test_service_episode_description_is_the_episodes_display(
    converter: Converter, r4validator: R4Validator, with_identifier: bool
) -> None:
    data = set_field(_A01, "MSH", 12, "2.8")
    data = set_field(data, "PV1", 53, "Chimiothérapie cure 3")
    if with_identifier:
        data = set_field(data, "PV1", 54, "EP-77^^^CHU-LYON&1.2.250.1.999.1.1&ISO")
    bundle, _ = convert_one(converter, data)
    (encounter,) = resources(bundle, "Encounter")
    (episode,) = encounter["episodeOfCare"]
    assert episode["display"] == "Chimiothérapie cure 3"
    assert ("identifier" in episode) is with_identifier
    assert r4validator.validate(bundle) == []


# -- MDM: the edit of a document the message does not rewrite --------------------------------

_T02 = (_SAMPLES / "MDM_T02_discharge-summary.hl7").read_bytes()
_T03 = (_SAMPLES / "MDM_T03_restrict-discharge-summary.hl7").read_bytes()


def _edits(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The Provenances of a document edit (the message's own has no reason)."""
    return [p for p in resources(bundle, "Provenance") if "reason" in p]


@pytest.mark.parametrize("mode", ["put", "conditional-update"])
def test_status_change_edit_is_a_provenance_of_the_stored_document(
    r4validator: R4Validator, mode: RequestMode
) -> None:
    converter = Converter(ConverterConfig(default_timezone="Europe/Paris", request_mode=mode))
    document, _ = convert_one(converter, _T02)
    (stored,) = [
        e for e in document["entry"] if e["resource"]["resourceType"] == "DocumentReference"
    ]
    change, warnings = convert_one(converter, _T03)
    assert resources(change, "DocumentReference") == []
    (edit,) = _edits(change)
    # The id the T02 wrote the document under, in every mode (no identifier with a system).
    assert [t["reference"] for t in edit["target"]] == [stored["request"]["url"]]
    assert edit["reason"] == [{"text": "Accès restreint à la demande de la patiente"}]
    assert edit["recorded"] == "2024-07-16T09:10:00+02:00"
    assert any("TXA-21" in warning for warning in warnings)
    assert r4validator.validate(change) == []


def test_status_change_of_an_unnamed_document_has_no_edit(converter: Converter) -> None:
    # Neither TXA-12 nor TXA-16: nothing names the stored document.
    data = set_field(set_field(_T03, "TXA", 12, ""), "TXA", 16, "")
    bundle, _ = convert_one(converter, data)
    assert _edits(bundle) == []


@pytest.mark.parametrize("written", ["D", "d", "D "])
def test_deleted_diagnosis_in_any_case_is_entered_in_error(
    converter: Converter, written: str
) -> None:
    bundle, _ = convert_one(converter, set_field(_A01, "DG1", 21, written, occurrence=2))
    statuses = [
        c.get("verificationStatus", {}).get("coding", [{}])[0].get("code")
        for c in resources(bundle, "Condition")
    ]
    assert statuses == [None, "entered-in-error"]


# -- Visit: no patient at the location of a visit not begun or cancelled ----------------------


@pytest.mark.parametrize(
    ("sample", "status", "location_status"),
    [
        ("ADT_A11_cancel-admit.hl7", "cancelled", "planned"),
        ("SIU_S12_new-appointment.hl7", "planned", "planned"),
        ("SIU_S15_cancel-appointment.hl7", "cancelled", "planned"),
        ("ADT_A01_admission-full.hl7", "in-progress", "active"),
        ("ADT_A03_discharge.hl7", "finished", "completed"),
    ],
)
def test_location_of_a_visit_not_begun_or_cancelled_is_not_active(
    converter: Converter, sample: str, status: str, location_status: str
) -> None:
    # R4: `active` is "the patient is currently at this location"; a cancelled admission
    # or next week's consultation kept the patient in the bed or room.
    bundle, _ = convert_one(converter, (_SAMPLES / sample).read_bytes())
    (encounter,) = resources(bundle, "Encounter")
    assert encounter["status"] == status
    assert {entry["status"] for entry in encounter["location"]} == {location_status}


# -- SIU: an appointment within a stay does not give the stay its status ---------------------
@pytest.mark.parametrize(
    ("event", "status", "patient_class", "expected"),
    [
        ("S15", _CANCELLED, "I", "in-progress"),
        ("S12", "", "E", "in-progress"),
        # An outpatient visit is the appointment's own: it keeps the appointment's status.
        ("S15", _CANCELLED, "O", "cancelled"),
        ("S12", "", "O", "planned"),
    ],
)
def test_an_appointment_within_a_stay_does_not_give_the_stay_its_status(
    converter: Converter, event: str, status: str, patient_class: str, expected: str
) -> None:
    # An S15 cancelling an examination booked during a hospitalization (PV1-19 the stay's
    # visit number, PV1-2 I) wrote the stay's Encounter `cancelled`.
    data = _siu(event, _PLACER, _FILLER, control=f"STAY-{event}-{patient_class}", status=status)
    data = set_field(data, "PV1", 2, patient_class)
    bundle, _ = convert_one(converter, data)
    [encounter] = resources(bundle, "Encounter")
    assert encounter["status"] == expected


# -- DG1-4: the description is the code's text ------------------------------------------------
def test_diagnosis_description_is_the_code_text(converter: Converter) -> None:
    # IG DG1[Condition] row 4: DG1-4 → code.text. It was a note beside the coding.
    data = (_SAMPLES / "ADT_A01_admission-full.hl7").read_bytes()
    data = set_field(data, "DG1", 3, "I21.0^Infarctus antérieur^I10")
    data = set_field(data, "DG1", 4, "Infarctus du myocarde antérieur aigu")
    bundle, _ = convert_one(converter, data)
    [condition] = [
        c
        for c in resources(bundle, "Condition")
        if c["code"].get("coding", [{}])[0].get("code") == "I21.0"
    ]
    assert condition["code"]["text"] == "Infarctus du myocarde antérieur aigu"
    assert "note" not in condition
    # An original text (CWE.9) stays the text; the description is then kept as a note.
    data = set_field(data, "DG1", 3, "I21.0^Infarctus antérieur^I10^^^^^^IDM antérieur")
    bundle, _ = convert_one(converter, data)
    [condition] = [c for c in resources(bundle, "Condition") if c["code"].get("text")]
    assert condition["code"]["text"] == "IDM antérieur"
    assert condition["note"] == [{"text": "Infarctus du myocarde antérieur aigu"}]
