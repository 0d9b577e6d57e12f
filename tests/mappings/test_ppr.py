"""Patient problems (PPR^PC1 add, PC2 update, PC3 delete; HL7 v2.5 chapter 12): each PRB
becomes a Condition of the problem list, whose identity is the problem instance (PRB-4), so
the add, update and delete of one problem write one Condition. Statuses come from PRB-1
(a delete is entered-in-error), PRB-13 and PRB-14 through Passerelle's code maps, within
R4's Condition invariants (con-4: an abatement only when no longer active; con-5: no
clinical status when entered in error), which the tests check on each entry: the R4
validator does not evaluate a resource's own invariants inside a Bundle. Until PPR was
routed, every message here was refused (AR 201/200)."""

from __future__ import annotations

from typing import Any

import pytest

from converter import Converter, MappingError
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import segment
from tests.support.r4validator import R4Validator

CHU = "CHU-LYON&1.2.250.1.999.1.1&ISO"
DPI = "DPI-ORCHIDEE^1.2.250.1.999.1.10^ISO"
#: Synthetic problem instance ids (invented), with the problem-list system's namespace.
HTA = f"PB-2024-0903-0007^{DPI}"
DIABETES = f"PB-2024-0611-0031^{DPI}"
ACTIVE = "active^Actif^L"
CONFIRMED = "confirmed^Confirmé^L"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
MMHG = "mm[Hg]^mm[Hg]^UCUM"


def prb(**fields: str) -> dict[int, str]:
    """A PRB about the invented patient's hypertension; ``p13="…"`` sets PRB-13."""
    base = {
        1: "AD",
        2: "20240903101000+0200",
        3: "I10^Hypertension essentielle (primitive)^I10",
        4: HTA,
        7: "20240903100500+0200",
        13: CONFIRMED,
        14: ACTIVE,
    }
    base.update({int(key[1:]): value for key, value in fields.items()})
    return {k: v for k, v in base.items() if v is not None}


def message(
    event: str = "PC1",
    problems: list[list[str]] | None = None,
    *,
    patient: bool = True,
    visit: bool = True,
    version: str = "2.5",
    control_id: str = "PPR-1",
    facility: str = "CHU-LYON^1.2.250.1.999.1.1^ISO",
) -> bytes:
    """A PPR (v2.5 unless told) for an invented patient; ``problems`` lists the segments
    of each PROBLEM group (PRB first)."""
    structure = "" if version == "2.3" else "^PPR_PC1"
    charset = "|||AL|NE|FRA|UNICODE UTF-8" if version != "2.3.1" else ""
    lines = [
        f"MSH|^~\\&|DPI-ORCHIDEE|{facility}|PASSERELLE|GHT|20240903101512+0200||"
        f"PPR^{event}{structure}|{control_id}|P|{version}{charset}",
    ]
    if patient:
        lines.append(
            segment(
                "PID",
                {
                    1: "1",
                    3: f"0012405533^^^{CHU}^MR",
                    5: "BERTRAND^Jean-Luc^^^M.^^L",
                    7: "19580412",
                    8: "M",
                },
            )
        )
    else:
        lines.append("PID|1")
    if visit:
        lines.append(segment("PV1", {1: "1", 2: "O", 19: f"2024009533^^^{CHU}^VN"}))
    for group in problems if problems is not None else [[segment("PRB", prb())]]:
        lines += group
    return ("\r".join(lines) + "\r").encode("utf-8")


