"""The sandboxed Jinja2 environment templates render in.

Templates write JSON. Every ``{{ expression }}`` goes through :func:`to_json`, so a value
from a message can never break the JSON it lands in: strings are quoted and escaped,
absent values become ``null`` (pruned later), numbers and booleans stay themselves.
Macro calls and ``emit()`` references are already JSON and pass through unchanged.

Templates are configuration that users supply: they render in an immutable sandbox
(no access to Python internals, no mutation of shared objects) with strict undefined
(a typo in a name is an error, an absent HL7 field is just empty).
"""

from __future__ import annotations

import functools
import json
import json.encoder
import re
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import BuiltinMethodType, MethodType
from typing import Any

import jinja2
import simplejson
from jinja2.compiler import CodeGenerator
from jinja2.environment import Template, TemplateModule
from jinja2.loaders import split_template_path
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, internalcode, missing
from markupsafe import Markup

from ..active_session import ACTIVE_SESSION
from ..cda.node import AttrValue, Node
from ..errors import ConfigurationError, MappingError, TemplateError
from ..hl7v2.message import Group, Message, Segment
from ..hl7v2.value import Value
from ..printable import printable
from .filters import ValueFilters
from .occurrences import Occurrences
from .render import Ref

__all__ = ["TemplateInfo", "TemplateSet", "to_json"]

_NULL = Markup("null")


class _HoldsDecimal(Exception):
    """A container to encode holds a Decimal: only simplejson writes it as a number."""


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        raise _HoldsDecimal
    if isinstance(value, Ref):
        return {"reference": value.reference}
    text = str(value) if value else ""
    return text if text else None


def _string(text: str, source: Value | None = None) -> Markup:
    encoded = _encode_string(text)
    if "\\" in encoded and _NOT_IN_FHIR.search(text):  # only escapes carry a backslash
        return _string(_without_control_characters(text, source))
    # Brackets inside strings are written as escapes so that the trailing-comma cleanup
    # of template output (a plain text substitution) can never touch a value.
    if "]" in encoded or "}" in encoded:
        encoded = encoded.replace("]", "\\u005d").replace("}", "\\u007d")
    return _markup(encoded)


# What ``json.dumps(text, ensure_ascii=False)`` calls for a string, without its Python
# frames; and Markup built by str's own constructor (Markup.__new__ only adds handling
# of __html__ objects and bytes, which JSON text never is). Both run ~250 times a message.
_encode_string = json.encoder.encode_basestring
_isspace = str.isspace
_markup: Callable[[str], Markup] = functools.partial(str.__new__, Markup)
_container = json.JSONEncoder(ensure_ascii=False, default=_default, allow_nan=False).encode
# The rare container holding a decimal (``{"value": x | decimal}``) is written by
# simplejson, slower and making garbage cycles per call, so only then.
_container_with_decimals = simplejson.JSONEncoder(
    ensure_ascii=False, default=_default, allow_nan=False, use_decimal=True
).encode


def _encode_container(value: Any) -> str:
    try:
        return _container(value)
    except _HoldsDecimal:
        return _container_with_decimals(value)


def to_json(value: Any) -> Markup:
    """Finalizer: the JSON text of an expression's value."""
    cls = type(value)
    if cls is Markup:
        # Not ``value.strip()``: Markup's strip builds a second Markup. Blank is empty or
        # all whitespace (``isspace`` and ``strip`` share Python's idea of whitespace).
        return value if value and not _isspace(value) else _NULL
    if cls is Value:
        text = str(value)
        return _string(text, value) if text else _NULL
    if value is None:
        return _NULL
    if isinstance(value, str):
        return _string(value) if value else _NULL
    if isinstance(value, Ref):
        return _markup(value.as_json())
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a JSON number")
        return _markup(format(value, "f"))
    if isinstance(value, bool | int | float):
        # NaN and Infinity are not JSON (a "1e999" decimal would otherwise be written as
        # ``Infinity``): a ValueError, reported as a MappingError at the template line.
        return _markup(json.dumps(value, allow_nan=False))
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises with the missing name
        return _NULL
    if isinstance(value, list | tuple | dict):
        if type(value) is dict:
            flat = _flat_dict(value)
            if flat is not None:
                return flat
        encoded = _encode_container(value)
        if "\\" in encoded:
            encoded = _container_without_control_characters(encoded)
        if "]" in encoded or "}" in encoded:
            # Same protection as for strings, applied inside the container's strings only.
            encoded = _protect_strings(encoded)
        return _markup(encoded)
    if not value:
        # An absent segment or group (``msg.ZZZ``) is empty, not the text of its name.
        return _NULL
    text = str(value)
    return _string(text) if text else _NULL


