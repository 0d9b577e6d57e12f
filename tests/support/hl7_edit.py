"""Building and editing HL7 v2 test messages (ER7 text, CR-separated) field by field.

Positions are HL7's: ``set_field(data, "PID", 3, …)`` is PID-3, and ``set_field(data,
"MSH", 10, …)`` is MSH-10 (MSH-1 being the field separator itself).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from converter import Converter

__all__ = [
    "convert_one",
    "insert_after",
    "lines",
    "message",
    "references",
    "resources",
    "segment",
    "set_field",
]


def segment(name: str, fields: dict[int, str]) -> str:
    """``name|…`` with ``fields`` (position → value) at their positions, the rest empty."""
    return name + "|" + "|".join(fields.get(i, "") for i in range(1, max(fields) + 1))


def lines(data: bytes) -> list[str]:
    """The message's segments (empty lines dropped)."""
    return [line for line in data.decode("utf-8").split("\r") if line]


def message(segments: list[str]) -> bytes:
    """Segments joined into a message, each ended by CR."""
    return ("\r".join(segments) + "\r").encode("utf-8")


def set_field(data: bytes, name: str, position: int, value: str, occurrence: int = 1) -> bytes:
    """``data`` with field ``position`` of the ``occurrence``-th ``name`` segment set to
    ``value`` (``occurrence=0``: of every one); an AssertionError if there is none."""
    found = lines(data)
    seen = 0
    for n, line in enumerate(found):
        if line.startswith(name + "|"):
            seen += 1
            if occurrence in (0, seen):
                fields = line.split("|")
                index = position - 1 if name == "MSH" else position
                fields += [""] * (index + 1 - len(fields))
                fields[index] = value
                found[n] = "|".join(fields)
    assert seen >= max(occurrence, 1), f"no {name} #{occurrence}"
    return message(found)


def insert_after(data: bytes, prefix: str, *new: str, occurrence: int = 1) -> bytes:
    """``data`` with ``new`` segments after the ``occurrence``-th line starting with ``prefix``."""
    found = lines(data)
    hits = [n for n, line in enumerate(found) if line.startswith(prefix)]
    at = hits[occurrence - 1] + 1
    return message([*found[:at], *new, *found[at:]])


def resources(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    """The bundle's resources of type ``rtype``, in entry order (a DELETE entry has none)."""
    found = [e.get("resource") for e in bundle["entry"]]
    return [r for r in found if r is not None and r["resourceType"] == rtype]


def refs(resource: dict[str, Any], element: str) -> list[str]:
    """The references a list element of ``resource`` holds (``specimen``, ``performer``…)."""
    return [r["reference"] for r in resource.get(element, [])]


def references(value: Any) -> Iterator[str]:
    """Every ``reference`` a bundle, resource or element holds, at any depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                yield item
            else:
                yield from references(item)
    elif isinstance(value, list):
        for item in value:
            yield from references(item)


def by_reference(bundle: dict[str, Any], reference: str) -> dict[str, Any]:
    """The one resource of the bundle that ``Type/id`` names."""
    rtype, _, rid = reference.partition("/")
    [found] = [r for r in resources(bundle, rtype) if r["id"] == rid]
    return found


def convert_one(converter: Converter, data: bytes) -> tuple[dict[str, Any], list[str]]:
    """The bundle of a one-message input and its warnings."""
    [conversion] = converter.convert(data)
    return conversion.bundle, list(conversion.warnings)
