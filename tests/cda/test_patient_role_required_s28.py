"""A document whose recordTarget/patientRole holds nothing that identifies a patient (no
id, no patient: an emptied element) is refused at that place: a MappingError located at
``/ClinicalDocument/recordTarget/patientRole`` (HL7 error 101). It wrote no Patient, and
every statement then lacked its required subject: a BundleValidationError naming FHIR
paths (``AllergyIntolerance.patient``), nothing a sender's team could look for in the
document. A patientRole with only an id, or only a patient, still converts."""

from __future__ import annotations

import pytest
from lxml import etree

from converter import MappingError

from ._support import CCD_SAMPLE, convert_document, resources_of

NS = {"h": "urn:hl7-org:v3"}


def _ccd_with_patient_role(keep: tuple[str, ...]) -> bytes:
    """The sample CCD with its patientRole reduced to the children named in ``keep``."""
    root = etree.fromstring(CCD_SAMPLE.read_bytes())
    role = root.find("h:recordTarget/h:patientRole", NS)
    assert role is not None
    for child in list(role):
        if etree.QName(child).localname not in keep:
            role.remove(child)
    return bytes(etree.tostring(root))


def test_an_empty_patient_role_is_refused_at_its_place() -> None:
    with pytest.raises(MappingError) as caught:
        convert_document(_ccd_with_patient_role(()))
    error = caught.value
    assert error.location == "/ClinicalDocument/recordTarget/patientRole"
    assert error.hl7_error_code == "101"
    assert "the patient (recordTarget/patientRole" in str(error)


@pytest.mark.parametrize("keep", [("id",), ("patient",)], ids=["id-only", "patient-only"])
def test_a_patient_role_with_an_id_or_a_patient_converts(keep: tuple[str, ...]) -> None:
    bundle, _ = convert_document(_ccd_with_patient_role(keep))
    [patient] = resources_of(bundle, "Patient")
    allergies = resources_of(bundle, "AllergyIntolerance")
    assert allergies
    assert all(a["patient"]["reference"] == f"Patient/{patient['id']}" for a in allergies)
