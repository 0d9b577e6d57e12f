"""A specimen id without a system is the patient's: labs reuse short tube numbers.

An SPM-2 whose EI names no system (no universal id, no namespace a registry resolves)
identifies the Specimen with the patient, in every message: the same plain tube number on
two patients' tubes, in two ORUs of one sender, gave one Specimen id, the second
overwriting the first patient's (its subject, its type) in the warehouse. The OML and the
ORU of one order name one patient and still share the Specimen; an SPM-2 with a system
keeps the id SPM-2 alone gives. Invented patients (tests/mappings/test_specimen_scope_s26.py
builds the ORUs)."""

from __future__ import annotations

import pytest

from converter import Converter
from tests.mappings.test_specimen_scope_s26 import PID, _oru, _patient
from tests.support.hl7_edit import convert_one, message, resources
from tests.support.r4validator import R4Validator

#: With a system: the namespace's OID.
UNIVERSAL = "T123&SIH&1.2.250.1.999.1.10&ISO"


def _specimen_id(converter: Converter, data: bytes) -> str:
    bundle, _ = convert_one(converter, data)
    [specimen] = resources(bundle, "Specimen")
    return str(specimen["id"])


def _oml(spm2: str) -> bytes:
    """The order of patient P1 (PID of test_specimen_scope_s26) with one SPM."""
    return message(
        [
            "MSH|^~\\&|SIH^1.2.250.1.999.1.10^ISO|CHU^1.2.250.1.999.1.1^ISO|LAB|CHU|"
            "20240411091522+0200||OML^O21^OML_O21|ORD-S27-1|P|2.8.2",
            PID,
            "ORC|NW|CMD11^SIH^1.2.250.1.999.1.10^ISO",
            "OBR|1|CMD11^SIH^1.2.250.1.999.1.10^ISO||2951-2^Sodium^LN",
            f"SPM|1|{spm2}||SER^Serum^HL70487",
        ]
    )


@pytest.mark.parametrize(
    "plain", ["T123", "T123&LABO-LOCAL", "^T123"], ids=["value", "ns", "filler"]
)
def test_a_tube_number_without_system_is_each_patients_own(
    converter: Converter, r4validator: R4Validator, plain: str
) -> None:
    # Two ORUs of one lab, a month apart, each about one patient, the same tube number.
    first = _specimen_id(converter, _oru(_patient(1, [(plain, "")]), n=1))
    second = _specimen_id(converter, _oru(_patient(2, [(plain, "")]), n=2))
    assert first != second
    # The order and its result, about one patient, still share the Specimen.
    bundle, _ = convert_one(converter, _oml(plain))
    assert [s["id"] for s in resources(bundle, "Specimen")] == [first]
    assert r4validator.validate(bundle) == []
    # With a system the id SPM-2 gives is kept, whoever the patient.
    universal = {_specimen_id(converter, _oru(_patient(n, [(UNIVERSAL, "")]), n=n)) for n in (1, 2)}
    assert len(universal) == 1
