"""Session 25, HL7 v2 fields the v2-to-FHIR IG maps that the templates left out.

- PD1-6 handicap is the Patient's patient-disability extension (IG PD1[Patient] row 6),
  PD1-14 place of worship its patient-congregation (row 14, the XON's name): both were
  dropped.
- OBX-33 related specimen (v2.8+) is Observation.specimen (IG OBX[Observation] row 33,
  one repetition): the Specimen of the message's SPM whose SPM-2 it names, else a
  reference by identifier. An order with several SPMs gave its results no specimen at
  all. Several repetitions are not mapped (the IG's R5 extension points to a Group of
  specimens, which R4 cannot hold), with a warning.
- MDM, PPR and REF structures have no PD1 (HL7 v2.5 and v2.8.2, and the IG's message
  maps): a PD1 a sender adds after PID is read all the same, its new fields too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from tests.support.hl7_edit import (
    by_reference,
    convert_one,
    insert_after,
    message,
    resources,
    segment,
    set_field,
)
from tests.support.r4validator import R4Validator

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
ADMISSION = (SAMPLES / "ADT_A01_admission-full.hl7").read_bytes()
DISABILITY = "http://hl7.org/fhir/StructureDefinition/patient-disability"
CONGREGATION = "http://hl7.org/fhir/StructureDefinition/patient-congregation"


def _extensions(resource: dict[str, Any], url: str) -> list[dict[str, Any]]:
    return [e for e in resource.get("extension", []) if e["url"] == url]


def _patient(converter: Converter, data: bytes) -> dict[str, Any]:
    bundle, _ = convert_one(converter, data)
    return resources(bundle, "Patient")[0]


# --- PD1-6 handicap, PD1-14 place of worship -------------------------------------------------


def test_pd1_6_handicap_is_the_patient_disability_extension(
    converter: Converter, r4validator: R4Validator
) -> None:
    data = set_field(ADMISSION, "PD1", 6, "PARA^Paraplégie^99HAND")
    bundle, _ = convert_one(converter, data)
    patient = resources(bundle, "Patient")[0]
    # Table 0295 is user-defined: the local system is no URI, the code and text are kept.
    assert _extensions(patient, DISABILITY) == [
        {
            "url": DISABILITY,
            "valueCodeableConcept": {"coding": [{"code": "PARA", "display": "Paraplégie"}]},
        }
    ]
    assert r4validator.validate(bundle) == []


def test_a_pd1_6_code_without_system_gets_no_made_up_table_system(converter: Converter) -> None:
    # v2.5 PD1-6 is an IS; table 0295 has no published code system (no v2-0295 URI).
    patient = _patient(converter, set_field(ADMISSION, "PD1", 6, "B"))
    [extension] = _extensions(patient, DISABILITY)
    assert extension["valueCodeableConcept"] == {"coding": [{"code": "B"}]}


def test_pd1_14_place_of_worship_is_the_congregation_name(
    converter: Converter, r4validator: R4Validator
) -> None:
    # The first repetition names nothing: the congregation is the first named one (the
    # extension holds one string).
    data = set_field(ADMISSION, "PD1", 14, "~Paroisse Saint-Jean^^^^^CULTE&1.2.3&ISO~Temple")
    bundle, _ = convert_one(converter, data)
    patient = resources(bundle, "Patient")[0]
    assert _extensions(patient, CONGREGATION) == [
        {"url": CONGREGATION, "valueString": "Paroisse Saint-Jean"}
    ]
    assert r4validator.validate(bundle) == []


def test_a_place_of_worship_named_only_by_xon_10_is_kept(converter: Converter) -> None:
    # IG XON[string]: XON.10 (organization identifier) when XON.1 is empty.
    patient = _patient(converter, set_field(ADMISSION, "PD1", 14, "^^^^^^^^^MOSQ-12"))
    assert _extensions(patient, CONGREGATION) == [{"url": CONGREGATION, "valueString": "MOSQ-12"}]


def test_without_pd1_6_and_14_the_patient_has_neither_extension(converter: Converter) -> None:
    patient = _patient(converter, ADMISSION)
    assert _extensions(patient, DISABILITY) == [] == _extensions(patient, CONGREGATION)


# --- PD1 in MDM, PPR and REF (not in their standard structures) ------------------------------


@pytest.mark.parametrize(
    "sample",
    ["MDM_T02_discharge-summary.hl7", "PPR_PC1_add-problem.hl7", "REF_I12_referral.hl7"],
)
def test_a_pd1_added_to_mdm_ppr_or_ref_is_read(converter: Converter, sample: str) -> None:
    pd1 = segment("PD1", {6: "PARA^Paraplégie^99HAND", 12: "Y", 14: "Paroisse Saint-Jean"})
    data = insert_after((SAMPLES / sample).read_bytes(), "PID|", pd1)
    patient = _patient(converter, data)
    assert [label["code"] for label in patient["meta"]["security"]] == ["R"]
    assert [
        e["valueCodeableConcept"]["coding"][0]["code"] for e in _extensions(patient, DISABILITY)
    ] == ["PARA"]
    assert [e["valueString"] for e in _extensions(patient, CONGREGATION)] == ["Paroisse Saint-Jean"]


# --- OBX-33 related specimen -----------------------------------------------------------------

SERUM = "SPM|1|S1&SIH^F1&LAB||SER^Serum^HL70487"
URINE = "SPM|2|S2&SIH^F2&LAB||UR^Urine^HL70487"


def _oru(obx33: str, spms: tuple[str, ...] = (SERUM, URINE)) -> bytes:
    """A v2.8.2 ORU^R01: one order, one sodium result with OBX-33, then the order's SPMs."""
    return message(
        [
            "MSH|^~\\&|LAB^1.2.250.1.999.1.20^ISO|CHU^1.2.250.1.999.1.1^ISO|PASSERELLE|GHT|"
            "20240521143015+0200||ORU^R01^ORU_R01|LAB-S25-1|P|2.8.2",
            "PID|1||P1^^^CHU&1.2.250.1.999.1.1&ISO^MR||MARTIN^Jeanne||19800101|F",
            "ORC|RE|CMD1^SIH^1.2.250.1.999.1.10^ISO|LAB1^LAB^1.2.250.1.999.1.20^ISO",
            "OBR|1|CMD1^SIH^1.2.250.1.999.1.10^ISO|LAB1^LAB^1.2.250.1.999.1.20^ISO|2951-2^Sodium^LN",
            segment(
                "OBX",
                {
                    1: "1",
                    2: "NM",
                    3: "2951-2^Sodium^LN",
                    5: "139",
                    6: "mmol/L^^UCUM",
                    11: "F",
                    33: obx33,
                },
            ),
            *spms,
        ]
    )


