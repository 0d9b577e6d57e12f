"""A list templates can add to in constant time.

Templates run in Jinja's immutable sandbox, where ``list.append`` is refused; the usual
``{% set ns.items = ns.items + [item] %}`` copies the list on every addition, which is
quadratic in a loop over thousands of OBX (an ORU of 12,000 results spent ~1.5 s of its
~7 s copying its report's result list). A root makes one :class:`Collector` per list
(``{% set results = collector() %}``), adds to it (``{% do results.add(ref) %}``;
``add_all`` for several) and passes it on (``results=results.items``).

``ref not in results`` is a set lookup, not a scan: a section adding each entry's
resource once (``{% if ref not in out.refs %}{% do out.refs.add(ref) %}{% endif %}``)
stays linear over thousands of entries.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["Collector"]


class Collector:
    """Items in the order they were added."""

    __slots__ = ("_items", "_keys", "_unhashable")

    def __init__(self) -> None:
        self._items: list[Any] = []
        # What ``in`` looks up, made at its first use (most collectors are never asked):
        # the hashable items, and the others (compared one by one, as a list would).
        self._keys: set[Any] | None = None
        self._unhashable: list[Any] = []

    def add(self, item: Any) -> str:
        """Add ``item``; renders as nothing (``{% do c.add(item) %}``)."""
        self._items.append(item)
        if self._keys is not None:
            self._remember(item)
        return ""

    def add_all(self, items: Any) -> str:
        """Add each of ``items``, in order; renders as nothing."""
        start = len(self._items)
        self._items.extend(items)
        if self._keys is not None:
            for item in self._items[start:]:
                self._remember(item)
        return ""

    def __contains__(self, item: Any) -> bool:
        """Whether an item equal to ``item`` was added (what ``in`` says of a list)."""
        if self._keys is None:
            self._keys = set()
            for held in self._items:
                self._remember(held)
        try:
            if item in self._keys:
                return True
        except TypeError:
            pass
        return item in self._unhashable

    def _remember(self, item: Any) -> None:
        assert self._keys is not None
        try:
            self._keys.add(item)
        except TypeError:
            self._unhashable.append(item)

    @property
    def items(self) -> list[Any]:
        """A copy of the items (what a template passes on cannot change them)."""
        return list(self._items)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)
