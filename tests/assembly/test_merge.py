"""Pruning and merging of resources."""

from __future__ import annotations

from typing import Any

import pytest

from converter.assembly.merge import merge_into, prune


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("  \n", None),
        ([], None),
        ({}, None),
        ([None, "", " ", {}, []], None),
        ({"a": None, "b": {"c": [{}, ""]}}, None),
        (0, 0),
        (False, False),
        (" x ", " x "),
        (
            {"a": [None, "x", {"b": " "}, [None]], "c": {"d": 1, "e": ""}, "f": False},
            {"a": ["x"], "c": {"d": 1}, "f": False},
        ),
    ],
)
def test_prune(value: Any, expected: Any) -> None:
    assert prune(value) == expected


def test_merge_first_scalar_wins_lists_are_unioned_objects_recursively() -> None:
    target: dict[str, Any] = {
        "resourceType": "Patient",
        "id": "1",
        "gender": "female",
        "identifier": [{"system": "s", "value": "1"}],
        "name": [{"family": "A"}],
        "maritalStatus": {"text": "M"},
    }
    merge_into(
        target,
        {
            "resourceType": "Patient",
            "id": "1",
            "gender": "male",
            "birthDate": "2000-01-01",
            "identifier": [{"system": "s", "value": "2"}, {"system": "s", "value": "1"}],
            "name": [{"family": "B"}],
            "maritalStatus": {"text": "S", "coding": [{"code": "S"}]},
        },
    )
    assert target == {
        "resourceType": "Patient",
        "id": "1",
        "gender": "female",
        "identifier": [{"system": "s", "value": "1"}, {"system": "s", "value": "2"}],
        "name": [{"family": "A"}, {"family": "B"}],
        "maritalStatus": {"text": "M", "coding": [{"code": "S"}]},
        "birthDate": "2000-01-01",
    }


def test_merge_keeps_the_first_shape_when_shapes_differ() -> None:
    target: dict[str, Any] = {"a": [1], "b": {"c": 1}, "d": "x"}
    merge_into(target, {"a": {"x": 1}, "b": [1], "d": ["y"]})
    assert target == {"a": [1], "b": {"c": 1}, "d": "x"}


def test_codings_naming_nothing_in_common_are_a_conflict_not_a_union() -> None:
    """Two reactions under one reused id (a VXU's ORC-3 repeated): the union made one
    Observation whose concept was both fever and anaphylaxis, without a word."""
    fever = {"code": {"coding": [{"system": "http://snomed.info/sct", "code": "386661006"}]}}
    anaphylaxis = {"code": {"coding": [{"system": "http://snomed.info/sct", "code": "39579001"}]}}
    target = {"code": {"coding": list(fever["code"]["coding"])}}
    assert merge_into(target, anaphylaxis) == ["code.coding"]
    assert target == fever
    # A translation of the same concept (one coding shared) is still gathered.
    loinc = {"system": "http://loinc.org", "code": "8867-4"}
    local = {"system": "urn:oid:1.2.250.1.999", "code": "FC"}
    target = {"code": {"coding": [loinc]}}
    assert merge_into(target, {"code": {"coding": [loinc, local]}}) == []
    assert target["code"]["coding"] == [loinc, local]
    # A coding without a code cannot be compared: gathered as before.
    target = {"code": {"coding": [{"display": "x"}]}}
    assert merge_into(target, {"code": {"coding": [loinc]}}) == []
    assert target["code"]["coding"] == [{"display": "x"}, loinc]
