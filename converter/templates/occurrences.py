"""The rank of an OBX among those repeating its code, for Observation identities.

Observations without an identifier of their own take their identity from their group
(order, visit, patient…), their code (OBX-3.1, OBX-3.3) and sub-id (OBX-4): two OBX of a
group repeating a code and sub-id would share it, so the ``occurrence`` input of the
Observation template tells them apart by rank. A root makes one :class:`Occurrences` per
group it counts in (``{% set seen = occurrences() %}``) and asks it for each OBX
(``seen.of(obx)``), instead of keeping a list of keys and counting in it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Occurrences"]


class Occurrences:
    """OBX counted by code and sub-id (and what else a root adds to the key)."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[tuple[str, ...], int] = {}

    def of(self, obx: Any, *extra: Any) -> int:
        """How many OBX with this OBX-3.1, OBX-3.3 and OBX-4 (and ``extra`` values) came
        before this one in the group; this one is counted for the next."""
        key = (str(obx[3][1]), str(obx[3][3]), str(obx[4]), *map(str, extra))
        rank = self._seen.get(key, 0)
        self._seen[key] = rank + 1
        return rank
