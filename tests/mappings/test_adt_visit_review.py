"""ADT visit review: four gaps of the ADT family, each reproduced before its fix.

- A06 / A07 with a new visit number (HL7 v2.5 3.3.6/3.3.7: MRG-5 the prior one): the
  Encounter of MRG-5 stayed in-progress for good; it is now written finished
  (resources/EncounterMerged.j2).
- A doctor field naming nobody (no ID, no name) wrote a participant with a type and no
  individual; it now gives no participant (resources/Encounter.j2).
- A visit identified by PV1-44 (no PV1-19) took the admit time's text as its identity:
  one instant sent at two precisions was two Encounters; the identity is now the instant.
- PID-8 / NK1-15 spelled out (female, Femme) gave no gender; the common words are read
  through AdministrativeSex-Alias-Passerelle, with a warning.

All patients, visits and practitioners are invented.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter
from converter.assembly.ids import stable_id
from converter.errors import MappingError
from tests.support.hl7_edit import message, resources, segment, set_field

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
CHU = "CHU-LYON&1.2.250.1.999.1.1&ISO"
RPPS = "^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS"
DOCTOR = f"10100000002^GIRARD^Luc{RPPS}"
ADMITTED = "20240610083000+0200"
CHANGED = "20240612101500+0200"
V3_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"


def _adt(
    event: str,
    *,
    structure: str = "ADT_A01",
    pid: dict[int, str] | None = None,
    pv1: dict[int, str] | None = None,
    pv2: dict[int, str] | None = None,
    evn: dict[int, str] | None = None,
    extra: tuple[str, ...] = (),
    after_pv1: tuple[str, ...] = (),
) -> bytes:
    """A v2.5 ADT message for one invented inpatient: ``extra`` segments go after PID."""
    patient = {1: "1", 3: f"0099887766^^^{CHU}^MR", 5: "BERNARD^Louise^^^^^L", 7: "19700402"}
    patient |= {8: "F"} | (pid or {})
    visit = {2: "I", 3: f"CARDIO^312^1^{CHU}", 19: f"2024000777^^^{CHU}^VN", 44: ADMITTED}
    visit |= pv1 or {}
    return message(
        [
            "MSH|^~\\&|SIH|CHU-LYON^1.2.250.1.999.1.1^ISO|||20240612101600+0200||"
            f"ADT^{event}^{structure}|ADT-VISIT-{event}|P|2.5",
            segment("EVN", {1: event, 2: "20240612101600+0200"} | (evn or {})),
            segment("PID", patient),
            *extra,
            segment("PV1", visit),
            *((segment("PV2", pv2),) if pv2 else ()),
            *after_pv1,
        ]
    )


def _convert(converter: Converter, data: bytes) -> tuple[dict[str, Any], list[str]]:
    conversion = converter.convert_message(data)
    return conversion.bundle, [str(w) for w in conversion.warnings]


def _encounters(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The bundle's Encounters by their visit number."""
    return {e["identifier"][0]["value"]: e for e in resources(bundle, "Encounter")}


# -- 1. A06 / A07: the visit under MRG-5 ends -------------------------------------------------

OUTPATIENT = {2: "E", 19: f"2024000555^^^{CHU}^VN"}


def _class_change(event: str, mrg5: str, **kwargs: Any) -> bytes:
    mrg = segment("MRG", {1: f"0099887766^^^{CHU}^MR", 5: mrg5})
    return _adt(event, structure="ADT_A06", extra=(mrg,), **kwargs)


