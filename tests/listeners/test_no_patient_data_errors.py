"""Conversion error texts never quote patient data, whatever raised them.

``str(error)`` and ``error.reason`` go where operators and other systems read them:
``passerelle dead-letters list`` and ``show`` without ``--payload``, the AMQP
dead-letter headers (``x-passerelle-error-reason``) and ``passerelle convert`` without
``--verbose``. Only ``error.detail`` may hold the offending value. Two reasons quoted it:
hl7apy's text in strict mode (a value too long for its datatype is written bare), and
Jinja's text for a key a template looks up in a table (``'dict object' has no attribute
'DUPONT'``), which an override template reaches with a message's value.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from converter import ConversionError, Converter, ConverterConfig, ParseError, TemplateError
from converter.cli_output import failure_line
from listeners.amqp.envelope import error_headers
from listeners.conversion import ConversionFailure

REPO = Path(__file__).resolve().parents[2]
SAMPLE = (REPO / "samples" / "hl7v2" / "ADT_A08_update-patient.hl7").read_bytes()
FAMILY = "ZZPRIVFAMILY"


def _operator_texts(error: ConversionError) -> list[str]:
    """Every text of the error that reaches an operator or a broker without --payload."""
    failure = ConversionFailure.from_error(error)
    headers = error_headers(failure.as_record())
    return [
        str(error),
        error.reason,
        failure_line(Path("in/adt.hl7"), error, verbose=False),
        *(str(value) for value in headers.values()),
    ]


def test_strict_mode_does_not_quote_a_value_too_long_for_its_datatype() -> None:
    identifier = "PRIVID" + "7" * 300  # over CX.1's maximum length
    assert b"|0012345678^" in SAMPLE
    message = SAMPLE.replace(b"|0012345678^", f"|{identifier}^".encode(), 1)
    Converter(ConverterConfig()).convert(message)  # tolerant by default
    with pytest.raises(ParseError) as refused:
        Converter(ConverterConfig(strict_hl7=True)).convert(message)
    error = refused.value
    for text in _operator_texts(error):
        assert "PRIVID" not in text, text
    assert "exceeds the maximum length" in error.reason
    assert error.hl7_error_code == "102"
    # The value stays reachable for whoever may read the message (--verbose, --payload).
    assert error.detail is not None and "PRIVID" in error.detail
    assert "PRIVID" in failure_line(Path("in/adt.hl7"), error, verbose=True)


def test_an_override_template_looking_a_value_up_does_not_quote_it(tmp_path: Path) -> None:
    resources = tmp_path / "hl7v2" / "resources"
    resources.mkdir(parents=True)
    # A table lookup by the patient's family name: the key is missing from the table.
    (resources / "Patient.j2").write_text(
        '{% set sexes = {"F": "female", "M": "male"} %}\n'
        '{"resourceType": "Patient", "gender": {{ sexes[pid[5][1] | string] }}}\n'
    )
    message = SAMPLE.replace(b"|DUPONT^", f"|{FAMILY}^".encode(), 1)
    assert FAMILY.encode() in message
    converter = Converter(ConverterConfig(template_dirs=(tmp_path,)))
    with pytest.raises(TemplateError) as failed:
        converter.convert(message)
    error = failed.value
    for text in _operator_texts(error):
        assert FAMILY not in text, text
    assert error.reason == "undefined in template: 'dict object' has no attribute …"
    assert error.template == f"{resources / 'Patient.j2'}:2"
    assert error.detail is not None and FAMILY in error.detail


def test_an_undefined_variable_keeps_its_name(tmp_path: Path) -> None:
    # The name of a template variable comes from the template, not the message: kept.
    resources = tmp_path / "hl7v2" / "resources"
    resources.mkdir(parents=True)
    (resources / "Patient.j2").write_text(
        '{"resourceType": "Patient", "gender": {{ no_such_variable }}}\n'
    )
    with pytest.raises(TemplateError) as failed:
        Converter(ConverterConfig(template_dirs=(tmp_path,))).convert(SAMPLE)
    assert failed.value.reason == "undefined in template: 'no_such_variable' is undefined"
