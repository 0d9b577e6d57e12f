"""Value filters as templates use them: timestamps, numbers, booleans, codes, systems."""

from __future__ import annotations

import json
import unicodedata
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from converter.errors import MappingError, TemplateError
from converter.templates.filters import ValueFilters
from tests.templates.test_render import (
    MESSAGE,
    ROOT,
    make_session,
    make_templates,
    parse,
    render,
    write_templates,
)

REPO = Path(__file__).resolve().parents[2]
UUID = "6F9619FF-8B86-D011-B42D-00C04FC964FF"
HEADER = "source_code,source_system,target_code,target_display,target_system,comment\n"


@pytest.fixture(scope="module")
def codemaps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("codemaps")
    (directory / "Sex.csv").write_text(
        HEADER
        + "F,,female,Female,http://hl7.org/fhir/administrative-gender,\n"
        + "M,HL70001,male,Male,http://hl7.org/fhir/administrative-gender,\n"
        + "M,LOCAL,other,Other,http://hl7.org/fhir/administrative-gender,\n"
        + "U,,,,,no equivalent\n",
        encoding="utf-8",
    )
    (directory / "CodingSystem.csv").write_text(
        HEADER + "LN,,http://loinc.org,,,\n", encoding="utf-8"
    )
    (directory / "AssigningAuthority.csv").write_text(
        HEADER + "HOSP-A,,urn:oid:1.2.3.4,,,\n", encoding="utf-8"
    )
    return directory


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, codemaps: Path) -> Any:
    builtin = tmp_path_factory.mktemp("builtin")
    return make_templates(builtin, zone="Europe/Paris", codemaps=[codemaps]).environment


def value(env: Any, expression: str, **variables: Any) -> Any:
    return json.loads(
        env.from_string("{{ " + expression + " }}").render(**variables), parse_float=Decimal
    )


# --- timestamps ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "date", "date_time"),
    [
        ("2024", "2024", "2024"),
        ("202403", "2024-03", "2024-03"),
        ("20240312", "2024-03-12", "2024-03-12"),
        ("2024031210", "2024-03-12", "2024-03-12T10:00:00+01:00"),
        ("202403121015", "2024-03-12", "2024-03-12T10:15:00+01:00"),
        ("20240312101530", "2024-03-12", "2024-03-12T10:15:30+01:00"),
        ("20240712101530.1234", "2024-07-12", "2024-07-12T10:15:30.1234+02:00"),
        ("20240312101530-0500", "2024-03-12", "2024-03-12T10:15:30-05:00"),
        (" 20240312 ", "2024-03-12", "2024-03-12"),
    ],
)
def test_timestamp_filters(env: Any, text: str, date: str, date_time: str) -> None:
    assert value(env, "v | fhir_date", v=text) == date
    assert value(env, "v | fhir_datetime", v=text) == date_time


def test_instant_and_time_filters(env: Any) -> None:
    assert value(env, "v | fhir_instant", v="202401151030") == "2024-01-15T10:30:00+01:00"
    assert value(env, "v | fhir_time", v="1030") == "10:30:00"
    assert value(env, "v | fhir_time", v="103015.5") == "10:30:15"


@pytest.mark.parametrize(
    "name", ["fhir_date", "fhir_datetime", "fhir_instant", "fhir_time", "decimal", "integer"]
)
def test_absent_values_give_null(env: Any, name: str) -> None:
    assert value(env, f"v | {name}", v=None) is None
    assert value(env, f"v | {name}", v="") is None
    assert value(env, f"v | {name}", v="   ") is None
    assert value(env, f"msg.PID[40] | {name}", msg=parse()) is None


def test_timestamp_filters_take_hl7_values(env: Any) -> None:
    assert value(env, "msg.PID[7] | fhir_date", msg=parse()) == "1985-03-12"
    assert value(env, "msg.MSH[7] | fhir_instant", msg=parse()) == "2024-03-16T10:15:44+01:00"


