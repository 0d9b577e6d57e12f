"""HL7 v2 coded values (CWE / CE / CNE) and OBX-6 units as FHIR codings
(datatypes/codes.j2, datatypes/quantities.j2, the ``fhir_code``, ``coding_system`` and
``unit_coding`` filters), on small ORU messages built here.

- A code holding a run of blanks (``GLU  SER``, a tab) is written with one space and a
  warning naming the field: R4's code pattern refused it, and with it the whole message,
  in lenient mode too.
- A coding system that names no URI (HL7 table 0396's local ``L`` and ``99zzz``, a name no
  map knows) keeps the code and its display without ``system``: the name was written as
  Coding.system (``"system": "L"``), a relative URI, the same "L" for every sender. A local
  CWE.3 is no HL7 table either: the field's table is the system only when CWE.3 is empty.
- Names of table 0396 with a published URI the map lacked: CDCPHINVS, WC (WHO ATC), DCM,
  I9CP.
- OBX-6 with UCUM in the alternate triplet (``mg/dL^…^L^mg/dL^^UCUM``) gives the Quantity
  its UCUM system and code; only CWE.1-3 were read.
- CWE.7 / CWE.8 (coding system versions) and CWE.10-13 (the second alternate triplet,
  v2.7+) are the codings' ``version`` and a third coding (IG CWE[CodeableConcept]); they
  were dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter
from tests.support.hl7_edit import convert_one, message, resources, set_field
from tests.support.r4validator import R4Validator

HEADER = [
    "MSH|^~\\&|SIL-GLYCINE|CHU-NANTES^1.2.250.1.999.1.3^ISO|PASSERELLE|GHT|20240520101500+0200||"
    "ORU^R01^ORU_R01|LAB-ORU-20240520-0077|P|2.8|||AL|NE||UNICODE UTF-8",
    "PID|1||0045100230^^^CHU-NANTES&1.2.250.1.999.1.3&ISO^MR||LEROUX^Maëlle||19850612|F",
    "ORC|RE|BIO-07^SIH-ORCHIDEE|LAB2405200077^SIL-GLYCINE||CM",
    "OBR|1|BIO-07^SIH-ORCHIDEE|LAB2405200077^SIL-GLYCINE|BIOCHIM^Biochimie^LN|||"
    "20240520070000+0200|||||||||||||||20240520100000+0200||CH|F",
]
UCUM = "http://unitsofmeasure.org"
SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"


def _observations(converter: Converter, *obx: str) -> tuple[list[dict[str, Any]], list[str]]:
    bundle, warnings = convert_one(converter, message([*HEADER, *obx]))
    return resources(bundle, "Observation"), warnings


def test_a_code_with_a_run_of_blanks_is_one_space_not_a_refused_message(
    converter: Converter, r4validator: R4Validator
) -> None:
    data = message(
        [
            *HEADER,
            "OBX|1|CWE|GLU  SER^Glucose sérum^L||POS\tFORT^Positif fort^L||||||F",
        ]
    )
    bundle, warnings = convert_one(converter, data)
    [observation] = resources(bundle, "Observation")
    assert observation["code"]["coding"] == [{"code": "GLU SER", "display": "Glucose sérum"}]
    assert observation["valueCodeableConcept"]["coding"][0]["code"] == "POS FORT"
    blanks = [w for w in warnings if "blanks inside the code" in w]
    assert blanks == [
        "blanks inside the code at OBX-3.1 written as one space",
        "blanks inside the code at OBX-5.1 written as one space",
    ]
    assert r4validator.validate(bundle) == []


def test_a_code_with_single_spaces_is_kept_without_a_warning(converter: Converter) -> None:
    [observation], warnings = _observations(converter, "OBX|1|ST| GLU SER ^Glucose^L||x||||||F")
    assert observation["code"]["coding"] == [{"code": "GLU SER", "display": "Glucose"}]
    assert not [w for w in warnings if "blanks" in w]


def test_local_coding_systems_keep_the_code_without_a_system(
    converter: Converter, r4validator: R4Validator
) -> None:
    obx = "OBX|1|CWE|GLY^Glycémie^L^2345-7^Glucose^LN||A^Groupe A^99LAB|||H^Haut^L~N^^HL70078|||F"
    bundle, _ = convert_one(converter, message([*HEADER, obx]))
    [observation] = resources(bundle, "Observation")
    assert observation["code"]["coding"] == [
        {"code": "GLY", "display": "Glycémie"},
        {"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"},
    ]
    assert observation["valueCodeableConcept"] == {"coding": [{"code": "A", "display": "Groupe A"}]}
    high, normal = observation["interpretation"]
    # A local CWE.3 is not table 0078; an empty one, or HL70078, is.
    assert {"code": "H", "display": "Haut"} in high["coding"]
    assert not [c for c in high["coding"] if c.get("system", "").endswith("v2-0078")]
    v2_normal = {"system": "http://terminology.hl7.org/CodeSystem/v2-0078", "code": "N"}
    assert v2_normal in normal["coding"]
    assert r4validator.validate(bundle) == []


@pytest.mark.parametrize(
    ("name", "uri"),
    [
        (
            "CDCPHINVS",
            "https://phinvads.cdc.gov/vads/ViewCodeSystem.action?id=2.16.840.1.114222.4.5.274",
        ),
        ("WC", "http://www.whocc.no/atc"),
        ("DCM", "http://dicom.nema.org/resources/ontology/DCM"),
        ("I9CP", "http://hl7.org/fhir/sid/icd-9-cm"),
        ("HL70163", "http://terminology.hl7.org/CodeSystem/v2-0163"),
    ],
)
def test_table_0396_names_give_their_uris(converter: Converter, name: str, uri: str) -> None:
    [observation], _ = _observations(converter, f"OBX|1|ST|X1^Test^{name}||x||||||F")
    assert observation["code"]["coding"] == [{"system": uri, "code": "X1", "display": "Test"}]


@pytest.mark.parametrize(
    "unit",
    [
        "mg/dL^milligrams per deciliter^L^mg/dL^^UCUM",  # local first, UCUM alternate
        "MGDL^milligrams per deciliter^1.2.250.1.999.7^mg/dL^^UCUM",  # UCUM beats an OID
        "mg/dL^milligrams per deciliter^UCUM^MGDL^^99LAB",
    ],
)
def test_ucum_in_any_triplet_gives_the_quantity_its_system_and_code(
    converter: Converter, unit: str
) -> None:
    [observation], _ = _observations(
        converter, f"OBX|1|NM|2345-7^Glucose^LN||132|{unit}|70-110|||F"
    )
    ucum = {"unit": "milligrams per deciliter", "system": UCUM, "code": "mg/dL"}
    assert observation["valueQuantity"] == {"value": 132, **ucum}
    [reference] = observation["referenceRange"]
    assert reference["low"] == {"value": 70, **ucum}


def test_a_unit_without_a_uri_in_any_triplet_is_its_text_alone(converter: Converter) -> None:
    unit = "mg/dL^milligrams per deciliter^L^MGDL^^99LAB"
    [observation], _ = _observations(converter, f"OBX|1|NM|2345-7^Glucose^LN||132|{unit}|||||F")
    assert observation["valueQuantity"] == {"value": 132, "unit": "milligrams per deciliter"}


def test_coding_versions_and_the_second_alternate_triplet(
    converter: Converter, r4validator: R4Validator
) -> None:
    value = "A^Groupe A^99LAB^278149003^Groupe A^SCT^^20240301^Groupe A (texte)^A1^A one^LN^2.77"
    [observation], _ = _observations(
        converter, f"OBX|1|CWE|882-1^ABO Rh^LN^^^^2.68||{value}||||||F"
    )
    assert observation["code"]["coding"] == [
        {"system": "http://loinc.org", "version": "2.68", "code": "882-1", "display": "ABO Rh"}
    ]
    assert observation["valueCodeableConcept"] == {
        "coding": [
            {"code": "A", "display": "Groupe A"},
            {
                "system": "http://snomed.info/sct",
                "version": "20240301",
                "code": "278149003",
                "display": "Groupe A",
            },
            {"system": "http://loinc.org", "version": "2.77", "code": "A1", "display": "A one"},
        ],
        "text": "Groupe A (texte)",
    }
    bundle, _ = convert_one(
        converter, message([*HEADER, f"OBX|1|CWE|882-1^ABO Rh^LN^^^^2.68||{value}||||||F"])
    )
    assert r4validator.validate(bundle) == []


def test_historical_dose_origin_keeps_no_bare_system(converter: Converter) -> None:
    """RXA-9 `01^…^NIP001` (no published URI for NIP001): the origin coding without a
    system, beside the immunization-origin one; `"system": "NIP001"` used to be written."""
    vxu = (SAMPLES / "VXU_V04_immunization.hl7").read_bytes()
    data = set_field(vxu, "RXA", 9, "01^Historical information - source unspecified^NIP001")
    bundle, _ = convert_one(converter, data)
    immunization = resources(bundle, "Immunization")[0]
    codings = immunization["reportOrigin"]["coding"]
    assert {"code": "01", "display": "Historical information - source unspecified"} in codings
    assert all(c.get("system") != "NIP001" for c in codings)


def test_observation_category_code_with_blanks_inside(converter: Converter) -> None:
    """OBX-29 (table 0936) goes through fhir_code as the other codes do."""
    observations, warnings = _observations(
        converter, "OBX|1|NM|2345-7^Glucose^LN||5.2|mmol/L^^UCUM|||||F" + "|" * 18 + "RS\tLT"
    )
    [observation] = observations
    codes = [c["code"] for cat in observation.get("category", []) for c in cat["coding"]]
    assert "RS LT" in codes
    assert any("OBX-29" in w for w in warnings if "blanks inside the code" in w)


def test_an_identifier_type_with_blanks_inside_is_one_space(converter: Converter) -> None:
    """CX.5 goes through fhir_code too (an unmapped type with a run of blanks refused the
    whole message)."""
    pid = (
        "PID|1||0045100230^^^CHU-NANTES&1.2.250.1.999.1.3&ISO^LOCAL  TYPE"
        "||LEROUX^Maëlle||19850612|F"
    )
    bundle, warnings = convert_one(converter, message([HEADER[0], pid, *HEADER[2:]]))
    [patient] = resources(bundle, "Patient")
    assert patient["identifier"][0]["type"]["coding"][0]["code"] == "LOCAL TYPE"
    assert any("PID-3" in w for w in warnings if "blanks inside the code" in w)