@pytest.mark.parametrize(
    ("event", "prior_class", "new_class", "expected_class"),
    [("A06", "E", "I", "UNK"), ("A07", "I", "O", "IMP")],
)
def test_a_class_change_with_a_new_visit_number_finishes_the_prior_visit(
    converter: Converter, event: str, prior_class: str, new_class: str, expected_class: str
) -> None:
    """HL7 v2.5 3.3.6/3.3.7: PV1-19 the new visit number, MRG-5 the prior one. The
    Encounter an earlier message wrote under MRG-5 is written finished (ended at EVN-6),
    the new one in-progress; an A07's prior visit was the inpatient stay (IMP), an A06's
    may have been an emergency or an outpatient one (UNK)."""
    earlier, _ = _convert(converter, _adt("A04", pv1={2: prior_class, 19: OUTPATIENT[19]}))
    [prior_visit] = resources(earlier, "Encounter")
    data = _class_change(event, OUTPATIENT[19], pv1={2: new_class, 44: CHANGED}, evn={6: CHANGED})
    bundle, warnings = _convert(converter, data)
    encounters = _encounters(bundle)
    assert set(encounters) == {"2024000777", "2024000555"}
    prior, current = encounters["2024000555"], encounters["2024000777"]
    assert prior["id"] == prior_visit["id"]
    assert prior["status"] == "finished"
    assert prior["period"] == {"end": "2024-06-12T10:15:00+02:00"}
    assert prior["class"]["code"] == expected_class
    assert prior["subject"] == current["subject"]
    assert current["status"] == "in-progress"
    assert not [w for w in warnings if "MRG-5" in w]


@pytest.mark.parametrize(
    "mrg5", ["", f"2024000777^^^{CHU}^VN"], ids=["no-MRG-5", "MRG-5-is-PV1-19"]
)
def test_a_class_change_keeping_its_visit_number_writes_one_encounter(
    converter: Converter, mrg5: str
) -> None:
    """The visit number need not change with the class: one Encounter, no warning."""
    bundle, warnings = _convert(converter, _class_change("A06", mrg5))
    [encounter] = resources(bundle, "Encounter")
    assert encounter["status"] == "in-progress"
    assert not [w for w in warnings if "MRG" in w]


def test_a_cancelling_class_change_leaves_the_prior_visit_alone(converter: Converter) -> None:
    """IHE PAM France: an A06 with ZBE-4 CANCEL cancels an A07; which visit MRG-5 then
    names is not said: not updated, with a warning."""
    zbe = segment("ZBE", {1: "MVT-0001^SIH", 2: CHANGED, 4: "CANCEL", 5: "N", 6: "A07"})
    data = _class_change("A06", OUTPATIENT[19], after_pv1=(zbe,))
    bundle, warnings = _convert(converter, data)
    assert set(_encounters(bundle)) == {"2024000777"}
    assert any("ZBE-4 CANCEL" in w for w in warnings)


def test_a_visit_merge_still_retires_its_prior_visit_as_entered_in_error(
    converter: Converter,
) -> None:
    """A42 (the template's default use): the duplicate visit is entered-in-error, with
    the surviving visit's class."""
    mrg = segment("MRG", {1: f"0099887766^^^{CHU}^MR", 5: OUTPATIENT[19]})
    data = message(
        [
            "MSH|^~\\&|SIH|CHU-LYON^1.2.250.1.999.1.1^ISO|||20240612101600+0200||"
            "ADT^A42^ADT_A39|ADT-VISIT-A42|P|2.5",
            segment("EVN", {1: "A42", 2: "20240612101600+0200", 6: CHANGED}),
            segment("PID", {1: "1", 3: f"0099887766^^^{CHU}^MR", 5: "BERNARD^Louise"}),
            mrg,
            segment("PV1", {2: "I", 19: f"2024000777^^^{CHU}^VN"}),
        ]
    )
    prior = _encounters(_convert(converter, data)[0])["2024000555"]
    assert prior["status"] == "entered-in-error"
    assert prior["class"]["code"] == "IMP"
    assert "period" not in prior


# -- 2. A doctor field naming nobody -----------------------------------------------------------

NOBODY = ["^^^^^^^^CHU-LYON", "^^^^^MD", "^^^^^^Dr"]
DOCTOR_FIELDS = [("PV1", 7), ("PV1", 8), ("PV1", 9), ("PV1", 17), ("PV1", 52), ("PV2", 13)]


