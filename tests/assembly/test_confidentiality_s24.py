"""Session 24: a protected patient's confidentiality label on every resource of his.

PD1-12 ``Y`` labelled only the Patient (R, v3-Confidentiality) and a CDA's
confidentialityCode R / V only the Composition (``confidentiality``, no security label):
the same bundle's Encounter, Observations, Conditions, AllergyIntolerances, Procedures,
DiagnosticReports, Coverage, Provenance... carried none, so a warehouse filtering by
security label showed them to everyone. Bundle assembly now gives each resource in the
patient's compartment the label (converter/assembly/confidentiality.py); shared resources
(Practitioner, Organization, Location, Medication, MessageHeader) stay unlabelled.
Likewise a protected visit's label (PV2-22) reaches what was recorded in the visit, a
restricted document's (TXA-18) its DocumentReference, and a Provenance takes the strongest
label of what it targets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from converter.assembly.bundle import RequestMode
from converter.assembly.confidentiality import label_compartments
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import insert_after, message, resources, segment, set_field
from tests.support.r4validator import R4Validator

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
CHU = "CHU-LYON&1.2.250.1.999.1.1&ISO"
V3 = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
RESTRICTED = {"system": V3, "code": "R", "display": "restricted"}
VERY_RESTRICTED = {"system": V3, "code": "V", "display": "very restricted"}
#: Resources several patients' data refer to: never labelled for one of them.
SHARED = {
    "MessageHeader",
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Location",
    "Medication",
    "Device",
}
PID = segment(
    "PID", {1: "1", 3: f"0012361188^^^{CHU}^MR", 5: "MOREAU^Isabelle", 7: "19780114", 8: "F"}
)
PV1 = segment(
    "PV1",
    {
        1: "1",
        2: "I",
        3: "CARDIO^101^1^CHU-LYON",
        7: "12345^MARTIN^Paul",
        19: f"2024000505^^^{CHU}^VN",
    },
)


def _adt(pd1: dict[int, str] | None, *, pv2: dict[int, str] | None = None) -> bytes:
    """An A01 whose patient has an observation, allergy, diagnosis, procedure, insurance
    and next of kin."""
    return message(
        [
            "MSH|^~\\&|SIH|CHU-LYON^1.2.250.1.999.1.1^ISO|||20240410151230+0200||"
            "ADT^A01^ADT_A01|S24-A01|P|2.5.1",
            segment("EVN", {1: "A01", 2: "20240410151230+0200"}),
            PID,
            *([segment("PD1", pd1)] if pd1 is not None else []),
            PV1,
            *([segment("PV2", pv2)] if pv2 is not None else []),
            segment(
                "OBX",
                {1: "1", 2: "NM", 3: "8302-2^Body height^LN", 5: "165", 6: "cm^cm^UCUM", 11: "F"},
            ),
            segment("AL1", {1: "1", 2: "DA", 3: "70618^Penicillin^RXNORM", 4: "SV"}),
            segment("DG1", {1: "1", 3: "I10^Hypertension^I10", 6: "A"}),
            segment("PR1", {1: "1", 3: "DZQM006^ECG^CCAM", 5: "20240410"}),
            segment("IN1", {1: "1", 2: "PLAN1", 3: "CPAM69^^^CHU-LYON", 4: "CPAM Lyon"}),
            segment("NK1", {1: "1", 2: "MOREAU^Jean", 3: "SPO^Spouse^HL70063"}),
        ]
    )


def _oru(
    pd1: dict[int, str] | None,
    *,
    pv2: dict[int, str] | None = None,
    orc28: str = "",
    control: str = "S24-R01",
) -> bytes:
    return message(
        [
            "MSH|^~\\&|LIS|CHU-LYON^1.2.250.1.999.1.1^ISO|||20240410151230+0200||"
            f"ORU^R01^ORU_R01|{control}|P|2.5.1",
            PID,
            *([segment("PD1", pd1)] if pd1 is not None else []),
            segment("PV1", {1: "1", 2: "I", 19: f"2024000505^^^{CHU}^VN"}),
            *([segment("PV2", pv2)] if pv2 is not None else []),
            segment("ORC", {1: "RE", 2: f"{control}^SIH", 3: f"F{control}^LIS", 28: orc28}),
            segment(
                "OBR",
                {
                    1: "1",
                    2: f"{control}^SIH",
                    3: f"F{control}^LIS",
                    4: "24323-8^Panel^LN",
                    7: "20240410100000",
                    25: "F",
                },
            ),
            segment(
                "OBX",
                {
                    1: "1",
                    2: "NM",
                    3: "2345-7^Glucose^LN",
                    5: "5.4",
                    6: "mmol/L^mmol/L^UCUM",
                    11: "F",
                },
            ),
            segment("SPM", {1: "1", 2: f"SP{control}^LIS", 4: "BLD^Blood^HL70487"}),
        ]
    )


def _security(resource: dict[str, Any]) -> Any:
    return resource.get("meta", {}).get("security")


def _labels_by_type(bundle: dict[str, Any]) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        found.setdefault(resource["resourceType"], []).append(_security(resource))
    return found


# --- HL7 v2: PD1-12 Y ----------------------------------------------------------------------


def test_every_resource_of_a_protected_admitted_patient_is_restricted(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle = converter.convert_message(_adt({12: "Y"})).bundle
    assert r4validator.validate(bundle) == []
    labels = _labels_by_type(bundle)
    for rtype in (
        "Patient",
        "Encounter",
        "Observation",
        "AllergyIntolerance",
        "Condition",
        "Procedure",
        "Coverage",
        "RelatedPerson",
        "Provenance",
    ):
        assert labels.pop(rtype) == [[RESTRICTED]], rtype
    # What is left is shared by several patients' data.
    assert set(labels) <= SHARED
    assert all(label is None for found in labels.values() for label in found)


def test_a_protected_patient_s_results_are_restricted(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle = converter.convert_message(_oru({12: "Y"})).bundle
    assert r4validator.validate(bundle) == []
    labels = _labels_by_type(bundle)
    for rtype in (
        "Patient",
        "Encounter",
        "ServiceRequest",
        "Specimen",
        "Observation",
        "DiagnosticReport",
        "Provenance",
    ):
        assert labels.pop(rtype) == [[RESTRICTED]], rtype
    assert set(labels) <= SHARED
    assert all(label is None for found in labels.values() for label in found)


@pytest.mark.parametrize("mode", ["conditional-update", "conditional-create"])
def test_labels_follow_urn_references_of_conditional_modes(mode: RequestMode) -> None:
    converter = Converter(ConverterConfig(request_mode=mode, default_timezone="Europe/Paris"))
    bundle = converter.convert_message(_oru({12: "Y"})).bundle
    [observation] = resources(bundle, "Observation")
    assert observation["subject"]["reference"].startswith("urn:uuid:")
    assert _security(observation) == [RESTRICTED]


@pytest.mark.parametrize("pd1", [None, {12: "N"}, {4: ""}])
def test_a_patient_not_protected_gives_no_label(
    converter: Converter, pd1: dict[int, str] | None
) -> None:
    for data in (_adt(pd1), _oru(pd1)):
        bundle = converter.convert_message(data).bundle
        assert [e for e in bundle["entry"] if _security(e["resource"])] == []


def test_a_stronger_label_a_template_wrote_is_kept_and_others_stay(
    converter: Converter, r4validator: R4Validator
) -> None:
    """ORC-28 V (very restricted) and VIP on the report: one confidentiality level per
    resource, the strongest; the VIP label stays; the message's Provenance, which targets
    the report, takes V."""
    bundle = converter.convert_message(_oru({12: "Y"}, orc28="V~VIP")).bundle
    assert r4validator.validate(bundle) == []
    [report] = resources(bundle, "DiagnosticReport")
    security = _security(report)
    assert [c["code"] for c in security] == ["V", "VIP"]
    for rtype in ("Encounter", "Specimen"):
        [other] = resources(bundle, rtype)
        assert _security(other) == [RESTRICTED], rtype
    # Whatever labels the templates give the results, one confidentiality level each.
    for observation in resources(bundle, "Observation"):
        assert [c["code"] for c in _security(observation) if c["system"] == V3] in (["R"], ["V"])
    [provenance] = resources(bundle, "Provenance")
    assert _security(provenance) == [VERY_RESTRICTED]


def test_the_provenance_of_a_restricted_order_is_restricted(converter: Converter) -> None:
    """No protected patient: ORC-28's label stays on the order's resources, and the
    message's Provenance, which lists them, takes it."""
    bundle = converter.convert_message(_oru(None, orc28="R")).bundle
    [report] = resources(bundle, "DiagnosticReport")
    assert _security(report) == [RESTRICTED]
    [provenance] = resources(bundle, "Provenance")
    assert _security(provenance) == [RESTRICTED]
    for rtype in ("Patient", "Encounter", "Specimen"):
        assert [_security(r) for r in resources(bundle, rtype)] == [None], rtype


