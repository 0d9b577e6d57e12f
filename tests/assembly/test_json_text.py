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


# The bundle text of a conversion (compact_bundle: the standard library's encoder, decimals
# put back) is byte for byte what json_dumps writes.
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=6)
    | st.sampled_from(["\x00", 'a"\x00', "\\u0000", '"\\u0000"', "é\u2028", "\ud800"])
    | DECIMAL_TEXT.map(FhirDecimal)
    | st.sampled_from([Decimal("1E+3"), Decimal("-0.00"), FhirDecimal("0.0000000")]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=4), JSON_VALUES, max_size=4))
def test_compact_bundle_text_is_json_dumps_text(bundle: dict[str, object]) -> None:
    from converter.assembly.json_text import compact_bundle

    assert compact_bundle(bundle) == json_dumps(bundle)


def test_compact_bundle_falls_back_for_what_only_simplejson_writes() -> None:
    import re

    import pytest

    from converter.assembly.json_text import compact_bundle

    class Other:
        pass

    for value in ({"n": float("nan")}, {"o": Other()}, {"d": Decimal("NaN")}):
        with pytest.raises((ValueError, TypeError)) as expected:
            json_dumps(value)
        with pytest.raises(expected.type, match=re.escape(str(expected.value))):
            compact_bundle(value)
