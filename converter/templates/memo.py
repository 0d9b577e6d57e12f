"""Reuse of a resource template's rendering within one conversion.

The Practitioner of every OBX, the author of every C-CDA entry, the sending facility's
Organization: one conversion emits the same template with the same inputs many times,
and each rendering only merges into the resource the first one wrote. The render
session (:mod:`.render`) keeps such a rendering here and, when the same template is
emitted again with the same inputs, replays its effects instead of rendering again.

Only where that is provably the same as rendering again:

- The inputs are compared by what a template can read of them. An HL7 value by its raw
  text, delimiters, character set, depth and whether it is MSH-1/MSH-2: not by its
  position (``OBX[2]-16`` and ``OBX[3]-16`` with the same text read the same), which a
  template can read only through ``.path`` (or the like: see :func:`position_blind`); a
  template that may read it is reused only for values at the same position. In lenient
  mode a value holding an escape sequence is compared with its position too (an
  undecodable one is said once per value object, where it is decoded). Segments,
  groups, messages, CDA nodes and attribute values by identity. Strings, numbers, None,
  references, and lists and dicts of those by value, up to :data:`MAX_KEY_ITEMS` items
  in all. Anything else (a ``namespace()``, an ``occurrences()`` counter, a macro), or
  more items, is not compared: the template renders.
- The rendering read no state of the conversion that may change (``emitted()``,
  ``reference()``, ``delete()``, the warnings said so far, the template line), added no
  warning, and emitted only resources that are reused the same way; its resource and
  those have an identity (an id from this message would be a new resource each time).
- Its templates, and those they import, read nothing that differs between two renderings
  with equal inputs: no ``.path``, no identity test, no random filter, no state kept in an
  imported module (:func:`position_blind`).

Not covered by that check: the Python ``repr`` of a list holding HL7 values
(``[<Value OBX[2]-16>]``, from ``{{ xcn.reps | string }}``) names their positions; no
mapping writes such text into a resource.
"""

from __future__ import annotations

import weakref
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2 import nodes

from ..cda.node import AttrValue, Node
from ..hl7v2.message import Group, Message, Segment
from ..hl7v2.value import Value

if TYPE_CHECKING:
    from .render import Ref

__all__ = [
    "MAX_KEY_ITEMS",
    "Frame",
    "Memo",
    "MemoEntry",
    "PositionFacts",
    "blind_templates",
    "position_blind",
    "position_facts",
]


class Frame:
    """What one rendering under way did that decides whether it may be reused."""

    __slots__ = ("blind", "checks", "children", "pure", "warnings")

    def __init__(self, warnings: int, checks: int) -> None:
        self.pure = True
        self.blind = True
        self.warnings = warnings
        self.checks = checks
        #: The emit() calls of this rendering itself, in order: replayed with it.
        self.children: list[tuple[str, dict[str, Any]]] = []


class MemoEntry:
    """A reusable rendering: the reference emit() returned (None: came out empty), the
    emits it made itself, and the inputs (which keep the objects compared by identity
    alive, so that no other object takes their ``id``). A plain class: one is made for
    most emits, and a frozen dataclass takes several times as long to build."""

    __slots__ = ("blind", "children", "ref", "variables")

    def __init__(
        self,
        ref: Ref | None,
        children: list[tuple[str, dict[str, Any]]],
        blind: bool,
        variables: dict[str, Any],
    ) -> None:
        self.ref = ref
        self.children = children
        self.blind = blind
        self.variables = variables


class _Unkeyable(Exception):
    """An input that cannot be compared safely, or not cheaply."""


#: The list, tuple and dict items one key compares at most, nested ones included. An
#: input holding more renders again instead: the key is built on every emit, and an
#: ORU_R01 passing each OBX's Observation the SPMs of its patient (thousands, in a
#: cumulative report) spent most of its time comparing them — for a template never
#: reused, its OBX differing each time. Inputs that long are seldom passed twice equal.
MAX_KEY_ITEMS = 256


class _Walk:
    """What building one key found so far: whether it compares HL7 values without
    their position, and how many items it has compared (:data:`MAX_KEY_ITEMS`)."""

    __slots__ = ("items", "positions")

    def __init__(self) -> None:
        self.positions = False
        self.items = 0


