"""Validation with fhir.resources' R4B pydantic models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from ..errors import BundleValidationError

__all__ = ["ModelValidator"]

# Pydantic quotes the offending input in some messages; it may be patient data.
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


class ModelValidator:
    """Validates a Bundle dict with ``fhir.resources.R4B.bundle.Bundle``."""

    def __init__(self) -> None:
        # Importing builds the pydantic models: done once, at converter construction.
        from fhir.resources.R4B.bundle import Bundle

        self._bundle = Bundle

    def validate(self, bundle: dict[str, Any], origins: list[str]) -> None:
        """Raise :class:`BundleValidationError` listing every problem found.

        ``origins`` names, for each entry, the template that produced its resource, so
        that an error points at the template to fix.
        """
        try:
            self._bundle.model_validate(bundle)
        except ValidationError as exc:
            issues: list[str] = []
            details: list[str] = []
            for error in exc.errors():
                where = fhir_path(bundle, error["loc"])
                index = _entry_index(error["loc"])
                origin = (
                    f" [{origins[index]}]" if index is not None and index < len(origins) else ""
                )
                message = _QUOTED.sub("…", error["msg"])
                issues.append(f"{where}: {message}{origin}")
                details.append(f"{where}: {error['msg']}")
            raise BundleValidationError(
                f"bundle is not valid FHIR ({len(issues)} issue(s)): {issues[0]}",
                issues=issues,
                detail="\n".join(details)[:2000],
            ) from None


def _entry_index(loc: tuple[Any, ...]) -> int | None:
    if len(loc) >= 2 and loc[0] == "entry" and isinstance(loc[1], int):
        return loc[1]
    return None


def fhir_path(bundle: dict[str, Any], loc: tuple[Any, ...]) -> str:
    """``Bundle.entry[2].resource(Observation).valueQuantity.value`` from a pydantic loc."""
    out = "Bundle"
    node: Any = bundle
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}"
        if isinstance(node, dict):
            node = node.get(part) if isinstance(part, str) else None
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
        if part == "resource" and isinstance(node, dict) and "resourceType" in node:
            out += f"({node['resourceType']})"
    return out
