"""Session 25: the confidentiality labels' remaining holes (converter/assembly/confidentiality.py).

- A Device naming the protected patient (``Device.patient``: an implant, a pump he wears)
  went unlabelled: R4's Patient CompartmentDefinition leaves Device out, so the table did.
- An ADT^A29 (delete person information) of a protected patient wrote its Provenance
  unlabelled: the Patient is a DELETE entry, taken out of the labelling, and out of the
  Provenance's targets (nothing in a bundle may refer to what it deletes), so nothing
  linked the Provenance to the patient's label. Likewise an A23 deleting a protected
  visit. A Provenance now takes the labels of what the bundle deletes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from converter.assembly.confidentiality import label_compartments
from tests.support.hl7_edit import insert_after, message, references, resources, segment, set_field
from tests.support.r4validator import R4Validator

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
CHU = "CHU-LYON&1.2.250.1.999.1.1&ISO"
V3 = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
RESTRICTED = {"system": V3, "code": "R", "display": "restricted"}
VERY_RESTRICTED = {"system": V3, "code": "V", "display": "very restricted"}
PID = segment(
    "PID", {1: "1", 3: f"0012361188^^^{CHU}^MR", 5: "MOREAU^Isabelle", 7: "19780114", 8: "F"}
)


def _security(resource: dict[str, Any]) -> Any:
    return resource.get("meta", {}).get("security")


def _ref(rtype: str, rid: str) -> dict[str, str]:
    return {"reference": f"{rtype}/{rid}"}


# --- a Device naming the patient -------------------------------------------------------------

#: A pacemaker implanted during the CCD's colonoscopy (C-CDA Product Instance, 4.37).
IMPLANT = b"""<participant typeCode="DEV">
                <participantRole classCode="MANU">
                  <templateId root="2.16.840.1.113883.10.20.22.4.37"/>
                  <id root="2.16.840.1.113883.3.3719" extension="(01)51022222233336(21)S25"/>
                  <playingDevice>
                    <code code="14106009" codeSystem="2.16.840.1.113883.6.96"
                          displayName="Cardiac pacemaker"/>
                  </playingDevice>
                </participantRole>
              </participant>
            </procedure>"""
#: A site's Product Instance template writing the device's patient (US Core Implantable
#: Device requires it; the built-in template writes none).
SITE_PRODUCT_INSTANCE = """{
  "resourceType": "Device",
  "_identity": ["implant", {{ role.id["root"] }}, {{ role.id["extension"] }}],
  "udiCarrier": [{"carrierHRF": {{ role.id["extension"] }}}],
  "patient": {{ emitted("Patient") | first }},
}
"""


def _ccd_with_implant(confidentiality: str) -> bytes:
    text = (SAMPLES / "cda" / "CCD_lefevre-camille.xml").read_bytes()
    normal = (
        b'<confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25" displayName="normal"/>'
    )
    colonoscopy = text.index(b'displayName="Colonoscopy"')
    end = text.index(b"</procedure>", colonoscopy)
    assert normal in text and end > 0
    text = text[:end] + IMPLANT + text[end + len(b"</procedure>") :]
    return text.replace(normal, normal.replace(b'"N"', f'"{confidentiality}"'.encode()))


def test_a_device_of_a_restricted_document_s_patient_is_labelled(
    tmp_path: Path, r4validator: R4Validator
) -> None:
    """The document's V reaches the implant naming its patient; the document's authoring
    device, which names no patient, is shared and stays unlabelled."""
    site = tmp_path / "cda" / "resources"
    site.mkdir(parents=True)
    (site / "ProductInstance.j2").write_text(SITE_PRODUCT_INSTANCE, encoding="utf-8")
    converter = Converter(ConverterConfig(template_dirs=(tmp_path,)))
    bundle = converter.convert_document(_ccd_with_implant("V")).bundle
    assert r4validator.validate(bundle) == []
    [patient] = resources(bundle, "Patient")
    devices = resources(bundle, "Device")
    [implant] = [d for d in devices if "patient" in d]
    assert implant["patient"]["reference"].endswith(patient["id"])
    assert _security(implant) == [VERY_RESTRICTED]
    [procedure] = [p for p in resources(bundle, "Procedure") if p.get("focalDevice")]
    assert procedure["focalDevice"][0]["manipulated"]["reference"].endswith(implant["id"])
    assert [_security(d) for d in devices if d is not implant] == [None] * (len(devices) - 1)
    # A normal document: no label on it.
    normal = converter.convert_document(_ccd_with_implant("N")).bundle
    assert [_security(d) for d in resources(normal, "Device")] == [None] * len(devices)


def test_a_device_naming_a_protected_patient_is_labelled_others_not() -> None:
    items: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": "p1", "meta": {"security": [RESTRICTED]}},
        {"resourceType": "Patient", "id": "p2"},
        {"resourceType": "Device", "id": "d1", "patient": _ref("Patient", "p1")},
        {"resourceType": "Device", "id": "d2", "patient": _ref("Patient", "p2")},
        {"resourceType": "Device", "id": "d3", "owner": _ref("Organization", "o")},
        {"resourceType": "Organization", "id": "o"},
    ]
    label_compartments(items)
    assert {item["id"]: _security(item) for item in items} == {
        "p1": [RESTRICTED],
        "p2": None,
        "d1": [RESTRICTED],
        "d2": None,
        "d3": None,
        "o": None,
    }


# --- what a bundle deletes -------------------------------------------------------------------


def _a29(pd1: dict[int, str] | None) -> bytes:
    return message(
        [
            "MSH|^~\\&|SIH|CHU-LYON^1.2.250.1.999.1.1^ISO|||20240410151230+0200||"
            "ADT^A29^ADT_A21|S25-A29|P|2.5.1",
            segment("EVN", {1: "A29", 2: "20240410151230+0200"}),
            PID,
            *([segment("PD1", pd1)] if pd1 is not None else []),
            segment("PV1", {1: "1", 2: "N"}),
        ]
    )


def _a23(pv2: dict[int, str] | None) -> bytes:
    return message(
        [
            "MSH|^~\\&|SIH|CHU-LYON^1.2.250.1.999.1.1^ISO|||20240410151230+0200||"
            "ADT^A23^ADT_A21|S25-A23|P|2.5.1",
            segment("EVN", {1: "A23", 2: "20240410151230+0200"}),
            PID,
            segment("PV1", {1: "1", 2: "I", 19: f"2024000505^^^{CHU}^VN"}),
            *([segment("PV2", pv2)] if pv2 is not None else []),
        ]
    )


def test_the_deletion_of_a_protected_person_is_restricted(
    converter: Converter, r4validator: R4Validator
) -> None:
    """A29 of a PD1-12 Y patient: the Provenance recording it carries R as the
    Provenance of any other message of his does; the shared resources stay unlabelled."""
    bundle = converter.convert_message(_a29({12: "Y"})).bundle
    assert r4validator.validate(bundle) == []
    assert [e["request"]["method"] for e in bundle["entry"] if "resource" not in e] == ["DELETE"]
    [provenance] = resources(bundle, "Provenance")
    assert _security(provenance) == [RESTRICTED]
    for rtype in ("MessageHeader", "Organization"):
        assert [_security(r) for r in resources(bundle, rtype)] == [None], rtype


def test_the_deletion_of_a_protected_visit_is_restricted(
    converter: Converter, r4validator: R4Validator
) -> None:
    """A23 deleting a PV2-22 Y visit: its Provenance is restricted; the person is not
    protected, his Patient stays unlabelled."""
    bundle = converter.convert_message(_a23({22: "Y"})).bundle
    assert r4validator.validate(bundle) == []
    [provenance] = resources(bundle, "Provenance")
    assert _security(provenance) == [RESTRICTED]
    assert [_security(p) for p in resources(bundle, "Patient")] == [None]


def test_the_deletion_of_a_person_not_protected_is_not_labelled(converter: Converter) -> None:
    for data in (_a29(None), _a29({12: "N"}), _a23(None)):
        bundle = converter.convert_message(data).bundle
        assert [e for e in bundle["entry"] if _security(e.get("resource", {}))] == []


def test_a_provenance_takes_the_labels_of_what_the_bundle_deletes() -> None:
    """The assembly step alone: the deleted Patient's label (and what its compartment
    passes on) reaches the Provenance; the objects of the deleted entries are left as
    they were; a deleted shared resource gives nothing."""
    patient = {"resourceType": "Patient", "id": "p", "meta": {"security": [VERY_RESTRICTED]}}
    observation = {"resourceType": "Observation", "id": "o", "subject": _ref("Patient", "p")}
    role = {"resourceType": "PractitionerRole", "id": "r"}
    provenance = {
        "resourceType": "Provenance",
        "id": "prov",
        "target": [_ref("MessageHeader", "m")],
    }
    items: list[dict[str, Any]] = [
        {"resourceType": "MessageHeader", "id": "m"},
        patient,
        observation,
        role,
        provenance,
    ]
    label_compartments(items, deleted={("Patient", "p"), ("Observation", "o")})
    assert _security(provenance) == [VERY_RESTRICTED]
    assert _security(items[0]) is None
    assert patient == {
        "resourceType": "Patient",
        "id": "p",
        "meta": {"security": [VERY_RESTRICTED]},
    }
    assert "meta" not in observation
    # Deleted shared resource only: nothing passed on.
    alone = {"resourceType": "Provenance", "id": "q", "target": [_ref("Organization", "x")]}
    label_compartments(
        [role, {"resourceType": "Organization", "id": "x"}, alone],
        deleted={("PractitionerRole", "r")},
    )
    assert _security(alone) is None


# --- no resource naming a protected patient escapes the label ------------------------------

HL7_SAMPLES = sorted((SAMPLES / "hl7v2").glob("*.hl7"))


def _protected(data: bytes) -> bytes:
    """``data`` whose first patient (PID) is protected: PD1-12 ``Y``."""
    segments = data.split(b"\r")
    if any(s.startswith(b"PD1|") for s in segments):
        return set_field(data, "PD1", 12, "Y")
    return insert_after(data, "PID|", segment("PD1", {12: "Y"}))


@pytest.mark.parametrize("sample", HL7_SAMPLES, ids=[p.name for p in HL7_SAMPLES])
def test_no_resource_naming_a_protected_patient_is_left_unlabelled(
    converter: Converter, sample: Path
) -> None:
    """Every HL7 v2 sample, its patient protected: whatever resource the templates write
    that refers to him (any element, at any depth: the review of session 25 over every
    type the templates write) carries his label. A type or element missing from
    PATIENT_COMPARTMENT would leave it unlabelled."""
    data = sample.read_bytes()
    if b"\rPID|" not in data.replace(b"\n", b"\r"):
        pytest.skip("no patient")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        pytest.skip("not UTF-8 (the test edits UTF-8 text)")
    if not data.startswith(b"MSH|"):
        pytest.skip("a batch (the test edits one message)")
    bundle = converter.convert_message(_protected(data.replace(b"\r\n", b"\r"))).bundle
    written = [e for e in bundle["entry"] if "resource" in e]
    if not resources(bundle, "Patient"):
        return  # A29: the Patient is deleted (see the tests above)
    protected = {
        form
        for entry in written
        if entry["resource"]["resourceType"] == "Patient" and _restricted(entry["resource"])
        for form in (f"Patient/{entry['resource']['id']}", entry["fullUrl"])
    }
    assert protected, "the first patient is protected"
    escaped = [
        entry["resource"]["resourceType"]
        for entry in written
        if protected & set(references(entry["resource"])) and not _restricted(entry["resource"])
    ]
    assert escaped == []


def _restricted(resource: dict[str, Any]) -> bool:
    """Whether ``resource`` holds a v3-Confidentiality R or V label."""
    return any(
        c.get("system") == V3 and c.get("code") in ("R", "V") for c in _security(resource) or ()
    )
