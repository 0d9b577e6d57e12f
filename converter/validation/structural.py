"""Compiled structural validation: fhir.resources' R4B model rules, 15-20x faster.

The rules are read from the fhir.resources model classes (fields, aliases, cardinality,
choice groups, primitive types) into plain tables, model by model on first use; a bundle
is then checked by a recursive walk over its dicts and lists, without pydantic.

What fhir.resources checks, and so what is checked here:

* every key is an element of the model (by JSON name or Python field name), a
  ``_name`` primitive extension, ``fhir_comments``, or ``resourceType`` naming the model;
* lists where the element repeats, single values elsewhere; no null in a list of
  complex elements; a primitive extension has ``id``, ``extension`` or ``fhir_comments``;
* primitive values as fhir_core types validate them (:mod:`.primitives`);
* required complex elements are present (a null passes, as in fhir.resources);
* only when the element is otherwise valid: required primitives are present (or carry
  an extension), then at most one ``value[x]`` of each choice group (exactly one when
  the group is required);
* a contained resource or ``Bundle.entry.resource`` is checked against the model its
  ``resourceType`` names (``Resource`` when absent).

And, unless ``r4_patterns=False``, what R4 requires beyond that:

* codes, uris, urls, canonicals, oids and uuids match R4's anchored patterns
  (:func:`.r4_pattern_check`);
* FHIR JSON (``r4_json``, on with ``r4_patterns`` unless given): primitive values have
  their JSON type, true/false, a number or a string, never one that fhir.resources
  converts (:func:`.primitive_check` with ``r4_json``); objects are JSON objects, not JSON text in a
  string; no null, except in a primitive list paired with a value or extension at the
  same index of its ``_name`` sibling; no empty string or list; elements go by their JSON
  names only (not ``class_fhir``, ``status__ext``, ``resource_type``, ``fhir_comments``);
  a contained or entry resource names its ``resourceType``.
"""

from __future__ import annotations

import json
import threading
import typing
from typing import Any, get_args, get_origin

from fhir_core.types import FhirBase, FhirElementOrResourceBase

from ..errors import BundleValidationError
from .models import fhir_path
from .primitives import Check, primitive_check, r4_pattern_check

__all__ = ["Issue", "StructuralValidator"]

#: Where (pydantic-style location), what (no values), and the offending value if any.
Issue = tuple[tuple[str | int, ...], str, Any]
#: The same with the location as a linked (parent, key) path, as built while walking.
_Raw = tuple[Any, str, Any]

# Field kinds.
_PRIM, _PRIM_LIST, _MODEL, _MODEL_LIST, _RES, _RES_LIST, _COMMENTS = range(7)
_KNOWN_VALIDATORS = {
    "reject_null_complex_elements",
    "validate_after_model_construction",
    "validate_extension_or_fhir_comment_required",
}
_EXTRA = "unknown element"
_NOT_LIST = "expected a list"
_NOT_OBJECT = "expected an object"
_MISSING = "required element is missing"
_NULL = "null is not allowed here"
_NULL_ITEM = "null is not allowed in a list of elements"
_PRIM_EXT_EMPTY = "a primitive extension needs id, extension or fhir_comments"
# FHIR R4 JSON rules that fhir.resources does not check.
_R4_NULL = "null is not allowed (FHIR R4 JSON)"
_R4_NULL_ITEM = "null without a value or extension at this index of its pair (FHIR R4 JSON)"
_R4_EMPTY_LIST = "an empty list is not allowed (FHIR R4 JSON)"
_R4_NOT_OBJECT = "expected a JSON object (FHIR R4 JSON)"
_R4_NO_TYPE = "a resource needs its resourceType (FHIR R4 JSON)"


class _Field:
    __slots__ = ("alias", "check", "kind", "model", "null_item_ok", "nullable")

    def __init__(self, kind: int, alias: str | None, nullable: bool) -> None:
        self.kind = kind
        #: For a field reached by its Python name: the JSON name that takes precedence.
        self.alias = alias
        self.nullable = nullable
        self.null_item_ok = False
        self.check: Check = _no_check
        self.model: _Model | None = None