def _flat_dict(value: dict[Any, Any]) -> Markup | None:
    """A dict of strings by strings (a code map's coding), written as :func:`to_json`
    writes any container, without the encoder's set-up or a pass over the text: the
    same text, bracket protection applied to each string. None for any other dict."""
    pieces = []
    for key, item in value.items():
        if type(key) is not str or type(item) is not str:
            return None
        pieces.append(f"{_encode_string(key)}: {_encode_string(item)}")
    encoded = "{" + ", ".join(pieces) + "}"
    if "\\" in encoded:
        encoded = _container_without_control_characters(encoded)
    if "]" in encoded[:-1] or "}" in encoded[:-1]:
        encoded = _protect_strings(encoded)
    return _markup(encoded)


@jinja2.pass_eval_context
def _finalize(eval_ctx: Any, value: Any) -> Markup:
    """The environment's finalizer: :func:`to_json`, always at render time.

    Jinja folds constant expressions (``{{ none }}``, ``{{ "final" }}``) at compile time
    by HTML-escaping them *before* a plain finalizer runs, which would write ``None`` and
    an unquoted ``final``. A finalizer that takes the evaluation context is never applied
    at compile time, so every expression goes through :func:`to_json`.
    """
    return to_json(value)


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')

# FHIR strings hold no character below U+0020 but tab, CR and LF (R4 datatypes: "SHOULD
# not"; XML cannot carry them, and servers such as Medplum refuse them). HL7 v2 text can,
# raw or as \X1B\ escapes. As JSON escapes: \u0000-\u001f but \t \n \r, and \b \f,
# after an even run of backslashes (``\\u001b`` is a backslash and then text).
_NOT_IN_FHIR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
_ESCAPED_NOT_IN_FHIR = re.compile(r"(?<!\\)((?:\\\\)*)\\(u00(?:0[0-8bBcCeEfF]|1[0-9a-fA-F])|[bf])")
_REPLACEMENT = "\ufffd"


def is_fhir_string(text: str) -> bool:
    """Whether ``text`` holds only characters a FHIR string may carry."""
    return _NOT_IN_FHIR.search(text) is None


def _without_control_characters(text: str, source: Value | None) -> str:
    """``text`` for a FHIR string: a MappingError in strict mode (the default), else the
    characters replaced with U+FFFD and a warning naming the field, never the value."""
    found = _NOT_IN_FHIR.search(text)
    if found is None:
        return text
    reason = f"control character U+{ord(found.group()):04X} is not allowed in FHIR text"
    where = source.path if source is not None else None
    session = ACTIVE_SESSION.get()
    if session is None or session.strict_values:
        raise MappingError(  # 102: data type error
            reason, location=where, detail=printable(text)[:100], hl7_error_code="102"
        )
    if where:
        warning = f"{reason} at {where}; replaced by U+FFFD"
    else:  # a plain string (``value.text``, a filter's output): the template line says where
        warning = f"{reason} in {session.current_template_line() or 'a template'}; replaced"
    if warning not in session.warnings:  # a field written in several resources: said once
        session.warn(warning)
    return _NOT_IN_FHIR.sub(_REPLACEMENT, text)


