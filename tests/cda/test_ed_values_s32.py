"""An observation value of type ED with Base64 data (a result's image or report).

Its Base64 was written as it came: data that was not Base64 failed validation and
refused the whole document; it is now left out with a warning naming the value. An ED
without mediaType had an attachment without contentType (R4 att-1: data needs one);
CDA's default media type, text/plain, is written.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from converter import Converter, ConverterConfig, MappingError

from ._support import CCD_SAMPLE

_FIRST_RESULT_VALUE = re.compile(
    rb'(<observation classCode="OBS" moodCode="EVN">\s*'
    rb'<templateId root="2.16.840.1.113883.10.20.22.4.2".*?)(<value [^>]*/>)',
    re.DOTALL,
)
VALUE_ATTACHMENT = (
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Observation.valueAttachment"
)


@pytest.fixture(scope="module", params=[True, False], ids=["strict", "lenient"])
def converter(request: pytest.FixtureRequest) -> Converter:
    return Converter(ConverterConfig(default_timezone="Europe/Paris", strict_values=request.param))


def with_value(value: bytes) -> bytes:
    """The CCD sample whose first result observation has ``value``."""
    document = CCD_SAMPLE.read_bytes()
    found = _FIRST_RESULT_VALUE.search(document)
    assert found is not None
    return document[: found.start(2)] + value + document[found.end(2) :]


def attachments(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        extension["valueAttachment"]
        for entry in bundle["entry"]
        if entry["resource"]["resourceType"] == "Observation"
        for extension in entry["resource"].get("extension", [])
        if extension["url"] == VALUE_ATTACHMENT
    ]


@pytest.mark.parametrize(
    ("media", "expected"), [("", "text/plain"), (' mediaType="image/png"', "image/png")]
)
def test_base64_data_is_attached_with_a_content_type(
    converter: Converter, media: str, expected: str
) -> None:
    value = f'<value xsi:type="ED" representation="B64"{media}>\n SGVsbG8g\n d29ybGQ=\n</value>'
    [conversion] = converter.convert(with_value(value.encode()), input_type="cda")
    assert attachments(conversion.bundle) == [{"contentType": expected, "data": "SGVsbG8gd29ybGQ="}]


@pytest.mark.parametrize(
    "data", ["SGVsbG8?d29ybGQ=", "SGVsbG8gd29ybGQ"], ids=["alphabet", "length"]
)
def test_data_that_is_not_base64_is_left_out_with_a_warning(
    converter: Converter, data: str
) -> None:
    value = f'<value xsi:type="ED" representation="B64" mediaType="image/png">{data}</value>'
    [conversion] = converter.convert(with_value(value.encode()), input_type="cda")  # validated
    assert attachments(conversion.bundle) == []
    [warning] = [w for w in conversion.warnings if "not valid Base64" in w]
    assert (
        warning.startswith("/ClinicalDocument/component/structuredBody/") and "/value:" in warning
    )


# -- an IVL_PQ value whose low is above its high (FHIR rng-2) ------------------------------
def _ivl(low: str, high: str) -> bytes:
    return (
        f'<value xsi:type="IVL_PQ"><low value="{low.split()[0]}" unit="{low.split()[1]}"/>'
        f'<high value="{high.split()[0]}" unit="{high.split()[1]}"/></value>'
    ).encode()


def _ranges(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        entry["resource"]["valueRange"]
        for entry in bundle["entry"]
        if "valueRange" in entry["resource"]
    ]


@pytest.mark.parametrize(
    ("low", "high"),
    [
        ("10 mg", "5 mg"),
        ("1 g", "500 mg"),
        ("200 mg/dL", "1 g/L"),
        ("2 h", "90 min"),
        ("1 mg", "500 mcg"),  # written ug (map CdaUcumUnit): compared as written
    ],
)
def test_an_inverted_interval_is_an_invalid_value(low: str, high: str) -> None:
    """Written as a Range, it broke rng-2 (low above high) without a word; now an invalid
    value: a MappingError at the value in strict mode, one warning and the value left out
    (dataAbsentReason error) in lenient mode. Bounds in two units are compared in UCUM
    (1 g to 500 mg was a Range a validating server refuses)."""
    data = with_value(_ivl(low, high))
    strict = Converter(ConverterConfig(default_timezone="Europe/Paris"))
    with pytest.raises(MappingError) as caught:
        strict.convert(data, input_type="cda")
    assert caught.value.location is not None and caught.value.location.endswith("/value")
    assert "low is above its high" in str(caught.value)
    lenient = Converter(ConverterConfig(default_timezone="Europe/Paris", strict_values=False))
    [conversion] = lenient.convert(data, input_type="cda")
    assert _ranges(conversion.bundle) == []
    about_value = [w for w in conversion.warnings if "/value" in w or "low is above" in w]
    assert len(about_value) == 1 and "low is above its high" in about_value[0], about_value
    [absent] = [
        entry["resource"]["dataAbsentReason"]
        for entry in conversion.bundle["entry"]
        if "dataAbsentReason" in entry["resource"]
    ]
    assert absent["coding"][0]["code"] == "error"


@pytest.mark.parametrize(
    ("low", "high"),
    [
        ("5 mg", "10 mg"),
        ("500 mg", "1 g"),
        ("1 mg", "1500 mcg"),
        ("1 g", "1000 mg"),  # equal
        ("60 min", "1 h"),
        ("5 g", "2 mL"),  # two dimensions: not compared
        ("5 {tbl}", "2 {capsule}"),  # two annotations: not compared
        ("2 {tbl}", "10 {tbl}"),
        ("5 tablet", "2 mg"),  # a unit UCUM's table here does not know: not compared
    ],
)
def test_an_ordered_or_incomparable_interval_is_a_range(low: str, high: str) -> None:
    strict = Converter(ConverterConfig(default_timezone="Europe/Paris"))
    [conversion] = strict.convert(with_value(_ivl(low, high)), input_type="cda")
    [written] = _ranges(conversion.bundle)
    assert (written["low"]["unit"], written["high"]["unit"]) == (low.split()[1], high.split()[1])


@pytest.mark.parametrize(("low", "high"), [("abc mg", "5 mg"), ("7 mg", "x5 mg")])
def test_a_bound_that_is_no_number_is_reported_as_before(low: str, high: str) -> None:
    """The order of the bounds is compared only between numbers (comparing a bound the
    lenient mode had dropped raised a TypeError in the template)."""
    data = with_value(_ivl(low, high))
    strict = Converter(ConverterConfig(default_timezone="Europe/Paris"))
    with pytest.raises(MappingError, match="not a number"):
        strict.convert(data, input_type="cda")
    lenient = Converter(ConverterConfig(default_timezone="Europe/Paris", strict_values=False))
    [conversion] = lenient.convert(data, input_type="cda")
    assert [w for w in conversion.warnings if w.startswith("not a number")], conversion.warnings


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lenient"])
def test_an_inverted_dose_interval_is_an_invalid_value(strict: bool) -> None:
    """A doseQuantity low 2 / high 1 was a doseRange breaking rng-2."""
    document = CCD_SAMPLE.read_bytes()
    inverted = document.replace(
        b'<doseQuantity value="1"/>',
        b'<doseQuantity><low value="2"/><high value="1"/></doseQuantity>',
        1,
    )
    assert inverted != document
    converter = Converter(ConverterConfig(default_timezone="Europe/Paris", strict_values=strict))
    if strict:
        with pytest.raises(MappingError) as caught:
            converter.convert(inverted, input_type="cda")
        assert str(caught.value.location).endswith("/doseQuantity")
    else:
        [conversion] = converter.convert(inverted, input_type="cda")
        assert "doseRange" not in json.dumps(conversion.bundle, default=str)
        assert [w for w in conversion.warnings if "low is above its high" in w]