class _Model:
    """Validation table of one fhir.resources model class, compiled on first use."""

    __slots__ = (
        "after",
        "by_name",
        "choice_of",
        "choices",
        "cls",
        "fields",
        "prim_ext",
        "required",
        "required_prims",
        "rtype",
    )

    def __init__(self, cls: type[Any]) -> None:
        self.cls = cls
        self.rtype: str = cls.get_resource_type()
        self.fields: dict[str, _Field] | None = None
        #: Fields reached by their Python name (``class_fhir``, ``status__ext``).
        self.by_name: dict[str, _Field] = {}
        self.after = False
        self.prim_ext = False
        self.required: list[tuple[str, str]] = []
        self.required_prims: list[tuple[str, str, str, str]] = []
        #: Choice groups (required, prefix), and the group of each member key.
        self.choices: list[tuple[bool, str]] = []
        self.choice_of: dict[str, int] = {}


def _no_check(value: Any) -> str | None:
    return None


def _optional(tp: Any) -> tuple[Any, bool]:
    """Strip ``None`` from a union: (type, whether None was allowed)."""
    if get_origin(tp) in (typing.Union, type(int | None)):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) != len(get_args(tp)):
            if len(args) != 1:
                raise NotImplementedError(f"unsupported union {tp!r}")
            return args[0], True
    return tp, False


