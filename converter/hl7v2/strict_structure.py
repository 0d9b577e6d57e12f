"""Segment order and groups of a message checked against its structure, for strict mode.

hl7apy's own grouping misreads some order structures (see :mod:`converter.hl7v2.strict`):
for them the segments are placed here, in one pass over the segment names, following the
structure hl7apy defines for the version (its group tables: order, cardinalities, choice
groups), and the first segment that has no place is reported, or the first required
segment that is missing. Fields and datatypes stay hl7apy's business, segment by segment.

Where the grammar is ambiguous, this reads it as the converter's grouping does
(:mod:`converter.hl7v2.grouping`): a segment that opens an enclosing repeating group
(OML_O21's ORDER opens with ORC) opens a new repetition of it rather than a group nested
deeper that it could also open (PRIOR_RESULT, ORDER_PRIOR), unless that group is still
required where it stands. A prior result given with its ORC first is therefore read as one
more order, as the conversion reads it; one given without (OBR, OBX) is still a prior
result, and so is one opened by its patient (PID, then ORC: PRIOR_RESULT's ORDER_PRIOR is
required), whose next ORC opens the next order (in v2.8 too, where ORDER_PRIOR opens with
ORC).

Z-segments may stand anywhere (HL7 v2 ch. 2: a site's own segments), as hl7apy allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .structure import STANDARD_GROUP_NAMES

__all__ = ["StructureProblem", "check_structure", "knows_structure"]


@dataclass(frozen=True, slots=True)
class StructureProblem:
    """Why the segment names break the structure, without any value of the message."""

    #: The segment concerned (out of place, or missing).
    segment: str
    #: Where in the message: 1-based index of the segment out of place, or of the one
    #: before which the missing segment was due (None: at the end of the message).
    index: int | None
    #: The group (hl7apy's name, the structure's prefix dropped, by the standard's name
    #: where hl7apy misspells or makes one up: see :meth:`_Placer.short_name`) where it
    #: was expected.
    group: str
    missing: bool


@dataclass(frozen=True, slots=True)
class _Node:
    name: str
    is_group: bool
    choice: bool
    min: int
    max: int  # -1: unbounded
    children: tuple[_Node, ...]
    #: Segment names that can open this node.
    first: frozenset[str]
    #: The required segment a group opens with, if any (its head).
    head: str | None


class _Broken(Exception):
    def __init__(self, problem: StructureProblem) -> None:
        super().__init__(problem.segment)
        self.problem = problem


def knows_structure(version: str, structure: str) -> bool:
    """Whether hl7apy defines ``structure`` in ``version``."""
    return _compiled(version, structure) is not None


def check_structure(version: str, structure: str, names: list[str]) -> StructureProblem | None:
    """The first place where ``names`` (the message's segment names, MSH first) break
    ``structure`` of ``version``; None when they fit it, or when the version does not
    define the structure (see :func:`knows_structure`)."""
    root = _compiled(version, structure)
    if root is None:
        return None
    positions = [i for i, name in enumerate(names) if not name.startswith("Z")]
    placer = _Placer([names[i] for i in positions], structure)
    try:
        end = placer.group(root, 0, frozenset())
    except _Broken as broken:
        problem = broken.problem
        if problem.index is not None:
            problem = _at(problem, positions[problem.index - 1] + 1)
        return problem
    if end < len(positions):
        return StructureProblem(
            placer.names[end], positions[end] + 1, placer.last_group, missing=False
        )
    return None


def _at(problem: StructureProblem, index: int) -> StructureProblem:
    return StructureProblem(problem.segment, index, problem.group, problem.missing)


class _Placer:
    __slots__ = ("last_group", "names", "prefix", "structure")

    def __init__(self, names: list[str], structure: str) -> None:
        self.names = names
        self.structure = structure
        self.prefix = structure + "_"
        #: The group the last segment placed went to (to name where one has no place).
        self.last_group = structure

    def group(self, node: _Node, i: int, above: frozenset[str], label: str = "") -> int:
        """Place segments from ``i`` in one instance of ``node``; the index after them.

        ``above``: heads of the enclosing repeating groups (see the module docstring);
        ``label``: the enclosing group's name, that of a choice group (hl7apy names it
        after its segments, the standard does not name it).
        """
        names = self.names
        children = node.children
        counts = [0] * len(children)
        pos = 0
        short = label if node.choice else self.short_name(node)
        inner = above | {node.head} if node.head is not None and node.max != 1 else above
        while i < len(names):
            name = names[i]
            k = self._find(node, counts, pos, name, inner)
            if k is None:
                break
            if node.choice and any(counts):
                break  # a choice group holds one of its segments or groups
            for skipped in range(pos, k):
                if counts[skipped] < children[skipped].min:
                    raise _Broken(self._missing(children[skipped], i, short, here=short))
            child = children[k]
            counts[k] += 1
            pos = k
            if child.is_group:
                i = self.group(child, i, inner, short)
            else:
                self.last_group = short
                i += 1
        if node.choice:
            if not any(counts):
                raise _Broken(self._missing(node, i, short, here=short))
            return i
        for k in range(pos, len(children)):
            if counts[k] < children[k].min:
                raise _Broken(self._missing(children[k], i, short, here=self.last_group))
        return i

    def _missing(self, node: _Node, i: int, group: str, *, here: str) -> StructureProblem:
        """A required segment or group of ``group`` missing at segment ``i``: named by its
        segment (the alternatives of a choice joined by ``|``), else by its group name.

        When what is missing comes later in the message, segment ``i`` is the one out of
        place (in ``here``, the group being filled): it is named instead.
        """
        names = self.names
        if i < len(names) and any(name in node.first for name in names[i + 1 :]):
            return StructureProblem(names[i], i + 1, here, missing=False)
        if not node.is_group:
            what = node.name
        elif node.choice:
            what = "|".join(child.head or child.name for child in node.children)
        else:
            what = node.head or self.short_name(node)
        return StructureProblem(what, _index(i, names), group, missing=True)

    def short_name(self, node: _Node) -> str:
        """A group's name in errors: hl7apy's without the structure's prefix, or the
        standard's where hl7apy's differs (its v2.5 and v2.6 OML_O21 and OML_O35 say
        ``TIIMING``), as the conversion names it (:mod:`converter.hl7v2.structure`)."""
        short = node.name.removeprefix(self.prefix)
        return STANDARD_GROUP_NAMES.get((self.structure, short), short)

    @staticmethod
    def _find(
        node: _Node, counts: list[int], pos: int, name: str, above: frozenset[str]
    ) -> int | None:
        children = node.children
        for k in range(pos, len(children)):
            child = children[k]
            if name not in child.first or (child.max >= 0 and counts[k] >= child.max):
                continue
            if child.is_group and name in above and counts[k] >= child.min:
                # The head of an enclosing repeating group opens a new repetition of it,
                # not a group nested here that it could also open, unless that group is
                # still required here (the converter's rule): a prior result opened by
                # its PID keeps its ORC (ORDER_PRIOR, required in PRIOR_RESULT), but a
                # second ORDER_PRIOR is a new ORDER. Its head alone did not decide it:
                # v2.8's ORDER_PRIOR opens with ORC, which then took every following
                # order's ORC and refused its TQ1; v2.5.1's does not, whose ORC after a
                # prior result's PID was refused.
                return None
            return k
        return None


def _index(i: int, names: list[str]) -> int | None:
    return i + 1 if i < len(names) else None


@lru_cache(maxsize=64)
def _compiled(version: str, structure: str) -> _Node | None:
    """hl7apy's structure table, compiled once per version and structure."""
    from hl7apy import load_reference
    from hl7apy.exceptions import HL7apyException

    try:
        reference = load_reference(structure, "Message", version)
    except (HL7apyException, KeyError):  # a structure or version hl7apy does not know
        return None
    return _compile(structure, reference, (1, 1))


def _compile(name: str, reference: Any, cardinality: tuple[int, int]) -> _Node:
    kind, specs = reference[0], reference[1]
    choice = kind == "choice"
    children: list[_Node] = []
    for spec in specs:
        child_name, child_ref, child_card, child_kind = spec[0], spec[1], spec[2], spec[3]
        # hl7apy writes each alternative of a choice as required: one of them is.
        low = 0 if choice else child_card[0]
        if child_kind == "GRP":
            compiled = _compile(child_name, child_ref, (low, child_card[1]))
            children.append(compiled)
        else:
            children.append(
                _Node(
                    child_name, False, False, low, child_card[1], (), frozenset({child_name}), None
                )
            )
    first: set[str] = set()
    for child in children:
        first |= child.first
        if not choice and child.min > 0:
            break
    opening = children[0] if children else None
    head = (
        opening.name
        if opening is not None and not opening.is_group and opening.min > 0 and not choice
        else None
    )
    return _Node(
        name, True, choice, cardinality[0], cardinality[1], tuple(children), frozenset(first), head
    )
