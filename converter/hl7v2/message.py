"""Containers for a parsed HL7 v2 message, shaped for templates.

A :class:`Message` is the root :class:`Group`; groups hold :class:`Segment` objects and
nested groups following the message structure. Field values are :class:`Value` objects
that split and decode lazily, so a template pays only for what it reads:

* ``seg[3]`` is field 3 (1-based, MSH-1 is the field separator as in the standard);
  ``seg.patient_name`` is the same by name for the message's version.
* ``value[1]`` is component 1 (of the first repetition when ``value`` is a field),
  ``value[4][2]`` a sub-component; iterating a field yields its repetitions.
* ``str(value)`` is the decoded text of its first leaf; an absent value is empty and
  falsy, never an error, so templates need no existence checks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import TemplateError
from .encoding import Encoding
from .value import _FIELD, Value

SegmentNames = Mapping[str, int]

__all__ = ["Group", "Message", "Segment"]


class Segment:
    """One segment; fields by number (``seg[5]``) or by name (``seg.patient_name``)."""

    __slots__ = ("_cache", "_codec", "_enc", "_fields", "_names", "label", "name")

    def __init__(
        self,
        name: str,
        fields: list[str],
        enc: Encoding,
        codec: str,
        label: str,
        names: SegmentNames | None = None,
    ) -> None:
        self.name = name
        self.label = label
        self._fields = fields
        self._enc = enc
        self._codec = codec
        self._names = names
        self._cache: dict[int, Value] = {}

    def field(self, n: int) -> Value:
        """Field ``n`` (1-based), empty when absent."""
        found = self._cache.get(n)
        if found is not None:
            return found
        if n < 1:
            raise IndexError(f"HL7 field numbers start at 1, got {n} at {self.label}")
        fields = self._fields
        # MSH-1 is the field separator itself, so MSH fields sit one position lower.
        index = n - 1 if self.name == "MSH" else n
        if self.name == "MSH" and n == 1:
            raw = self._enc.field
        else:
            raw = fields[index] if index < len(fields) else ""
        value = self._cache[n] = Value(
            raw, self._enc, self._codec, _FIELD, (self.label, n, 0, 0, 0)
        )
        return value

    def __getitem__(self, key: object) -> Value:
        # ``object``, not ``int``: the compiled build would raise its own TypeError before
        # this line, and a template's ``pid["5"]`` is a KeyError in both builds.
        if type(key) is not int:
            raise KeyError(key)
        found = self._cache.get(key)  # field()'s own first step, without its call
        if found is not None:
            return found
        if key < 2 or self.name == "MSH":
            return self.field(key)  # MSH's own numbering, and the error for 0
        # field()'s work for any other segment, without its call: one per field a
        # template reads.
        fields = self._fields
        raw = fields[key] if key < len(fields) else ""
        value = self._cache[key] = Value(
            raw, self._enc, self._codec, _FIELD, (self.label, key, 0, 0, 0)
        )
        return value

    def __getattr__(self, attr: str) -> Value:
        names = self._names
        if names is not None and not attr.startswith("_"):
            position = names.get(attr)
            if position is not None:
                return self.field(position)
        raise AttributeError(f"{self.name} has no field named {attr!r}")

    @property
    def field_count(self) -> int:
        """Number of fields present (trailing empty fields omitted by the sender excluded)."""
        return len(self._fields) if self.name == "MSH" else len(self._fields) - 1

    def __bool__(self) -> bool:
        return bool(self._fields)

    def __str__(self) -> str:
        return self.label

    def __repr__(self) -> str:
        return f"<Segment {self.label}>"


class Group:
    """A segment group of the message structure (``PATIENT_RESULT``, ``OBSERVATION``…).

    ``group.PID`` is the first ``PID`` at any depth under the group (an absent segment
    is empty and falsy); ``group.all("OBX")`` every one; ``group.find("OBSERVATION")``
    or ``group.OBSERVATION`` the nested groups of that name, in message order.
    """

    __slots__ = (
        "_cache",
        "_known_groups",
        "_known_segments",
        "_segment_names",
        "children",
        "name",
    )

    def __init__(
        self,
        name: str,
        known_segments: frozenset[str],
        segment_names: Mapping[str, SegmentNames] | None = None,
        known_groups: frozenset[str] | None = None,
    ) -> None:
        self.name = name
        self.children: list[Segment | Group] = []
        self._known_segments = known_segments
        self._segment_names: Mapping[str, SegmentNames] = segment_names or {}
        #: Group names some HL7 version defines; None accepts any name.
        self._known_groups = known_groups
        self._cache: dict[str, Any] = {}

    def _subgroup(self, name: str) -> Group:
        """A new empty group sharing this group's vocabulary."""
        return Group(name, self._known_segments, self._segment_names, self._known_groups)

    def all(self, segment_name: str) -> list[Segment]:
        """Every segment with this name under the group, in message order."""
        index: dict[str, list[Segment]] | None = self._cache.get("segments by name")
        if index is None:
            # One walk indexes every name: a root template asks for many (NK1, AL1, DG1,
            # OBX, IN1, PR1…), most of them absent.
            index = {}
            for seg in self.walk():
                index.setdefault(seg.name, []).append(seg)
            self._cache["segments by name"] = index
        return list(index.get(segment_name, ()))

    def find(self, group_name: str) -> list[Group]:
        """Nested groups with this name (not searched inside a match), in message order."""
        key = "g:" + group_name
        cached = self._cache.get(key)
        if cached is None:
            known = self._known_groups
            if known is not None and group_name not in known:
                # A template typo must not read as "no such group in this message".
                raise TemplateError(
                    f"no HL7 v2 version defines a segment group named {group_name!r}"
                )
            cached = []
            _collect_groups(self, group_name, cached)
            self._cache[key] = cached
        return list(cached)

    def first(self, segment_name: str) -> Segment:
        """The first segment with this name under the group, or an empty segment."""
        found = self.all(segment_name)
        if found:
            return found[0]
        return Segment(
            segment_name,
            [],
            _NO_ENCODING,
            "ascii",
            segment_name,
            self._segment_names.get(segment_name),
        )

    @property
    def segments(self) -> list[Segment]:
        """Segments directly in this group (not in nested groups)."""
        return [child for child in self.children if isinstance(child, Segment)]

    @property
    def groups(self) -> list[Group]:
        """Groups directly in this group."""
        return [child for child in self.children if isinstance(child, Group)]

    def walk(self) -> Iterator[Segment]:
        """Every segment under the group, depth first, in message order."""
        for child in self.children:
            if isinstance(child, Segment):
                yield child
            else:
                yield from child.walk()

    def __getattr__(self, attr: str) -> Any:
        if attr.isupper() or (attr[:1].isupper() and attr[1:].isalnum()):
            if len(attr) == 3 and attr.isalnum():
                if attr in self._known_segments or attr[0] == "Z":
                    return self.first(attr)
            elif "_" in attr or attr.isalpha():
                return self.find(attr)
        raise AttributeError(f"no segment or group named {attr!r}")

    def __bool__(self) -> bool:
        return bool(self.children)

    def __repr__(self) -> str:
        return f"<Group {self.name}>"