@pytest.mark.parametrize(
    ("expression", "bad"),
    [
        ("fhir_date", "20241341"),
        ("fhir_datetime", "20240230"),
        ("fhir_instant", "20240312"),
        ("fhir_time", "2500"),
        ("fhir_datetime", "20240312101560"),  # second 60 that is no leap second
        ("decimal", "12,5"),
        ("integer", "1.5"),
        ("boolean", "maybe"),
        # Digits of other scripts: int() and Decimal() read them, FHIR does not.
        ("decimal", "\u0666\u0668.\u0665"),  # Arabic-Indic 68.5
        ("decimal", "\uff11\uff16\uff15"),  # fullwidth 165
        ("integer", "\uff11\uff16\uff15"),
        ("integer", "\u0967\u0968"),  # Devanagari 12
    ],
)
def test_invalid_values_are_located_errors_or_lenient_warnings(
    tmp_path: Path, expression: str, bad: str
) -> None:
    builtin = write_templates(
        tmp_path,
        {
            ROOT: '{% do emit("X") %}',
            "hl7v2/resources/X.j2": '{"resourceType": "Basic",\n'
            '"v": {{ msg.PID[7] | ' + expression + ' }}, "code": "c"}',
        },
    )
    message = parse(MESSAGE.replace(b"19850312", bad.encode()))
    with pytest.raises(MappingError) as caught:
        render(make_session(builtin, message=message))
    error = caught.value
    assert type(error) is MappingError
    assert error.location == "PID-7"
    assert error.template == "hl7v2/resources/X.j2:2"
    assert error.detail == bad
    assert bad not in str(error)

    lenient = make_session(builtin, message=message, strict=False)
    resources = render(lenient)
    assert [{k: v for k, v in r.items() if k != "id"} for r in resources] == [
        {"resourceType": "Basic", "code": "c"}
    ]
    assert len(lenient.warnings) == 1
    assert lenient.warnings[0].endswith(" at PID-7; value dropped")
    assert bad not in lenient.warnings[0]


def test_an_invalid_plain_string_has_no_location(env: Any) -> None:
    with pytest.raises(MappingError) as caught:
        value(env, "v | fhir_date", v="garbage")
    assert caught.value.location is None
    assert caught.value.detail == "garbage"


# --- numbers and booleans ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12", 12),
        ("-3", -3),
        ("+7", 7),
        ("1.5", Decimal("1.5")),
        (".5", Decimal("0.5")),
        ("1e3", 1000),  # written positionally
        (" 2 ", 2),
        # Precision is kept: trailing zeros are significant figures.
        ("7.20", Decimal("7.20")),
        ("-0.050", Decimal("-0.050")),
        ("12345678901234567890.123456789", Decimal("12345678901234567890.123456789")),
    ],
)
def test_decimal(env: Any, text: str, expected: Any) -> None:
    result = value(env, "v | decimal", v=text)
    assert result == expected
    assert type(result) is type(expected)
    assert str(result) == str(expected)


def test_a_decimal_no_server_can_hold_is_invalid(env: Any) -> None:
    with pytest.raises(MappingError, match="number out of range"):
        value(env, "v | decimal", v="1e999")


def test_integer(env: Any) -> None:
    assert value(env, "v | integer", v="0042") == 42
    assert value(env, "v | integer", v="-1") == -1


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Y", True), ("y", True), ("N", False), ("no", False), ("1", True), ("F", False)],
)
def test_boolean(env: Any, text: str, expected: bool) -> None:
    assert value(env, "v | boolean", v=text) is expected


# --- codes -----------------------------------------------------------------------------------