def test_a_protected_visit_of_a_protected_patient_has_one_label(converter: Converter) -> None:
    bundle = converter.convert_message(_adt({12: "Y"}, pv2={22: "Y"})).bundle
    [encounter] = resources(bundle, "Encounter")
    assert _security(encounter) == [RESTRICTED]


def test_the_code_map_decides_the_label_passed_on(tmp_path: Path) -> None:
    """A site mapping PD1-12 Y to V (override folder) gets V on every resource."""
    codemaps = tmp_path / "codemaps"
    codemaps.mkdir()
    (codemaps / "ProtectionIndicator-Passerelle.csv").write_text(
        "source_code,source_system,target_code,target_display,target_system,comment\n"
        f"Y,,V,very restricted,{V3},site rule\n",
        encoding="utf-8",
    )
    converter = Converter(ConverterConfig(template_dirs=(tmp_path,)))
    labels = _labels_by_type(converter.convert_message(_oru({12: "Y"})).bundle)
    for rtype in ("Patient", "Encounter", "Observation", "DiagnosticReport", "Provenance"):
        assert labels[rtype] == [[VERY_RESTRICTED]], rtype


def test_a_linked_record_of_a_protected_patient_is_restricted(converter: Converter) -> None:
    """A24: the two records are one person (FHIR's Patient compartment holds a Patient
    linking to it): the unprotected record no longer exposes him."""
    data = message(
        [
            "MSH|^~\\&|SIH|CHU-LYON^1.2.250.1.999.1.1^ISO|||20240410151230+0200||"
            "ADT^A24^ADT_A24|S24-A24|P|2.5.1",
            segment("EVN", {1: "A24", 2: "20240410151230+0200"}),
            PID,
            segment("PD1", {12: "Y"}),
            segment("PID", {1: "2", 3: f"0099^^^{CHU}^MR", 5: "MOREAU^Isabelle"}),
        ]
    )
    patients = resources(converter.convert_message(data).bundle, "Patient")
    assert [_security(p) for p in patients] == [[RESTRICTED], [RESTRICTED]]