def _collect_groups(group: Group, name: str, out: list[Group]) -> None:
    for child in group.children:
        if isinstance(child, Group):
            if child.name == name:
                out.append(child)
            else:
                _collect_groups(child, name, out)


_NO_ENCODING = Encoding()


class Message(Group):
    """A parsed message: the root group plus what MSH says about it."""

    __slots__ = (
        "codec",
        "control_id",
        "encoding",
        "event",
        "facility_scope",
        "message_code",
        "sending_application",
        "sending_facility",
        "structure",
        "trigger",
        "version",
    )

    def __init__(
        self,
        *,
        segments: list[Segment],
        encoding: Encoding,
        codec: str,
        structure: str,
        known_segments: frozenset[str],
        segment_names: Mapping[str, SegmentNames] | None = None,
        known_groups: frozenset[str] | None = None,
    ) -> None:
        super().__init__(structure, known_segments, segment_names, known_groups)
        msh = segments[0]
        self.encoding = encoding
        self.codec = codec
        self.control_id = str(msh.field(10))
        self.message_code = str(msh.field(9)[1])
        self.trigger = str(msh.field(9)[2])
        self.event = f"{self.message_code}^{self.trigger}"
        self.version = str(msh.field(12))
        self.sending_application = str(msh.field(3))
        facility = msh.field(4)
        self.sending_facility = str(facility)
        #: What scopes an identifier without an authority: the sending facility (MSH-4),
        #: else the sending application (MSH-3), each by its universal id (HD.2) when it
        #: has one, else its namespace id (HD.1). Two facilities may share a namespace id
        #: ("CH") and differ by their OIDs: scoped by HD.1, their patients "12345" would
        #: be one Patient. :meth:`converter.Converter.parse` refines it with the code maps
        #: (a namespace alone standing for a universal id); without a map both agree.
        self.facility_scope = _hd_scope(facility) or _hd_scope(msh.field(3))
        self.structure = structure

    @property
    def sender(self) -> str:
        """``application^facility`` from MSH-3/MSH-4: the scope of unqualified identifiers."""
        return f"{self.sending_application}^{self.sending_facility}"

    def __repr__(self) -> str:
        return f"<Message {self.event} {self.control_id}>"


# An OID or UUID written as its URN (any case) is the OID or UUID, as the code maps'
# facility_scope reads it (converter/templates/identity_filters.py).
_URN = re.compile(
    r"urn:(?:oid:(?=[0-2](?:\.(?:0|[1-9]\d*))+$)"
    r"|uuid:(?=[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$))",
    re.ASCII | re.IGNORECASE,
)


def _hd_scope(hd: Value) -> str:
    """The scope an HD (MSH-3, MSH-4) gives: its universal id (HD.2) when valued, else its
    namespace id (HD.1), without surrounding blanks and without the ``urn:oid:`` /
    ``urn:uuid:`` of an OID or UUID; "" when the HD names nothing.

    Blanks are no scope: an MSH-4 of spaces was the scope "   ", which an identity reads
    as empty and drops, so the local identifiers of every sender padding MSH-4 were one
    record (the sending application now scopes them)."""
    text = str(hd[2]).strip() or str(hd[1]).strip()
    urn = _URN.match(text)
    return text[urn.end() :] if urn else text
