"""A choice element (``occurrence[x]``, ``value[x]``…) merged from two mentions that
wrote it with two types: one element, the first mention's type (and its primitive
extension), the other reported as a conflict. Two types of one choice element are
invalid FHIR, which the merge wrote before when the second mention's type was new."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from converter.assembly.merge import _TYPE_NAMES, merge_into


def test_the_first_type_is_kept_with_its_extension() -> None:
    target: dict[str, Any] = {"resourceType": "Immunization", "occurrenceDateTime": "1999-11"}
    other = {
        "resourceType": "Immunization",
        "occurrenceString": "Unknown",
        "_occurrenceString": {"extension": [{"url": "dar", "valueCode": "unknown"}]},
        "lotNumber": "A1",
    }
    conflicts = merge_into(target, other)
    assert target == {
        "resourceType": "Immunization",
        "occurrenceDateTime": "1999-11",
        "lotNumber": "A1",
    }
    assert conflicts == ["occurrenceString", "_occurrenceString"]


def test_inside_an_object_too() -> None:
    target: dict[str, Any] = {"onsetAge": {"value": 3}, "extension": []}
    conflicts = merge_into({"reaction": target}, {"reaction": {"onsetPeriod": {"start": "2020"}}})
    assert target == {"onsetAge": {"value": 3}, "extension": []}
    assert conflicts == ["reaction.onsetPeriod"]


def test_elements_that_only_look_alike_still_merge() -> None:
    """A primitive's extension beside its value, a name that ends with a type but has
    no sibling of another type, two elements whose prefixes differ."""
    target: dict[str, Any] = {"birthDate": "1970-01-01", "valueQuantity": {"value": 1}}
    other = {
        "_birthDate": {"extension": [{"url": "x", "valueString": "y"}]},
        "multipleBirthBoolean": True,
        "valueQuantity": {"value": 1},
        "minutesDuration": 15,
        "effectiveDateTime": "2020",
    }
    assert merge_into(target, other) == []
    assert set(target) == {
        "birthDate",
        "_birthDate",
        "valueQuantity",
        "multipleBirthBoolean",
        "minutesDuration",
        "effectiveDateTime",
    }


_PREFIX = st.from_regex(r"[a-z]{2,10}", fullmatch=True)
_TYPE = st.sampled_from(sorted(_TYPE_NAMES))


@given(_PREFIX, _TYPE, _TYPE, st.booleans())
def test_never_two_types_of_one_choice(
    prefix: str, first: str, second: str, extension: bool
) -> None:
    target: dict[str, Any] = {f"{prefix}{first}": "a"}
    other: dict[str, Any] = {f"{prefix}{second}": "b"}
    if extension:
        other[f"_{prefix}{second}"] = {"extension": [{"url": "u", "valueCode": "c"}]}
    merge_into(target, other)
    members = {key.removeprefix("_") for key in target if key.removeprefix("_").startswith(prefix)}
    assert members == {f"{prefix}{first}"}
