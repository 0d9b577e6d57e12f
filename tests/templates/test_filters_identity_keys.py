"""Filters behind identities and identifier systems: registry systems of v2 HDs, the admit
time key of an instant sent with any offset, and a sending facility's scope."""

from __future__ import annotations

import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from converter.datetimes import TimestampConverter
from converter.templates.codemaps import CodeMaps
from converter.templates.filters import ValueFilters
from converter.templates.identity_filters import as_uri
from tests.templates.test_render import MESSAGE, parse

REPO = Path(__file__).resolve().parents[2]
BUILTIN = REPO / "mappings" / "codemaps"
HEADER = "source_code,source_system,target_code,target_display,target_system,comment\n"
PARIS = TimestampConverter("Europe/Paris")
UUID = "6f9619ff-8b86-d011-b42d-00c04fc964ff"


@pytest.fixture(scope="module")
def builtin() -> ValueFilters:
    return ValueFilters(PARIS, CodeMaps.load([BUILTIN]), strict=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> ValueFilters:
    """A site naming its facility's OID (as a bare OID, and one as a URN), and keeping a
    namespace the built-in map knows local."""
    directory = tmp_path_factory.mktemp("site-codemaps")
    (directory / "AssigningAuthority.csv").write_text(
        HEADER
        + "CHU-LYON,,1.2.250.1.999.1.1,,,the hospital\n"
        + "CHU-NORD,,urn:oid:1.2.250.1.999.1.2,,,a hospital written as a URN\n"
        + "LABO,,http://labo.example.org/ids,,,a URI\n"
        + "FINESS,,,,,a local list\n",
        encoding="utf-8",
    )
    return ValueFilters(PARIS, CodeMaps.load([directory, BUILTIN]), strict=True)


# -- identifier_system: the registry URI of an hd_system value ---------------------------


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        ("urn:oid:2.16.840.1.113883.4.1", "http://hl7.org/fhir/sid/us-ssn"),
        ("URN:OID:2.16.840.1.113883.4.6", "http://hl7.org/fhir/sid/us-npi"),
        ("2.16.840.1.113883.4.1", "http://hl7.org/fhir/sid/us-ssn"),  # a CDA root
        ("urn:oid:1.2.250.1.213.1.4.8", "urn:oid:1.2.250.1.213.1.4.8"),
        ("urn:oid:2.16.840.1.113883.4.1.5", "urn:oid:2.16.840.1.113883.4.1.5"),
        ("http://hl7.org/fhir/sid/us-ssn", "http://hl7.org/fhir/sid/us-ssn"),
        (f"urn:uuid:{UUID}", f"urn:uuid:{UUID}"),
        ("99LAB", "99LAB"),
        ("", None),
        (None, None),
    ],
)  # fmt: skip
def test_identifier_system_of_an_hd_system(
    builtin: ValueFilters, system: str | None, expected: str | None
) -> None:
    assert builtin.identifier_system(system) == expected


def test_hd_system_keeps_the_urn_identities_are_made_of(builtin: ValueFilters) -> None:
    """Only Identifier.system reads the registry: hd_system, which scopes identities, does
    not, so ids stay what they were."""
    message = parse(MESSAGE.replace(b"HOSP&1.2.3&ISO", b"USSSA&2.16.840.1.113883.4.1&ISO"))
    assert builtin.hd_system(message.PID[3][4]) == "urn:oid:2.16.840.1.113883.4.1"


# -- hl7_timestamp in a zone: one key per instant ------------------------------------------