def test_a_document_status_change_of_a_protected_patient_is_restricted(
    converter: Converter, r4validator: R4Validator
) -> None:
    """MDM T03 names the document without writing it: its Provenance, whose only target is
    outside the bundle, is about the protected patient's document all the same."""
    sample = (SAMPLES / "hl7v2" / "MDM_T03_restrict-discharge-summary.hl7").read_bytes()
    bundle = converter.convert_message(
        insert_after(sample, "PID|", segment("PD1", {12: "Y"}))
    ).bundle
    assert r4validator.validate(bundle) == []
    provenances = resources(bundle, "Provenance")
    assert len(provenances) == 2
    assert [_security(p) for p in provenances] == [[RESTRICTED]] * 2


@pytest.mark.parametrize(
    ("txa18", "expected"), [("R", [RESTRICTED]), ("V", [VERY_RESTRICTED]), ("U", None)]
)
def test_a_restricted_document_s_resource_is_labelled(
    converter: Converter, r4validator: R4Validator, txa18: str, expected: Any
) -> None:
    """TXA-18 labelled only DocumentReference.securityLabel (the document's), while the
    resource holds the document's text: a search by ``_security`` showed it to all. The
    patient is not protected: his record and visit stay unlabelled."""
    sample = (SAMPLES / "hl7v2" / "MDM_T02_discharge-summary.hl7").read_bytes()
    bundle = converter.convert_message(set_field(sample, "TXA", 18, txa18)).bundle
    assert r4validator.validate(bundle) == []
    [document] = resources(bundle, "DocumentReference")
    assert document["content"][0]["attachment"].get("data")
    assert _security(document) == expected
    assert {str(_security(p)) for p in resources(bundle, "Provenance")} == {str(expected)}
    for rtype in ("Patient", "Encounter"):
        assert [_security(r) for r in resources(bundle, rtype)] == [None], rtype


