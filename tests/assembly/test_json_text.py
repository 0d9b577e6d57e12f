"""Bundle JSON text: decimals keep every digit they were written with."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from converter import json_dumps, json_loads
from converter.assembly.json_text import FhirDecimal

# FHIR decimals as a source writes them: sign, digits, optional fraction (zeros kept).
DECIMAL_TEXT = st.from_regex(r"-?(0|[1-9][0-9]{0,20})\.[0-9]{1,18}", fullmatch=True)


@given(DECIMAL_TEXT)
def test_decimals_round_trip_digit_for_digit(text: str) -> None:
    parsed = json_loads('{"value": ' + text + "}")
    assert isinstance(parsed["value"], FhirDecimal)
    assert json_dumps(parsed) == '{"value":' + text + "}"


def test_compact_and_pretty_text() -> None:
    bundle = {"resourceType": "Bundle", "n": [1, Decimal("7.20")], "s": "é\u2028"}
    assert json_dumps(bundle) == '{"resourceType":"Bundle","n":[1,7.20],"s":"é\u2028"}'
    assert json_dumps(bundle, pretty=True).startswith('{\n  "resourceType": "Bundle",\n')
    assert json_loads(json_dumps(bundle, pretty=True)) == bundle


def test_integers_stay_integers() -> None:
    assert json_loads('{"n": 12, "big": 123456789012345678901234567890}') == {
        "n": 12,
        "big": 123456789012345678901234567890,
    }