_IDENTITY_TYPES = frozenset({Segment, Group, Message, Node, AttrValue})


class Memo:
    """Reusable renderings of one conversion, by template and inputs."""

    __slots__ = ("entries", "lenient", "ref_type")

    def __init__(self, ref_type: type[Ref]) -> None:
        self.entries: dict[Hashable, MemoEntry] = {}
        # render.Ref, compared by value (render imports this module).
        self.ref_type = ref_type
        self.lenient = False

    def key(
        self, name: str, variables: dict[str, Any], offset: str | None, strict: bool
    ) -> tuple[Hashable, bool] | None:
        """The key of a rendering, and whether it compares HL7 values without their
        position; None when an input cannot be compared. The session's settings that
        renderings read (timestamp offset, strictness) are part of it."""
        walk = _Walk()
        # Lenient decoding warns about an undecodable escape once per value object, by
        # position: values holding escapes are then compared with their position.
        self.lenient = not strict
        parts: list[Hashable] = [name, offset, strict]
        try:
            for k, v in variables.items():
                kind = type(v)
                # The commonest inputs inline: this runs on every emit().
                if kind is Value and strict:
                    loc = v._loc
                    walk.positions = True
                    msh2 = loc[1] <= 2 and loc[0] == "MSH"
                    parts.append((k, Value, v._raw, id(v._enc), v._codec, v._depth, msh2))
                elif kind is str or kind is int or v is None:
                    parts.append((k, kind, v))
                elif kind in _IDENTITY_TYPES:
                    parts.append((k, kind, id(v)))
                elif kind is self.ref_type:
                    parts.append((k, kind, v.type, v.id, v.reference))
                else:
                    parts.append((k, self._key_of(v, walk)))
        except _Unkeyable:
            return None
        return tuple(parts), walk.positions

    def _key_of(self, value: Any, walk: _Walk) -> Hashable:
        kind = type(value)
        if kind is str or kind is int or kind is bool or value is None:
            return (kind, value)
        if kind is Value:
            # Value's own fields: what a template can read of it, position aside.
            raw: str = value._raw
            enc = value._enc
            loc = value._loc
            if self.lenient and enc.escape and enc.escape in raw:
                return (Value, raw, id(enc), value._codec, value._depth, loc)
            walk.positions = True
            msh2 = loc[1] <= 2 and loc[0] == "MSH"
            return (Value, raw, id(enc), value._codec, value._depth, msh2)
        if kind in _IDENTITY_TYPES:
            return (kind, id(value))
        if kind is self.ref_type:
            return (kind, value.type, value.id, value.reference)
        if kind is float:
            return (kind, repr(value))  # -0.0 == 0.0, but they are written differently
        if kind is list or kind is tuple or kind is dict:
            walk.items += len(value)
            if walk.items > MAX_KEY_ITEMS:
                raise _Unkeyable
            key_of = self._key_of
            if kind is dict:
                return (kind, *[(key_of(k, walk), key_of(v, walk)) for k, v in value.items()])
            return (kind, *[key_of(item, walk) for item in value])
        raise _Unkeyable


# -- templates that read nothing but their inputs' values ------------------------------

#: Filters and tests whose result differs between two equal inputs, or that read a
#: value's position.
_UNSAFE_FILTERS = frozenset({"pprint", "random", "attr"})
_UNSAFE_TESTS = frozenset({"sameas"})
#: Filters taking an attribute name: it must be written out, and not ``path``.
_ATTRIBUTE_FILTERS = frozenset(
    {"map", "selectattr", "rejectattr", "sort", "groupby", "sum", "unique", "min", "max"}
)
#: Globals keeping state across calls: made at the top level of an imported module
#: (which lives as long as the environment), one would change between renderings.
_STATEFUL_NAMES = frozenset({"cycler", "joiner", "occurrences", "namespace", "collector"})
_RANDOM_NAMES = frozenset({"lipsum"})
_POSITION_ATTRIBUTES = frozenset({"path"})

_BLIND: weakref.WeakKeyDictionary[jinja2.Environment, dict[str, bool]] = weakref.WeakKeyDictionary()


def blind_templates(environment: jinja2.Environment) -> dict[str, bool]:
    """What :func:`position_blind` found so far for the templates of ``environment``."""
    known = _BLIND.get(environment)
    if known is None:
        known = _BLIND.setdefault(environment, {})
    return known


