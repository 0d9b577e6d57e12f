"""Which section template converts which CDA section.

``cda/sections.toml`` (built-in, completed by the same file in override directories)
maps section templateIds and, as a fallback, LOINC section codes to a template name in
``cda/sections/``. A section with no entry is kept as narrative in the Composition and
its entries are skipped with a warning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from ..errors import ConfigurationError
from ..layers import layered_tables

__all__ = ["SectionTable"]


@dataclass(frozen=True)
class SectionTable:
    templates: Mapping[str, str]
    codes: Mapping[str, str]

    @classmethod
    def load(cls, directories: Sequence[Path]) -> SectionTable:
        templates: dict[str, str] = {}
        codes: dict[str, str] = {}
        for path, table in layered_tables(directories, "cda/sections.toml"):
            for key, target in (("templates", templates), ("codes", codes)):
                entries = table.get(key, {})
                if not isinstance(entries, dict) or not all(
                    isinstance(v, str) for v in entries.values()
                ):
                    raise ConfigurationError(f"{path}: [{key}] must map strings to names")
                target.update(entries)
        return cls(MappingProxyType(templates), MappingProxyType(codes))

    def template_for(self, template_ids: Sequence[str], code: str) -> str | None:
        """The section template name, or None for a section without a mapping."""
        for template_id in template_ids:
            found = self.templates.get(template_id)
            if found is not None:
                return found
        return self.codes.get(code)