def test_map_code_and_codemap(env: Any) -> None:
    assert value(env, 'v | map_code("Sex")', v="F") == "female"
    assert value(env, 'v | map_code("Sex")', v="f") == "female"  # case-insensitive fallback
    assert value(env, 'v | map_code("Sex")', v="X") is None
    assert value(env, 'v | map_code("Sex")', v="U") is None  # "no equivalent" row
    assert value(env, 'v | map_code("Sex", "LOCAL")', v="M") == "other"
    assert value(env, 'v | map_code("Sex", "HL70001")', v="M") == "male"
    assert value(env, 'codemap("Sex", v)', v="F") == {
        "system": "http://hl7.org/fhir/administrative-gender",
        "code": "female",
        "display": "Female",
    }
    assert value(env, 'v | map_coding("Sex")', v="M") == {
        "system": "http://hl7.org/fhir/administrative-gender",
        "code": "male",
        "display": "Male",
    }
    assert value(env, 'codemap("Sex", v)', v=None) is None
    assert value(env, 'msg.PID[8] | map_code("Sex")', msg=parse()) == "male"


def test_an_unknown_code_map_is_a_template_error(env: Any) -> None:
    with pytest.raises(TemplateError):
        value(env, 'v | map_code("NoSuchMap")', v="F")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("LN", "http://loinc.org"),
        ("HL70203", "http://terminology.hl7.org/CodeSystem/v2-0203"),
        ("1.2.250.1.213", "urn:oid:1.2.250.1.213"),
        ("1.2.\u0662\u0665\u0660", "1.2.\u0662\u0665\u0660"),  # Arabic-Indic digits: no OID
        ("HL7\u0660\u0662\u0660\u0663", "HL7\u0660\u0662\u0660\u0663"),  # nor a v2 table
        (UUID, f"urn:uuid:{UUID.lower()}"),
        ("99LAB", "99LAB"),
        ("has space", None),
        ("", None),
    ],
)
def test_code_system(env: Any, name: str, expected: str | None) -> None:
    assert value(env, "v | code_system", v=name) == expected
    assert value(env, "code_system(v)", v=name) == expected


@pytest.mark.parametrize(
    ("cx4", "expected"),
    [
        ("HOSP&1.2.3&ISO", "urn:oid:1.2.3"),
        ("&1.2.3", "urn:oid:1.2.3"),
        ("&http://example.org/ids&URI", "http://example.org/ids"),
        ("&6F9619FF-8B86-D011-B42D-00C04FC964FF&UUID", f"urn:uuid:{UUID.lower()}"),
        ("HOSP-A", "urn:oid:1.2.3.4"),  # local namespace mapped by AssigningAuthority
        ("HOSP-B", None),  # unmapped local name: no system
        ("1.2.9", "urn:oid:1.2.9"),
        ("", None),
        # HD.3 says ISO, HD.2 is no OID: kept as a name when it can be a uri, else none.
        ("HOSP&CHU-LYON&ISO", "CHU-LYON"),
        ("HOSP&1.2.UNICODE UTF-16.1&ISO", None),
        ("HOSP&1.2\\.br\\3&ISO", None),
    ],
)  # fmt: skip
def test_hd_system(env: Any, cx4: str, expected: str | None) -> None:
    message = parse(MESSAGE.replace(b"HOSP&1.2.3&ISO", cx4.encode()))
    assert value(env, "hd_system(msg.PID[3][4])", msg=message) == expected
    assert value(env, "msg.PID[3][4] | hd_system", msg=message) == expected


def test_hd_system_of_an_ei(env: Any) -> None:
    message = parse(MESSAGE + b"ORC|NW|ORD1^LAB^1.2.3.4.5^ISO\r")
    assert value(env, "hd_system(msg.ORC[2], 2)", msg=message) == "urn:oid:1.2.3.4.5"


@pytest.fixture(scope="module")
def site_env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The built-in code maps behind a site's own AssigningAuthority map."""
    site = tmp_path_factory.mktemp("site-codemaps")
    (site / "AssigningAuthority.csv").write_text(
        HEADER
        + "DPI-ERABLE,,1.2.250.1.999.2.20,,,an OID\n"
        + "LABO,,http://labo.example.org/ids,,,a URI\n"
        + "ADELI,,,,,no target: a local name here\n"
        + "FINESS,,1.2.250.1.999.77,,,the site's own reading wins\n",
        encoding="utf-8",
    )
    builtin = tmp_path_factory.mktemp("builtin-site")
    codemaps = [site, REPO / "mappings" / "codemaps"]
    return make_templates(builtin, zone="Europe/Paris", codemaps=codemaps).environment


