"""Session 30: ``coding_system``, ``code_system`` and ``identifier_system`` work each
name's answer out once per converter (a C-CDA document names a few code systems and
authorities hundreds of times). The answers are the same the first time and after;
names are message content, so the answers kept are bounded."""

from __future__ import annotations

import pytest

from converter.datetimes import TimestampConverter
from converter.templates import filter_base
from converter.templates.codemaps import CodeMaps
from converter.templates.filters import ValueFilters
from tests.conftest import REPO_ROOT

BUILTIN = REPO_ROOT / "mappings" / "codemaps"
PARIS = TimestampConverter("Europe/Paris")

_SYSTEMS = {
    "2.16.840.1.113883.6.1": ("http://loinc.org", "http://loinc.org"),
    " LN ": ("http://loinc.org", "http://loinc.org"),
    "HL70001": (
        "http://terminology.hl7.org/CodeSystem/v2-0001",
        "http://terminology.hl7.org/CodeSystem/v2-0001",
    ),
    "99LAB": ("99LAB", None),  # a local name: no Coding.system
    "1.2.250.1.999": ("urn:oid:1.2.250.1.999", "urn:oid:1.2.250.1.999"),
}


def _filters() -> ValueFilters:
    return ValueFilters(PARIS, CodeMaps.load([BUILTIN]), strict=True)


@pytest.mark.parametrize("name", sorted(_SYSTEMS))
def test_code_systems_answer_the_same_first_and_after(name: str) -> None:
    filters = _filters()
    system, coding = _SYSTEMS[name]
    for _ in range(2):
        assert filters.code_system(name) == system
        assert filters.coding_system(name) == coding
    # Either one first: coding_system asked before code_system.
    fresh = _filters()
    assert (fresh.coding_system(name), fresh.code_system(name)) == (coding, system)


def test_absent_names_answer_none() -> None:
    filters = _filters()
    assert filters.code_system(None) is None and filters.coding_system("  ") is None
    assert filters.identifier_system("") is None
    assert not filters._systems and not filters._identifier_systems


def test_identifier_systems_answer_the_same_first_and_after() -> None:
    filters = _filters()
    for _ in range(2):
        assert (
            filters.identifier_system("2.16.840.1.113883.4.1") == "http://hl7.org/fhir/sid/us-ssn"
        )
        assert filters.identifier_system("urn:oid:2.16.840.1.113883.4.1") == (
            "http://hl7.org/fhir/sid/us-ssn"
        )
        assert filters.identifier_system("1.2.250.1.999") == "urn:oid:1.2.250.1.999"


def test_the_answers_kept_are_bounded_and_still_kept_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The three memos share one policy (filter_base.remember): never more than the
    bound, and when full they start again, so the names that come after a sender's
    many made-up ones are still remembered."""
    monkeypatch.setattr(filter_base, "MAX_REMEMBERED", 10)
    filters = _filters()
    for n in range(25):
        assert filters.coding_system(f"1.2.250.{n}") == f"urn:oid:1.2.250.{n}"
        assert filters.identifier_system(f"1.2.250.{n}") == f"urn:oid:1.2.250.{n}"
        assert filters.hd_system(f"1.2.250.{n}") == f"urn:oid:1.2.250.{n}"
        assert len(filters._systems) <= 10
        assert len(filters._identifier_systems) <= 10
        assert len(filters._hd_systems) <= 10
    assert filters.coding_system("2.16.840.1.113883.6.1") == "http://loinc.org"
    assert filters.identifier_system("2.16.840.1.113883.4.1") == "http://hl7.org/fhir/sid/us-ssn"
    assert filters.hd_system("ASIP-SANTE-PS") == "urn:oid:1.2.250.1.71.4.2.1"
    assert "2.16.840.1.113883.6.1" in filters._systems
    assert "2.16.840.1.113883.4.1" in filters._identifier_systems
    assert ("ASIP-SANTE-PS", "", "") in filters._hd_systems