def _container_without_control_characters(encoded: str) -> str:
    """The same for a container's JSON text, where those characters are escapes."""
    found = _ESCAPED_NOT_IN_FHIR.search(encoded)
    if found is None:
        return encoded
    _without_control_characters(json.loads(f'"\\{found.group(2)}"'), None)
    return _ESCAPED_NOT_IN_FHIR.sub(lambda m: m.group(1) + "\\ufffd", encoded)


def _protect_strings(encoded: str) -> str:
    return _JSON_STRING.sub(
        lambda m: m.group(0).replace("]", "\\u005d").replace("}", "\\u007d"), encoded
    )


class _JsonCodeGenerator(CodeGenerator):
    """Compiles ``{{ expression }}`` to ``environment.json_output(expression)``.

    Jinja's own code is ``escape(environment.finalize(context.eval_ctx, expression))``:
    the finalizer already returns the JSON text as Markup, so the escape() around it only
    builds the same Markup a second time — on every expression of every render. The hooks
    are the ones Jinja's native-types code generator overrides; a template that toggles
    autoescaping keeps Jinja's code.
    """

    def _output_child_pre(self, node: Any, frame: Any, finalize: Any) -> None:
        if frame.eval_ctx.volatile or not frame.eval_ctx.autoescape:
            super()._output_child_pre(node, frame, finalize)
        else:
            self.write("environment.json_output(")

    def _output_child_post(self, node: Any, frame: Any, finalize: Any) -> None:
        if frame.eval_ctx.volatile or not frame.eval_ctx.autoescape:
            super()._output_child_post(node, frame, finalize)
        else:
            self.write(")")


