"""Session 26: the specimens of a result are its own patient's.

- OBX-33 related specimen names an SPM of the OBX's own PATIENT_RESULT (its
  ORDER_OBSERVATION's first): it matched the first SPM of the whole message with that
  SPM-2, so in an ORU about two patients whose lab numbers specimens per order, the
  second patient's result pointed to the first patient's Specimen.
- An SPM-2 that two patients' SPMs carry gives each patient a Specimen (IG ORU_R01 row
  4.2.7.1: a Specimen per SPM of each PATIENT_RESULT), told apart by the patient, with a
  warning: it was one Specimen, its subject the first patient, which the second
  patient's report listed too (and the merge warned of the second subject).
- One patient keeps the Specimen id SPM-2 alone gives (what the OML and the ORU of an
  order share), also when the message repeats him in several PATIENT_RESULT groups.
"""

from __future__ import annotations

from typing import Any

import pytest

from converter import Converter, ConverterConfig
from converter.errors import BundleValidationError
from tests.support.hl7_edit import by_reference, convert_one, message, resources, segment
from tests.support.r4validator import R4Validator

MSH = (
    "MSH|^~\\&|LAB^1.2.250.1.999.1.20^ISO|CHU^1.2.250.1.999.1.1^ISO|PASSERELLE|GHT|"
    "20240521143015+0200||ORU^R01^ORU_R01|LAB-S26-{n}|P|2.8.2"
)
SHARED_WARNING = (
    ": SPM-2 is also the specimen id of another patient's SPM in this message: each "
    "patient's Specimen is told apart by the patient (its id is not the one SPM-2 alone gives)"
)


def _patient(n: int, orders: list[tuple[str, str]]) -> list[str]:
    """A PATIENT_RESULT: patient ``n`` with one order per (SPM-2, OBX-33) pair, each a
    sodium result naming its specimen by OBX-33, then the order's SPM."""
    found = [f"PID|1||P{n}^^^CHU&1.2.250.1.999.1.1&ISO^MR||MARTIN^Patient{n}||19800101|F"]
    for k, (spm2, obx33) in enumerate(orders, start=1):
        number = f"{n}{k}"
        found += [
            f"ORC|RE|CMD{number}^SIH^1.2.250.1.999.1.10^ISO|LAB{number}^LAB^1.2.250.1.999.1.20^ISO",
            f"OBR|1|CMD{number}^SIH^1.2.250.1.999.1.10^ISO|LAB{number}^LAB^1.2.250.1.999.1.20^ISO"
            "|2951-2^Sodium^LN",
            segment(
                "OBX",
                {1: "1", 2: "NM", 3: "2951-2^Sodium^LN", 5: f"13{n}", 6: "mmol/L^^UCUM", 11: "F"}
                | ({33: obx33} if obx33 else {}),
            ),
            f"SPM|1|{spm2}||SER^Serum^HL70487",
        ]
    return found


def _oru(*patients: list[str], n: int = 1) -> bytes:
    return message([MSH.format(n=n), *(line for p in patients for line in p)])


def _subject_of(resource: dict[str, Any]) -> str:
    return str(resource["subject"]["reference"])


def test_each_patients_result_names_its_own_patients_specimen(
    converter: Converter, r4validator: R4Validator
) -> None:
    # Both labs' orders number their tube "1" in the same namespace.
    data = _oru(_patient(1, [("1&SIH", "1&SIH")]), _patient(2, [("1&SIH", "1&SIH")]))
    bundle, warnings = convert_one(converter, data)
    specimens = resources(bundle, "Specimen")
    assert len(specimens) == 2
    assert len({_subject_of(s) for s in specimens}) == 2
    results = resources(bundle, "Observation")
    assert len(results) == 2
    for result in results:
        specimen = by_reference(bundle, result["specimen"]["reference"])
        assert specimen["subject"] == result["subject"]
    for report in resources(bundle, "DiagnosticReport"):
        [listed] = report["specimen"]
        assert by_reference(bundle, listed["reference"])["subject"] == report["subject"]
    # Said once per SPM, by its position only (no specimen id: logs carry no patient data);
    # no "emitted twice with different values" of the merge.
    assert warnings == ["SPM" + SHARED_WARNING, "SPM[2]" + SHARED_WARNING]
    assert r4validator.validate(bundle) == []