@pytest.mark.parametrize("value", NOBODY)
@pytest.mark.parametrize(("name", "field"), DOCTOR_FIELDS)
def test_a_doctor_field_naming_nobody_gives_no_participant(
    converter: Converter, name: str, field: int, value: str
) -> None:
    """No ID number and no name: no Practitioner, and no participant holding a role
    without anyone (a type and no individual)."""
    edit = {field: value}
    data = _adt("A01", pv1=edit) if name == "PV1" else _adt("A01", pv2=edit)
    bundle, _ = _convert(converter, data)
    [encounter] = resources(bundle, "Encounter")
    assert "participant" not in encounter
    assert not resources(bundle, "Practitioner")


@pytest.mark.parametrize("value", NOBODY)
def test_a_rol_naming_nobody_gives_no_participant(converter: Converter, value: str) -> None:
    """A visit's ROL whose ROL-4 names nobody, beside one naming a doctor: one
    participant, the doctor's."""
    rols = (
        segment("ROL", {1: "1", 2: "AD", 3: "AT^Attending^HL70443", 4: value}),
        segment("ROL", {1: "2", 2: "AD", 3: "CP^Consulting^HL70443", 4: DOCTOR}),
    )
    bundle, _ = _convert(converter, _adt("A01", after_pv1=rols))
    [encounter] = resources(bundle, "Encounter")
    [participant] = encounter["participant"]
    assert participant["individual"]["reference"].startswith("Practitioner/")
    assert len(resources(bundle, "Practitioner")) == 1


def test_a_doctor_beside_a_nameless_repetition_is_kept(converter: Converter) -> None:
    """PV1-7 repeats: the named doctor stays the attender, the empty repetition adds none."""
    bundle, _ = _convert(converter, _adt("A01", pv1={7: f"^^^^^^^^CHU-LYON~{DOCTOR}"}))
    [encounter] = resources(bundle, "Encounter")
    [attender] = encounter["participant"]
    assert attender["type"][0]["coding"][0] == {
        "system": V3_PARTICIPATION,
        "code": "ATND",
        "display": "attender",
    }
    assert "individual" in attender


# -- 3. A visit identified by its admit time ----------------------------------------------------


def _unnumbered_visit_id(converter: Converter, admitted: str, event: str = "A01") -> str:
    bundle, _ = _convert(converter, _adt(event, pv1={19: "", 44: admitted}))
    [encounter] = resources(bundle, "Encounter")
    return str(encounter["id"])


@pytest.mark.parametrize(
    "admitted",
    [
        "202406100830+0200",
        "20240610083000",
        "202406100830",
        "20240610083000.00+0200",
        "20240610083000^S",
    ],
)
def test_one_admit_time_at_another_precision_is_one_visit(
    converter: Converter, admitted: str
) -> None:
    """PV1-44 as an instant (a time without offset in the configured zone, Europe/Paris
    here): the same visit, not one Encounter per way of writing the time."""
    assert _unnumbered_visit_id(converter, admitted) == _unnumbered_visit_id(converter, ADMITTED)


@pytest.mark.parametrize("admitted", ["20240610083001+0200", "20240610083000+0000", "20240610"])
def test_another_admit_time_is_another_visit(converter: Converter, admitted: str) -> None:
    """Another instant (or a date alone, which names no instant) stays another visit."""
    assert _unnumbered_visit_id(converter, admitted) != _unnumbered_visit_id(converter, ADMITTED)


def test_an_admit_time_to_the_second_with_its_offset_keeps_its_id(converter: Converter) -> None:
    """The identity of a time sent to the second with its offset is that text, as before
    the normalisation: the ids earlier versions wrote for it do not change."""
    bundle, _ = _convert(converter, _adt("A01", pv1={19: "", 44: ADMITTED}))
    [patient] = resources(bundle, "Patient")
    [encounter] = resources(bundle, "Encounter")
    scope = converter.config.id_namespace
    assert encounter["id"] == stable_id(scope, "Encounter", patient["id"], ADMITTED)


def test_a_visit_deletion_finds_the_visit_at_another_precision(converter: Converter) -> None:
    """A23 names the visit as every message does: an A01 sent the admit time to the
    second, the A23 to the minute; the DELETE is the A01's Encounter."""
    admitted = _unnumbered_visit_id(converter, ADMITTED)
    bundle, _ = _convert(
        converter, _adt("A23", structure="ADT_A21", pv1={19: "", 44: "202406100830+0200"})
    )
    deletes = [e["request"]["url"] for e in bundle["entry"] if e["request"]["method"] == "DELETE"]
    assert deletes == [f"Encounter/{admitted}"]


