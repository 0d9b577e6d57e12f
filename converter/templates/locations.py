"""Where in the templates an error arose, as errors and warnings name it."""

from __future__ import annotations

import os
import traceback
from collections.abc import Mapping
from typing import Any

from ..cda.node import AttrValue, Node
from ..hl7v2.message import Group, Segment
from ..hl7v2.value import Value

__all__ = ["input_location", "template_frame", "template_name", "undefined_without_key"]


_MODULE_ATTRIBUTE = "'jinja2.environment.TemplateModule object' has no attribute "


def undefined_without_key(message: str | None) -> str:
    """Jinja's text of an undefined value without the key or index looked up: a template
    may look a message's value up (``table[pid[8]]``), and the text would quote it
    (``'dict object' has no attribute 'DUPONT'``). A variable's own name (``'pid' is
    undefined``) and a macro's (``ids.Identifer``) come from the template and are kept."""
    text = message or "undefined value"
    if text.startswith(_MODULE_ATTRIBUTE):
        # ``names.PatientNme``: what an imported template lacks is a macro named in the
        # calling template (a message value never names a macro), and the name is the
        # typo to find.
        return "the imported template has no macro " + text[len(_MODULE_ATTRIBUTE) :]
    for marker in (" has no attribute ", " has no element "):
        if marker in text:
            return text.split(marker, 1)[0] + marker + "…"
    return text


def template_frame(exc: BaseException, fallback: str, builtin_root: str) -> str:
    """``file:line`` of the innermost template frame in the exception's traceback.

    Built-in templates are named relative to the mappings folder; an override is named
    by its full path, so that it is clear which file was used.
    """
    found = fallback
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.endswith(".j2") and frame.lineno is not None:
            found = f"{template_name(frame.filename, builtin_root)}:{frame.lineno}"
    return found


def template_name(filename: str, builtin_root: str) -> str:
    """A built-in template relative to the mappings folder; an override by its full path.

    Only below the built-in folder itself: an override folder whose name merely starts
    the same way ("mappings-site") keeps its full path.
    """
    root = builtin_root.rstrip("/\\")
    if root and filename.startswith(root + os.sep):
        return filename[len(root) :].lstrip("/\\")
    return filename


def input_location(variables: Mapping[str, Any]) -> str | None:
    """Where in the message the inputs of a failed rendering are: the first input (in
    the order ``emit()`` was given them, the segment or value the template maps comes
    first) that is part of the message — ``OBX[2]``, ``PV1-7``, a CDA element's path.

    For an error a template raised without a place of its own (a TypeError, an undefined
    name, a failed emit): of 20 OBX, the one whose Observation failed. Only positions,
    never values; absent segments and elements name nothing and are skipped."""
    for value in variables.values():
        kind = type(value)
        if kind is Value:
            if value:
                return str(value.path)
        elif kind is Segment:
            if value:
                return str(value.label)
        elif kind is Node or kind is AttrValue:
            if value:
                path = value.path
                if path:
                    return str(path)
        elif kind is Group:
            segment = _first_segment(value)
            if segment is not None:
                return str(segment.label)
    return None


def _first_segment(group: Group) -> Segment | None:
    for child in group.children:
        found = child if isinstance(child, Segment) else _first_segment(child)
        if found is not None:
            return found
    return None
