"""What each HL7 v2 version defines: message structures, segment groups, field names.

The knowledge comes from hl7apy's per-version tables, compiled once per version into
small immutable trees; nothing of hl7apy runs per message. :func:`group_segments`
(:mod:`converter.hl7v2.grouping`, re-exported here) places a flat list of segments into
the groups of a structure so templates can iterate ``PATIENT_RESULT`` /
``ORDER_OBSERVATION`` / ``OBSERVATION``.
"""

from __future__ import annotations

import importlib
import threading
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any

from ..errors import UnsupportedMessageError
from .grouping import group_segments

__all__ = [
    "STANDARD_GROUP_NAMES",
    "SUPPORTED_VERSIONS",
    "Node",
    "StructureCatalog",
    "VersionCatalog",
    "group_segments",
    "supported_group_names",
]

#: MSH-12 values accepted, with the hl7apy module that describes them.
SUPPORTED_VERSIONS: MappingProxyType[str, str] = MappingProxyType(
    {
        "2.3": "v2_3",
        "2.3.1": "v2_3_1",
        "2.4": "v2_4",
        "2.5": "v2_5",
        "2.5.1": "v2_5_1",
        "2.6": "v2_6",
        "2.7": "v2_7",
        "2.7.1": "v2_7",
        "2.8": "v2_8",
        "2.8.1": "v2_8_1",
        "2.8.2": "v2_8_2",
    }
)


@dataclass(frozen=True, slots=True)
class Node:
    """A segment or a group in a message structure."""

    name: str
    is_group: bool
    min: int
    max: int  # -1: unbounded
    children: tuple[Node, ...] = ()
    #: Segment names that can open this node (optional leading children included).
    first: frozenset[str] = field(default_factory=frozenset)
    #: The segment a group must open with (its first child, required), if any.
    head: str | None = None
    #: Segments that open the group only when its head is missing (a last resort).
    loose: frozenset[str] = field(default_factory=frozenset)
    #: Whether opening the group leaves required parts to check (see group_segments).
    check: bool = False
    #: Every segment name of the group and of the groups it holds.
    inside: frozenset[str] = field(default_factory=frozenset)
    #: Root only: heads of repeating groups that a group nested in them may also start.
    ambiguous: frozenset[str] = field(default_factory=frozenset)


class VersionCatalog:
    """Structures, segment field names and event aliases of one HL7 v2 version."""

    def __init__(
        self,
        version: str,
        module: str,
        events: dict[str, str],
        all_segments: frozenset[str],
        all_groups: frozenset[str],
    ) -> None:
        self.version = version
        self._module = module
        self._events = events
        self._lock = threading.Lock()
        self._structures: dict[str, Node | None] = {}
        self._messages: dict[str, Any] = importlib.import_module(
            f"hl7apy.{module}.messages"
        ).MESSAGES
        segments = importlib.import_module(f"hl7apy.{module}.segments").SEGMENTS
        self.segment_names: dict[str, MappingProxyType[str, int]] = {
            name: MappingProxyType(_field_names(spec))
            for name, spec in segments.items()
            if _is_segment_name(name)
        }
        # Templates serve several versions: a segment any version defines (SFT in a v2.3
        # message) is simply absent, not a template error.
        self.known_segments = frozenset(self.segment_names) | all_segments
        # Likewise for groups: ORDER_CHOICE (2.5.1) asked of a 2.3 message is empty; a
        # name that no version defines is a typo.
        self.known_groups = all_groups

    def structure_for(self, msh9_structure: str, event: str) -> str | None:
        """Message structure from MSH-9.3, else from the version's event table."""
        wildcard = self._events.get(event.split("^", 1)[0] + "^*")
        for candidate in (
            msh9_structure,
            self._events.get(event),
            wildcard,
            event.replace("^", "_"),
        ):
            if candidate and candidate in self._messages:
                return candidate
        return None

    def structure(self, name: str) -> Node | None:
        """The compiled structure tree, or None when the version does not define it."""
        with self._lock:
            if name not in self._structures:
                spec = self._messages.get(name)
                self._structures[name] = (
                    None if spec is None else _compile(name, name, spec, (1, 1), is_group=True)
                )
            return self._structures[name]