@pytest.mark.parametrize(
    ("cx4", "expected"),
    [
        # A national namespace alone is the system its full HD gives.
        ("ASIP-SANTE-PS", "urn:oid:1.2.250.1.71.4.2.1"),
        ("asip-sante-ps", "urn:oid:1.2.250.1.71.4.2.1"),
        ("ASIP-SANTE-PS&&ISO", "urn:oid:1.2.250.1.71.4.2.1"),
        ("ASIP-SANTE-INS-NIR", "urn:oid:1.2.250.1.213.1.4.8"),
        ("ASIP-SANTE-INS-NIA", "urn:oid:1.2.250.1.213.1.4.9"),
        ("RPPS", "urn:oid:1.2.250.1.71.4.2.1"),
        ("ASIP-SANTE-ST", "urn:oid:1.2.250.1.71.4.2.2"),
        # An HD.2 always wins over its namespace's alias: those ids never change.
        ("ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO", "urn:oid:1.2.250.1.71.4.2.1"),
        ("ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO", "urn:oid:1.2.250.1.213.1.4.10"),
        ("DPI-ERABLE&1.2.3&ISO", "urn:oid:1.2.3"),
        # The site's map: an OID target is an OID, a URI kept, an empty target a local
        # name (not the national ADELI), and its row before the built-in one.
        ("DPI-ERABLE", "urn:oid:1.2.250.1.999.2.20"),
        ("LABO", "http://labo.example.org/ids"),
        ("ADELI", None),
        ("FINESS", "urn:oid:1.2.250.1.999.77"),
        ("HOSP-B", None),
    ],
)  # fmt: skip
def test_hd_system_of_a_known_namespace(site_env: Any, cx4: str, expected: str | None) -> None:
    message = parse(MESSAGE.replace(b"HOSP&1.2.3&ISO", cx4.encode()))
    assert value(site_env, "hd_system(msg.PID[3][4])", msg=message) == expected


def test_hd_system_of_an_ei_with_a_known_namespace(site_env: Any) -> None:
    full = parse(MESSAGE + b"ORC|NW|PHA-11^DPI-ERABLE^1.2.250.1.999.2.20^ISO\r")
    bare = parse(MESSAGE + b"ORC|NW|PHA-11^DPI-ERABLE\r")
    expected = "urn:oid:1.2.250.1.999.2.20"
    assert value(site_env, "hd_system(msg.ORC[2], 2)", msg=full) == expected
    assert value(site_env, "hd_system(msg.ORC[2], 2)", msg=bare) == expected


def test_every_built_in_namespace_alias_is_an_oid() -> None:
    """AssigningAuthorityOid targets are universal ids of ISO type: an alias that is no
    OID would give a system no full HD of that authority ever gives."""
    import csv
    import re

    path = REPO / "mappings" / "codemaps" / "AssigningAuthorityOid.csv"
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows
    for row in rows:
        assert re.fullmatch(r"[0-2](\.(0|[1-9]\d*))+", row["target_code"]), row["source_code"]
        assert row["comment"], row["source_code"]


# --- b64encode and require -----------------------------------------------------------------


def test_b64encode_keeps_the_whole_text_as_utf8(env: Any) -> None:
    import base64

    text = "  Compte rendu\nÉvolution favorable  \n"
    encoded = value(env, "text | b64encode", text=text)
    assert base64.b64decode(encoded).decode("utf-8") == text
    assert value(env, "'' | b64encode") is None


@given(payload=st.binary(max_size=300), wrap=st.sampled_from(["\n", "\r\n", " ", "\t"]))
def test_base64_data_unwraps_what_base64_wrapped(env: Any, payload: bytes, wrap: str) -> None:
    import base64

    encoded = base64.b64encode(payload).decode("ascii")
    wrapped = wrap.join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    expected = encoded or None  # nothing to attach: none
    assert value(env, "text | base64_data", text=f"{wrap}{wrapped}{wrap}") == expected