def test_an_admit_time_without_a_patient_names_no_visit(converter: Converter) -> None:
    """Without PID the admit time alone was the identity: two unrelated visits admitted at
    one time (here in two wards) were one Encounter, the second message overwriting the
    first. Each is now this message's own."""
    ids = []
    for n, ward in ((1, "CARDIO"), (2, "PNEUMO")):
        data = message(
            [
                "MSH|^~\\&|SIH|CHU-LYON^1.2.250.1.999.1.1^ISO|||20240612101600+0200||"
                f"ADT^A01^ADT_A01|ADT-NO-PID-{n}|P|2.5",
                segment("EVN", {1: "A01", 2: "20240612101600+0200"}),
                segment("PV1", {2: "I", 3: f"{ward}^312^1^{CHU}", 44: ADMITTED}),
            ]
        )
        [encounter] = resources(_convert(converter, data)[0], "Encounter")
        ids.append(encounter["id"])
    assert ids[0] != ids[1]


NUMBERLESS = [f"^^^{CHU}^VN", "^^^^VN", " "]


@pytest.mark.parametrize("visit_number", NUMBERLESS)
def test_a_visit_number_without_a_number_names_no_visit(
    converter: Converter, visit_number: str
) -> None:
    """A PV1-19 naming only an authority or a type (or blanks) was the identity with an
    empty number: every such visit of the facility, of any patient, was one Encounter.
    Two patients' visits are now two Encounters."""
    ids = set()
    for n in (1, 2):
        pid = {3: f"009988776{n}^^^{CHU}^MR"}
        data = _adt("A01", pid=pid, pv1={19: visit_number, 44: ""})
        [encounter] = resources(_convert(converter, data)[0], "Encounter")
        ids.add(encounter["id"])
    assert len(ids) == 2


@pytest.mark.parametrize("visit_number", NUMBERLESS)
def test_a_placeholder_pv1_with_a_numberless_visit_number_gives_no_encounter(
    converter: Converter, visit_number: str
) -> None:
    """An A28's required PV1 (class N, no location) whose PV1-19 holds no number is the
    placeholder of a message about no visit: no Encounter (resources/Encounter.j2)."""
    pv1 = {2: "N", 3: "", 19: visit_number, 44: ""}
    bundle, _ = _convert(converter, _adt("A28", structure="ADT_A05", pv1=pv1))
    assert not resources(bundle, "Encounter")


def test_a_visit_deletion_without_a_visit_number_is_refused(converter: Converter) -> None:
    """A23 whose PV1-19 names no number and without PV1-44: the visit to delete is
    missing (a MappingError at PV1-19), not the facility's numberless Encounter."""
    data = _adt("A23", structure="ADT_A21", pv1={19: f"^^^{CHU}^VN", 44: ""})
    with pytest.raises(MappingError, match="the visit to delete"):
        converter.convert_message(data)


def test_doctors_with_a_blank_id_are_two_practitioners(converter: Converter) -> None:
    """XCN.1 of blanks was the identity: every doctor sent so was one Practitioner, each
    message renaming it. They are now told apart by name, as doctors without an ID."""
    doctors = set()
    for n, doctor in ((1, " ^DUPONT^Marc"), (2, " ^MARTIN^Paul")):
        data = _adt("A01", pid={3: f"009988776{n}^^^{CHU}^MR"}, pv1={7: doctor})
        [practitioner] = resources(_convert(converter, data)[0], "Practitioner")
        assert "identifier" not in practitioner
        doctors.add(practitioner["id"])
    assert len(doctors) == 2