class StructureCatalog:
    """Per-version catalogs, loaded on first use and kept for the converter's lifetime."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[str, VersionCatalog] = {}
        self._segment_union: frozenset[str] | None = None
        data = resources.files("converter.hl7v2").joinpath("data")
        self._group_union = frozenset(
            line.strip()
            for line in data.joinpath("group_names.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        )
        table = tomllib.loads(
            resources.files("converter.hl7v2").joinpath("data/event_structures.toml").read_text()
        )
        self._default_events: dict[str, str] = dict(table.get("default", {}))
        self._version_events: dict[str, dict[str, str]] = {
            key: dict(value) for key, value in table.items() if key != "default"
        }

    def _all_segments(self) -> frozenset[str]:
        if self._segment_union is None:
            latest = importlib.import_module("hl7apy.v2_8_2.segments").SEGMENTS
            oldest = importlib.import_module("hl7apy.v2_3.segments").SEGMENTS
            self._segment_union = frozenset(
                name for name in (*latest, *oldest) if _is_segment_name(name)
            )
        return self._segment_union

    def version(self, version: str) -> VersionCatalog:
        """The catalog for an MSH-12 value; unsupported versions raise (HL7 error 203)."""
        version = version.strip()
        module = SUPPORTED_VERSIONS.get(version)
        if module is None:
            # MSH-12 is message content (a misaligned MSH puts a name there): detail only.
            raise UnsupportedMessageError(
                "HL7 version is not supported (2.3 to 2.8)",
                location="MSH-12",
                hl7_error_code="203",
                detail=repr(version[:40]),
            )
        with self._lock:
            catalog = self._versions.get(version)
            if catalog is None:
                events = dict(self._default_events)
                for key in _version_chain(version):
                    events.update(self._version_events.get(key, {}))
                catalog = VersionCatalog(
                    version, module, events, self._all_segments(), self._group_union
                )
                self._versions[version] = catalog
            return catalog


def supported_group_names() -> frozenset[str]:
    """Short names (``ORDER_OBSERVATION``) of every group of every supported version, read
    from hl7apy's tables (slow: this is what ``data/group_names.txt`` is made from)."""
    names: set[str] = set()

    def walk(structure: str, spec: Any) -> None:
        for child in spec[1]:
            if child[3] == "GRP":
                names.add(child[0].removeprefix(structure + "_"))
                walk(structure, child[1])

    for module in sorted(set(SUPPORTED_VERSIONS.values())):
        messages = importlib.import_module(f"hl7apy.{module}.messages").MESSAGES
        for structure, spec in messages.items():
            walk(structure, spec)
    return frozenset(names)


def _version_chain(version: str) -> list[str]:
    """Version table keys that apply, least specific first ("2.8.1" → 2.8, 2.8.1)."""
    parts = version.split(".")
    return [".".join(parts[:n]) for n in range(2, len(parts) + 1)]


def _is_segment_name(name: str) -> bool:
    # hl7apy also lists pseudo segments (ANYHL7SEGMENT, ANYZSEGMENT) that match anything.
    return len(name) == 3 and name.isalnum()


def _field_names(spec: tuple[Any, ...]) -> dict[str, int]:
    names: dict[str, int] = {}
    if len(spec) < 2:  # hl7apy lists a few withdrawn segments with no fields
        return names
    for child in spec[1]:
        ident, definition = child[0], child[1]
        if definition is None or "_" not in ident:
            continue
        position = int(ident.rsplit("_", 1)[1])
        long_name = definition[3]
        if isinstance(long_name, str) and long_name:
            names.setdefault(long_name.lower(), position)
    return names


#: Group names hl7apy made up (from the segments they hold) or misspelt where HL7 names
#: the group: (structure, hl7apy's name) → the name of the standard's message table. HL7
#: v2.5.1 ch. 7's OUL_R22 / OUL_R23 / OUL_R24 tables (the names v2.5 and v2.6 use too),
#: and ch. 4's OML_O21 / OML_O35 TIMING. The strict structure check
#: (:mod:`converter.hl7v2.strict_structure`) names groups by it too.
STANDARD_GROUP_NAMES: MappingProxyType[tuple[str, str], str] = MappingProxyType(
    {
        # hl7apy's v2.5 and v2.6 tables misspell the TIMING group of OML_O21 and OML_O35.
        ("OML_O21", "TIIMING"): "TIMING",
        ("OML_O35", "TIIMING"): "TIMING",
        ("OUL_R22", "OBXTCDSIDNTE_SUPPGRP"): "RESULT",
        ("OUL_R23", "PIDPD1NTE_SUPPGRP"): "PATIENT",
        ("OUL_R23", "PV1PV2_SUPPGRP"): "VISIT",
        ("OUL_R23", "SPMOBXSACINVOBRORCNTETQ1TQ2OBXTCDSIDNTECTI_SUPPGRP"): "SPECIMEN",
        ("OUL_R23", "TQ1TQ2_SUPPGRP"): "TIMING_QTY",
        ("OUL_R23", "OBXTCDSIDNTE_SUPPGRP"): "RESULT",
        ("OUL_R24", "PIDPD1NTE_SUPPGRP"): "PATIENT",
        ("OUL_R24", "PV1PV2_SUPPGRP"): "VISIT",
        ("OUL_R24", "TQ1TQ2_SUPPGRP"): "TIMING_QTY",
        ("OUL_R24", "SPMOBXSACINV_SUPPGRP"): "SPECIMEN",
        ("OUL_R24", "OBXTCDSIDNTE_SUPPGRP"): "RESULT",
    }
)


