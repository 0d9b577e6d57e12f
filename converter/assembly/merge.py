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


def merge_into(target: dict[str, Any], other: dict[str, Any]) -> None:
    """Merge ``other`` into ``target``: first value wins, lists gain the items they lack."""
    for key, value in other.items():
        current = target.get(key)
        if current is None:
            target[key] = value
        elif isinstance(current, dict) and isinstance(value, dict):
            merge_into(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            for item in value:
                if item not in current:
                    current.append(item)