@pytest.mark.parametrize("account_number", [f" ^^^{CHU}^AN", f"^^^{CHU}^AN"])
def test_an_account_number_without_a_number_gives_no_account(
    converter: Converter, account_number: str
) -> None:
    """PID-18 (or an A06's MRG-3) naming no number: no Account. A blank PID-18.1 was one
    Account shared by every such patient of the facility, listed by their Encounters."""
    mrg = segment("MRG", {1: f"0099887766^^^{CHU}^MR", 3: account_number})
    data = _adt("A06", structure="ADT_A06", pid={18: account_number}, extra=(mrg,))
    bundle, _ = _convert(converter, data)
    assert not resources(bundle, "Account")
    [encounter] = resources(bundle, "Encounter")
    assert "account" not in encounter


def test_a_bar_account_number_of_blanks_gives_no_account(converter: Converter) -> None:
    """BAR reads PID-18 as ADT does: blanks are no account number (a warning), not one
    Account for every such patient."""
    data = set_field(SAMPLES.joinpath("BAR_P01_add-account.hl7").read_bytes(), "PID", 18, " ")
    bundle, warnings = _convert(converter, data)
    assert not resources(bundle, "Account")
    assert "PID-18 patient account number is empty: no Account" in warnings


# -- 4. Administrative sex spelled out ----------------------------------------------------------


@pytest.mark.parametrize(
    ("sex", "gender"),
    [("female", "female"), ("Femme", "female"), ("MALE", "male"), ("masculin", "male")],
)
def test_a_sex_spelled_out_is_read_with_a_warning(
    converter: Converter, sex: str, gender: str
) -> None:
    """Not a code of table 0001 (the IG's map has F, M, O, U, A, N) but unambiguous: read
    through AdministrativeSex-Alias-Passerelle; the warning names the field, not the value."""
    nk1 = segment("NK1", {1: "1", 2: "BERNARD^Paul", 3: "SPO^Spouse^HL70063", 15: sex})
    bundle, warnings = _convert(converter, _adt("A01", pid={8: sex}, extra=(nk1,)))
    [patient] = resources(bundle, "Patient")
    [spouse] = resources(bundle, "RelatedPerson")
    assert patient["gender"] == spouse["gender"] == gender
    spelled = [w for w in warnings if "spelled out" in w]
    assert len(spelled) == 2
    assert not [w for w in spelled if sex in w]


@pytest.mark.parametrize("sex", ["F", "f", "X9", "Mme"])
def test_codes_and_unknown_words_keep_their_reading(converter: Converter, sex: str) -> None:
    """Table 0001 codes map without a warning; a word the alias map lacks gives no gender
    and the map's usual warning."""
    bundle, warnings = _convert(converter, _adt("A01", pid={8: sex}))
    [patient] = resources(bundle, "Patient")
    if sex.upper() == "F":
        assert patient["gender"] == "female"
        assert not warnings
    else:
        assert "gender" not in patient
        assert "code not in code map AdministrativeSex at PID-8" in warnings


# -- 5. The locations of a finished visit -------------------------------------------------------

DISCHARGED = "20240620110000+0200"


@pytest.mark.parametrize(
    ("event", "pv1", "status", "state"),
    [
        ("A03", {45: DISCHARGED}, "finished", "completed"),
        ("A08", {45: DISCHARGED}, "finished", "completed"),
        ("A01", {}, "in-progress", "active"),
        ("A13", {45: DISCHARGED}, "in-progress", "active"),
    ],
    ids=["discharge", "update-after-discharge", "admission", "cancel-discharge"],
)
def test_a_finished_visit_lists_its_locations_completed(
    converter: Converter, event: str, pv1: dict[int, str], status: str, state: str
) -> None:
    """R4 location status active is "the patient is currently at this location": after a
    discharge (PV1-45) the bed (PV1-3) and temporary location (PV1-11) are completed; an
    A13 (cancel discharge) puts the patient back in them."""
    structure = {"A03": "ADT_A03", "A13": "ADT_A01"}.get(event, "ADT_A01")
    temporary = {11: f"RADIO^R1^^{CHU}"}
    bundle, _ = _convert(converter, _adt(event, structure=structure, pv1=pv1 | temporary))
    [encounter] = resources(bundle, "Encounter")
    assert encounter["status"] == status
    assert [entry["status"] for entry in encounter["location"]] == [state, state]