class StructuralValidator:
    """Validates a Bundle dict like ``fhir.resources.R4B.bundle.Bundle`` does, and (by
    default) by R4's own rules that fhir.resources does not check.

    Same interface and errors as :class:`~converter.validation.ModelValidator`. Tables
    are built per model on first use; validation is then safe from several threads.
    ``r4_patterns=False`` gives exactly fhir.resources' verdicts; ``r4_json`` alone
    switches R4's JSON format (it follows ``r4_patterns`` when not given).
    """

    def __init__(self, *, r4_patterns: bool = True, r4_json: bool | None = None) -> None:
        from fhir.resources.R4B import fhirtypes
        from fhir.resources.R4B.bundle import Bundle
        from fhir_core.constraints import FHIR_TYPES_MAPS
        from pydantic._internal._validators import import_string

        self._import = import_string
        #: Also check R4's anchored patterns (codes, uris, oids, uuids), which fhir_core
        #: does not.
        self._r4_patterns = r4_patterns
        #: Also check R4's JSON format (value types, nulls, empties, names), which
        #: fhir_core (pydantic's lax mode) does not; with both False, checks exactly what
        #: fhir.resources checks.
        self._r4_json = r4_patterns if r4_json is None else r4_json
        self._lock = threading.Lock()
        self._models: dict[type[Any], _Model] = {}
        prefix: str = getattr(fhirtypes.ResourceType, "_prefix")  # noqa: B009 (untyped)
        #: resourceType -> dotted class path, as fhir_core resolves contained resources.
        self._type_paths = {
            key[len(prefix) : -4]: path
            for key, path in FHIR_TYPES_MAPS.items()
            if key.startswith(prefix) and key.endswith("Type")
        }
        self._by_type: dict[str, _Model] = {}
        self._bundle = self._model(Bundle)
        self._compile(self._bundle)

    # -- public API ------------------------------------------------------------------------
    def validate(self, bundle: dict[str, Any], origins: list[str]) -> None:
        """Raise :class:`BundleValidationError` listing every problem found."""
        found = self.issues(bundle)
        if not found:
            return
        issues: list[str] = []
        details: list[str] = []
        for loc, message, value in found:
            where = fhir_path(bundle, loc)
            index = loc[1] if len(loc) >= 2 and loc[0] == "entry" else None
            origin = (
                f" [{origins[index]}]" if isinstance(index, int) and index < len(origins) else ""
            )
            issues.append(f"{where}: {message}{origin}")
            shown = "" if value is None else f" (value {_preview(value)})"
            details.append(f"{where}: {message}{shown}")
        raise BundleValidationError(
            f"bundle is not valid FHIR ({len(issues)} issue(s)): {issues[0]}",
            issues=issues,
            detail="\n".join(details)[:2000],
        )

    def issues(self, bundle: Any) -> list[Issue]:
        """Every problem in ``bundle``, with pydantic-style locations."""
        out: list[_Raw] = []
        if not isinstance(bundle, dict):  # model_validate itself takes no JSON string
            out.append(((), _NOT_OBJECT, None))
        else:
            if self._r4_json and "resourceType" not in bundle:
                out.append((((), "resourceType"), _MISSING, None))
            try:
                self._object(self._bundle, bundle, (), out)
            except RecursionError:
                out.append(((), "elements are nested too deeply", None))
        return [(_flat(path), message, value) for path, message, value in out]

    # -- compilation -----------------------------------------------------------------------
    def _model(self, cls: type[Any]) -> _Model:
        model = self._models.get(cls)
        if model is None:
            model = self._models.setdefault(cls, _Model(cls))
        return model

    def _compile(self, model: _Model) -> dict[str, _Field]:
        with self._lock:
            if model.fields is None:
                self._build(model)
            assert model.fields is not None
            return model.fields

    def _build(self, model: _Model) -> None:
        cls = model.cls
        validators = set(cls.__pydantic_decorators__.model_validators)
        if validators - _KNOWN_VALIDATORS or cls.__pydantic_decorators__.field_validators:
            raise NotImplementedError(f"{cls.__name__} has validators this module does not know")
        if cls.model_config.get("extra") != "forbid":
            raise NotImplementedError(f"{cls.__name__} does not forbid extra elements")
        fields: dict[str, _Field] = {}
        for name, info in cls.model_fields.items():
            alias = info.alias or name
            if name == "fhir_comments" and self._r4_json:  # not an R4 element
                continue
            field = self._field(name, info.annotation)
            if info.is_required():
                model.required.append((alias, alias if self._r4_json else name))
            fields[alias] = field
            if name != alias and not self._r4_json:  # R4 JSON knows the JSON names only
                by_name = _Field(field.kind, alias, field.nullable)
                for slot in ("check", "model", "null_item_ok"):
                    setattr(by_name, slot, getattr(field, slot))
                model.by_name[name] = by_name
        instance = cls.model_construct()
        names = {name: info.alias or name for name, info in cls.model_fields.items()}
        element_names = cls.get_alias_mapping()
        for element, ext in instance.get_required_fields():
            name = element_names[element]
            # Extension.url has no ``_url`` sibling: (url, None).
            model.required_prims.append((element, name, names.get(ext, ""), ext or ""))
        for group, (prefix, members) in enumerate(instance.get_one_of_many_fields().items()):
            extra = cls.model_fields[members[0]].json_schema_extra or {}
            model.choices.append((extra.get("one_of_many_required") is True, prefix))
            for member in members:
                model.choice_of[names[member]] = model.choice_of[member] = group
        model.prim_ext = "validate_extension_or_fhir_comment_required" in validators
        model.after = bool(model.required_prims or model.choices)
        model.fields = fields  # last: a model with fields is complete

    def _field(self, name: str, annotation: Any) -> _Field:
        if name == "fhir_comments":
            return _Field(_COMMENTS, None, True)
        tp, nullable = _optional(annotation)
        many = get_origin(tp) is list
        item_ok = False
        if many:
            tp, item_ok = _optional(get_args(tp)[0])
        if isinstance(tp, type) and issubclass(tp, FhirBase):
            target = self._model(tp.get_model_klass())
            if issubclass(tp, FhirElementOrResourceBase):
                if target.cls.__name__ != "Resource":
                    raise NotImplementedError(f"{name}: only Resource choices are supported")
                field = _Field(_RES_LIST if many else _RES, None, nullable)
            else:
                field = _Field(_MODEL_LIST if many else _MODEL, None, nullable)
            # A null single element passes even when required (the fhir_core type allows it).
            field.nullable = nullable or not many
            field.model = target
            # reject_null_complex_elements skips the ``_name`` lists of primitive arrays.
            field.null_item_ok = item_ok and name.endswith("__ext")
            return field
        field = _Field(_PRIM_LIST if many else _PRIM, None, nullable)
        kind, check = primitive_check(tp, self._r4_json)
        field.check = r4_pattern_check(kind, check) if self._r4_patterns else check
        field.null_item_ok = item_ok
        return field

    def _resource_model(self, rtype: Any) -> _Model | str:
        """Model a ``resourceType`` names, or why it cannot be used."""
        known = self._by_type.get(rtype) if isinstance(rtype, str) else None
        if known is not None:
            return known
        if not isinstance(rtype, str):
            return "resourceType must be a string"
        path = self._type_paths.get(rtype)
        if path is None:
            return "unknown resourceType"
        cls = self._import(path)
        if not cls.has_resource_base():
            return "not a resource type"
        self._by_type[rtype] = found = self._model(cls)
        return found

    # -- validation ------------------------------------------------------------------------
    # Paths are linked pairs (parent, key), flattened only for the issues found.
    def _object(self, model: _Model, data: dict[str, Any], path: Any, out: list[_Raw]) -> None:
        fields = model.fields or self._compile(model)
        start = len(out)
        if model.prim_ext and self._empty_extension(model, data, path, out):
            return
        nulls: list[_Raw] | None = None
        for key, value in data.items():
            field = fields.get(key)
            if field is None:
                field = model.by_name.get(key)
                if field is None or field.alias in data:
                    if key != "resourceType" and (key != "resource_type" or self._r4_json):
                        out.append(((path, key), _EXTRA, None))
                    elif self._wrong_type(model, data, path, out, start):
                        return
                    continue
            if value is None:
                if not field.nullable:
                    out.append(((path, key), _NULL, None))
                elif self._r4_json:
                    out.append(((path, key), _R4_NULL, None))
                continue
            kind = field.kind
            if kind == 0:  # _PRIM
                message = field.check(value)
                if message is not None:
                    out.append(((path, key), message, value))
            elif kind == 2:  # _MODEL
                if type(value) is dict:
                    self._object(field.model, value, (path, key), out)  # type: ignore[arg-type]
                else:
                    self._other(field.model, value, (path, key), out)  # type: ignore[arg-type]
            elif kind == 4:  # _RES
                self._resource(field.model, value, (path, key), out)  # type: ignore[arg-type]
            elif type(value) is not list and not isinstance(value, list):
                if kind != _COMMENTS or not isinstance(value, str):
                    out.append(((path, key), _NOT_LIST, value if kind == _PRIM_LIST else None))
            elif not value and self._r4_json:
                out.append(((path, key), _R4_EMPTY_LIST, None))
            elif kind == 3:  # _MODEL_LIST
                sub = field.model
                where = (path, key)
                for index, item in enumerate(value):
                    if type(item) is dict:
                        self._object(sub, item, (where, index), out)  # type: ignore[arg-type]
                    elif item is not None:
                        self._other(sub, item, (where, index), out)  # type: ignore[arg-type]
                    elif not field.null_item_ok:
                        nulls = nulls or []
                        nulls.append((where, _NULL_ITEM, None))
                        break
                    elif self._r4_json and not _paired(data, key[1:], index):  # ``_name``
                        out.append(((where, index), _R4_NULL_ITEM, None))
            elif kind == 1:  # _PRIM_LIST
                check = field.check
                where = (path, key)
                for index, item in enumerate(value):
                    if item is not None:
                        message = check(item)
                        if message is not None:
                            out.append(((where, index), message, item))
                    elif not field.null_item_ok:
                        out.append(((where, index), _NULL, None))
                    elif self._r4_json and not _paired(data, "_" + key, index):
                        out.append(((where, index), _R4_NULL_ITEM, None))
            elif kind == _RES_LIST:
                where = (path, key)
                for index, item in enumerate(value):
                    if item is None:
                        nulls = nulls or []
                        nulls.append((where, _NULL_ITEM, None))
                        break
                    self._resource(field.model, item, (where, index), out)  # type: ignore[arg-type]
            elif not all(isinstance(item, str) for item in value):  # fhir_comments
                out.append(((path, key), "expected strings", None))
        if nulls is not None:  # reject_null_complex_elements runs before anything else
            del out[start:]
            out.extend(nulls)
            return
        if model.required:
            for alias, name in model.required:
                if alias not in data and name not in data:
                    out.append(((path, alias), _MISSING, None))
        if model.after and len(out) == start:
            self._after(model, data, path, out)

    def _wrong_type(
        self, model: _Model, data: dict[str, Any], path: Any, out: list[_Raw], start: int
    ) -> bool:
        """fhir_core pops ``resourceType`` (else ``resource_type``) and checks it first."""
        rtype = data["resourceType"] if "resourceType" in data else data["resource_type"]
        if rtype == model.rtype or (rtype is None and not self._r4_json):
            return False
        del out[start:]
        out.append(((path, "resourceType"), f"expected resourceType {model.rtype}", None))
        return True

    def _empty_extension(
        self, model: _Model, data: dict[str, Any], path: Any, out: list[_Raw]
    ) -> bool:
        """FHIRPrimitiveExtension's own before-validator."""
        named = "resourceType" in data or ("resource_type" in data and not self._r4_json)
        if named and self._wrong_type(model, data, path, out, len(out)):
            return True
        if (
            data.get("id") is None
            and data.get("extension") is None
            and (data.get("fhir_comments") is None)
        ):
            out.append((path, _PRIM_EXT_EMPTY, None))
            return True
        return False

    def _after(self, model: _Model, data: dict[str, Any], path: Any, out: list[_Raw]) -> None:
        """fhir_core's after-validators: required primitives, then choice groups."""
        start = len(out)
        for alias, name, ext_alias, ext_name in model.required_prims:
            if (data[alias] if alias in data else data.get(name)) is not None:
                continue
            ext = data[ext_alias] if ext_alias in data else data.get(ext_name)
            if isinstance(ext, str):
                ext = json.loads(ext)
            if isinstance(ext, list):  # fhir.resources raises AttributeError here
                out.append(((path, alias), "required list has only extensions", None))
            elif ext is None or not ext.get("extension"):
                out.append(((path, alias), _MISSING, None))
        choice_of = model.choice_of
        if len(out) > start or not choice_of:
            return
        seen: list[int] = []
        for key, value in data.items():
            group = choice_of.get(key)
            if group is not None and value is not None:
                if group in seen:
                    prefix = model.choices[group][1]
                    out.append((path, f"only one {prefix}[x] element is allowed", None))
                    return
                seen.append(group)
        for group, (required, prefix) in enumerate(model.choices):
            if required and group not in seen:
                out.append((path, f"a {prefix}[x] element is required", None))
                return

    def _resource(self, base: _Model, value: Any, path: Any, out: list[_Raw]) -> None:
        if type(value) is not dict:
            self._other(base, value, path, out)
        elif "resourceType" not in value:
            if self._r4_json:
                out.append((path, _R4_NO_TYPE, None))
            self._object(base, value, path, out)
        else:
            model = self._resource_model(value["resourceType"])
            if isinstance(model, str):
                out.append((path, model, None))
            else:
                self._object(model, value, path, out)

    def _other(self, model: _Model, value: Any, path: Any, out: list[_Raw]) -> None:
        """A non-dict where an object is expected: fhir_core parses strings as JSON."""
        if isinstance(value, dict):
            self._object(model, value, path, out)
            return
        if isinstance(value, str | bytes):
            if self._r4_json:
                out.append((path, _R4_NOT_OBJECT, value))
                return
            try:
                parsed = json.loads(value)
            except ValueError:
                out.append((path, "invalid JSON where an object is expected", value))
                return
            if type(parsed) is dict:
                self._object(model, parsed, path, out)
                return
        out.append((path, _NOT_OBJECT, value))


def _paired(data: dict[str, Any], pair: str, index: int) -> bool:
    """Whether the pair of a primitive list (``given`` / ``_given``) has an item there."""
    items = data.get(pair)
    return type(items) is list and index < len(items) and items[index] is not None


def _flat(path: Any) -> tuple[str | int, ...]:
    keys: list[str | int] = []
    while path:
        path, key = path
        keys.append(key)
    return tuple(reversed(keys))


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