def test_an_id_only_another_patients_spm_carries_is_a_reference_by_identifier(
    converter: Converter,
) -> None:
    # Patient 2's result names specimen 7, which only patient 1's SPM carries.
    data = _oru(_patient(1, [("7&SIH", "")]), _patient(2, [("8&SIH", "7&SIH")]))
    bundle, warnings = convert_one(converter, data)
    [_, second] = resources(bundle, "Observation")
    assert second["specimen"] == {
        "type": "Specimen",
        "identifier": {
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PGN"}
                ]
            },
            "value": "7",
            "assigner": {"display": "SIH"},
        },
    }
    assert {s["identifier"][0]["value"]: _subject_of(s) for s in resources(bundle, "Specimen")} == {
        "7": _subject_of(resources(bundle, "Observation")[0]),
        "8": _subject_of(second),
    }
    assert warnings == []


def test_a_single_patient_keeps_the_specimen_id_spm_2_gives(converter: Converter) -> None:
    alone, warnings = convert_one(converter, _oru(_patient(1, [("S1&SIH", "S1&SIH")])))
    [specimen] = resources(alone, "Specimen")
    [result] = resources(alone, "Observation")
    assert result["specimen"] == {"reference": f"Specimen/{specimen['id']}"}
    assert warnings == []
    # The same SPM in a message about two patients whose specimen ids differ: same id.
    both, warnings = convert_one(
        converter, _oru(_patient(1, [("S1&SIH", "S1&SIH")]), _patient(2, [("S2&SIH", "S2&SIH")]))
    )
    assert specimen["id"] in {s["id"] for s in resources(both, "Specimen")}
    assert warnings == []


def test_one_patient_in_two_patient_results_sharing_a_tube_has_one_specimen(
    converter: Converter,
) -> None:
    # The same patient repeated per PATIENT_RESULT, one tube for both orders: no sharing
    # between patients, so the Specimen SPM-2 gives, named by both results.
    single, _ = convert_one(converter, _oru(_patient(1, [("S1&SIH", "S1&SIH")])))
    [alone] = resources(single, "Specimen")
    bundle, warnings = convert_one(
        converter, _oru(_patient(1, [("S1&SIH", "S1&SIH")]), _patient(1, [("S1&SIH", "S1&SIH")]))
    )
    assert [s["id"] for s in resources(bundle, "Specimen")] == [alone["id"]]
    assert {r["specimen"]["reference"] for r in resources(bundle, "Observation")} == {
        f"Specimen/{alone['id']}"
    }
    assert warnings == []


def test_obx_33_names_its_own_orders_spm_before_another_orders(converter: Converter) -> None:
    # Order 1's SPM carries filler number F1 only; order 2's SPM carries placer P9 and the
    # same filler F1 (a Specimen identified by P9). Order 2's result naming F1 was measured
    # on its own order's specimen, the one its report lists.
    data = _oru(_patient(1, [("^F1&LAB", "^F1&LAB"), ("P9&SIH^F1&LAB", "^F1&LAB")]))
    bundle, _ = convert_one(converter, data)
    [first, second] = resources(bundle, "DiagnosticReport")
    [r1, r2] = resources(bundle, "Observation")
    assert r1["specimen"] == first["specimen"][0]
    assert r2["specimen"] == second["specimen"][0]
    assert r1["specimen"] != r2["specimen"]


