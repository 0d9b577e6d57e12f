"""Placing a message's segments into the segment groups of its structure.

:func:`group_segments` walks the flat list of segments once and fills the groups of a
compiled structure (:class:`~converter.hl7v2.structure.Node`), so that templates iterate
``PATIENT_RESULT`` / ``ORDER_OBSERVATION`` / ``OBSERVATION``. What the structures are, and
the facts compiled into each node for this parser (``first``, ``head``, ``loose``, ``check``,
``inside``, ``ambiguous``), is :mod:`converter.hl7v2.structure`'s business.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .message import Group, Segment

if TYPE_CHECKING:
    from .structure import Node

__all__ = ["group_segments"]


class _Frame:
    """Matching state of one group instance while segments are being placed."""

    __slots__ = ("counts", "node", "parent", "pos")

    def __init__(self, node: Node, parent: _Frame | None) -> None:
        self.node = node
        self.parent = parent
        self.counts = [0] * len(node.children)
        self.pos = 0

    def find(self, segment: str) -> int | None:
        """The first child from the current position that ``segment`` can open."""
        children = self.node.children
        counts = self.counts
        for k in range(self.pos, len(children)):
            child = children[k]
            if segment in child.first and (child.max < 0 or counts[k] < child.max):
                return k
        return None


#: Where a segment goes: the frame of the group that takes it, and the child index there.
_Choice = tuple[_Frame, int]


def group_segments(root: Node | None, segments: list[Segment], target: Group) -> None:
    """Place ``segments`` into ``target`` following ``root``; flat when root is None.

    Each segment goes to the nearest place that takes it *whole*, looking in the group
    being filled, then in the groups enclosing it:

    - a place is whole when taking it leaves no required segment or group missing: it
      skips no required sibling not yet seen, and the group it opens finds its required
      parts in the segments that follow, before the segment that opened it comes back
      (so OUL v2.8's ORDER_DOCUMENT, OBX [PRT] TXA, is not opened by a result OBX that no
      TXA follows: that OBX opens a RESULT);
    - a segment that is the required first segment of an enclosing repeating group
      (OML_O21's ORDER opens with ORC) opens a new repetition of that group rather than
      an optional group nested in it that it could also open (PRIOR_RESULT, whose
      ORDER_PRIOR may open with ORC), unless a required place comes first on the way up:
      the usual greedy-parser fix for the ambiguous grammars of HL7 v2;
    - when no place is whole, the nearest place that is not, counting a group that must
      open with a segment the sender left out (RDS_O13's ORDER_DETAIL_SUPPLEMENT opens
      with NTE: an RXR right after the RXO still belongs to it, not to the dispense).

    Segments the structure does not expect where they stand (Z-segments, segments of
    another version, out-of-order segments) stay in the group being filled, so that
    nothing the sender wrote is dropped.
    """
    if root is None:
        target.children.extend(segments)
        return
    parser = _Parser(root, [segment.name for segment in segments])
    parser.fill(_Frame(root, None), target, segments, 0, entering=False)


class _Parser:
    __slots__ = ("ambiguous", "at", "barriers", "known", "names", "pending")

    #: How many segments :meth:`whole` scans before it turns to the message's index: in
    #: real messages the required parts of a group follow its opening segment closely,
    #: and a short scan costs less than indexing the message.
    SCAN = 16

    def __init__(self, root: Node, names: list[str]) -> None:
        self.names = names
        self.ambiguous = root.ambiguous
        self.known = root.inside
        #: The place found for the segment at which a nested group ended.
        self.pending: _Choice | None = None
        #: Where each segment name occurs, in order (see :meth:`index`).
        self.at: dict[str, list[int]] | None = None
        #: Per group ``inside`` (all a group's look-ahead depends on), where the segments
        #: stand that end its look-ahead (see :meth:`barrier`).
        self.barriers: dict[frozenset[str], list[int]] = {}

    def fill(
        self, frame: _Frame, group: Group, segments: list[Segment], i: int, *, entering: bool
    ) -> int:
        """Fill ``group`` from segment ``i``; the index of the first segment it leaves."""
        names = self.names
        total = len(names)
        children = frame.node.children
        while i < total:
            if entering:
                # The segment that opened this group is placed in it.
                choice = self.search(frame, names[i], i, rule_a=False, loose=True)[0]
                entering = False
            elif self.pending is not None:
                choice, self.pending = self.pending, None
            else:
                choice = self.choose(frame, names[i], i)
            if choice is None:
                group.children.append(segments[i])
                i += 1
                continue
            where, k = choice
            if where is not frame:
                self.pending = choice
                break
            child = children[k]
            frame.pos = k
            frame.counts[k] += 1
            if child.is_group:
                sub = group._subgroup(child.name)
                group.children.append(sub)
                i = self.fill(_Frame(child, frame), sub, segments, i, entering=True)
            else:
                group.children.append(segments[i])
                i += 1
        return i

    def choose(self, frame: _Frame, name: str, i: int) -> _Choice | None:
        """The nearest whole place for segment ``i``, else the nearest place."""
        fallback: _Choice | None = None
        current: _Frame | None = frame
        while current is not None:
            found, whole = self.search(current, name, i, rule_a=True, loose=current is frame)
            if whole:
                return found
            if fallback is None:
                fallback = found
            current = current.parent
        return fallback

    def search(
        self, frame: _Frame, name: str, i: int, *, rule_a: bool, loose: bool
    ) -> tuple[_Choice | None, bool]:
        """The first whole place for ``name`` in ``frame`` (True), else its first place;
        with ``loose``, a group not opened yet whose head is missing counts as a place."""
        children = frame.node.children
        counts = frame.counts
        skipped = False
        fallback: _Choice | None = None
        for k in range(frame.pos, len(children)):
            child = children[k]
            if child.max < 0 or counts[k] < child.max:
                if name in child.first:
                    if rule_a and name in self.ambiguous and counts[k] >= child.min:
                        reopened = _reopened(frame, name)
                        if reopened is not None:
                            return reopened, True
                    if not skipped and (not child.check or self.whole(child, i)):
                        return (frame, k), True
                    if fallback is None:
                        fallback = frame, k
                elif loose and fallback is None and not counts[k] and name in child.loose:
                    fallback = frame, k
            if counts[k] < child.min:
                skipped = True
        return fallback, False

    def whole(self, group: Node, i: int) -> bool:
        """Whether the required parts of ``group``, opened by segment ``i``, follow it
        (before a segment that has no place in the group, or the opening one again), and
        those of the group it opens in it, if any."""
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
        # The required parts usually come within a few segments: scan for them. Past
        # SCAN segments, ask the message's index instead, so that parts that never come
        # do not cost a scan to the end of the message for every segment opening the
        # group (quadratic: thousands of RXA, OBX pairs in an RAS_O17).
        end = min(i + 1 + self.SCAN, len(names))
        for j in range(i + 1, end):
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
        if not needed or end == len(names):
            return not needed
        return self.indexed(inside, name, opening.max == 1, needed, i)

    def indexed(
        self, inside: frozenset[str], name: str, once: bool, needed: list[frozenset[str]], i: int
    ) -> bool:
        """:meth:`whole`'s scan answered from the index: whether each of ``needed`` has a
        segment of the group after ``i`` and before the look-ahead stops. (The parts the
        scan found are no longer needed, the others were not in the segments it read, so
        starting again from ``i`` answers for the whole look-ahead.)"""
        at = self.index()
        # Where the scan would stop: at the first later segment the version knows that
        # has no place in the group, or at the opening segment again when the group
        # cannot take it twice (``once``).
        stop = self.next_of(self.barrier(at, inside), i)
        if once and name in inside:
            stop = min(stop, self.next_of(at.get(name, ()), i))
        for first in needed:
            for segment in first:
                if segment in inside and self.next_of(at.get(segment, ()), i) < stop:
                    break
            else:
                return False
        return True

    def index(self) -> dict[str, list[int]]:
        """Where each segment name occurs in the message, in order; built on first use."""
        at = self.at
        if at is None:
            at = self.at = {}
            for j, name in enumerate(self.names):
                at.setdefault(name, []).append(j)
        return at

    def barrier(self, at: dict[str, list[int]], inside: frozenset[str]) -> list[int]:
        """Positions, in order, of the segments known to the version but not in a group
        holding ``inside`` (Z-segments and segments of other versions are passed over):
        where a look-ahead for that group stops."""
        found = self.barriers.get(inside)
        if found is None:
            known = self.known
            found = sorted(
                j
                for segment, positions in at.items()
                if segment in known and segment not in inside
                for j in positions
            )
            self.barriers[inside] = found
        return found

    def next_of(self, positions: Sequence[int], i: int) -> int:
        """The first of the sorted ``positions`` after ``i``, else the message length."""
        k = bisect_right(positions, i)
        return positions[k] if k < len(positions) else len(self.names)


def _reopened(frame: _Frame, name: str) -> _Choice | None:
    """A new repetition of an enclosing group that must open with ``name``, unless a
    required place for it comes first on the way up."""
    current = frame.parent
    while current is not None:
        k = current.find(name)
        if k is not None:
            child = current.node.children[k]
            if k == current.pos and child.is_group and child.head == name:
                return current, k
            if current.counts[k] < child.min:
                return None
        current = current.parent
    return None
