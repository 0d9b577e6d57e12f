"""Route tables: which root template handles which message.

``<family>/routes.toml`` in the built-in mappings, optionally completed by the same file
in an override directory (its entries win, one by one)::

    [events]                 # MSH-9 message code ^ trigger event → root template
    "ADT^A04" = "ADT_A01"

    [structures]             # fallback: message structure (MSH-9.3 or the version's alias)
    "ADT_A01" = "ADT_A01"

    [documents]              # CDA: document templateId → root template
    "2.16.840.1.113883.10.20.22.1.2" = "ClinicalDocument"

An override maps a key to ``""`` to switch a built-in route off. An unknown table or a
key not shaped like its table's (``SIU-S12`` for ``SIU^S12``) is a ConfigurationError:
ignored, it would leave the message "unsupported" with no hint why.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from ..errors import ConfigurationError, UnsupportedMessageError
from ..layers import layered_tables

__all__ = ["Route", "RouteTable"]

#: Each table, the shape of its keys, and an example for the error message.
_KEY_SHAPES = {
    "events": (re.compile(r"[A-Z0-9]{3}\^[A-Z0-9]{3}"), '"ADT^A01"'),
    "structures": (re.compile(r"[A-Z0-9]{3}_[A-Z0-9]{3}"), '"ADT_A01"'),
    "documents": (
        re.compile(r"\*|[0-9]+(?:\.[0-9]+)+(?::\S+)?"),
        '"2.16.840.1.113883.10.20.22.1.2" (or "*")',
    ),
}


#: Where a family's root templates are: a route names ``<family>/<folder>/<name>.j2``.
_ROOT_FOLDERS = {"hl7v2": "messages", "cda": "documents"}


@dataclass(frozen=True, slots=True)
class Route:
    """A route entry and the file it comes from."""

    key: str
    template: str
    kind: str  # "event" | "structure"
    source: Path


@dataclass(frozen=True)
class RouteTable:
    """Event and structure routes of one template family (``hl7v2``, ``cda``)."""

    family: str
    events: Mapping[str, Route] = field(default_factory=dict)
    structures: Mapping[str, Route] = field(default_factory=dict)
    documents: Mapping[str, Route] = field(default_factory=dict)

    @classmethod
    def load(cls, family: str, directories: Sequence[Path]) -> RouteTable:
        """Merge ``<dir>/<family>/routes.toml`` files; earlier directories win."""
        events: dict[str, Route] = {}
        structures: dict[str, Route] = {}
        documents: dict[str, Route] = {}
        for path, table in layered_tables(directories, f"{family}/routes.toml"):
            unknown = sorted(set(table) - set(_KEY_SHAPES))
            if unknown:
                raise ConfigurationError(
                    f"{path}: unknown table(s) {', '.join(unknown)}; a route table has "
                    "[events], [structures] and [documents]"
                )
            for section, target, kind in (
                ("events", events, "event"),
                ("structures", structures, "structure"),
                ("documents", documents, "document"),
            ):
                entries = table.get(section, {})
                if not isinstance(entries, dict):
                    raise ConfigurationError(f"{path}: [{section}] must be a table")
                shape, example = _KEY_SHAPES[section]
                for key, template in entries.items():
                    if not shape.fullmatch(key):
                        raise ConfigurationError(
                            f"{path}: [{section}] key {key!r} is not shaped like {example}"
                        )
                    if not isinstance(template, str):
                        raise ConfigurationError(
                            f'{path}: route {key!r} needs a template name ("" switches it off)'
                        )
                    if template:
                        target[key] = Route(key, template, kind, path)
                    else:
                        target.pop(key, None)
        return cls(
            family,
            MappingProxyType(events),
            MappingProxyType(structures),
            MappingProxyType(documents),
        )

    def check_templates(self, exists: Callable[[str], bool]) -> None:
        """A ConfigurationError for a route whose root template ``exists`` does not find
        (a typo in an override routes.toml): it failed every message of that type, each
        a dead letter; said when the converter is built, as a syntax error is."""
        folder = _ROOT_FOLDERS.get(self.family)
        if folder is None:
            return
        for route in (*self.events.values(), *self.structures.values(), *self.documents.values()):
            root = f"{self.family}/{folder}/{route.template}.j2"
            if not exists(root):
                raise ConfigurationError(
                    f"{route.source}: route {route.key!r} names template "
                    f"{route.template!r}, but no template directory holds {root}"
                )

    def resolve(self, event: str, structure: str) -> Route:
        """The route for a message; raises :class:`UnsupportedMessageError` (AR) if none."""
        route = self.events.get(event) or self.structures.get(structure)
        if route is not None:
            return route
        code = event.split("^", 1)[0]
        known_code = any(key.split("^", 1)[0] == code for key in self.events) or any(
            key.split("_", 1)[0] == code for key in self.structures
        )
        if known_code:
            raise UnsupportedMessageError(
                f"unsupported message type: trigger event of {event} has no route",
                location="MSH-9.2",
                hl7_error_code="201",
            )
        raise UnsupportedMessageError(
            f"unsupported message type {event}", location="MSH-9.1", hl7_error_code="200"
        )

    def resolve_document(self, template_ids: list[str]) -> Route:
        """The route of a CDA document: the first of its templateIds with a route, else
        the ``"*"`` entry (any other CDA)."""
        for template_id in template_ids:
            route = self.documents.get(template_id)
            if route is not None:
                return route
        fallback = self.documents.get("*")
        if fallback is None:
            raise UnsupportedMessageError(
                "unsupported document: no route for its templateIds", location="templateId"
            )
        return fallback

    def all(self) -> list[Route]:
        return [*self.events.values(), *self.structures.values(), *self.documents.values()]
