"""One conversion's rendering: templates emit resources, assembly keeps them.

A message root template calls ``emit("Patient", pid=msg.PID)``; that renders
``<family>/resources/Patient.j2`` to JSON, prunes empty values, gives the resource its
stable id and returns a :class:`Ref` which renders as ``{"reference": "Patient/<id>"}``.
A resource emitted twice with the same identity is merged into one.
``delete(ref)`` turns an emitted resource's bundle entry into a DELETE of its id;
``reference(...)`` gives the reference emit() would return without writing anything.
Running a template by its name (resolution, the active session, errors naming the file
and line) is :class:`~converter.templates.runner.TemplateRunner`'s, the session's base.
"""

from __future__ import annotations

import json
import json.encoder
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jinja2

from ..assembly.ids import stable_id
from ..assembly.merge import ListIndex, merge_into
from ..assembly.references import reference_among
from ..errors import MappingError, TemplateError
from .locations import input_location
from .memo import Frame, Memo, MemoEntry
from .runner import TemplateRunner, included_name
from .template_json import json_from_template, json_with_periods
from .warning_list import WarningList

__all__ = ["Ref", "RenderSession", "json_from_template"]

_ascii_string = json.encoder.encode_basestring_ascii  # json.dumps' default (ensure_ascii)
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference to a resource of the bundle being built."""

    type: str
    id: str
    reference: str

    def as_json(self) -> str:
        # What ``json.dumps({"reference": self.reference})`` writes, without its frames.
        return '{"reference": ' + _ascii_string(self.reference) + "}"

    def __str__(self) -> str:
        return self.reference


class RenderSession(TemplateRunner):
    """Collects the resources one message produces, in first-emission order."""

    def __init__(
        self,
        *,
        environment: jinja2.Environment,
        family: str,
        scope: str,
        reference_style: str,
        context: dict[str, Any],
        builtin_root: str,
        strict_values: bool = True,
        memoize: bool = True,
    ) -> None:
        super().__init__(
            environment=environment, family=family, context=context, builtin_root=builtin_root
        )
        self._scope = scope
        self._reference_style = reference_style
        self._order: list[tuple[str, str] | None] = []
        self._counters: dict[str, int] = {}
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        self.origins: dict[tuple[str, str], str] = {}
        self.warnings: WarningList = WarningList()
        self._refs: list[Ref] = []
        #: Resources whose entry is a DELETE (see :meth:`delete`), with the template line
        #: that deleted them; empty for almost every message.
        self.deleted: dict[tuple[str, str], str] = {}
        #: Resources that may hold a Period ending before its start (an object with both
        #: a start and an end, or merged from two renderings): the only ones
        #: :func:`~converter.assembly.bundle.build_bundle` has to walk for per-1.
        self.periods: set[tuple[str, str]] = set()
        #: Offset (``+0200``) for timestamps written without one, instead of the
        #: configured zone: set for a CDA document from its own effectiveTime.
        self.default_offset: str | None = None
        #: False: what FHIR cannot hold (control characters) is replaced with a warning.
        self.strict_values = strict_values
        #: Depth of :meth:`reference` renderings under way: emit() then writes nothing.
        self._referencing = 0
        #: Renderings reused within this conversion (see memo.py); None: off.
        self._memo: Memo | None = Memo(Ref) if memoize else None
        #: The long lists of merged resources, indexed (one resource merged thousands
        #: of times stays linear).
        self._lists = ListIndex()

    @property
    def memoize(self) -> bool:
        """Whether a rendering is reused when the same template is emitted again with
        the same inputs (the output is the same either way: see memo.py)."""
        return self._memo is not None

    @memoize.setter
    def memoize(self, on: bool) -> None:
        self._memo = Memo(Ref) if on else None

    # -- functions exposed to templates --------------------------------------------------
    def emit(self, template: str, **variables: Any) -> Ref | None:
        """Render a resource template; None when the resource came out empty."""
        name = self.resolve(template)
        if self._referencing:
            # Inside reference(): what the template emits itself is not written either.
            return self._reference_only(name, variables, top=False)
        memo = self._memo
        if memo is None:
            return self._emit_rendered(name, variables)[0]
        return self._emit_reusing(memo, name, variables)

    def _emit_reusing(self, memo: Memo, name: str, variables: dict[str, Any]) -> Ref | None:
        """emit(), reusing an earlier rendering of the same template and inputs when
        that is provably the same (see memo.py)."""
        frames = self._frames
        keyed = memo.key(name, variables, self.default_offset, self.strict_values)
        if keyed is None or type(self.warnings) is not WarningList:
            if frames:
                frames[-1].pure = False
            return self._emit_rendered(name, variables)[0]
        key, positions = keyed
        entry = memo.entries.get(key)
        if entry is not None:
            return self._replay(memo, name, variables, entry)
        warnings = self.warnings
        frame = Frame(len(warnings), warnings.checks)
        frames.append(frame)
        try:
            ref, message_scoped = self._emit_rendered(name, variables)
        finally:
            frames.pop()
        reusable = (
            frame.pure
            and not message_scoped
            and len(warnings) == frame.warnings
            and warnings.checks == frame.checks
            and (frame.blind or not positions)
        )
        if reusable:
            memo.entries[key] = MemoEntry(ref, frame.children, frame.blind, variables)
        if frames:
            parent = frames[-1]
            if reusable:
                parent.children.append((name, variables))
                parent.blind = parent.blind and frame.blind
            else:
                parent.pure = False
        return ref

    def _replay(
        self, memo: Memo, name: str, variables: dict[str, Any], entry: MemoEntry
    ) -> Ref | None:
        """What emitting again does, without the rendering: the slot, the emits of the
        rendering itself, the counter. Its resource is already in the bundle with all it
        said (first written, or merged without a conflict), so merging it again would
        change nothing."""
        self._order.append(None)
        frames = self._frames
        frame = Frame(len(self.warnings), 0)
        frames.append(frame)
        try:
            for child, child_variables in entry.children:
                self._emit_reusing(memo, child, child_variables)
        finally:
            frames.pop()
        if frames:
            parent = frames[-1]
            if frame.pure:
                parent.children.append((name, variables))
                parent.blind = parent.blind and entry.blind and frame.blind
            else:
                parent.pure = False
        ref = entry.ref
        if ref is None:
            return None
        self._counters[name] = self._counters.get(name, 0) + 1
        # A Ref of its own, as a rendering would give (``is sameas`` tells them apart).
        return Ref(ref.type, ref.id, ref.reference)

    def _emit_rendered(self, name: str, variables: dict[str, Any]) -> tuple[Ref | None, bool]:
        """emit() by rendering; also whether the resource's id derives from this
        message (it has no identity)."""
        # Reserve the position now so that a resource precedes what it emits itself.
        slot = len(self._order)
        self._order.append(None)
        built = self._build(name, variables)
        if built is None:
            return None, False
        resource, identity, periods = built
        rtype = resource["resourceType"]
        counter = self._counters.get(name, 0) + 1
        self._counters[name] = counter
        rid = resource.get("id")
        message_scoped = False
        if rid is None:
            parts = _identity_parts(identity)
            message_scoped = not parts
            rid = self._id_for(rtype, parts, name, counter)
            resource = {"resourceType": rtype, "id": rid, **resource}
        key = (rtype, rid)
        existing = self.resources.get(key)
        if existing is None:
            self.resources[key] = resource
            self.origins[key] = name
            if periods:
                self.periods.add(key)
            self._order[slot] = key
            ref = Ref(rtype, rid, self._reference_for(rtype, rid))
            self._refs.append(ref)
            return ref, message_scoped
        # A start from one rendering and an end from the other make a Period too.
        self.periods.add(key)
        conflicts = merge_into(existing, resource, index=self._lists)
        if conflicts:
            # Same identity, different content: the source reused an id (or a template's
            # identity is too coarse). The first values are kept; say where they differed.
            self.warnings.append(
                f"{rtype} {rid} emitted twice with different values "
                f"({', '.join(conflicts[:5])}); the first kept (from {name})"
            )
        return Ref(rtype, rid, self._reference_for(rtype, rid)), message_scoped

    def reference(self, template: str, **variables: Any) -> Ref | None:
        """A reference to the resource ``emit(template, **variables)`` would write,
        without writing it: ``"partOf": {{ reference("Location", pl=pl, level="room") }}``.

        The template is rendered as emit() renders it, only to learn the resource's id;
        neither the resource nor what its template emits itself enters the bundle, and
        the warnings of that rendering are dropped (an invalid value still fails the
        message). For a resource this message does not describe, which the server holds
        from an earlier message: writing it again from the little this message says of
        it would replace what the server holds. The reference is ``Type/id`` (also in the
        conditional modes, whose ``urn:uuid`` references only name entries of the
        bundle), so it names the stored resource only if that resource is written by id
        (``PUT Type/id``: every resource in ``put`` mode, one without a system-valued
        identifier in the others); the bundle's own entry when this conversion emitted it.
        None when the resource comes out empty; a resource without ``_identity`` (an id
        derived from this message, naming nothing stored) is a MappingError.
        """
        self._impure()  # whether it is in the bundle decides the reference
        return self._reference_only(self.resolve(template), variables, top=True)

    def reference_if_identified(self, template: str, **variables: Any) -> Ref | None:
        """:meth:`reference`, but None (not a MappingError) for a resource without
        ``_identity``: for a template asking whether the resource has an id that names
        it across messages (a patient with an ID number), without repeating the rule
        the resource's own template applies."""
        self._impure()
        return self._reference_only(
            self.resolve(template), variables, top=True, unidentified_is_none=True
        )

    def _reference_only(
        self,
        name: str,
        variables: dict[str, Any],
        *,
        top: bool,
        unidentified_is_none: bool = False,
    ) -> Ref | None:
        warnings = len(self.warnings)
        self._referencing += 1
        try:
            built = self._build(name, variables)
        finally:
            self._referencing -= 1
            if top:
                del self.warnings[warnings:]
        if built is None:
            return None
        resource, identity, _ = built
        rtype = resource["resourceType"]
        rid = resource.get("id")
        if rid is None:
            parts = _identity_parts(identity)
            if top and not parts:
                if unidentified_is_none:
                    return None
                raise MappingError(
                    f"reference() to the {rtype} of {name}: it has no identity (its "
                    "_identity came out empty), so its id would derive from this message "
                    "and name nothing stored",
                    template=self.current_template_line() or name,
                )
            # Inside a reference, a resource without identity gets the id its next emit()
            # would give it; the counter stays as it is, nothing being written.
            rid = self._id_for(rtype, parts, name, self._counters.get(name, 0) + 1)
        if (rtype, rid) in self.resources:
            return Ref(rtype, rid, self._reference_for(rtype, rid))
        return Ref(rtype, rid, f"{rtype}/{rid}")

    def _build(
        self, name: str, variables: dict[str, Any]
    ) -> tuple[dict[str, Any], Any, bool] | None:
        """Render a resource template: the resource (with its explicit id, if any,
        checked), its ``_identity`` and whether it may hold a Period (an object with a
        start and an end); None when it came out empty."""
        text = self.render(name, variables)
        try:
            resource, periods = json_with_periods(text, name)
        except TemplateError as exc:
            exc.template = self._file_name(name)
            exc.location = input_location(variables)
            raise
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise TemplateError(
                "a resource template must render one object with a resourceType",
                template=self._file_name(name),
                location=input_location(variables),
            )
        identity = resource.pop("_identity", None)
        if len(resource) <= 1 or set(resource) <= {"resourceType", "id"}:
            return None
        rid = resource.get("id")
        if rid is not None and not (isinstance(rid, str) and _FHIR_ID.fullmatch(rid)):
            raise MappingError(
                "the resource's explicit id is not a valid FHIR id ([A-Za-z0-9-.]{1,64})",
                template=self._file_name(name),
                location=input_location(variables),
                detail=repr(rid)[:100],
            )
        return resource, identity, periods

    def _id_for(self, rtype: str, parts: list[str], name: str, counter: int) -> str:
        if parts:
            return stable_id(self._scope, rtype, *parts)
        # No business identifier: stable for this message (control id, sender and
        # position are in the scope), so a re-sent message maps the same.
        return stable_id(self._scope, "message", self._context["message_key"], name, str(counter))

    def delete(self, ref: Any) -> str:
        """Make the bundle entry of an emitted resource a DELETE of its id; renders as
        nothing: ``{% do delete(emit("Patient", pid=msg.PID)) %}``.

        The resource is rendered as its template always renders it, so the id is the one
        every other message gives it. It leaves :meth:`emitted` (a Provenance lists what
        the bundle writes), and no other resource of the bundle may refer to it
        (:meth:`entries` refuses that). A resource whose id derives from this message (its
        template gave no ``_identity``) names nothing an earlier message wrote: refused.
        """
        self._impure()
        if ref is None:
            # emit() gave nothing: the resource came out empty.
            where = self.current_template_line() or "a template"
            self.warnings.append(f"nothing to delete in {where}: the resource came out empty")
            return ""
        key = (ref.type, ref.id) if type(ref) is Ref else None
        if key is None or key not in self.resources:
            raise MappingError(
                "delete() takes a reference that emit() returned in this conversion",
                detail=repr(ref)[:100],
            )
        if self._message_scoped(key):
            raise MappingError(
                f"cannot delete the {key[0]} of {self.origins[key]}: it has no identity "
                "(its _identity came out empty), so its id derives from this message and "
                "names nothing an earlier message wrote"
            )
        if key not in self.deleted:
            self.deleted[key] = self.current_template_line() or self.origins[key]
            self._refs = [r for r in self._refs if (r.type, r.id) != key]
        return ""

    def _message_scoped(self, key: tuple[str, str]) -> bool:
        """Whether the resource's id was made from this message (no ``_identity``):
        recomputed here rather than recorded by every emit()."""
        name = self.origins[key]
        message_key = self._context["message_key"]
        return any(
            key[1] == stable_id(self._scope, "message", message_key, name, str(n))
            for n in range(1, self._counters.get(name, 0) + 1)
        )

    def include(self, template: str, **variables: Any) -> Any:
        """Render a template that writes a JSON value (not a resource) and return it:
        CDA section templates return the references of the entries they emitted."""
        name = included_name(self._family, template)
        return self._json(self.render(name, variables), name, variables)

    def emitted(self, resource_type: str | None = None) -> list[Ref]:
        """References to what has been emitted so far (optionally of one type)."""
        self._impure()
        return [r for r in self._refs if resource_type is None or r.type == resource_type]

    def warn(self, message: str) -> str:
        """Record a warning from a template; renders as nothing."""
        self._impure()
        self.warnings.append(str(message))
        return ""

    def _reference_for(self, rtype: str, rid: str) -> str:
        if self._reference_style == "urn":
            return f"urn:uuid:{rid}"
        return f"{rtype}/{rid}"

    def entries(self) -> Iterable[tuple[str, dict[str, Any]]]:
        """Resources with the template that first produced them, in emission order
        (deleted ones too: :attr:`deleted` says which entries are DELETEs)."""
        if self.deleted:
            self._check_no_reference_to_deleted()
        for key in self._order:
            if key is not None:
                yield self.origins[key], self.resources[key]

    def _check_no_reference_to_deleted(self) -> None:
        """A resource of the bundle referring to one the bundle deletes is a mapping
        error: the server would refuse the reference (or keep a dangling one)."""
        targets = {self._reference_for(*key): key for key in self.deleted}
        for key, resource in self.resources.items():
            if key in self.deleted:
                continue
            found = reference_among(resource, targets)
            if found is not None:
                deleted = targets[found]
                # The ids go to detail: a Patient's id is patient data, and the message
                # of an error is what logs show.
                raise MappingError(
                    f"{key[0]} refers to the {deleted[0]} this conversion deletes "
                    f"(delete() in {self.deleted[deleted]}): leave the reference out, or do "
                    "not delete what the bundle still refers to",
                    template=self._file_name(self.origins[key]),
                    detail=f"{key[0]}/{key[1]} → {deleted[0]}/{deleted[1]}",
                )


def _identity_parts(identity: Any) -> list[str]:
    if identity is None:
        return []
    values = identity if isinstance(identity, list) else [identity]
    # Read as identifiers are written (Identifier.value is trimmed): " 12345" and "12345"
    # sent by two messages are one patient, not two resources holding one identifier.
    parts = (str(v).strip() for v in values if v is not None and v != [] and v != {})
    return [part for part in parts if part]
