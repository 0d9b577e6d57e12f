"""Pruning of empty values and merging of resources that share an identity."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["ListIndex", "merge_into", "prune"]


def prune(value: Any) -> Any:
    """Drop None, empty strings, empty lists and empty objects, recursively.

    Returns None when nothing is left. A list keeps its order; inside lists of primitive
    values FHIR allows ``null`` only as a placeholder for extensions, which templates
    do not produce, so nulls are removed there too.
    """
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            kept = prune(item)
            if kept is not None:
                out[key] = kept
        return out or None
    if isinstance(value, list):
        items = [kept for kept in map(prune, value) if kept is not None]
        return items or None
    if isinstance(value, str):
        return value if value.strip() else None
    return value


class ListIndex:
    """What the long lists of merged resources hold, for :func:`merge_into` to find an
    item in one without comparing it with every item.

    One resource merged thousands of times (8,000 AL1 naming one allergen, each with its
    own reaction) grows a list by one item per merge; comparing each new item with those
    held made the message's merges quadratic (9.6 s for 8,000). Lists shorter than
    ``threshold`` are still scanned: a key of each item costs more than a few
    comparisons.

    Kept for one conversion (its resources); an index is rebuilt when its list changed
    length behind it. Lists whose items :func:`_gathered` may replace (``identifier``,
    ``name``) are never indexed.
    """

    def __init__(self, threshold: int = 16) -> None:
        self._threshold = threshold
        # id(list) -> (the list, kept alive so that its id is not reused; the keys of
        # its items; its length when they were taken).
        self._held: dict[int, tuple[list[Any], set[Any], int]] = {}

    def contains(self, held: list[Any], item: Any) -> bool:
        """``item in held``; an item not found is then appended by the caller, who
        records it with :meth:`added`."""
        if len(held) < self._threshold:
            return item in held
        entry = self._held.get(id(held))
        if entry is None or entry[0] is not held or entry[2] != len(held):
            entry = (held, {_frozen(one) for one in held}, len(held))
            self._held[id(held)] = entry
        return _frozen(item) in entry[1]

    def added(self, held: list[Any], item: Any) -> None:
        """Record ``item``, just appended to ``held``."""
        entry = self._held.get(id(held))
        if entry is not None and entry[0] is held and entry[2] == len(held) - 1:
            entry[1].add(_frozen(item))
            self._held[id(held)] = (held, entry[1], len(held))


def _frozen(value: Any) -> Any:
    """A hashable key equal for values ``==`` says are equal (objects whatever the order
    of their keys, lists in order), and different for an object and a list."""
    if isinstance(value, dict):
        return (_OBJECT, frozenset((key, _frozen(item)) for key, item in value.items()))
    if isinstance(value, list):
        return (_LIST, tuple(_frozen(item) for item in value))
    return value


_OBJECT = object()
_LIST = object()


def merge_into(
    target: dict[str, Any],
    other: dict[str, Any],
    path: str = "",
    index: ListIndex | None = None,
) -> list[str]:
    """Merge ``other`` into ``target``: first value wins, lists gain the items they lack.

    In an ``identifier`` or ``name`` list, an item written with less than another (each
    of its keys there with the same value) is that item, not a second one: see
    :func:`_gathered`.

    Returns the paths (``status``, ``code.text``…) where the two disagreed on a single
    value, or on a ``coding`` list sharing no coding (the first one kept: two concepts
    are not two translations of one), so the caller can report that one identity covered
    two different things.

    ``index`` finds items in long lists without a scan: pass the same one to every merge
    of a conversion (see :class:`ListIndex`).
    """
    conflicts: list[str] = []
    for key, value in other.items():
        current = target.get(key)
        where = f"{path}.{key}" if path else key
        if current is None:
            if _CHOICE.match(key) and _other_choice(target, key):
                # ``occurrenceString`` beside the first one's ``occurrenceDateTime``: one
                # element of two types (invalid FHIR), not two elements.
                conflicts.append(where)
                continue
            target[key] = value
        elif isinstance(current, dict) and isinstance(value, dict):
            conflicts.extend(merge_into(current, value, where, index))
        elif isinstance(current, list) and isinstance(value, list):
            if key == "coding" and current and value and not _same_concept(current, value):
                # Two codings naming nothing in common are two concepts, not translations
                # of one: a union would say fever and anaphylaxis are the same reaction.
                conflicts.append(where)
                continue
            if key in _ONE_THING_LISTS:
                for item in value:
                    if item not in current and not _gathered(item, current):
                        current.append(item)
            elif index is None:
                for item in value:
                    if item not in current:
                        current.append(item)
            else:
                for item in value:
                    if not index.contains(current, item):
                        current.append(item)
                        index.added(current, item)
        elif current != value:
            conflicts.append(where)
    return conflicts


#: FHIR R4's data types, as a choice element's name ends with them (``value[x]`` →
#: ``valueQuantity``).
_TYPE_NAMES = frozenset(
    {
        *("Base64Binary", "Boolean", "Canonical", "Code", "Date", "DateTime", "Decimal"),
        *("Id", "Instant", "Integer", "Markdown", "Oid", "PositiveInt", "String", "Time"),
        *("UnsignedInt", "Uri", "Url", "Uuid", "Address", "Age", "Annotation", "Attachment"),
        *("CodeableConcept", "Coding", "ContactPoint", "Count", "Distance", "Duration"),
        *("HumanName", "Identifier", "Money", "Period", "Quantity", "Range", "Ratio"),
        *("Reference", "SampledData", "Signature", "Timing", "ContactDetail", "Contributor"),
        *("DataRequirement", "Expression", "ParameterDefinition", "RelatedArtifact"),
        *("TriggerDefinition", "UsageContext", "Dosage", "Meta"),
    }
)
#: A name that may be a choice element's (or its primitive extension's, ``_valueString``):
#: a lower-case start, then a capital.
_CHOICE = re.compile(r"_?[a-z][a-z0-9]*[A-Z]")


def _other_choice(target: dict[str, Any], key: str) -> bool:
    """Whether ``target`` holds the choice element ``key`` names with another type: for
    ``occurrenceString`` (or ``_occurrenceString``), an ``occurrenceDateTime``."""
    name = key.removeprefix("_")
    for cut in range(1, len(name)):
        if name[cut].isupper() and name[cut:] in _TYPE_NAMES:
            prefix = name[:cut]
            return any(
                held != name and held.startswith(prefix) and held[len(prefix) :] in _TYPE_NAMES
                for held in (other.removeprefix("_") for other in target)
            )
    return False


#: Lists whose items each name one thing however much of it a mention writes. One doctor
#: in PV1-7 with his RPPS typed (XCN.13) and in EVN-5 without is one identifier, which a
#: Practitioner held twice; a name with and without its use (XCN.10) is one name.
_ONE_THING_LISTS = frozenset({"identifier", "name"})


def _gathered(item: Any, held: list[Any]) -> bool:
    """Whether ``item`` was taken in by ``held`` (which then needs no ``item`` appended).

    An item within a held one is dropped; a held item within ``item`` is ``item`` written
    with less, so ``item`` takes its place (the first one's position: the output order
    stays the order of first mention) and any other held item within it goes. Items that
    differ on a value (another ``use``, ``period`` or ``given`` list) stay two: nothing
    says they are one.
    """
    if not isinstance(item, dict):
        return False
    if any(_within(item, other) for other in held):
        return True
    smaller = [n for n, other in enumerate(held) if _within(other, item)]
    if not smaller:
        return False
    # ``item`` holds every key of each of them with the same value: it is their union,
    # keys in the order its template wrote them.
    held[smaller[0]] = item
    for n in reversed(smaller[1:]):
        del held[n]
    return True


def _within(small: Any, big: Any) -> bool:
    """Whether every key of object ``small`` is in object ``big`` with the same value,
    objects compared so in turn (an identifier's ``type`` without its ``text``) and lists
    whole (``given`` ``["Jean"]`` is not within ``["Jean", "Paul"]``: nothing says which
    one is right, so both are kept)."""
    if not isinstance(small, dict) or not isinstance(big, dict):
        return bool(small == big)
    return all(
        key in big and (big[key] == value or _within(value, big[key]))
        for key, value in small.items()
    )


def _same_concept(first: list[Any], second: list[Any]) -> bool:
    """Whether two ``coding`` lists share a coding (same system and code), or either
    holds one that cannot be compared (no code, or a code or system that is not text:
    a template's mistake, which validation then names): then they may name one
    concept."""

    def keys(codings: list[Any]) -> set[tuple[Any, Any]] | None:
        found = set()
        for coding in codings:
            if not isinstance(coding, dict):
                return None
            code, system = coding.get("code"), coding.get("system")
            if not isinstance(code, str) or not isinstance(system, (str, type(None))):
                return None
            found.add((system, code))
        return found

    ours, theirs = keys(first), keys(second)
    return ours is None or theirs is None or bool(ours & theirs)