#: What :func:`position_facts` finds in one template: whether it is blind as a root
#: template, whether it is blind as an imported one, and the templates it imports,
#: includes or extends.
PositionFacts = tuple[bool, bool, tuple[str, ...]]


def position_blind(environment: jinja2.Environment, name: str) -> bool:
    """Whether template ``name`` and those it imports or includes render the same for
    inputs of equal value: no ``.path`` (or any attribute or item whose name is not
    written out), no identity test, no random or ``pprint`` filter, no stateful global.
    Worked out once per template and environment, from the facts each template's
    compiled code carries (:func:`position_facts`): a template loaded from the bytecode
    cache is not parsed again for it."""
    known = blind_templates(environment)
    found = known.get(name)
    if found is None:
        found = known[name] = _check(environment, name, set(), imported=False)
    return found


def _check(environment: jinja2.Environment, name: str, seen: set[str], imported: bool) -> bool:
    if name in seen:
        return True  # a cycle: its templates are being checked already
    seen.add(name)
    try:
        facts: PositionFacts | None = getattr(
            environment.get_template(name), "position_facts", None
        )
    except jinja2.TemplateError:
        return False
    if facts is None:
        return False  # compiled elsewhere than the converter's environment: unknown
    as_root, as_imported, imports = facts
    if not (as_imported if imported else as_root):
        return False
    return all(_check(environment, other, seen, imported=True) for other in imports)


def position_facts(tree: nodes.Template) -> PositionFacts:
    """The facts :func:`position_blind` combines, of one template's syntax tree (worked
    out when it compiles, and kept in its compiled code)."""
    imports: list[str] = []
    as_root = _blind(tree, imports, imported=False, in_macro=False)
    as_imported = as_root and _blind(tree, [], imported=True, in_macro=False)
    return as_root, as_imported, tuple(dict.fromkeys(imports))


def _blind(node: nodes.Node, imports: list[str], *, imported: bool, in_macro: bool) -> bool:
    if not _node_blind(node, imports, stateful=imported and not in_macro):
        return False
    inner = in_macro or isinstance(node, nodes.Macro | nodes.CallBlock)
    return all(
        _blind(child, imports, imported=imported, in_macro=inner)
        for child in node.iter_child_nodes()
    )


_LITERALS = (nodes.Dict, nodes.List, nodes.Tuple, nodes.Const)


def _node_blind(node: nodes.Node, imports: list[str], *, stateful: bool) -> bool:
    """``stateful``: the node runs once for every rendering of the environment (the top
    level of an imported module), where a ``namespace()`` would keep what one rendering
    wrote for the next. The templates a node imports go to ``imports``."""
    if isinstance(node, nodes.Getattr):
        return node.attr not in _POSITION_ATTRIBUTES
    if isinstance(node, nodes.Getitem):
        # ``value[key]`` falls back to the attribute named ``key``: only written-out keys,
        # slices, or an item of a literal (``{"bed": "bd"}[level]``).
        arg = node.arg
        if isinstance(arg, nodes.Const):
            return arg.value not in _POSITION_ATTRIBUTES
        return isinstance(arg, nodes.Slice) or isinstance(node.node, _LITERALS)
    if isinstance(node, nodes.Filter | nodes.Test):
        unsafe = _UNSAFE_FILTERS if isinstance(node, nodes.Filter) else _UNSAFE_TESTS
        if node.name in unsafe:
            return False
        if node.name in _ATTRIBUTE_FILTERS:
            arguments = [*node.args, *(kw.value for kw in node.kwargs)]
            if node.dyn_args is not None or node.dyn_kwargs is not None:
                return False
            return all(isinstance(a, nodes.Const) and "path" not in str(a.value) for a in arguments)
        return True
    if isinstance(node, nodes.Name):
        if node.name in _RANDOM_NAMES:
            return False
        return not (stateful and node.name in _STATEFUL_NAMES)
    if isinstance(node, nodes.Import | nodes.FromImport | nodes.Include | nodes.Extends):
        template = node.template
        if not (isinstance(template, nodes.Const) and isinstance(template.value, str)):
            return False
        imports.append(template.value)
    return True
