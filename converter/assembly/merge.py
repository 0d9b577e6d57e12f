"""Pruning of empty values and merging of resources that share an identity."""

from __future__ import annotations

from typing import Any

__all__ = ["merge_into", "prune"]


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


def merge_into(target: dict[str, Any], other: dict[str, Any], path: str = "") -> list[str]:
    """Merge ``other`` into ``target``: first value wins, lists gain the items they lack.

    Returns the paths (``status``, ``code.text``…) where the two disagreed on a single
    value, or on a ``coding`` list sharing no coding (the first one kept: two concepts
    are not two translations of one), so the caller can report that one identity covered
    two different things.
    """
    conflicts: list[str] = []
    for key, value in other.items():
        current = target.get(key)
        where = f"{path}.{key}" if path else key
        if current is None:
            target[key] = value
        elif isinstance(current, dict) and isinstance(value, dict):
            conflicts.extend(merge_into(current, value, where))
        elif isinstance(current, list) and isinstance(value, list):
            if key == "coding" and current and value and not _same_concept(current, value):
                # Two codings naming nothing in common are two concepts, not translations
                # of one: a union would say fever and anaphylaxis are the same reaction.
                conflicts.append(where)
                continue
            for item in value:
                if item not in current:
                    current.append(item)
        elif current != value:
            conflicts.append(where)
    return conflicts


def _same_concept(first: list[Any], second: list[Any]) -> bool:
    """Whether two ``coding`` lists share a coding (same system and code), or either
    holds one that cannot be compared (no code): then they may name one concept."""

    def keys(codings: list[Any]) -> set[tuple[Any, Any]] | None:
        found = set()
        for coding in codings:
            if not isinstance(coding, dict) or "code" not in coding:
                return None
            found.add((coding.get("system"), coding["code"]))
        return found

    ours, theirs = keys(first), keys(second)
    return ours is None or theirs is None or bool(ours & theirs)
