"""ADT swaps, merges and moves (HL7 v2.5 chapter 3): A17, A18, A34-A36, A41, A42, A44, A45.

- A17 swap patients (root ADT_A17, IG ADT_A17 map): each patient's Patient, Account and
  Encounter, the Encounter holding the bed PV1-3 now names.
- The merges through the merge root ADT_A39 (what each event retires, 3.3.18/34/35/36/41/42):
  the Patient of MRG-1 (A18, A34, A36 as A40), the Account of MRG-3 (status inactive; A18,
  A35, A36, A41), the Encounter of MRG-5 (entered-in-error; A42); an account merge leaves
  the Patient alone.
- A44 move account (ADT_A43): the MRG-3 Account gets PID's patient as subject.
- A49 change patient account number (ADT_A30, 3.3.49): as an account merge.
- Changes and moves of one patient identifier (row "identifier" of ADT_A39, 3.3.39, 3.3.43,
  3.3.46, 3.3.48): A39 / A46 (MRG-4 → PID-2), A48 (MRG-2 → PID-4), A43 (the record of
  PID-3 = MRG-1 moved to the person PID-2): the Patient keeps its id and now lists the new
  identifier, nothing retired; a Patient is retired only when MRG names another record at
  the level its id derives from (MRG-1 ≠ PID-3, or MRG-4 ≠ PID-2 without PID-3); an A43
  checked on the real FHIR server.
- A45 move visit (root ADT_A45): the Encounter of PV1-19 gets PID's patient as subject;
  the source patient is not retired (checked on the real FHIR server too).
The samples ADT_A17_swap-beds and ADT_A45_move-visit pin their whole bundles as goldens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig, MappingError
from tests.conftest import SHARED_DIR
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import convert_one, lines, message, resources, segment, set_field
from tests.support.r4validator import R4Validator

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
CORPUS = SHARED_DIR / "corpus" / "hl7v2"
CHU = "CHU-LYON&1.2.250.1.999.1.1&ISO"


def sample(name: str) -> bytes:
    return (SAMPLES / f"{name}.hl7").read_bytes()


def ref(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def values(resource: dict[str, Any]) -> set[str]:
    return {i["value"] for i in resource.get("identifier", [])}


def one(bundle: dict[str, Any], rtype: str, value: str) -> dict[str, Any]:
    [found] = [r for r in resources(bundle, rtype) if value in values(r)]
    return found


# -- A17 swap patients -------------------------------------------------------------------


def test_a17_gives_each_patient_his_encounter_in_the_other_bed(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle, warnings = convert_one(converter, sample("ADT_A17_swap-beds"))

    assert warnings == []
    assert r4validator.validate(bundle) == []
    roussel = one(bundle, "Patient", "0012351017")
    vidal = one(bundle, "Patient", "0012351024")
    first = one(bundle, "Encounter", "2025041001")
    second = one(bundle, "Encounter", "2025041102")
    assert first["subject"]["reference"] == ref(roussel)
    assert second["subject"]["reference"] == ref(vidal)
    # Each holds (active) the bed the other one left (completed): PV1-3 / PV1-6 swapped.
    active = {
        e["id"]: [x["location"]["reference"] for x in e["location"] if x["status"] == "active"]
        for e in (first, second)
    }
    left = {
        e["id"]: [x["location"]["reference"] for x in e["location"] if x["status"] == "completed"]
        for e in (first, second)
    }
    assert active[first["id"]] == left[second["id"]] and len(active[first["id"]]) == 1
    assert active[second["id"]] == left[first["id"]] and len(active[second["id"]]) == 1
    assert active[first["id"]] != active[second["id"]]
    assert {e["status"] for e in (first, second)} == {"in-progress"}
    # PID-18 → Account per patient (IG rows 6 and 13), listed in its visit.
    for patient, encounter, number in (
        (roussel, first, "2025041001"),
        (vidal, second, "2025041102"),
    ):
        account = one(bundle, "Account", number)
        assert account["subject"] == [{"reference": ref(patient)}]
        assert account["status"] == "active"
        assert encounter["account"] == [{"reference": ref(account)}]
    # The OBX after the first PV1 belongs to the first patient and visit only.
    [spo2] = resources(bundle, "Observation")
    assert spo2["subject"]["reference"] == ref(roussel)
    assert spo2["encounter"]["reference"] == ref(first)


def test_a17_without_pd1_pv2_and_with_an_obx_per_patient(converter: Converter) -> None:
    data = message(
        [*lines(sample("ADT_A17_swap-beds")), "OBX|1|NM|8867-4^Heart rate^LN||72|/min^^UCUM|||||F"]
    )

    bundle, _ = convert_one(converter, data)

    vidal = one(bundle, "Patient", "0012351024")
    by_code = {o["code"]["coding"][0]["code"]: o for o in resources(bundle, "Observation")}
    assert by_code["8867-4"]["subject"]["reference"] == ref(vidal)
    assert by_code["59408-5"]["subject"]["reference"] != ref(vidal)


# -- merges through the merge root -------------------------------------------------------

WRONG_IPP = "0012346777"
RIGHT_IPP = "0012345999"
ACCOUNT = "2024100701"
PRIOR_ACCOUNT = "2024100399"


def merge(event: str, structure: str, *, accounts: bool = True) -> bytes:
    """The A40 sample as ``event`` (structure ``structure``), PID-18 and MRG-3 valued."""
    data = sample("ADT_A40_merge-patient")
    data = set_field(data, "MSH", 9, f"ADT^{event}^{structure}")
    data = set_field(data, "MSH", 10, f"MERGE-TEST-{event}")
    data = set_field(data, "EVN", 1, event)
    if accounts:
        data = set_field(data, "PID", 18, f"{ACCOUNT}^^^{CHU}^AN")
        data = set_field(data, "MRG", 3, f"{PRIOR_ACCOUNT}^^^{CHU}^AN")
    return data


def patient_links(bundle: dict[str, Any]) -> dict[str, list[str]]:
    return {
        next(iter(values(p) & {WRONG_IPP, RIGHT_IPP})): [x["type"] for x in p.get("link", [])]
        for p in resources(bundle, "Patient")
    }


@pytest.mark.parametrize(
    ("event", "structure", "patient_merged", "account_merged"),
    [
        ("A18", "ADT_A18", True, True),
        ("A34", "ADT_A30", True, False),
        ("A35", "ADT_A30", False, True),
        ("A36", "ADT_A30", True, True),
        ("A40", "ADT_A39", True, False),
        ("A41", "ADT_A39", False, True),
        # A49 change patient account number (3.3.49): the Account id derives from the
        # number, so the one written under MRG-3 is retired as in an account merge.
        ("A49", "ADT_A30", False, True),
    ],
)
def test_each_merge_retires_what_its_event_merges(
    converter: Converter,
    r4validator: R4Validator,
    event: str,
    structure: str,
    patient_merged: bool,
    account_merged: bool,
) -> None:
    bundle, warnings = convert_one(converter, merge(event, structure))

    assert warnings == []
    assert r4validator.validate(bundle) == []
    survivor = one(bundle, "Patient", RIGHT_IPP)
    assert "active" not in survivor
    if patient_merged:
        retired = one(bundle, "Patient", WRONG_IPP)
        assert retired["active"] is False
        assert retired["link"] == [{"other": {"reference": ref(survivor)}, "type": "replaced-by"}]
        assert survivor["link"] == [{"other": {"reference": ref(retired)}, "type": "replaces"}]
    else:
        # An account merge keeps one patient: nothing retired, no second Patient.
        assert patient_links(bundle) == {RIGHT_IPP: []}
    accounts = {next(iter(values(a))): a for a in resources(bundle, "Account")}
    if account_merged:
        assert set(accounts) == {ACCOUNT, PRIOR_ACCOUNT}
        assert accounts[ACCOUNT]["status"] == "active"
        assert accounts[PRIOR_ACCOUNT]["status"] == "inactive"
        for account in accounts.values():
            assert account["subject"] == [{"reference": ref(survivor)}]
    else:
        assert accounts == {}


def test_an_account_merge_without_a_distinct_prior_account_warns(converter: Converter) -> None:
    no_prior = set_field(merge("A41", "ADT_A39"), "MRG", 3, "")
    bundle, warnings = convert_one(converter, no_prior)
    assert [a["status"] for a in resources(bundle, "Account")] == ["active"]
    assert any("no prior patient account number (MRG-3)" in w for w in warnings), warnings

    same = set_field(merge("A35", "ADT_A30"), "MRG", 3, f"{ACCOUNT}^^^{CHU}^AN")
    bundle, warnings = convert_one(converter, same)
    assert [a["status"] for a in resources(bundle, "Account")] == ["active"]
    assert any("MRG-3 names the surviving account" in w for w in warnings), warnings


def test_a18_without_mrg3_merges_the_patients_only(converter: Converter) -> None:
    bundle, warnings = convert_one(converter, merge("A18", "ADT_A18", accounts=False))
    assert warnings == []
    assert patient_links(bundle) == {RIGHT_IPP: ["replaces"], WRONG_IPP: ["replaced-by"]}
    assert resources(bundle, "Account") == []


def pv1(visit: str) -> str:
    return segment("PV1", {1: "1", 2: "I", 3: f"CARDIO^C02^1^{CHU}", 19: f"{visit}^^^{CHU}^VN"})


def test_a42_retires_the_encounter_of_the_prior_visit_number(
    converter: Converter, r4validator: R4Validator
) -> None:
    data = merge("A42", "ADT_A39", accounts=False)
    data = set_field(data, "MRG", 5, f"2024100355^^^{CHU}^VN")
    data = message([*lines(data), pv1("2024100388")])

    bundle, warnings = convert_one(converter, data)

    assert warnings == []
    assert r4validator.validate(bundle) == []
    survivor = one(bundle, "Patient", RIGHT_IPP)
    assert patient_links(bundle) == {RIGHT_IPP: []}
    prior = one(bundle, "Encounter", "2024100355")
    visit = one(bundle, "Encounter", "2024100388")
    assert prior["status"] == "entered-in-error"
    assert prior["class"]["code"] == "IMP"
    assert visit["status"] == "in-progress"
    assert prior["subject"] == visit["subject"] == {"reference": ref(survivor)}
    # The retired Encounter is the one earlier messages wrote under that visit number.
    a01 = message([*lines(data)[:3], pv1("2024100355")])
    a01 = set_field(a01, "MSH", 9, "ADT^A01^ADT_A01")
    admitted, _ = convert_one(converter, a01)
    assert one(admitted, "Encounter", "2024100355")["id"] == prior["id"]

    same = set_field(data, "MRG", 5, f"2024100388^^^{CHU}^VN")
    bundle, warnings = convert_one(converter, same)
    assert [e["status"] for e in resources(bundle, "Encounter")] == ["in-progress"]
    assert any("MRG-5 names the surviving visit" in w for w in warnings), warnings


def test_a44_moves_the_account_to_the_pid_patient(
    converter: Converter, r4validator: R4Validator
) -> None:
    data = set_field(merge("A44", "ADT_A43"), "PID", 18, "")

    bundle, warnings = convert_one(converter, data)

    assert warnings == []
    assert r4validator.validate(bundle) == []
    survivor = one(bundle, "Patient", RIGHT_IPP)
    # The source patient (MRG-1) is not retired, nor even written.
    assert patient_links(bundle) == {RIGHT_IPP: []}
    [account] = resources(bundle, "Account")
    assert values(account) == {PRIOR_ACCOUNT}
    assert account["subject"] == [{"reference": ref(survivor)}]
    # A move does not end the account: it stays in use (the IG's MRG[Account] "unknown"
    # is for A06/A07, where the prior account may have ended).
    assert account["status"] == "active"


def test_a49_without_the_new_account_number_warns(converter: Converter) -> None:
    data = set_field(merge("A49", "ADT_A30"), "PID", 18, "")
    bundle, warnings = convert_one(converter, data)
    [prior] = resources(bundle, "Account")
    assert values(prior) == {PRIOR_ACCOUNT} and prior["status"] == "inactive"
    assert any("retired without a surviving account" in w for w in warnings), warnings


# -- changes and moves of one patient identifier (row "identifier") ----------------------

GHT = "GHT-RHONE-CENTRE&1.2.250.1.999.9&ISO"
OLD_PERSON = "GHT0000777"
NEW_PERSON = "GHT0000999"
OLD_ALTERNATE = "ALT-4410"
NEW_ALTERNATE = "ALT-4411"


def change(event: str, structure: str) -> bytes:
    """The A40 sample as ``event``: MRG-1 = PID-3 (the same patient record), the person id
    MRG-4 → PID-2 and the alternate id MRG-2 → PID-4 changed."""
    data = merge(event, structure, accounts=False)
    data = set_field(data, "MRG", 1, f"{RIGHT_IPP}^^^{CHU}^MR")
    data = set_field(data, "PID", 2, f"{NEW_PERSON}^^^{GHT}^PN")
    data = set_field(data, "MRG", 4, f"{OLD_PERSON}^^^{GHT}^PN")
    data = set_field(data, "PID", 4, f"{NEW_ALTERNATE}^^^{CHU}^PT")
    return set_field(data, "MRG", 2, f"{OLD_ALTERNATE}^^^{CHU}^PT")


@pytest.mark.parametrize(
    ("event", "structure"),
    [("A39", "ADT_A39"), ("A43", "ADT_A43"), ("A46", "ADT_A30"), ("A48", "ADT_A30")],
)
def test_a_change_below_the_patient_record_keeps_it_with_its_new_identifiers(
    converter: Converter, r4validator: R4Validator, event: str, structure: str
) -> None:
    bundle, warnings = convert_one(converter, change(event, structure))

    assert warnings == []
    assert r4validator.validate(bundle) == []
    # One Patient, the record of PID-3 = MRG-1, neither retired nor linked.
    [patient] = resources(bundle, "Patient")
    a40, _ = convert_one(converter, merge("A40", "ADT_A39", accounts=False))
    assert patient["id"] == one(a40, "Patient", RIGHT_IPP)["id"]
    assert "active" not in patient and "link" not in patient
    # The Patient written from PID replaces the stored one: it lists the new person id
    # (PID-2) and alternate id (PID-4), no longer MRG-4's and MRG-2's.
    assert {RIGHT_IPP, NEW_PERSON, NEW_ALTERNATE} <= values(patient)
    assert not {OLD_PERSON, OLD_ALTERNATE} & values(patient)
    assert resources(bundle, "Account") == []


@pytest.mark.parametrize(("event", "structure"), [("A39", "ADT_A39"), ("A46", "ADT_A30")])
def test_a_person_merge_without_patient_identifier_lists_retires_the_prior_person(
    converter: Converter, r4validator: R4Validator, event: str, structure: str
) -> None:
    """Without PID-3 and MRG-1 (the v2.3 form of these events) the Patient id derives from
    PID-2: the Patient under MRG-4 is the one earlier messages wrote for that person."""
    data = set_field(change(event, structure), "PID", 3, "")
    data = set_field(data, "MRG", 1, "")

    bundle, warnings = convert_one(converter, data)

    assert warnings == []
    assert r4validator.validate(bundle) == []
    survivor = one(bundle, "Patient", NEW_PERSON)
    retired = one(bundle, "Patient", OLD_PERSON)
    assert retired["active"] is False
    assert retired["link"] == [{"other": {"reference": ref(survivor)}, "type": "replaced-by"}]
    assert survivor["link"] == [{"other": {"reference": ref(retired)}, "type": "replaces"}]
    a28 = message([*lines(data)[:2], segment("PID", {1: "1", 2: f"{OLD_PERSON}^^^{GHT}^PN"})])
    a28 = set_field(a28, "MSH", 9, "ADT^A28^ADT_A05")
    registered, _ = convert_one(converter, a28)
    assert one(registered, "Patient", OLD_PERSON)["id"] == retired["id"]


def test_an_a43_with_a_new_patient_identifier_retires_the_prior_record(
    converter: Converter,
) -> None:
    data = set_field(change("A43", "ADT_A43"), "MRG", 1, f"{WRONG_IPP}^^^{CHU}^MR")
    bundle, warnings = convert_one(converter, data)
    assert warnings == []
    assert patient_links(bundle) == {RIGHT_IPP: ["replaces"], WRONG_IPP: ["replaced-by"]}


def test_a_change_that_leaves_its_target_empty_warns(converter: Converter) -> None:
    no_alternate = set_field(change("A48", "ADT_A30"), "PID", 4, "")
    bundle, warnings = convert_one(converter, no_alternate)
    assert any("PID-4 of PID" in w and "not represented" in w for w in warnings), warnings
    assert patient_links(bundle) == {RIGHT_IPP: []}

    no_person = set_field(change("A43", "ADT_A43"), "PID", 2, "")
    _, warnings = convert_one(converter, no_person)
    assert any("PID-2 of PID" in w and "not represented" in w for w in warnings), warnings

    no_list = set_field(change("A46", "ADT_A30"), "PID", 3, "")
    no_list = set_field(no_list, "MRG", 1, f"{WRONG_IPP}^^^{CHU}^MR")
    bundle, warnings = convert_one(converter, no_list)
    assert any("has no PID-3" in w and "not retired" in w for w in warnings), warnings
    assert [p.get("active") for p in resources(bundle, "Patient")] == [None]

    no_mrg = message(lines(change("A39", "ADT_A39"))[:3])
    _, warnings = convert_one(converter, no_mrg)
    assert any("without MRG" in w and "nothing changed" in w for w in warnings), warnings


def test_on_a_fhir_server_a43_moves_the_record_to_the_new_person(
    converter: Converter, fhir_server: FhirServer
) -> None:
    fhir_server.reset()
    moved = change("A43", "ADT_A43")
    msh, evn, pid, _mrg = lines(moved)
    a01 = message([msh, evn, pid, pv1("2024100388")])
    a01 = set_field(a01, "MSH", 9, "ADT^A01^ADT_A01")
    a01 = set_field(a01, "MSH", 10, "MOVE-TEST-A01")
    a01 = set_field(a01, "PID", 2, f"{OLD_PERSON}^^^{GHT}^PN")
    admitted = deliver(converter, fhir_server, a01)
    [patient] = resources(admitted, "Patient")
    [visit] = resources(admitted, "Encounter")
    before = fhir_server.read("Patient", patient["id"])
    assert before is not None and OLD_PERSON in values(before)

    deliver(converter, fhir_server, moved)

    after = fhir_server.read("Patient", patient["id"])
    assert after is not None
    assert NEW_PERSON in values(after) and OLD_PERSON not in values(after)
    assert after.get("active", True) is True and "link" not in after
    assert fhir_server.count("Patient") == 1
    # The visit refers to the Patient, so it moved with it.
    stored_visit = fhir_server.read("Encounter", visit["id"])
    assert stored_visit is not None
    assert stored_visit["subject"]["reference"] == ref(patient)


# -- A45 move visit ----------------------------------------------------------------------

TARGET_IPP = "0012352205"
SOURCE_IPP = "0012352198"
VISIT = "2025041420"


def test_a45_gives_the_visit_to_the_pid_patient(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle, warnings = convert_one(converter, sample("ADT_A45_move-visit"))

    assert warnings == []
    assert r4validator.validate(bundle) == []
    [target] = resources(bundle, "Patient")
    assert TARGET_IPP in values(target) and "active" not in target and "link" not in target
    [account] = resources(bundle, "Account")
    assert values(account) == {"2025041401"} and account["status"] == "active"
    [encounter] = resources(bundle, "Encounter")
    assert values(encounter) == {VISIT}
    assert encounter["subject"] == {"reference": ref(target)}
    assert encounter["account"] == [{"reference": ref(account)}]


def test_a45_with_a_visit_renumbered_or_unnumbered(converter: Converter) -> None:
    renumbered = set_field(sample("ADT_A45_move-visit"), "PV1", 19, f"2025041499^^^{CHU}^VN")
    _, warnings = convert_one(converter, renumbered)
    assert any("MRG-5 and PV1-19 differ" in w for w in warnings), warnings

    # Without PV1-19, the visit MRG-5 names moves (HL7 v2.5 3.3.45 identifies the moved
    # visit by MRG-5): the same Encounter as with PV1-19.
    unnumbered = set_field(sample("ADT_A45_move-visit"), "PV1", 19, "")
    bundle, warnings = convert_one(converter, unnumbered)
    [numbered] = resources(convert_one(converter, sample("ADT_A45_move-visit"))[0], "Encounter")
    [encounter] = resources(bundle, "Encounter")
    assert warnings == []
    assert encounter["id"] == numbered["id"] and values(encounter) == {VISIT}
    assert encounter["subject"] == numbered["subject"]

    # Without either, the visit could only be identified under the target patient
    # (PV1-44): an Encounter no earlier message wrote. Nothing moves.
    neither = set_field(unnumbered, "MRG", 5, "")
    bundle, warnings = convert_one(converter, neither)
    assert any("has no visit number (PV1-19, MRG-5)" in w for w in warnings), warnings
    assert resources(bundle, "Encounter") == []


def test_a40_without_mrg_merges_nothing_and_says_so(converter: Converter) -> None:
    msh, evn, pid, *_ = lines(sample("ADT_A40_merge-patient"))
    bundle, warnings = convert_one(converter, message([msh, evn, pid]))
    assert patient_links(bundle) == {RIGHT_IPP: []}
    assert any("without MRG" in w and "nothing merged" in w for w in warnings), warnings


def a01_of_the_source_patient() -> bytes:
    """The visit as first admitted, under the patient it was wrongly filed under."""
    msh, evn, pid, _mrg, visit = lines(sample("ADT_A45_move-visit"))
    data = message([msh, evn, pid, visit])
    data = set_field(data, "MSH", 9, "ADT^A01^ADT_A01")
    data = set_field(data, "MSH", 10, "CHU-ADT-20250414-000101")
    data = set_field(data, "EVN", 1, "A01")
    data = set_field(data, "PID", 3, f"{SOURCE_IPP}^^^{CHU}^PI")
    data = set_field(data, "PID", 5, "MARCHAND^Clara^^^Mme^^L")
    return set_field(data, "PID", 18, f"2025041302^^^{CHU}^AN")


def deliver(converter: Converter, server: FhirServer, data: bytes) -> dict[str, Any]:
    bundle = converter.convert_message(data).bundle
    server.transact(bundle)
    return bundle


def test_on_a_fhir_server_a45_moves_the_encounter_and_keeps_the_source_patient(
    converter: Converter, fhir_server: FhirServer
) -> None:
    fhir_server.reset()
    admitted = deliver(converter, fhir_server, a01_of_the_source_patient())
    [source] = resources(admitted, "Patient")
    [visit] = resources(admitted, "Encounter")
    stored = fhir_server.read("Encounter", visit["id"])
    assert stored is not None and stored["subject"]["reference"] == ref(source)

    moved = deliver(converter, fhir_server, sample("ADT_A45_move-visit"))
    [target] = resources(moved, "Patient")
    assert target["id"] != source["id"]

    after = fhir_server.read("Encounter", visit["id"])
    assert after is not None
    assert after["subject"]["reference"] == ref(target)
    assert fhir_server.count("Encounter") == 1
    kept = fhir_server.read("Patient", source["id"])
    assert kept is not None
    assert kept.get("active", True) is True and "link" not in kept
    assert SOURCE_IPP in values(kept)


# -- corpus ------------------------------------------------------------------------------

CORPUS_FILES = {
    "ms-fhir-converter/input/ADT-A41-02.hl7": "ADT^A41",
    "ms-fhir-converter/input/ADT-A45-01.hl7": "ADT^A45",
    "ms-fhir-converter/input/ADT-A45-02.hl7": "ADT^A45",
    "linuxforhealth/from-java-tests/FHIRConverterTest_L123_5d8893324c.hl7": "ADT^A18",
    "linuxforhealth/from-java-tests/HL7MergeFHIRConversionTest_L32_20e504bcc5.hl7": "ADT^A34",
}


@pytest.mark.parametrize("name", sorted(CORPUS_FILES))
def test_corpus_messages_of_these_events_convert_and_validate(
    converter: Converter, r4validator: R4Validator, name: str
) -> None:
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    data = path.read_bytes()
    try:
        bundle, _ = convert_one(converter, data)
    except MappingError:
        # An invalid value (the A18's PID-30 holds a PV1 glued to its PID): lenient mode.
        lenient = Converter(ConverterConfig(default_timezone="Europe/Paris", strict_values=False))
        bundle, _ = convert_one(lenient, data)
    assert r4validator.validate(bundle) == []
    header = bundle["entry"][0]["resource"]
    assert header["resourceType"] == "MessageHeader"
    assert header["eventCoding"]["code"] == CORPUS_FILES[name].split("^")[1]
    patients = resources(bundle, "Patient")
    retired = [p for p in patients if p.get("active") is False]
    event = CORPUS_FILES[name]
    if event in ("ADT^A18", "ADT^A34"):
        # Patient merges: MRG-1's Patient retired, replaced-by the PID one.
        [old] = retired
        assert old["link"][0]["type"] == "replaced-by"
    else:
        # Account merge and visit move: no Patient retired.
        assert retired == []
    if event == "ADT^A45":
        [target] = patients
        encounters = resources(bundle, "Encounter")
        assert encounters and all(e["subject"]["reference"] == ref(target) for e in encounters)