# --- HL7 v2: PV2-22 Y ----------------------------------------------------------------------


def test_what_was_recorded_in_a_protected_visit_is_restricted(
    converter: Converter, r4validator: R4Validator
) -> None:
    """The visit's label (PV2-22) goes on what names the visit; the person is not
    protected: his record, allergies, cover and relatives stay unlabelled."""
    bundle = converter.convert_message(_adt(None, pv2={22: "Y"})).bundle
    assert r4validator.validate(bundle) == []
    labels = _labels_by_type(bundle)
    for rtype in ("Encounter", "Observation", "Condition", "Procedure", "Provenance"):
        assert labels[rtype] == [[RESTRICTED]], rtype
    for rtype in ("Patient", "AllergyIntolerance", "Coverage", "RelatedPerson"):
        assert labels[rtype] == [None], rtype


def test_results_of_a_protected_visit_are_restricted(converter: Converter) -> None:
    labels = _labels_by_type(converter.convert_message(_oru(None, pv2={22: "Y"})).bundle)
    for rtype in ("Encounter", "ServiceRequest", "Observation", "DiagnosticReport"):
        assert labels[rtype] == [[RESTRICTED]], rtype
    assert labels["Patient"] == [None]


# --- CDA: confidentialityCode R / V --------------------------------------------------------


def test_a_restricted_document_labels_what_it_says_about_the_patient(
    converter: Converter,
) -> None:
    data = (SAMPLES / "cda" / "Unstructured_nguyen-lea_pdf.xml").read_bytes()
    labels = _labels_by_type(converter.convert_document(data).bundle)
    for rtype in ("Composition", "Encounter", "DocumentReference"):
        assert labels.pop(rtype) == [[RESTRICTED]], rtype
    # The document's label is about its content, not the person's identity.
    assert labels.pop("Patient") == [None]
    assert set(labels) <= SHARED
    assert all(label is None for found in labels.values() for label in found)


def test_a_very_restricted_document_labels_every_entry_and_provenance(
    converter: Converter, r4validator: R4Validator
) -> None:
    text = (SAMPLES / "cda" / "CCD_lefevre-camille.xml").read_bytes()
    normal = (
        b'<confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25" displayName="normal"/>'
    )
    assert normal in text
    data = text.replace(
        normal, normal.replace(b'"N"', b'"V"').replace(b'"normal"', b'"very restricted"')
    )
    bundle = converter.convert_document(data).bundle
    assert r4validator.validate(bundle) == []
    labels = _labels_by_type(bundle)
    assert labels.pop("Patient") == [None]
    shared = {rtype: labels.pop(rtype) for rtype in SHARED & set(labels)}
    assert all(label is None for found in shared.values() for label in found)
    for rtype in (
        "Composition",
        "AllergyIntolerance",
        "MedicationRequest",
        "Condition",
        "Immunization",
        "Observation",
        "DiagnosticReport",
        "Procedure",
        "Provenance",
        "Goal",
        "CarePlan",
    ):
        assert rtype in labels, rtype
    assert {
        rtype: found for rtype, found in labels.items() if found != [[VERY_RESTRICTED]] * len(found)
    } == {}