def _result_and_specimens(
    converter: Converter, data: bytes
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], list[str], dict[str, Any]]:
    """The result, the Specimens by SPM-2 placer value, the warnings and the bundle."""
    bundle, warnings = convert_one(converter, data)
    [result] = resources(bundle, "Observation")
    specimens = {s["identifier"][0]["value"]: s for s in resources(bundle, "Specimen")}
    return result, specimens, warnings, bundle


def test_obx_33_names_which_of_the_orders_specimens_the_result_was_measured_on(
    converter: Converter, r4validator: R4Validator
) -> None:
    result, specimens, warnings, bundle = _result_and_specimens(converter, _oru("S2&SIH"))
    assert result["specimen"] == {"reference": f"Specimen/{specimens['S2']['id']}"}
    assert warnings == []
    assert r4validator.validate(bundle) == []


def test_obx_33_may_name_the_specimen_by_its_filler_part(converter: Converter) -> None:
    result, specimens, _, _ = _result_and_specimens(converter, _oru("^F1&LAB"))
    assert result["specimen"] == {"reference": f"Specimen/{specimens['S1']['id']}"}


def test_obx_33_overrides_the_orders_only_specimen(converter: Converter) -> None:
    # With one SPM the result was given that Specimen; OBX-33 naming another one wins.
    result, specimens, _, _ = _result_and_specimens(converter, _oru("S9&SIH", (SERUM,)))
    assert result["specimen"] == {
        "type": "Specimen",
        "identifier": {
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PGN"}
                ]
            },
            "value": "S9",
            "assigner": {"display": "SIH"},
        },
    }
    assert list(specimens) == ["S1"]