@given(
    text=st.one_of(
        st.text(max_size=40),
        st.text(alphabet="ABCZaz09+/= \n\r\t\u00a0é?-_", max_size=40),
    )
)
def test_base64_data_is_what_fhirs_base64binary_pattern_accepts(env: Any, text: str) -> None:
    """The text without whitespace when FHIR's base64Binary pattern (R5's, with the
    ``/`` R4's regex forgot) accepts it, else none (so is an empty text)."""
    import re

    compact = "".join(text.split())
    accepted = re.fullmatch(r"(?:[0-9a-zA-Z+/=]{4})+", compact)
    assert value(env, "text | base64_data", text=text) == (compact if accepted else None)


_NUMBERS = st.decimals(allow_nan=False, allow_infinity=False)


@given(low=_NUMBERS, high=_NUMBERS)
def test_range_inverted_is_low_above_high_for_numbers(env: Any, low: Any, high: Any) -> None:
    found = value(env, "range_inverted(low, high)", low=f" {low} ", high=str(high))
    assert found is (low > high)


@given(number=_NUMBERS, other=st.text(alphabet="abc ,-+.e", max_size=5), low_first=st.booleans())
def test_range_inverted_is_false_unless_both_are_numbers(
    env: Any, number: Any, other: str, low_first: bool
) -> None:
    """A bound that is no number (or absent) is reported where it is written, not here."""
    bounds = (str(number), other) if low_first else (other, str(number))
    found = value(env, "range_inverted(low, high)", low=bounds[0], high=bounds[1])
    assert found is False


@pytest.mark.parametrize(
    ("cwe", "expected"),
    [
        ("mg^milligram^LN", ["http://loinc.org", "mg"]),  # any name mapped to a URL
        (" mg ^^1.2.840.10008.2.16.4", ["urn:oid:1.2.840.10008.2.16.4", "mg"]),  # an OID
        ("mg^^99LAB", None),  # a local name is no URI: the unit text alone
        ("mg^^ISO", None),
        ("^milligram^LN", None),  # no CWE.1: nothing to code
        ("mg", None),  # no CWE.3
    ],
)
def test_unit_coding_gives_a_quantity_system_only_as_a_uri(
    env: Any, cwe: str, expected: list[str] | None
) -> None:
    from converter.hl7v2.encoding import Encoding
    from converter.hl7v2.message import Segment

    obx = Segment("OBX", ["OBX", "1", "NM", "", "", "5", cwe], Encoding(), "utf-8", "OBX")
    assert value(env, "unit_coding(obx[6])", obx=obx) == expected


def test_require_passes_values_and_names_the_missing_field(env: Any) -> None:
    from converter.hl7v2.encoding import Encoding
    from converter.hl7v2.message import Segment

    rxa = Segment("RXA", ["RXA", "0", "1", "20240315", "", ""], Encoding(), "utf-8", "RXA")
    assert value(env, "require(rxa[3], rxa[3], 'the date')", rxa=rxa) == "20240315"
    with pytest.raises(MappingError) as missing:
        value(env, "require(rxa[5], rxa[5], 'the vaccine (RXA-5)')", rxa=rxa)
    assert missing.value.reason == "the vaccine (RXA-5) is missing"
    assert missing.value.location == "RXA-5"
    absent = Segment("OBX", [], Encoding(), "utf-8", "OBX")
    with pytest.raises(MappingError) as no_segment:
        value(env, "require(obx, obx, 'the content (OBX)')", obx=absent)
    assert no_segment.value.location == "OBX"


@given(st.text(max_size=40))
def test_name_key_ignores_accents_case_and_separators(text: str) -> None:
    key = ValueFilters.name_key(text)
    # Idempotent, and the same for the text in capitals, with hyphens or apostrophes.
    assert ValueFilters.name_key(key) == key
    assert ValueFilters.name_key(text.upper()) == ValueFilters.name_key(text.lower())
    assert not any(unicodedata.combining(char) for char in key)


