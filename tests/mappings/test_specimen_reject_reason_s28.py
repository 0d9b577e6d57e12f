"""SPM-21 (specimen reject reason) → a Specimen note: CWE.2, else the display table 0490
gives the code, else the code itself. A code the table does not know, sent without text
(a lab's own `ZHEM`), failed the whole message with a TemplateError (the template read
``.display`` of no row), so the order or result was dead-lettered. Invented order."""

from __future__ import annotations

import pytest

from converter import Converter
from tests.mappings.test_specimen_scope_s26 import PID
from tests.support.hl7_edit import convert_one, message, resources
from tests.support.r4validator import R4Validator


def _oml(spm21: str) -> bytes:
    return message(
        [
            "MSH|^~\\&|SIH|CHU|LAB|CHU|20240411091522+0200||OML^O21^OML_O21|ORD-S28-1|P|2.5.1",
            PID,
            "ORC|NW|CMD28^SIH",
            "OBR|1|CMD28^SIH||2951-2^Sodium^LN",
            "SPM|1|T28^LAB||SER^Serum^HL70487" + "|" * 17 + spm21,
        ]
    )


@pytest.mark.parametrize(
    ("spm21", "note"),
    [
        ("ZHEM", "Specimen rejected: ZHEM"),
        ("ZHEM^^L", "Specimen rejected: ZHEM"),
        ("ZHEM^Hémolysé^L", "Specimen rejected: Hémolysé"),
        ("RB", "Specimen rejected: Broken container"),
        ("RB^^HL70490~ZHEM", "Specimen rejected: Broken container"),
    ],
)
def test_a_reject_reason_is_a_note_whatever_its_code(
    converter: Converter, r4validator: R4Validator, spm21: str, note: str
) -> None:
    bundle, _ = convert_one(converter, _oml(spm21))
    [specimen] = resources(bundle, "Specimen")
    assert specimen["note"][0] == {"text": note}
    assert r4validator.validate(bundle) == []