def _compile(
    structure: str, name: str, spec: Any, cardinality: tuple[int, int], *, is_group: bool
) -> Node:
    root = _compile_group(structure, name, spec, cardinality)
    ambiguous: set[str] = set()
    _collect_ambiguous(root, ambiguous)
    return Node(
        root.name,
        True,
        root.min,
        root.max,
        root.children,
        root.first,
        head=root.head,
        loose=root.loose,
        check=root.check,
        inside=root.inside,
        ambiguous=frozenset(ambiguous),
    )


#: Groups whose required first segment senders are known to leave out (see
#: :func:`_compile_group`): RDS_O13's ORDER_DETAIL_SUPPLEMENT opens with an NTE that
#: pharmacy systems omit before its RXR; OML_O21's OBSERVATION_REQUEST opens with an OBR
#: that an order sent as ORC and specimens only (SPM) leaves out.
_HEADLESS_GROUPS = frozenset({"ORDER_DETAIL_SUPPLEMENT", "OBSERVATION_REQUEST"})


def _compile_group(structure: str, name: str, spec: Any, cardinality: tuple[int, int]) -> Node:
    low, high = cardinality
    children: list[Node] = []
    for child in spec[1]:
        child_name, child_spec, child_card, kind = child[0], child[1], child[2], child[3]
        if kind == "GRP":
            short = child_name.removeprefix(structure + "_")
            short = STANDARD_GROUP_NAMES.get((structure, short), short)
            children.append(_compile_group(structure, short, child_spec, tuple(child_card)))
        else:
            children.append(
                Node(child_name, False, child_card[0], child_card[1], first=frozenset({child_name}))
            )
    first: set[str] = set()
    for child_node in children:
        first |= child_node.first
        if child_node.min > 0:
            break
    # A group that must open with a segment senders leave out (ORDER_DETAIL_SUPPLEMENT:
    # NTE) may still be recognised, as a last resort, by what follows that segment up to
    # the next required one. Only those listed: elsewhere a stray segment opening a group
    # without its head (a PR1 before the FT1 of a DFT's FINANCIAL) would make an empty
    # group of what the sender wrote out of place.
    head = children[0].name if children and not children[0].is_group and children[0].min else None
    loose: set[str] = set()
    if head is not None and name in _HEADLESS_GROUPS:
        for child_node in children[1:]:
            loose |= child_node.first
            if child_node.min > 0:
                break
    inside: set[str] = set()
    for child_node in children:
        inside |= child_node.inside if child_node.is_group else {child_node.name}
    required = [child_node for child_node in children if child_node.min > 0]
    # Entering the group does not by itself bring every required part: check it is whole.
    check = bool(required) and (len(required) > 1 or children[0] is not required[0])
    return Node(
        name,
        True,
        low,
        high,
        tuple(children),
        frozenset(first),
        head=head,
        loose=frozenset(loose - first),
        check=check,
        inside=frozenset(inside),
    )


def _collect_ambiguous(node: Node, found: set[str]) -> None:
    """Heads of repeating groups that a node nested in the group can also start."""
    for child in node.children:
        if not child.is_group:
            continue
        if (
            child.head is not None
            and child.max != 1
            and any(child.head in inner.first for inner in _descendants(child, skip_head=True))
        ):
            found.add(child.head)
        _collect_ambiguous(child, found)


def _descendants(node: Node, *, skip_head: bool) -> list[Node]:
    nodes: list[Node] = []
    for index, child in enumerate(node.children):
        if skip_head and index == 0:
            continue
        nodes.append(child)
        if child.is_group:
            nodes.extend(_descendants(child, skip_head=False))
    return nodes
