"""VXU^V04 (root VXU_V04.j2): the observations about the patient, outside any ORDER.

- PERSON_OBSERVATION (v2.8) OBX got ids derived from the message: each VXU repeating the
  patient's context (an immunization feed sends it with every administration) added another
  copy of the same fact. Their identity is now the visit (else the patient), OBX-3, OBX-4 and
  OBX-14, as for the OBX of ADT and SIU messages.
- An OBX sent before the first ORDER in 2.5.1 to 2.7 (whose VXU_V04 grammar has no place
  for it; the parser keeps it at the message level) was dropped without a warning.
"""

from __future__ import annotations

from converter import Converter
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import convert_one, message, resources
from tests.support.r4validator import R4Validator


def _vxu(control: str, when: str, order: str, version: str = "2.8") -> bytes:
    return message(
        [
            f"MSH|^~\\&|LOGICIEL-PMI|CENTRE-PMI-LYON3^1.2.250.1.999.3.1^ISO|PASSERELLE|GHT|"
            f"{when}+0100||VXU^V04^VXU_V04|{control}|P|{version}",
            "PID|1||0012422301^^^CHU-LYON&1.2.250.1.999.1.1&ISO^MR||GARNIER^Léa||20230915|F",
            "OBX|1|CWE|59784-9^Disease with presumed immunity^LN|1|38907003^Varicella^SCT"
            "||||||F|||20240101",
            "NTE|1|L|Varicelle à 4 mois, attestée par le médecin traitant.",
            f"ORC|RE||{order}^CENTRE-PMI-LYON3",
            f"RXA|0|1|{when}|{when}|03^MMR^CVX|0.5|mL^^UCUM",
        ]
    )


def test_person_observation_is_one_resource_across_messages(
    converter: Converter, fhir_server: FhirServer
) -> None:
    first, _ = convert_one(converter, _vxu("PMI-001", "20240315103000", "IZ-1"))
    second, _ = convert_one(converter, _vxu("PMI-002", "20240915103000", "IZ-2"))
    [before], [after] = resources(first, "Observation"), resources(second, "Observation")
    assert before["id"] == after["id"]
    fhir_server.transact(first)
    fhir_server.transact(second)
    [patient] = resources(first, "Patient")
    assert fhir_server.count("Observation", subject=f"Patient/{patient['id']}") == 1
    assert fhir_server.count("Immunization", patient=f"Patient/{patient['id']}") == 2


def test_obx_before_the_order_in_2_5_1_is_kept(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle, _ = convert_one(converter, _vxu("PMI-003", "20240315103000", "IZ-3", "2.5.1"))
    [observation] = resources(bundle, "Observation")
    [patient] = resources(bundle, "Patient")
    assert observation["code"]["coding"][0]["code"] == "59784-9"
    assert observation["subject"] == {"reference": f"Patient/{patient['id']}"}
    assert "partOf" not in observation
    assert observation["note"][0]["text"].startswith("Varicelle à 4 mois")
    same, _ = convert_one(converter, _vxu("PMI-003", "20240315103000", "IZ-3", "2.8"))
    assert resources(same, "Observation")[0]["id"] == observation["id"]
    assert r4validator.validate(bundle) == []
