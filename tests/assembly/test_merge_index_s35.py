"""One resource merged thousands of times stays linear (session 35).

8,000 AL1 naming one allergen, each with its own reaction, merge into one
AllergyIntolerance whose ``reaction`` list grows by one item per merge; each new item
was compared with every item held (9.6 s for the message). The merges of a conversion
now share a :class:`ListIndex`, which finds an item in a long list by a key instead.
These tests hold it to give what the plain comparison gives; the speed is measured by
``scripts/bench_sizes.py --only al1-same-allergen``.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from converter import Converter, ConverterConfig
from converter.assembly.merge import ListIndex, merge_into
from tests.support.hl7_edit import resources
from tests.support.scripts import load_script

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from([0.0, 1.0, 1.5]),
    st.sampled_from(["", "a", "b", "A"]),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "code", "text"]), inner, max_size=3),
    ),
    max_leaves=8,
)
# Resources whose lists get long: the items are drawn from a few values, so that many
# merges meet items already held, and lists pass the index's threshold.
_resource = st.fixed_dictionaries(
    {"resourceType": st.just("AllergyIntolerance")},
    optional={
        "reaction": st.lists(_json, max_size=6),
        "note": st.lists(_json, max_size=3),
        "identifier": st.lists(_json, max_size=2),
        "code": st.dictionaries(st.sampled_from(["text", "coding"]), _json, max_size=2),
        "status": _json,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_resource, min_size=1, max_size=40), st.integers(1, 20))
def test_indexed_merges_give_what_plain_merges_give(
    renderings: list[dict[str, Any]], threshold: int
) -> None:
    plain = copy.deepcopy(renderings[0])
    indexed = copy.deepcopy(renderings[0])
    index = ListIndex(threshold)  # small, so that short lists are indexed too
    for rendering in renderings[1:]:
        expected = merge_into(plain, copy.deepcopy(rendering))
        assert merge_into(indexed, copy.deepcopy(rendering), index=index) == expected
        assert indexed == plain
        # The order of the items, not only their set.
        assert repr(indexed) == repr(plain)


def test_an_object_and_a_list_of_its_pairs_are_two_items() -> None:
    index = ListIndex(1)
    held: list[Any] = [{"a": 1}]
    assert not index.contains(held, [["a", 1]])
    assert not index.contains(held, [("a", 1)])
    assert index.contains(held, {"a": True})  # 1 == True, as `in` says
    assert index.contains(held, {"a": 1})


def test_a_list_changed_behind_the_index_is_read_again() -> None:
    index = ListIndex(1)
    held: list[Any] = [{"a": 1}, {"a": 2}]
    assert not index.contains(held, {"a": 3})
    held.append({"a": 3})  # appended without added(): the length tells
    assert index.contains(held, {"a": 3})
    held.append({"a": 4})
    index.added(held, {"a": 4})
    assert index.contains(held, {"a": 4})
    assert not index.contains(held, {"a": 5})


def test_one_allergen_in_many_al1_is_one_allergy_with_every_reaction() -> None:
    message = load_script("bench_sizes.py").al1_same_allergen(300)
    converter = Converter(ConverterConfig(default_timezone="Europe/Paris"))
    (result,) = converter.convert(message)
    (allergy,) = resources(result.bundle, "AllergyIntolerance")
    texts = [m.get("text") for r in allergy["reaction"] for m in r.get("manifestation", [])]
    assert texts == [f"Reaction {n}" for n in range(1, 301)]


def test_a_coding_whose_code_is_not_text_is_merged_not_a_type_error() -> None:
    # Found by the property test above: a template writing a list as a coding's code
    # made the merge raise TypeError (unhashable) before validation could name it.
    held: dict[str, Any] = {"code": {"coding": [{"system": "s", "code": ["x"]}]}}
    other = {"code": {"coding": [{"system": "s", "code": "y"}]}}
    assert merge_into(held, other) == []
    assert held["code"]["coding"] == [{"system": "s", "code": ["x"]}, {"system": "s", "code": "y"}]