def test_several_obx_33_repetitions_are_not_mapped_with_a_warning(converter: Converter) -> None:
    result, _, warnings, _ = _result_and_specimens(converter, _oru("S1&SIH~S2&SIH"))
    assert "specimen" not in result
    assert [w for w in warnings if w.startswith("OBX-33")] == [
        "OBX-33: several related specimens; FHIR R4 Observation.specimen names one (the IG's "
        "extension points to a Group of specimens, which R4 cannot hold): not mapped"
    ]


def test_an_order_obx_before_its_spm_names_the_bundles_specimen_in_conditional_mode() -> None:
    """OML: the order's OBX (fasting status) comes before its SPM; in the conditional
    modes a reference to a Specimen not yet written would be ``Specimen/id``, naming
    nothing on the server."""
    sample = (SAMPLES / "OML_O21_lab-order.hl7").read_bytes()
    data = set_field(sample, "OBX", 33, "CMD-2024-0411-01-S1&SIH-ORCHIDEE")
    converter = Converter(
        ConverterConfig(default_timezone="Europe/Paris", request_mode="conditional-update")
    )
    bundle, _ = convert_one(converter, data)
    [fasting] = resources(bundle, "Observation")
    reference = fasting["specimen"]["reference"]
    [entry] = [e for e in bundle["entry"] if e.get("fullUrl") == reference]
    assert entry["resource"]["resourceType"] == "Specimen"
    # The Specimen is the one the SPM gives without OBX-33: nothing added nor lost.
    [alone] = resources(convert_one(converter, sample)[0], "Specimen")
    assert entry["resource"] == alone


def test_obx_33_specimen_is_the_one_by_reference_in_put_mode(converter: Converter) -> None:
    bundle, _ = convert_one(converter, _oru("S1&SIH"))
    [result] = resources(bundle, "Observation")
    specimen = by_reference(bundle, result["specimen"]["reference"])
    assert specimen["type"]["coding"][0]["code"] == "SER"


# --- PV2-1 prior pending location: not mapped (a departure) ----------------------------------


def test_a26_prior_pending_location_is_not_announced_as_planned(converter: Converter) -> None:
    """PV2-1 is the destination of the pending transfer an A26 cancels (required there,
    HL7 v2.5 §3.3.26). The IG lists it as a ``planned`` Encounter.location: R4 has no
    ``cancelled`` location status, so it is left out (the Encounter, replaced whole, no
    longer lists the A15's ``reserved`` PV1-42)."""
    a15 = (SAMPLES / "ADT_A15_pending-transfer.hl7").read_bytes()
    [pv1] = [line for line in a15.decode().split("\r") if line.startswith("PV1|")]
    pending = pv1.split("|")[42]
    assert pending.startswith("SSR^204")
    data = set_field(a15, "MSH", 9, "ADT^A26^ADT_A21")
    data = set_field(data, "EVN", 1, "A26")
    data = set_field(data, "PV1", 42, "")
    data = set_field(data, "PV2", 1, pending)
    bundle, warnings = convert_one(converter, data)
    [encounter] = resources(bundle, "Encounter")
    assert [entry["status"] for entry in encounter["location"]] == ["active"]
    assert not [place for place in resources(bundle, "Location") if place.get("name") == "204"]
    assert warnings == []