@pytest.mark.parametrize(
    ("fhir", "key"),
    [
        # At the zone's offset (every time sent without one): kept, the key of today.
        ("2026-01-02T10:00:00+01:00", "20260102100000+0100"),
        ("2026-07-15T10:00:00+02:00", "20260715100000+0200"),
        # Another offset: the zone's wall clock.
        ("2026-01-02T09:00:00Z", "20260102100000+0100"),
        ("2026-01-02T09:00:00+00:00", "20260102100000+0100"),
        ("2026-01-02T04:00:00-05:00", "20260102100000+0100"),
        ("2026-07-15T09:00:00+01:00", "20260715100000+0200"),
        ("2026-01-01T23:30:00Z", "20260102003000+0100"),
        ("2026-01-02T09:00:00.250Z", "20260102100000.25+0100"),
        # Autumn: 02:30 occurs twice; each keeps its offset.
        ("2026-10-25T02:30:00+02:00", "20261025023000+0200"),
        ("2026-10-25T02:30:00+01:00", "20261025023000+0100"),
        ("2026-10-25T01:30:00Z", "20261025023000+0100"),
        ("2026-10-25T00:30:00Z", "20261025023000+0200"),
        # Spring: 02:30 does not exist; as read without an offset (+01:00) it is kept.
        ("2026-03-29T02:30:00+01:00", "20260329023000+0100"),
        # Dates, a leap second, out of range, local mean time: as written.
        ("2026-01-02", "20260102"),
        ("2026-01", "202601"),
        ("2016-12-31T23:59:60Z", "20161231235960+0000"),
        ("9999-12-31T23:30:00-05:00", "99991231233000-0500"),
        ("1900-01-01T10:00:00+00:00", "19000101100000+0000"),
    ],
)
def test_hl7_timestamp_in_the_configured_zone(fhir: str, key: str) -> None:
    zone = ZoneInfo("Europe/Paris")  # the zone PARIS reads times without an offset in
    assert ValueFilters.hl7_timestamp(fhir, zone) == key


def test_the_filter_reads_the_configured_zone(builtin: ValueFilters) -> None:
    assert builtin.hl7_timestamp_key("2026-01-02T09:00:00Z") == "20260102100000+0100"
    utc = ValueFilters(TimestampConverter("UTC"), CodeMaps.load([BUILTIN]), strict=True)
    assert utc.hl7_timestamp_key("2026-01-02T10:00:00+01:00") == "20260102090000+0000"
    assert builtin.filters()["hl7_timestamp"]("2026-01-02T04:00:00-05:00") == (
        "20260102100000+0100"
    )


# -- a sending facility's scope -----------------------------------------------------------


def facility(msh4: str) -> object:
    return parse(MESSAGE.replace(b"|FAC|", f"|{msh4}|".encode(), 1)).MSH[4]


@pytest.mark.parametrize(
    ("msh4", "scope"),
    [
        ("CHU-LYON^1.2.250.1.999.1.1^ISO", "1.2.250.1.999.1.1"),
        ("CHU-LYON", "1.2.250.1.999.1.1"),  # the site's map names its OID
        ("CHU-NORD", "1.2.250.1.999.1.2"),
        ("CHU-NORD^1.2.250.1.999.1.2^ISO", "1.2.250.1.999.1.2"),
        ("LABO", "http://labo.example.org/ids"),
        ("CHU-SUD", "CHU-SUD"),  # unknown: the namespace, as before
        ("FINESS", "FINESS"),  # the site keeps it local
        ("ASIP-SANTE-ST", "1.2.250.1.71.4.2.2"),  # the built-in map
        ("CHU-LYON^1.2.3^ISO", "1.2.3"),  # an HD.2 wins over the alias
    ],
)
def test_facility_scope_reads_the_namespace_aliases(
    site: ValueFilters, msh4: str, scope: str
) -> None:
    assert site.facility_scope(facility(msh4)) == scope


def test_facility_scope_without_aliases_is_the_message_s(builtin: ValueFilters) -> None:
    """Where no map knows MSH-4, the scope is Message.facility_scope's: ids kept."""
    for msh4 in ("CHU-LYON", "CHU-LYON^1.2.250.1.999.1.1^ISO", "CH^^ISO"):
        message = parse(MESSAGE.replace(b"|FAC|", f"|{msh4}|".encode(), 1))
        assert builtin.facility_scope(message.MSH[4]) == message.facility_scope


def test_a_name_with_any_unicode_blank_is_no_uri() -> None:
    """``as_uri`` keeps a name without blanks; a blank is whatever ``str.isspace`` calls
    one (NBSP, the ideographic space, the C0 separators...), not only ASCII spaces."""
    for point in range(sys.maxunicode + 1):
        char = chr(point)
        if 0xD800 <= point <= 0xDFFF:
            continue
        expected = None if char.isspace() else f"A{char}B"
        assert as_uri(f"A{char}B") == expected, hex(point)