def resources_of(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def convert(
    converter: Converter, r4validator: R4Validator, data: bytes
) -> tuple[dict[str, Any], tuple[str, ...]]:
    conversion = converter.convert_message(data)
    assert conversion.root_template == "hl7v2/messages/PPR_PC1.j2"
    assert r4validator.validate(conversion.bundle) == []
    # Inside a Bundle the validator skips each resource's own invariants (con-4, con-5):
    # validate every entry on its own as well.
    for entry in conversion.bundle["entry"]:
        assert r4validator.validate(entry["resource"]) == [], entry["resource"]["resourceType"]
    return conversion.bundle, conversion.warnings


def condition(bundle: dict[str, Any]) -> dict[str, Any]:
    (found,) = resources_of(bundle, "Condition")
    return found


def code_of(concept: dict[str, Any] | None) -> str | None:
    return concept["coding"][0]["code"] if concept else None


# --- status per event and action code ------------------------------------------------------

EVENT_CASES = [
    # (event, PRB overrides, clinicalStatus, verificationStatus, why)
    ("PC1", {}, "active", "confirmed", "add: PRB-14 and PRB-13"),
    ("PC1", {"p13": "provisional^Provisoire^L"}, "active", "provisional", "add, not yet confirmed"),
    (
        "PC2",
        {"p1": "UP", "p14": "resolved^Résolu^L", "p9": "20240924"},
        "resolved",
        "confirmed",
        "update: resolved",
    ),
    (
        "PC2",
        {"p1": "UP", "p14": "", "p9": "20240924"},
        "resolved",
        "confirmed",
        "PRB-9 alone: resolved",
    ),
    ("PC2", {"p1": "CO", "p14": "inactive^Inactif^L"}, "inactive", "confirmed", "correct"),
    ("PC3", {"p1": "DE"}, None, "entered-in-error", "delete: con-5, no clinical status"),
    ("PC3", {"p1": ""}, None, "entered-in-error", "a PC3 without PRB-1 deletes"),
    ("PC1", {"p1": "DE"}, None, "entered-in-error", "PRB-1 decides, not the event"),
    ("PC2", {"p1": "UC"}, "active", "confirmed", "unchanged: the problem as sent"),
]


@pytest.mark.parametrize(
    ("event", "fields", "clinical", "verification", "why"),
    EVENT_CASES,
    ids=[f"{c[0]}-{c[4]}" for c in EVENT_CASES],
)
def test_status_per_event_and_action_code(
    converter: Converter,
    r4validator: R4Validator,
    event: str,
    fields: dict[str, str],
    clinical: str | None,
    verification: str,
    why: str,
) -> None:
    bundle, _ = convert(converter, r4validator, message(event, [[segment("PRB", prb(**fields))]]))
    found = condition(bundle)
    assert code_of(found.get("clinicalStatus")) == clinical, why
    assert code_of(found.get("verificationStatus")) == verification, why
    assert found["clinicalStatus"]["coding"][0]["system"] == CLINICAL if clinical else True
    assert found["verificationStatus"]["coding"][0]["system"] == VERIFICATION
    assert found["category"][0]["coding"][0]["code"] == "problem-list-item"


def test_add_update_delete_of_one_problem_write_one_condition(
    converter: Converter, r4validator: R4Validator
) -> None:
    ids = set()
    for n, (event, action) in enumerate((("PC1", "AD"), ("PC2", "UP"), ("PC3", "DE"))):
        data = message(event, [[segment("PRB", prb(p1=action))]], control_id=f"PPR-{n}")
        ids.add(condition(convert(converter, r4validator, data)[0])["id"])
    assert len(ids) == 1
    # Another problem instance of the same patient and code is another Condition.
    other = message("PC1", [[segment("PRB", prb(p4=DIABETES))]], control_id="PPR-9")
    assert condition(convert(converter, r4validator, other)[0])["id"] not in ids


def test_problem_instance_without_namespace_is_scoped_by_the_sender(
    converter: Converter, r4validator: R4Validator
) -> None:
    def condition_id(facility: str) -> str:
        data = message(
            "PC1", [[segment("PRB", prb(p4="53956"))]], facility=facility, control_id=facility
        )
        return str(condition(convert(converter, r4validator, data)[0])["id"])

    assert condition_id("CHU-LYON^1.2.250.1.999.1.1^ISO") != condition_id(
        "HOP-PARIS-EST^1.2.250.1.999.2.1^ISO"
    )


def test_without_problem_instance_the_patient_and_code_identify_it(
    converter: Converter, r4validator: R4Validator
) -> None:
    first, warnings = convert(
        converter, r4validator, message("PC1", [[segment("PRB", prb(p4=""))]])
    )
    assert any("PRB-4 (problem instance id) is empty" in w for w in warnings)
    update = message("PC2", [[segment("PRB", prb(p1="UP", p4=""))]], control_id="PPR-2")
    assert condition(convert(converter, r4validator, update)[0])["id"] == condition(first)["id"]


# --- codes through the project's maps -------------------------------------------------------


@pytest.mark.parametrize(
    ("life_cycle", "clinical"),
    [
        ("active-improving^En amélioration^L", "active"),
        ("ACTIVE", "active"),
        ("inactive", "inactive"),
        ("Resolved", "resolved"),
        (f"remission^Remission^{CLINICAL}", "remission"),
        ("Deleted", None),
    ],
)
def test_life_cycle_status_to_clinical_status(
    converter: Converter, r4validator: R4Validator, life_cycle: str, clinical: str | None
) -> None:
    bundle, warnings = convert(
        converter, r4validator, message("PC2", [[segment("PRB", prb(p14=life_cycle))]])
    )
    assert code_of(condition(bundle).get("clinicalStatus")) == clinical
    assert not [w for w in warnings if "code map" in w]


@pytest.mark.parametrize(
    ("confirmation", "verification", "warned"),
    [
        ("differential", "differential", False),
        ("rule-out^À éliminer^L", None, False),  # no FHIR equivalent, documented in the map
        ("C^Confirmed^Confirmation Status List", None, True),
    ],
)
def test_confirmation_status_to_verification_status(
    converter: Converter,
    r4validator: R4Validator,
    confirmation: str,
    verification: str | None,
    warned: bool,
) -> None:
    bundle, warnings = convert(
        converter, r4validator, message("PC1", [[segment("PRB", prb(p13=confirmation))]])
    )
    assert code_of(condition(bundle).get("verificationStatus")) == verification
    expected = (
        "code not in code map ProblemConfirmationStatus-Condition.verificationStatus at PRB-13.1"
    )
    assert (expected in warnings) is warned


def test_unknown_action_code_is_named_and_the_problem_kept(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle, warnings = convert(
        converter, r4validator, message("PC1", [[segment("PRB", prb(p1="CE"))]])
    )
    assert (
        "code not in code map ProblemActionCode-Condition.verificationStatus at PRB-1" in warnings
    )
    assert code_of(condition(bundle)["verificationStatus"]) == "confirmed"


def test_v2_8_segment_action_code_delete(converter: Converter, r4validator: R4Validator) -> None:
    bundle, _ = convert(
        converter, r4validator, message("PC3", [[segment("PRB", prb(p1="D"))]], version="2.8")
    )
    assert code_of(condition(bundle)["verificationStatus"]) == "entered-in-error"
    assert "clinicalStatus" not in condition(bundle)


def test_resolution_beside_an_active_status_is_left_out(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle, warnings = convert(
        converter, r4validator, message("PC2", [[segment("PRB", prb(p9="20240924"))]])
    )
    found = condition(bundle)
    assert code_of(found["clinicalStatus"]) == "active"
    assert "abatementDateTime" not in found  # R4 con-4
    assert any(w.startswith("PRB-9 (actual resolution) left out") for w in warnings)


# --- the other PRB fields ------------------------------------------------------------------


def test_prb_fields(converter: Converter, r4validator: R4Validator) -> None:
    fields = prb(
        p10="OUT^Consultation externe^L",
        p14="resolved^Résolu^L",
        p9="20240924112000+0200",
        p16="202311",
        p17="depuis l'automne",
        p26="6736007^Modérée^SCT",
    )
    bundle, _ = convert(
        converter, r4validator, message("PC2", [[segment("PRB", fields)]], version="2.6")
    )
    found = condition(bundle)
    assert found["identifier"] == [
        {"system": "urn:oid:1.2.250.1.999.1.10", "value": "PB-2024-0903-0007"}
    ]
    assert found["code"]["coding"] == [
        {
            "system": "http://hl7.org/fhir/sid/icd-10",
            "code": "I10",
            "display": "Hypertension essentielle (primitive)",
        }
    ]
    assert found["category"][1]["coding"][0]["code"] == "OUT"  # PRB-10 beside problem-list-item
    assert found["severity"]["coding"][0] == {
        "system": "http://snomed.info/sct",
        "code": "6736007",
        "display": "Modérée",
    }
    assert found["onsetDateTime"] == "2023-11"  # PRB-16 wins over PRB-17
    assert "onsetString" not in found
    assert found["abatementDateTime"] == "2024-09-24T11:20:00+02:00"
    assert found["recordedDate"] == "2024-09-03T10:05:00+02:00"  # PRB-7, not PRB-2
    (patient,) = resources_of(bundle, "Patient")
    (encounter,) = resources_of(bundle, "Encounter")
    assert found["subject"] == {"reference": f"Patient/{patient['id']}"}
    assert found["encounter"] == {"reference": f"Encounter/{encounter['id']}"}


def test_onset_text_and_a_problem_named_in_words(
    converter: Converter, r4validator: R4Validator
) -> None:
    fields = prb(p3="aortic stenosis", p17="depuis l'enfance")
    bundle, _ = convert(converter, r4validator, message("PC1", [[segment("PRB", fields)]]))
    found = condition(bundle)
    assert found["onsetString"] == "depuis l'enfance"
    assert found["code"] == {"text": "aortic stenosis"}  # words, not a code


# --- notes, observations, groups -----------------------------------------------------------


def test_notes_and_problem_observations(converter: Converter, r4validator: R4Validator) -> None:
    problem = [
        segment("PRB", prb()),
        "NTE|1|P|Pression artérielle élevée à deux consultations.",
        f"OBX|1|NM|8480-6^Systolic blood pressure^LN||162|{MMHG}|||||F|||20240903095500+0200",
        "NTE|1||Mesure au bras gauche.",
        f"OBX|2|NM|8462-4^Diastolic blood pressure^LN||95|{MMHG}|||||F|||20240903095500+0200",
    ]
    bundle, warnings = convert(converter, r4validator, message("PC1", [problem]))
    found = condition(bundle)
    assert found["note"] == [{"text": "Pression artérielle élevée à deux consultations."}]
    observations = resources_of(bundle, "Observation")
    assert [o["valueQuantity"]["value"] for o in observations] == [162, 95]
    assert found["evidence"] == [
        {"detail": [{"reference": f"Observation/{o['id']}"} for o in observations]}
    ]
    assert observations[0]["note"] == [{"text": "Mesure au bras gauche."}]
    assert not warnings


def test_observation_identity_is_the_problem_code_and_time(
    converter: Converter, r4validator: R4Validator
) -> None:
    def observation_ids(event: str, time: str, control_id: str) -> list[str]:
        obx = f"OBX|1|NM|8480-6^Systolic blood pressure^LN||150|{MMHG}|||||F|||{time}"
        bundle, _ = convert(
            converter,
            r4validator,
            message(event, [[segment("PRB", prb()), obx]], control_id=control_id),
        )
        return [o["id"] for o in resources_of(bundle, "Observation")]

    first = observation_ids("PC1", "20240903095500+0200", "PPR-1")
    assert observation_ids("PC2", "20240903095500+0200", "PPR-2") == first  # re-sent
    assert observation_ids("PC2", "20240920080000+0200", "PPR-3") != first  # a later one


def test_two_problems_and_what_is_not_converted(
    converter: Converter, r4validator: R4Validator
) -> None:
    problems = [
        [
            segment("PRB", prb()),
            "ROL|1|AD|PP^Primary Care Provider^HL70443|10112456788^FONTAINE^Camille",
            "ORC|NW|CMD-0001^DPI-ORCHIDEE",
            "OBR|1|CMD-0001^DPI-ORCHIDEE||24321-2^Basic metabolic panel^LN",
            "OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L^mmol/L^UCUM|||||F",
        ],
        [segment("PRB", prb(p3="E11.9^Diabète de type 2^I10", p4=DIABETES))],
    ]
    bundle, warnings = convert(converter, r4validator, message("PC1", problems))
    assert [c["code"]["coding"][0]["code"] for c in resources_of(bundle, "Condition")] == [
        "I10",
        "E11.9",
    ]
    assert not resources_of(bundle, "Observation")  # the order's OBX, not the problem's
    assert any(w.startswith("not converted in PPR: ROL, ORC") for w in warnings)


def test_v2_3_1_problem_observations(converter: Converter, r4validator: R4Validator) -> None:
    # v2.3.1 names the problem's OBX group PATHWAY_OBSERVATION.
    problem = [
        segment("PRB", prb(p2="20040629164600", p7="20040629")),
        "OBX|1|ST|29308-4^Diagnosis^LN||Hypertension||||||F",
    ]
    bundle, _ = convert(converter, r4validator, message("PC1", [problem], version="2.3.1"))
    (observation,) = resources_of(bundle, "Observation")
    assert condition(bundle)["evidence"][0]["detail"] == [
        {"reference": f"Observation/{observation['id']}"}
    ]


def test_without_visit_no_encounter(converter: Converter, r4validator: R4Validator) -> None:
    bundle, _ = convert(
        converter, r4validator, message("PC3", [[segment("PRB", prb(p1="DE"))]], visit=False)
    )
    assert not resources_of(bundle, "Encounter")
    assert "encounter" not in condition(bundle)


# --- refused messages -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason", "location"),
    [
        (message("PC1", patient=False), "the patient (PID) is missing", "PID"),
        (message("PC1", problems=[]), "the problem (PRB) is missing", "PRB"),
    ],
    ids=["no-patient", "no-problem"],
)
def test_a_problem_without_patient_or_prb_is_refused(
    converter: Converter, data: bytes, reason: str, location: str
) -> None:
    with pytest.raises(MappingError) as caught:
        converter.convert_message(data)
    assert caught.value.reason == reason
    assert caught.value.location == location
    assert caught.value.hl7_error_code == "101"


# --- on a FHIR server -----------------------------------------------------------------------


def test_on_a_fhir_server_add_update_delete_leave_one_condition(
    converter: Converter, fhir_server: FhirServer
) -> None:
    fhir_server.reset()
    steps = [
        ("PC1", prb(p13="provisional^Provisoire^L"), "provisional", "active"),
        ("PC2", prb(p1="UP"), "confirmed", "active"),
        ("PC3", prb(p1="DE"), "entered-in-error", None),
    ]
    for n, (event, fields, verification, clinical) in enumerate(steps):
        bundle = converter.convert_message(
            message(event, [[segment("PRB", fields)]], control_id=f"S-{n}")
        ).bundle
        fhir_server.transact(bundle)
        (entry,) = fhir_server.search("Condition")["entry"]
        stored = entry["resource"]
        assert code_of(stored["verificationStatus"]) == verification, event
        assert code_of(stored.get("clinicalStatus")) == clinical, event
