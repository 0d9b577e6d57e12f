"""Segment grouping: ``converter.hl7v2.grouping``.

``_Parser.whole`` used to scan forward to the end of the message for every segment that
opens a group whose required part never comes: quadratic in the message length. It now
scans a few segments, then answers from an index of the message built once. These tests
keep the scanning version as the reference and check that the new one, and its index
alone, give the same answers and the same group trees.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converter.hl7v2 import Group, Segment
from converter.hl7v2.encoding import Encoding
from converter.hl7v2.grouping import _Frame, _Parser, group_segments
from converter.hl7v2.structure import Node

from ._support import CATALOG


class _ScanningParser(_Parser):
    """The parser with ``whole`` as it was before the index: the reference."""

    def whole(self, group: Node, i: int) -> bool:
        names = self.names
        name = names[i]
        needed = [child.first for child in group.children if child.min > 0]
        opening = next(child for child in group.children if name in child.first)
        if opening.is_group and opening.check and not self.whole(opening, i):
            return False
        if name in needed[0] and opening.min > 0:
            needed.pop(0)
        inside = group.inside
        known = self.known
        for j in range(i + 1, len(names)):
            if not needed:
                return True
            following = names[j]
            if following not in inside:
                if following in known:
                    return False
                continue  # a Z-segment, a segment of another version
            if following == name and opening.max == 1:
                return False
            needed = [first for first in needed if following not in first]
        return not needed


class _IndexOnlyParser(_Parser):
    """The parser answering every look-ahead from the index, without scanning first."""

    SCAN = 0


def _reference_group(root: Node, segments: list[Segment], target: Group) -> None:
    """:func:`group_segments` with the scanning parser."""
    parser = _ScanningParser(root, [segment.name for segment in segments])
    parser.fill(_Frame(root, None), target, segments, 0, entering=False)


#: (version, structure): the structures whose groups have required parts to look ahead
#: for, and those the quadratic shapes were found in (RAS_O17, OPU_R25, OPL_O37).
STRUCTURES = [
    ("2.5.1", "OML_O21"),
    ("2.8", "OML_O21"),
    ("2.8", "OUL_R22"),
    ("2.5.1", "RDS_O13"),
    ("2.5.1", "DFT_P03"),
    ("2.8", "ORU_R01"),
    ("2.5.1", "RAS_O17"),
    ("2.5.1", "SIU_S12"),
    ("2.5.1", "ADT_A01"),
    ("2.8", "OPU_R25"),
    ("2.8", "OPL_O37"),
]


def _root(version: str, structure: str) -> Node:
    root = CATALOG.version(version).structure(structure)
    assert root is not None
    return root


def _segments(names: list[str]) -> list[Segment]:
    return [Segment(name, [name], Encoding(), "ascii", str(j)) for j, name in enumerate(names)]


def _tree(group: Group) -> list[Any]:
    """Group names and segment positions, nested."""
    return [
        (child.name, _tree(child)) if isinstance(child, Group) else child.label
        for child in group.children
    ]


def _grouped(root: Node, names: list[str], *, reference: bool) -> list[Any]:
    target = Group(root.name, frozenset(), {}, frozenset())
    (_reference_group if reference else group_segments)(root, _segments(names), target)
    return _tree(target)


def _checked_groups(node: Node) -> list[Node]:
    """Every group of the structure whose opening ``whole`` is asked about."""
    found = []
    for child in node.children:
        if child.is_group:
            if child.check:
                found.append(child)
            found.extend(_checked_groups(child))
    return found


def _messages(version: str, structure: str) -> st.SearchStrategy[list[str]]:
    """Segment names of the structure, a Z-segment and MSH; in any order, or as runs of
    a few segments repeated (the shapes that made the scan quadratic)."""
    vocabulary = [*sorted(_root(version, structure).inside), "ZXX", "MSH"]
    names = st.sampled_from(vocabulary)
    anything = st.lists(names, max_size=60)
    runs = st.lists(
        st.tuples(st.lists(names, min_size=1, max_size=4), st.integers(1, 12)), max_size=6
    ).map(lambda chunks: [name for chunk, times in chunks for name in chunk * times])
    return st.one_of(anything, runs)


_CASES = st.sampled_from(STRUCTURES).flatmap(
    lambda case: st.tuples(st.just(case), _messages(*case))
)


@given(_CASES)
@settings(max_examples=1500, deadline=None)
def test_indexed_look_ahead_matches_the_scan(case: tuple[tuple[str, str], list[str]]) -> None:
    (version, structure), body = case
    root = _root(version, structure)
    names = ["MSH", *body]
    # The same answer for every group and every segment that can open it...
    parser = _Parser(root, names)
    indexed = _IndexOnlyParser(root, names)
    scanning = _ScanningParser(root, names)
    for group in _checked_groups(root):
        for i, name in enumerate(names):
            if any(name in child.first for child in group.children):
                expected = scanning.whole(group, i)
                assert parser.whole(group, i) == expected, (group.name, i)
                assert indexed.whole(group, i) == expected, (group.name, i)
    # ...and the same group tree.
    assert _grouped(root, names, reference=False) == _grouped(root, names, reference=True)


@pytest.mark.parametrize(
    ("version", "structure", "head", "pair"),
    [
        ("2.5.1", "RAS_O17", ["ORC"], ["RXA", "OBX"]),
        ("2.8", "OPU_R25", [], ["NK1", "PID"]),
        ("2.8", "OPL_O37", [], ["NK1", "BLG"]),
        ("2.8", "ORU_R01", ["PID", "OBR"], ["ORC"]),
    ],
)
def test_long_repeated_shapes_group_as_before(
    version: str, structure: str, head: list[str], pair: list[str]
) -> None:
    # The shapes the scan was quadratic on, long enough that a look-ahead stopping too
    # early or too late would show.
    root = _root(version, structure)
    names = ["MSH", *head, *pair * 300]
    grouped = _grouped(root, names, reference=False)
    assert grouped == _grouped(root, names, reference=True)
    assert _labels(grouped) == [str(j) for j in range(len(names))]


def _labels(tree: list[Any]) -> list[str]:
    found = []
    for item in tree:
        found.extend(_labels(item[1]) if isinstance(item, tuple) else [item])
    return found
