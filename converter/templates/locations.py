"""Where in the templates an error arose, as errors and warnings name it."""

from __future__ import annotations

import os
import traceback

__all__ = ["template_frame", "template_name", "undefined_without_key"]


def undefined_without_key(message: str | None) -> str:
    """Jinja's text of an undefined value without the key or index looked up: a template
    may look a message's value up (``table[pid[8]]``), and the text would quote it
    (``'dict object' has no attribute 'DUPONT'``). A variable's own name (``'pid' is
    undefined``) comes from the template and is kept."""
    text = message or "undefined value"
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