def test_a_universal_specimen_id_two_patients_carry_fails_in_the_conditional_modes() -> None:
    """With a system (SPM-2 namespace with an OID) the id is the Specimen's conditional
    search: the server would write the two patients' specimens as one resource. The bundle
    is refused, naming the reuse, as for any two resources of a type sharing that search."""
    converter = Converter(
        ConverterConfig(default_timezone="Europe/Paris", request_mode="conditional-update")
    )
    universal = "1&SIH&1.2.250.1.999.1.10&ISO"
    data = _oru(_patient(1, [(universal, universal)]), _patient(2, [(universal, universal)]))
    with pytest.raises(BundleValidationError, match="two Specimen resources share the identifier"):
        converter.convert(data)
    # In put mode each patient's Specimen is written by its id.
    bundle, _ = convert_one(Converter(ConverterConfig(default_timezone="Europe/Paris")), data)
    assert len(resources(bundle, "Specimen")) == 2


PID = "PID|1||P1^^^CHU&1.2.250.1.999.1.1&ISO^MR||MARTIN^Jeanne||19800101|F"
# Order 1's SPM-2: the filler number F1 only; order 2's: placer P9 with the same filler F1.
FILLER_ONLY, PLACER_TOO = "^F1&LAB", "P9&SIH^F1&LAB"


def _sodium(value: str) -> str:
    return segment(
        "OBX", {1: "1", 2: "NM", 3: "2951-2^Sodium^LN", 5: value, 11: "F", 33: FILLER_ONLY}
    )


@pytest.mark.parametrize("kind", ["OML^O21^OML_O21", "OMG^O19^OMG_O19"])
def test_an_order_obx_names_its_own_orders_spm_first(converter: Converter, kind: str) -> None:
    data = message(
        [
            "MSH|^~\\&|SIH^1.2.250.1.999.1.10^ISO|CHU^1.2.250.1.999.1.1^ISO|LAB|CHU|"
            f"20240411091522+0200||{kind}|ORD-S26-1|P|2.8.2",
            PID,
            *(
                line
                for n, spm2 in ((1, FILLER_ONLY), (2, PLACER_TOO))
                for line in (
                    f"ORC|NW|CMD{n}^SIH^1.2.250.1.999.1.10^ISO",
                    f"OBR|{n}|CMD{n}^SIH^1.2.250.1.999.1.10^ISO||2951-2^Sodium^LN",
                    _sodium(f"13{n}"),
                    f"SPM|1|{spm2}||SER^Serum^HL70487",
                )
            ),
        ]
    )
    bundle, _ = convert_one(converter, data)
    requests = resources(bundle, "ServiceRequest")
    answers = resources(bundle, "Observation")
    assert [a["specimen"] for a in answers] == [r["specimen"][0] for r in requests]
    assert answers[0]["specimen"] != answers[1]["specimen"]


def test_an_oul_r22_result_names_its_own_specimen_first(converter: Converter) -> None:
    data = message(
        [
            "MSH|^~\\&|LAB^1.2.250.1.999.1.20^ISO|CHU^1.2.250.1.999.1.1^ISO|PASSERELLE|GHT|"
            "20240521143015+0200||OUL^R22^OUL_R22|OUL-S26-1|P|2.8.2",
            PID,
            *(
                line
                for n, spm2 in ((1, FILLER_ONLY), (2, PLACER_TOO))
                for line in (
                    f"SPM|{n}|{spm2}||SER^Serum^HL70487",
                    f"OBR|1|CMD{n}^SIH^1.2.250.1.999.1.10^ISO|LAB{n}^LAB^1.2.250.1.999.1.20^ISO"
                    "|2951-2^Sodium^LN",
                    f"ORC|SC|CMD{n}^SIH^1.2.250.1.999.1.10^ISO|LAB{n}^LAB^1.2.250.1.999.1.20^ISO",
                    _sodium(f"13{n}"),
                )
            ),
        ]
    )
    bundle, _ = convert_one(converter, data)
    reports = resources(bundle, "DiagnosticReport")
    results = resources(bundle, "Observation")
    assert [r["specimen"] for r in results] == [d["specimen"][0] for d in reports]
    assert results[0]["specimen"] != results[1]["specimen"]
