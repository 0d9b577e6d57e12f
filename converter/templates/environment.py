"""The sandboxed Jinja2 environment templates render in.

Templates write JSON: every ``{{ expression }}`` goes through
:func:`~converter.templates.json_output.to_json` (compiled in by the code generator).

Templates are configuration that users supply: they render in an immutable sandbox
(no access to Python internals, no mutation of shared objects) with strict undefined
(a typo in a name is an error, an absent HL7 field is just empty).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import BuiltinMethodType, MethodType
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.environment import Template, TemplateModule
from jinja2.loaders import split_template_path
from jinja2.runtime import Context, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, internalcode
from markupsafe import Markup

from ..active_session import ACTIVE_SESSION
from ..cda.node import AttrValue, Node
from ..errors import ConfigurationError, TemplateError
from ..hl7v2.message import Group, Message, Segment
from ..hl7v2.value import Value
from .bytecode import TemplateBytecodeCache
from .codegen import FACTS_NAME, JsonCodeGenerator, TemplateContext, call_macro
from .collector import Collector
from .failures import broken_overrides
from .filters import ValueFilters
from .json_output import to_json
from .memo import PositionFacts, position_facts
from .occurrences import Occurrences
from .render import Ref

__all__ = ["TemplateInfo", "TemplateSet", "to_json"]


class _Template(Template):
    """Jinja's Template, with the common ``{% import %}`` answered without a set, and
    the :func:`~.memo.position_facts` its compiled code carries.

    Jinja re-renders an imported template when the importing context has globals the
    imported one lacks (``ctx.globals_keys - self.globals.keys()``, a new set for every
    import: a CDA document or an ORU imports several hundred times); else it returns the
    module it made once. The same test as a subset check, which builds nothing."""

    position_facts: PositionFacts | None = None

    @classmethod
    def _from_namespace(
        cls,
        environment: jinja2.Environment,
        namespace: MutableMapping[str, Any],
        globals: MutableMapping[str, Any],
    ) -> Template:
        template = super()._from_namespace(environment, namespace, globals)
        template.position_facts = namespace.get(FACTS_NAME)  # type: ignore[attr-defined]
        return template

    @internalcode
    def _get_default_module(self, ctx: Context | None = None) -> TemplateModule:
        if ctx is not None and self._module is not None and self.globals.keys() >= ctx.globals_keys:
            return self._module
        return super()._get_default_module(ctx)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with a fast path for the objects made for templates.

    Messages, segments, values and CDA nodes expose nothing but data and plain methods;
    their public attributes need no inspection (a method's own internals are still
    reached through the normal, checked path). The same holds for Jinja's own imported
    template modules (``codes.CodeableConcept``: their public attributes are the macros
    a template exports) and ``namespace()`` objects (only the values a template set).
    Everything else is checked as usual.
    """

    code_generator_class = JsonCodeGenerator
    context_class = TemplateContext
    template_class = _Template
    json_output = staticmethod(to_json)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loaded = {}
        super().__init__(*args, **kwargs)

    def _generate(
        self,
        source: nodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        """The template's code, and the facts the reuse of renderings needs
        (:func:`~.memo.position_facts`): kept in the compiled code, they come with it
        from the bytecode cache instead of a second parse of the template."""
        code = super()._generate(source, name, filename, defer_init)
        return f"{code}\n{FACTS_NAME} = {position_facts(source)!r}\n"

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
                return call_macro(__obj, args)
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
        if kind is Namespace and _NAMESPACE_ATTRIBUTES and not attribute.startswith("_"):
            # ``ns.found``: what Namespace.__getattribute__ returns, without its Python
            # frame (a C-CDA document reads ~3,000 of them).
            try:
                return _object_getattribute(obj, "_Namespace__attrs")[attribute]
            except KeyError:
                pass  # Jinja's fallbacks, as below
        elif kind in _PLAIN_TEMPLATE_TYPES:
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
    {
        *(Value, Segment, Group, Message, Node, AttrValue, Ref, TemplateModule, Namespace),
        *(Occurrences, Collector),
    }
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


_object_getattribute = object.__getattribute__


def _namespace_layout_known() -> bool:
    """Whether a ``namespace()`` keeps its values where Jinja 3.1 does (a dict under the
    private ``__attrs``, which its ``__getattribute__`` reads and nothing else): else
    :meth:`_Sandbox.getattr` reads them the usual way."""
    probe = Namespace(probe=1)
    try:
        attributes = _object_getattribute(probe, "_Namespace__attrs")
    except AttributeError:
        return False
    return type(attributes) is dict and attributes == {"probe": 1} and probe.probe == 1


_NAMESPACE_ATTRIBUTES = _namespace_layout_known()


def _as_written(value: Any) -> Any:
    """``escape``, ``e``, ``forceescape``: the value itself, which the expression then
    writes as JSON like any other. Jinja's filters HTML-escape and mark the text as safe,
    and the finalizer writes safe text as it is (macro output is JSON already): a value
    came out as ``O&#39;BRIEN`` in quotes, or unquoted (a number, ``true``) without."""
    return value


def _tojson(value: Any, indent: int | None = None) -> Markup:
    """``tojson``: what ``{{ value }}`` writes. Jinja's own text is taken as JSON as it
    is: control characters passed unchecked, and the trailing-comma cleanup of the
    output reached into its strings (``A, ]B`` became ``A ]B``)."""
    return to_json(value)


# Here, not beside to_json: Jinja's decorators set an attribute on the function, which
# the functions of a mypyc-compiled module (json_output in the container's build) refuse.
@jinja2.pass_eval_context
def finalize(eval_ctx: Any, value: Any) -> Markup:
    """The environment's finalizer: :func:`to_json`, always at render time.

    Jinja folds constant expressions (``{{ none }}``, ``{{ "final" }}``) at compile time
    by HTML-escaping them *before* a plain finalizer runs, which would write ``None`` and
    an unquoted ``final``. A finalizer that takes the evaluation context is never applied
    at compile time, so every expression goes through :func:`to_json`.
    """
    return to_json(value)


#: Jinja's built-in filters whose output the finalizer would write unchecked.
_JSON_FILTERS: dict[str, Callable[..., Any]] = {
    "e": _as_written,
    "escape": _as_written,
    "forceescape": _as_written,
    "tojson": _tojson,
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


#: What an override directory holds at its top: the converter looks nowhere else.
_OVERRIDE_PARTS = ("hl7v2", "cda", "codemaps")


def _check_override_root(directory: Path) -> None:
    """A ConfigurationError for an override directory given one level too deep
    (``my-maps/hl7v2``, where ``resources/Patient.j2`` is no name the converter loads):
    every override in it was ignored without a word, the bundles made by the built-in
    templates."""
    if any((directory / part).is_dir() for part in _OVERRIDE_PARTS):
        return
    try:
        stray = next(
            (p for p in directory.rglob("*") if p.suffix in (".j2", ".csv", ".toml")), None
        )
    except OSError:
        return  # unreadable: loading the templates says so
    if stray is not None:
        raise ConfigurationError(
            f"template directory {directory} holds no hl7v2/, cda/ or codemaps/ folder: "
            f"{stray.relative_to(directory)} and the rest would be ignored (give the folder "
            "above hl7v2/, as my-maps for my-maps/hl7v2/resources/Patient.j2)"
        )


class TemplateSet:
    """Built-in templates with user override directories searched first."""

    def __init__(
        self,
        builtin: Path,
        overrides: Sequence[Path],
        filters: ValueFilters,
        *,
        cache_dir: Path | None = None,
    ) -> None:
        """``cache_dir``: where compiled templates are kept for the next processes
        (:mod:`.bytecode`); None compiles them in every process."""
        for directory in overrides:
            if not directory.is_dir():
                raise ConfigurationError(f"template directory {directory} does not exist")
            _check_override_root(directory)
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
            finalize=finalize,
            extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"],
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
            cache_size=-1,
        )
        self.environment.filters.update(filters.filters())
        self.environment.filters.update(_JSON_FILTERS)
        own_globals = {
            **filters.globals(),
            **{
                name: _session_function(name)
                for name in (
                    *("emit", "emitted", "include", "warn", "delete"),
                    *("reference", "reference_if_identified"),
                )
            },
            "occurrences": Occurrences,
            "collector": Collector,
        }
        self.environment.globals.update(own_globals)
        # ``namespace()`` too: Jinja's class, which takes no context either.
        self.environment.call_directly([*own_globals.values(), Namespace])
        if cache_dir is not None:
            self.environment.bytecode_cache = TemplateBytecodeCache(
                cache_dir, filters.configuration_key()
            )
        self._compile_overrides()

    def _compile_overrides(self) -> None:
        """Compile every template of the override directories now (after the filters and
        globals are set: a loaded template keeps a copy of them).

        Jinja loads a template at its first rendering: a broken override would otherwise
        fail only the messages that reach it, one by one, into dead letters, while the
        service started and acknowledged as usual. The built-in set is tested with the
        project (compiling all of it takes seconds); an override is the site's own.
        Every broken one is reported in one error, so that all are fixed in one pass."""
        loaded: set[str] = set()
        broken: list[str] = []
        for directory in self.overrides:
            for path in sorted(directory.rglob("*.j2")):
                name = path.relative_to(directory).as_posix()
                try:
                    if name in loaded:
                        # Hidden by an earlier directory: never rendered, but still broken.
                        source = path.read_text(encoding="utf-8")
                        self.environment.compile(source, name, str(path))
                    else:
                        loaded.add(name)
                        self.environment.get_template(name)  # cached for the renderings
                except jinja2.TemplateSyntaxError as exc:
                    # Also an unknown filter or test (TemplateAssertionError).
                    broken.append(
                        f"{exc.filename or path}:{exc.lineno}: template syntax error: {exc.message}"
                    )
                except (OSError, UnicodeDecodeError) as exc:
                    broken.append(f"{path}: cannot read template: {exc}")
        if broken:
            raise broken_overrides(broken)

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
