"""Defects ``scripts/perturb_samples.py --hl7-dir`` found over the shared HL7 v2 corpus
(2026-12-02), each on an edit of one of our samples:

* OUL: a SAC before any SPM or OBR (segments out of the grammar's order), then an OBX:
  the template assigned to the absent specimen, a TemplateRuntimeError. The OBX is not
  converted, with a warning naming it.
* ORU_R01 with two patients and specimens, one patient without any ID number: the
  specimens' owners were found with reference("Patient"), a MappingError for a Patient
  whose id derives from the message. Its specimens are nobody's, as with one patient.
* VXU without PID: Immunizations without their required patient, an invalid bundle
  naming no place. Refused at PID, as DFT refuses charges.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from converter import Converter, ConverterConfig, MappingError
from tests.conftest import REPO_ROOT
from tests.support.hl7_edit import convert_one, lines, message, resources

SAMPLES = REPO_ROOT / "samples" / "hl7v2"


@pytest.fixture(scope="module", params=[True, False], ids=["strict", "lenient"])
def converter(request: pytest.FixtureRequest) -> Converter:
    return Converter(ConverterConfig(default_timezone="Europe/Paris", strict_values=request.param))


def _moved_to_front(data: bytes, name: str) -> bytes:
    """The first ``name`` segment moved right after MSH."""
    segments = lines(data)
    index = next(n for n, line in enumerate(segments) if line.startswith(f"{name}|"))
    moved = segments.pop(index)
    return message([segments[0], moved, *segments[1:]])


def test_oul_an_obx_after_a_leading_sac_is_skipped_with_a_warning(converter: Converter) -> None:
    data = (SAMPLES / "OUL_R22_lab-results.hl7").read_bytes()
    segments = lines(data)
    sac = "SAC|1|CONT-01||||||||||||||||||||||||"
    obx = "OBX|1|ST|5767-9^Appearance of Urine^LN||Limpide||||||F"
    edited = message([segments[0], sac, obx, *segments[1:]])
    bundle, warnings = convert_one(converter, edited)
    assert "OBX belongs to no specimen nor order: not converted" in warnings
    assert resources(bundle, "DiagnosticReport")  # the rest of the message converts


def test_oru_two_patients_one_without_id_number(converter: Converter) -> None:
    """The sample (one patient, with a specimen) and a second PATIENT_RESULT whose PID
    names no ID number, with a specimen of its own."""
    data = (SAMPLES / "ORU_R01_lab-results.hl7").read_bytes()
    second = [
        "PID|2||||ANONYME^Dominique||19700101|U",
        "OBR|1||LAB-X-1^SIL-GLYCINE^1.2.250.1.999.1.20^ISO|1988-5^CRP^LN|||20240314073000+0100"
        "|||||||||||||||20240314090000+0100||CH|F",
        "OBX|1|NM|1988-5^CRP^LN||12|mg/L|||||F",
        "SPM|1|SPEC-X-1&SIL-GLYCINE||BLD^Sang^HL70487",
    ]
    before, _ = convert_one(converter, data)
    bundle, warnings = convert_one(converter, message([*lines(data), *second]))
    assert len(resources(bundle, "Patient")) == 2
    assert any(w.startswith("PID[2] names no patient identifier") for w in warnings)
    assert len(resources(bundle, "Specimen")) == len(resources(before, "Specimen")) + 1


PD1 = "PD1||||10105678907^GUERIN^Mathilde^^^Dr^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS"


@pytest.mark.parametrize("with_pd1", [False, True], ids=["no-PD1", "PD1"])
@pytest.mark.parametrize(
    "sample", ["VXU_V04_immunization.hl7", "DFT_P03_charges.hl7", "PPR_PC1_add-problem.hl7"]
)
def test_without_pid_is_refused_at_pid(converter: Converter, sample: str, with_pd1: bool) -> None:
    """Without PD1, the patient was none (VXU: Immunizations without patient); with a
    PD1, a Patient made of PD1 alone (no identifier) stood for the patient."""
    kept = [
        line
        for line in lines((SAMPLES / sample).read_bytes())
        if line.split("|", 1)[0] not in ("PID", "PD1")
    ]
    at = 2 if kept[1].startswith("EVN|") else 1  # where PID was
    edited = message([*kept[:at], *([PD1] if with_pd1 else []), *kept[at:]])
    with pytest.raises(MappingError) as caught:
        converter.convert(edited)
    assert caught.value.location == "PID"
    assert "the patient (PID) is missing" in str(caught.value)


def test_oru_specimen_owners_follow_an_override_of_the_patient_identity(tmp_path: Path) -> None:
    """Which patient owns a specimen is asked of Patient.j2 itself
    (``reference_if_identified``), not of a copy of its identity rule in ORU_R01.j2: an
    override identifying patients by name makes two patients without ID number sending
    one specimen id two owners, each with a Specimen told apart by the patient."""
    override = tmp_path / "hl7v2" / "resources"
    override.mkdir(parents=True)
    (override / "Patient.j2").write_text(
        '{"resourceType": "Patient", "_identity": ["by-name", {{ pid[5][1][1] }}],'
        ' "name": [{"family": {{ pid[5][1][1] }}}]}',
        encoding="utf-8",
    )
    head = "MSH|^~\\&|LAB|SIL|EAI|CH|20240314090000+0100||ORU^R01^ORU_R01|OWN-1|P|2.5.1"
    groups = [
        f"PID|1||||{family}^Dominique||19700101|U\r"
        f"OBR|1||LAB-{n}^SIL^1.2.250.1.999.1.20^ISO|1988-5^CRP^LN|||20240314073000+0100\r"
        "OBX|1|NM|1988-5^CRP^LN||12|mg/L|||||F\r"
        "SPM|1|SPEC-SHARED&SIL||BLD^Sang^HL70487"
        for n, family in enumerate(["MARTIN", "DURAND"])
    ]
    data = message([head, *"\r".join(groups).split("\r")])
    overridden = Converter(
        ConverterConfig(default_timezone="Europe/Paris", template_dirs=(tmp_path,))
    )
    bundle, warnings = convert_one(overridden, data)
    assert len(resources(bundle, "Patient")) == 2
    assert len(resources(bundle, "Specimen")) == 2
    assert sum("also the specimen id of another patient's SPM" in w for w in warnings) == 2
    # Built in, neither patient has an identity: their specimens are nobody's, one.
    builtin = Converter(ConverterConfig(default_timezone="Europe/Paris"))
    bundle, warnings = convert_one(builtin, data)
    assert not any("also the specimen id of another patient's SPM" in w for w in warnings)
