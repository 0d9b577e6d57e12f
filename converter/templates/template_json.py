"""A template's output text → JSON values: trailing commas allowed, empty values pruned
as the text is parsed (templates write every field and leave the absent ones empty), and
non-integer numbers kept as :class:`FhirDecimal` so that ``7.20`` keeps its precision."""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from ..assembly.json_text import FhirDecimal
from ..errors import TemplateError

__all__ = ["json_from_template", "json_with_periods"]

# A comma that only precedes a closing bracket. Values never contain a literal bracket
# (the finalizer writes them as \u005d / \u007d), so no string content can match.
_TRAILING_COMMA = re.compile(r",(?=\s*[\]}])")


def _prune_list(items: list[Any]) -> list[Any]:
    """Items of a list without the empty ones (nested lists are pruned too)."""
    out = []
    for item in items:
        if item is None:
            continue
        kind = type(item)
        if kind is str:
            if not item or item.isspace():
                continue
        elif kind is list:
            item = _prune_list(item)
            if not item:
                continue
        out.append(item)
    return out


def _prune_object(obj: dict[str, Any]) -> dict[str, Any] | None:
    """Parse-time pruning: drop empty members and list items.

    The decoder calls this for inner objects first, and an object left empty becomes
    None, so an empty object never reaches its parent as ``{}``. An extension left with
    its ``url`` only (its value was absent, or dropped as invalid) is empty too: FHIR
    requires a value or sub-extensions (ext-1).
    """
    out = {}
    for key, value in obj.items():
        if value is None:
            continue
        kind = type(value)
        if kind is str:
            if not value or value.isspace():
                continue
        elif kind is list:
            if not value:
                continue  # ``"identifier": []``, what most absent repeating fields write
            value = _prune_list(value)
            if key in _EXTENSION_LISTS:
                value = [item for item in value if not _only_a_url(item)]
            if not value:
                continue
        out[key] = value
    if not out:
        return None
    if "end" in out and "start" in out:
        # Checked here, where every object passes anyway: the bundle's per-1 pass
        # (assembly/periods.py) then walks only the resources that hold such an object.
        _periods.found = True
    return out


# Whether the decoding under way (in this thread: converters are shared by threads) met
# an object with both a start and an end (see json_with_periods).
_periods = threading.local()


_EXTENSION_LISTS = frozenset({"extension", "modifierExtension"})


def _only_a_url(item: Any) -> bool:
    return type(item) is dict and len(item) == 1 and "url" in item


# Non-integer numbers become Decimal, so that 7.20 keeps its precision up to the bundle's
# JSON text (assembly.json_text).
_decode = json.JSONDecoder(object_hook=_prune_object, parse_float=FhirDecimal).decode


def json_with_periods(text: str, template: str) -> tuple[Any, bool]:
    """:func:`json_from_template`, and whether an object of the value (the value itself
    included) holds both a ``start`` and an ``end``: only then can it hold a Period that
    ends before it starts."""
    _periods.found = False
    value = json_from_template(text, template)
    return value, _periods.found


def json_from_template(text: str, template: str) -> Any:
    """Parse a template's output; templates may leave trailing commas in lists and objects."""
    cleaned = _TRAILING_COMMA.sub("", text)
    try:
        return _decode(cleaned)
    except json.JSONDecodeError as exc:
        if not cleaned.strip():
            raise TemplateError(
                "the template rendered nothing (a resource template must write a JSON "
                "object with a resourceType)",
                template=template,
            ) from None
        # The output line may hold message values: it goes to detail, shown on request.
        line = cleaned.splitlines()[exc.lineno - 1]
        raise TemplateError(
            f"template output is not JSON: {exc.msg} (output line {exc.lineno}, column "
            f"{exc.colno}); check the template's commas and brackets",
            template=template,
            detail=line.strip()[:200],
        ) from None
