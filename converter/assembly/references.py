"""References between the resources of a bundle."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["reference_among"]


def reference_among(value: Any, targets: dict[str, Any]) -> str | None:
    """The first ``reference`` in ``value`` (a parsed resource) that is one of ``targets``."""
    if isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str) and reference in targets:
            return reference
        items: Iterable[Any] = value.values()
    elif isinstance(value, list):
        items = value
    else:
        return None
    for item in items:
        if isinstance(item, dict | list):
            found = reference_among(item, targets)
            if found is not None:
                return found
    return None