def _call_macro(macro: Macro, args: tuple[Any, ...]) -> Any:
    """``macro(*args)`` for the common call: positional arguments only, to a macro that
    takes no ``caller``, ``varargs`` or ``kwargs``. What ``Macro.__call__`` and
    ``_invoke`` do then (absent arguments passed as ``missing``, for the macro's
    defaults; the output as Markup), without their general argument handling; any
    other call takes that path."""
    count = macro._argument_count
    given = len(args)
    if (
        given > count
        or macro.caller
        or macro.catch_kwargs
        or macro.catch_varargs
        or (given and isinstance(args[0], EvalContext))
        or macro._environment.is_async
    ):
        return macro(*args)
    if given < count:
        args = (*args, *((missing,) * (count - given)))
    output = macro._func(*args)
    if not macro._default_autoescape:
        return output
    return _markup(output) if type(output) is str else Markup(output)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with a fast path for the objects made for templates.

    Messages, segments, values and CDA nodes expose nothing but data and plain methods;
    their public attributes need no inspection (a method's own internals are still
    reached through the normal, checked path). The same holds for Jinja's own imported
    template modules (``codes.CodeableConcept``: their public attributes are the macros
    a template exports) and ``namespace()`` objects (only the values a template set).
    Everything else is checked as usual.
    """

    code_generator_class = _JsonCodeGenerator
    json_output = staticmethod(to_json)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loaded = {}
        super().__init__(*args, **kwargs)

    def call(
        __self,
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Macros, the methods of template objects and our own global functions
        (``emit``, ``codemap``…: :meth:`call_directly`) are called directly.

        None is a ``str.format``, marked unsafe, or takes the context, which is all the
        sandbox and ``Context.call`` look for; everything else takes their path.
        """
        kind = type(__obj)
        if (
            kind is Macro
            or (kind is MethodType and type(__obj.__self__) in _TEMPLATE_TYPES)
            or id(__obj) in __self.direct_calls
            or (
                kind is BuiltinMethodType
                and __obj.__name__ in _PURE_METHODS.get(type(__obj.__self__), ())
            )
        ):
            if kwargs:
                # What Jinja passes for its own use inside loops and blocks.
                kwargs.pop("_loop_vars", None)
                kwargs.pop("_block_vars", None)
            if kind is Macro and not kwargs:
                return _call_macro(__obj, args)
            return __obj(*args, **kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    #: ``id()`` of the global functions :meth:`call` need not inspect. Ids rather than
    #: the objects, so that nothing a template calls is hashed (a hash may be any
    #: object's code); :attr:`_direct_functions` keeps the functions alive, so no other
    #: object can take one of their ids.
    direct_calls: frozenset[int] = frozenset()
    _direct_functions: tuple[Callable[..., Any], ...] = ()

    def call_directly(self, functions: Iterable[Callable[..., Any]]) -> None:
        """Trust these functions (set up once, before any template renders)."""
        added = tuple(functions)
        for function in added:
            if hasattr(function, "jinja_pass_arg") or getattr(function, "unsafe_callable", False):
                raise ConfigurationError(f"{function!r} needs Jinja's own call path")
        self._direct_functions = (*self._direct_functions, *added)
        self.direct_calls = frozenset(map(id, self._direct_functions))

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``node.code``, ``seg.patient_name``, ``codes.CodeableConcept``: read directly.

        The checked path would look for a ``str.format`` method and then ask
        :meth:`is_safe_attribute`, which says yes to any public name of these types; none
        of them is a string, so no public attribute of theirs is a string's ``format``.
        """
        kind = type(obj)
        if kind in _PLAIN_TEMPLATE_TYPES:
            if not attribute.startswith("_"):
                try:
                    return getattr(obj, attribute)
                except AttributeError:
                    pass  # Jinja's fallbacks: obj[attribute], then undefined
        elif kind is dict and attribute not in _DICT_ATTRIBUTES:
            # ``coding.code``: no attribute of a plain dict has that name, so the checked
            # path would come to the same item (or undefined).
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        elif attribute in _PURE_METHODS.get(kind, ()):
            # ``text.split``, ``mapping.get``: methods that read only (never a
            # ``str.format``), of plain strings and dicts; safe by the checked path too.
            return getattr(obj, attribute)
        return super().getattr(obj, attribute)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if type(obj) in _TEMPLATE_TYPES:
            return not attr.startswith("_")
        return bool(super().is_safe_attribute(obj, attr, value))

    #: Loaded templates by name (what Jinja's own cache holds, without its weakref key
    #: and its checks): templates are loaded once (no auto-reload, unbounded cache), and
    #: each render and ``{% import %}`` asks again.
    _loaded: dict[str, Template]

    @internalcode
    def get_template(
        self,
        name: str | Template,
        parent: str | None = None,
        globals: MutableMapping[str, Any] | None = None,
    ) -> Template:
        # join_path is not overridden: the name is the same with or without parent.
        if not globals and type(name) is str:
            found = self._loaded.get(name)
            if found is not None:
                return found
        return super().get_template(name, parent, globals)

    @internalcode
    def _load_template(self, name: str, globals: MutableMapping[str, Any] | None) -> Template:
        template = super()._load_template(name, globals)
        if not globals and self.cache is not None and not self.auto_reload:
            self._loaded[name] = template
        return template

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        """A template's globals as a plain dict instead of Jinja's ChainMap.

        Jinja copies (``set(globals)``) and compares the globals of every render and every
        ``{% import %}``; over a ChainMap those are Python-level loops, one per key, and a
        CDA document does ~700 imports. The environment's globals are complete before the
        first template loads (see :class:`TemplateSet`), so a copy misses no later change.
        """
        return {**self.globals, **(d or {})}


_TEMPLATE_TYPES = frozenset(
    {Value, Segment, Group, Message, Node, AttrValue, Ref, TemplateModule, Namespace, Occurrences}
)
# Without AttrValue: a str subclass, whose ``format`` must still be wrapped by Jinja.
_PLAIN_TEMPLATE_TYPES = _TEMPLATE_TYPES - {AttrValue}
_DICT_ATTRIBUTES = frozenset(dir(dict))
# Methods of plain strings and dicts that only read their object, and return new
# values: read and called without the sandbox's inspection, which lets them through
# anyway. Never ``format``/``format_map`` (Jinja wraps those) nor a mutating method.
_STR_METHODS = frozenset(
    {
        "capitalize", "casefold", "center", "count", "endswith", "find", "index",
        "isalnum", "isalpha", "isdecimal", "isdigit", "islower", "isnumeric", "isspace",
        "istitle", "isupper", "join", "ljust", "lower", "lstrip", "partition",
        "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust",
        "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip",
        "swapcase", "title", "upper", "zfill",
    }
)  # fmt: skip
_PURE_METHODS: dict[type[Any], frozenset[str]] = {
    str: _STR_METHODS,
    AttrValue: _STR_METHODS,
    dict: frozenset({"get", "items", "keys", "values"}),
}


def _session_function(name: str) -> Any:
    """A global calling the rendering session's method ``name``.

    As globals (not render variables), ``emit``/``include``/``warn``/``delete``/``reference``
    reach imported macro modules too, which Jinja then imports once instead of on every
    render.
    """

    def call(*args: Any, **kwargs: Any) -> Any:
        session = ACTIVE_SESSION.get()
        if session is None:
            raise TemplateError(f"{name}() called outside a conversion")
        return getattr(session, name)(*args, **kwargs)

    call.__name__ = name
    return call


@dataclass(frozen=True, slots=True)
class TemplateInfo:
    """A template file and where it comes from."""

    name: str
    path: Path
    overridden: bool


class TemplateSet:
    """Built-in templates with user override directories searched first."""

    def __init__(
        self,
        builtin: Path,
        overrides: Sequence[Path],
        filters: ValueFilters,
    ) -> None:
        for directory in overrides:
            if not directory.is_dir():
                raise ConfigurationError(f"template directory {directory} does not exist")
        self.builtin = builtin
        self.overrides = tuple(overrides)
        loaders: list[jinja2.BaseLoader] = [
            jinja2.FileSystemLoader(str(d)) for d in (*self.overrides, builtin)
        ]
        # "builtin/..." always reaches the shipped template, so an override can wrap it.
        loaders.append(jinja2.PrefixLoader({"builtin": jinja2.FileSystemLoader(str(builtin))}))
        self.environment = _Sandbox(
            loader=jinja2.ChoiceLoader(loaders),
            undefined=jinja2.StrictUndefined,
            autoescape=True,
            finalize=_finalize,
            extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"],
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
            cache_size=-1,
        )
        self.environment.filters.update(filters.filters())
        own_globals = {
            **filters.globals(),
            **{
                name: _session_function(name)
                for name in ("emit", "emitted", "include", "warn", "delete", "reference")
            },
            "occurrences": Occurrences,
        }
        self.environment.globals.update(own_globals)
        # ``namespace()`` too: Jinja's class, which takes no context either.
        self.environment.call_directly([*own_globals.values(), Namespace])

    def list(self, family: str | None = None) -> list[TemplateInfo]:
        """Every template visible through the search path, the override winning."""
        seen: dict[str, TemplateInfo] = {}
        for directory in (*self.overrides, self.builtin):
            overridden = directory != self.builtin
            for path in sorted(directory.rglob("*.j2")):
                name = path.relative_to(directory).as_posix()
                if family and not name.startswith(family + "/"):
                    continue
                seen.setdefault(name, TemplateInfo(name, path, overridden))
        return sorted(seen.values(), key=lambda info: info.name)

    def exists(self, name: str) -> bool:
        """Whether ``name`` is a template Jinja can load: never outside the search path
        (``..`` is refused as Jinja refuses it), and a name the file system cannot
        hold (too long) does not exist rather than raising."""
        try:
            pieces = split_template_path(name)
        except jinja2.TemplateNotFound:
            return False
        directories = (*self.overrides, self.builtin)
        if pieces[:1] == ["builtin"]:  # the prefix that reaches the shipped set only
            directories, pieces = (self.builtin,), pieces[1:]
        for directory in directories:
            try:
                if directory.joinpath(*pieces).is_file():
                    return True
            except (OSError, ValueError):
                return False
        return False