def test_a_normal_document_gives_no_label(converter: Converter) -> None:
    data = (SAMPLES / "cda" / "CCD_lefevre-camille.xml").read_bytes()
    bundle = converter.convert_document(data).bundle
    assert [e for e in bundle["entry"] if _security(e["resource"])] == []


# --- the assembly step itself --------------------------------------------------------------


def _ref(rtype: str, rid: str) -> dict[str, str]:
    return {"reference": f"{rtype}/{rid}"}


def test_one_confidentiality_level_the_strongest_other_labels_kept() -> None:
    vip = {"system": "http://terminology.hl7.org/CodeSystem/v2-0177", "code": "VIP"}
    normal = {"system": V3, "code": "N"}
    shared_meta = {"security": [normal, vip]}
    items: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": "p1", "meta": {"security": [RESTRICTED]}},
        {"resourceType": "Patient", "id": "p2", "meta": {"security": [VERY_RESTRICTED]}},
        {"resourceType": "Patient", "id": "p3"},
        # Insured by one protected patient, subscribed by another: the stronger.
        {
            "resourceType": "Coverage",
            "id": "c",
            "beneficiary": _ref("Patient", "p1"),
            "subscriber": _ref("Patient", "p2"),
            "payor": [_ref("Organization", "o")],
        },
        # A lower level goes, another label stays; a reused object is not changed.
        {
            "resourceType": "Observation",
            "id": "o1",
            "subject": _ref("Patient", "p1"),
            "meta": shared_meta,
        },
        {
            "resourceType": "Observation",
            "id": "o3",
            "subject": _ref("Patient", "p3"),
            "meta": shared_meta,
        },
        {
            "resourceType": "Appointment",
            "id": "a",
            "participant": [{"actor": _ref("Practitioner", "d")}, {"actor": _ref("Patient", "p1")}],
        },
        {"resourceType": "Practitioner", "id": "d"},
        {"resourceType": "Organization", "id": "o"},
        {"resourceType": "MessageHeader", "id": "m", "focus": [_ref("Patient", "p1")]},
    ]
    label_compartments(items)
    got = {item["id"]: _security(item) for item in items}
    assert got == {
        "p1": [RESTRICTED],
        "p2": [VERY_RESTRICTED],
        "p3": None,
        "c": [VERY_RESTRICTED],
        "o1": [vip, RESTRICTED],
        "o3": [normal, vip],
        "a": [RESTRICTED],
        "d": None,
        "o": None,
        "m": None,
    }


# --- on a FHIR server ----------------------------------------------------------------------


def test_on_a_fhir_server_a_security_search_finds_the_protected_results(
    fhir_server: FhirServer,
) -> None:
    """A warehouse filtering by label: the protected patient's result is restricted;
    a later result without PD1-12 Y is not (the converter never reads the server: the
    sender repeats PD1-12, as for the Patient)."""
    fhir_server.reset()
    converter = Converter()
    protected = converter.convert_message(_oru({12: "Y"}, control="S24-1")).bundle
    fhir_server.transact(protected)
    later = converter.convert_message(_oru(None, control="S24-2")).bundle
    fhir_server.transact(later)
    [first] = resources(protected, "Observation")
    [second] = resources(later, "Observation")
    found = fhir_server.search("Observation", _security=f"{V3}|R")
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [first["id"]]
    stored = fhir_server.read("Observation", second["id"])
    assert stored is not None and "security" not in stored.get("meta", {})