def test_name_key_examples() -> None:
    assert ValueFilters.name_key("Hélène-Marie") == ValueFilters.name_key("HELENE MARIE")
    assert ValueFilters.name_key("  d\u2019Artagnan ") == "d artagnan"
    assert ValueFilters.name_key(None) == ""


@pytest.mark.parametrize(
    ("fhir", "hl7"),
    [
        ("2026-11-30T10:30:00+01:00", "20261130103000+0100"),
        ("2026-11-30T10:30:00.500+01:00", "20261130103000.5+0100"),
        ("2026-11-30T10:30:00.000+01:00", "20261130103000+0100"),
        ("2026-11-30T09:30:00Z", "20261130093000+0000"),
        ("2026-11-30", "20261130"),
        ("2026-11", "202611"),
        ("2026", "2026"),
    ],
)
def test_hl7_timestamp_writes_an_instant_back_in_hl7_form(fhir: str, hl7: str) -> None:
    """The key an Encounter known by its admit time is identified by (Encounter.j2)."""
    assert ValueFilters.hl7_timestamp(fhir) == hl7


# --- FHIR codes and coding systems (codes.j2) ----------------------------------------------

UCUM = "http://unitsofmeasure.org"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GLU SER", "GLU SER"),
        (" GLU SER ", "GLU SER"),
        ("GLU  SER", "GLU SER"),  # a run of blanks: R4's code pattern refused it
        ("GLU\tSER", "GLU SER"),
        ("A\u00a0\u00a0B\u3000C", "A B C"),  # Unicode White_Space, as the validator reads \s
        ("", None),
        ("   ", None),
    ],
)
def test_fhir_code_has_single_spaces_inside(env: Any, text: str, expected: str | None) -> None:
    assert value(env, "v | fhir_code", v=text) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("LN", "http://loinc.org"),
        ("HL70203", "http://terminology.hl7.org/CodeSystem/v2-0203"),
        ("1.2.250.1.213", "urn:oid:1.2.250.1.213"),
        ("http://example.org/cs", "http://example.org/cs"),
        ("L", None),  # table 0396 local codes: no URI a receiver can resolve
        ("99LAB", None),
        ("NIP001", None),
        ("", None),
    ],
)
def test_coding_system_is_an_absolute_uri_or_nothing(
    env: Any, name: str, expected: str | None
) -> None:
    assert value(env, "coding_system(v)", v=name) == expected


@pytest.mark.parametrize(
    ("cwe", "expected"),
    [
        # (This environment's CodingSystem map has LN alone: UCUM is written as its URI.)
        ("mg/dL^milligrams per deciliter^L^mg/dL^^" + UCUM, [UCUM, "mg/dL"]),
        ("MG^^1.2.3^mg^^" + UCUM, [UCUM, "mg"]),  # UCUM before an OID
        ("MG^^1.2.3^mg^^99LAB", ["urn:oid:1.2.3", "MG"]),  # else the first URI
        ("MG^^L^^^^^^^mg^^" + UCUM, [UCUM, "mg"]),  # CWE.10-12
        ("MG^^L^mg^^99LAB", None),
        ("mg  /dL^^" + UCUM, [UCUM, "mg /dL"]),
    ],
)
def test_unit_coding_reads_every_triplet(env: Any, cwe: str, expected: list[str] | None) -> None:
    from converter.hl7v2.encoding import Encoding
    from converter.hl7v2.message import Segment

    obx = Segment("OBX", ["OBX", "1", "NM", "", "", "5", cwe], Encoding(), "utf-8", "OBX")
    assert value(env, "unit_coding(obx[6])", obx=obx) == expected


def test_name_key_of_a_mark_that_folds_to_a_letter() -> None:
    # U+0345 (iota subscript) is a combining mark whose capital is the letter U+0399: dropped
    # before case folding, a name and its capitals had two keys (found by hypothesis).
    assert ValueFilters.name_key("\u0345") == ValueFilters.name_key("\u0345".upper()) == "\u03b9"
