"""The Python code templates compile to: Jinja's, with shorter paths for what every
rendering does many times.

* ``{{ expression }}`` → ``environment.json_output(expression)`` (see
  :class:`JsonCodeGenerator`).
* ``pid[3]``, ``xpn[1]``: a segment or value subscripted by a written-out position is
  read by the template's own code, without the sandbox's ``getitem`` frame; so is
  ``cd["code"]``, a CDA node's attribute named by a written-out string.
* ``entry.observation.code``: a CDA node's child is read by the template's own code,
  without the sandbox's ``getattr`` frame (and, read for the first time, without the
  AttributeError Python raises before it calls ``Node.__getattr__``).
* The names a template, macro or loop body reads from its context are looked up in one
  call (:meth:`TemplateContext.resolve_names`) instead of one call each.

Each is taken only where Jinja's own code would give the same result; everything else
is Jinja's code unchanged.
"""

from __future__ import annotations

from io import StringIO
from itertools import repeat
from keyword import iskeyword
from types import FunctionType
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.idtracking import VAR_LOAD_RESOLVE
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, Macro
from jinja2.utils import missing
from markupsafe import Markup

from ..cda.node import Node, is_attribute_name
from ..hl7v2.message import Segment
from ..hl7v2.value import Value
from .json_output import as_markup

__all__ = [
    "FACTS_NAME",
    "ITEM_TYPES",
    "JsonCodeGenerator",
    "Macro",
    "Node",
    "TemplateContext",
    "call_macro",
]

#: The name of the module variable holding a compiled template's position facts.
FACTS_NAME = "passerelle_position_facts"
#: What ``[position]`` reads directly in compiled templates: their ``[]`` never fails
#: for a position from 1 (a Value's children and a Segment's fields are always there).
ITEM_TYPES = frozenset({Segment, Value})
#: Names in compiled templates: the types above, CDA nodes, and the object being read.
_ITEM_TYPES = "passerelle_item_types"
_ITEM = "passerelle_item"
_CHILDREN = "passerelle_children"
_NODE = "passerelle_node"
#: The name compiled templates give the function a call calls.
_CALLEE = "passerelle_callee"
_MACRO = "passerelle_macro"
_CALL_MACRO = "passerelle_call_macro"
#: A call whose arguments hold more calls than this keeps Jinja's code: the fast path
#: writes the arguments twice, so nested calls would double the code at each level.
_MAX_INNER_CALLS = 1


def call_macro(macro: Macro, args: tuple[Any, ...]) -> Any:
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
    return as_markup(output) if type(output) is str else Markup(output)


def _is_node_method(name: str) -> bool:
    """Whether ``node.name(...)`` calls a method of CDA nodes (``all``, ``string``)."""
    return not name.startswith("_") and type(vars(Node).get(name)) is FunctionType


class TemplateContext(Context):
    """Jinja's context, with the lookup of several names in one call."""

    def resolve_names(self, names: tuple[str, ...]) -> list[Any]:
        """``[context.resolve_or_missing(name) for name in names]``: the names a
        template, macro or loop reads from its context, where Jinja's code calls
        ``resolve_or_missing`` once per name (a resource template reads twenty)."""
        # All in C: a name of the context's own variables, else of its parent (the
        # globals and the inputs), else missing, as resolve_or_missing reads them.
        in_parent = map(self.parent.get, names, repeat(missing))
        return list(map(self.vars.get, names, in_parent))


class JsonCodeGenerator(CodeGenerator):
    """Compiles ``{{ expression }}`` to ``environment.json_output(expression)``.

    Jinja's own code is ``escape(environment.finalize(context.eval_ctx, expression))``:
    the finalizer already returns the JSON text as Markup, so the escape() around it only
    builds the same Markup a second time — on every expression of every render. The hooks
    are the ones Jinja's native-types code generator overrides; a template that toggles
    autoescaping keeps Jinja's code.
    """

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        self.writeline(
            f"from {__name__} import ITEM_TYPES as {_ITEM_TYPES}, Node as {_NODE}, "
            f"Macro as {_MACRO}, call_macro as {_CALL_MACRO}"
        )
        super().visit_Template(node, frame)

    @optimizeconst
    def visit_Getitem(self, node: nodes.Getitem, frame: Frame) -> None:
        """``pid[3]``, ``xpn[1]``: a field or component of an HL7 value read by the
        template's own code, without the sandbox's ``getitem`` frame (a third of what a
        template calls). Only for what ``getitem`` would answer the same: a segment or
        value subscripted by a written-out position (their ``[]`` never fails then), a
        CDA node by a written-out attribute name (``cd["code"]``, ``value["xsi:type"]``)."""
        key = node.arg.value if isinstance(node.arg, nodes.Const) else None
        if self.environment.is_async:
            super().visit_Getitem(node, frame)
        elif type(key) is int and key >= 1:
            # Named in the expression (:=), so that it is evaluated once; a nested one
            # (``pid[5][1]``) assigns the name before the outer one does.
            self.write(f"({_ITEM}[{key}] if type({_ITEM} := ")
            self.visit(node.node, frame)
            self.write(f") in {_ITEM_TYPES} else environment.getitem({_ITEM}, {key}))")
        elif is_attribute_name(key):
            # ``cd["code"]``: a node's ``[]`` answers any such name (the sandbox's
            # ``getitem`` would return what it answers).
            self.write(f"({_ITEM}[{key!r}] if type({_ITEM} := ")
            self.visit(node.node, frame)
            self.write(f") is {_NODE} else environment.getitem({_ITEM}, {key!r}))")
        else:
            super().visit_Getitem(node, frame)

    @optimizeconst
    def visit_Getattr(self, node: nodes.Getattr, frame: Frame) -> None:
        """``entry.observation.code``: a CDA node's child read by the template's own
        code, without the sandbox's ``getattr`` frame. Only for a public name, which a
        node answers without any check (an absent child is an empty node, never an
        AttributeError): what the sandbox's ``getattr`` returns for it."""
        name = node.attr
        if name.startswith("_") or iskeyword(name) or self.environment.is_async:
            super().visit_Getattr(node, frame)
            return
        if hasattr(Node, name):  # a method or property (``all``, ``parent``)
            self.write(f"({_ITEM}.{name} if type({_ITEM} := ")
        else:
            # A child element: read from the node's dictionary, where it is kept once
            # read, else computed by its ``__getattr__``, called directly. Python would
            # call it only after raising (and formatting) an AttributeError, on half of a
            # document's reads.
            read = f"{_CHILDREN}[{name!r}] if {name!r} in ({_CHILDREN} := {_ITEM}.__dict__)"
            self.write(f"(({read} else {_ITEM}.__getattr__({name!r})) if type({_ITEM} := ")
        self.visit(node.node, frame)
        self.write(f") is {_NODE} else environment.getattr({_ITEM}, {name!r}))")

    @optimizeconst
    def visit_Call(self, node: nodes.Call, frame: Frame, forward_caller: bool = False) -> None:
        """``emit(...)``, ``codemap(...)``, ``namespace(...)``: a function the sandbox
        calls without inspection (:meth:`~.environment._Sandbox.call_directly`) is called
        by the template's own code, without the frame of the sandbox's ``call`` (which
        would call it the same way, after dropping the ``_loop_vars`` and ``_block_vars``
        Jinja passes for functions that take the context). Anything else, or a function
        replaced at run time, takes Jinja's code: the test is made on every call."""
        if (
            forward_caller
            or self.environment.is_async
            or not isinstance(getattr(self.environment, "direct_calls", None), frozenset)
            or sum(1 for _ in node.find_all(nodes.Call)) > _MAX_INNER_CALLS
        ):
            super().visit_Call(node, frame, forward_caller=forward_caller)
            return
        loop_kwargs = {"_loop_vars": "_loop_vars"} if frame.loop_frame else {}
        block_kwargs = {"_block_vars": "_block_vars"} if frame.block_frame else {}
        extra_kwargs = {**loop_kwargs, **block_kwargs} or None
        self.write("(")  # first: a pending new line is written before the arguments' text
        plain = self._signature_text(node, frame, None)
        jinjas = self._signature_text(node, frame, extra_kwargs) if extra_kwargs else plain
        positional = not (node.kwargs or node.dyn_args or node.dyn_kwargs)
        simple = positional and not any(True for _ in node.find_all(nodes.Call))
        callee = node.node
        if isinstance(callee, nodes.Getattr) and _is_node_method(callee.attr):
            # ``cd.all("translation")``: a node's method, called as the sandbox would
            # after reading it (what ``call`` does for the methods of template objects),
            # without the bound method and ``call``'s frame.
            self.write(f"{_NODE}.{callee.attr}({_ITEM}{plain}) if type({_ITEM} := ")
            self.visit(callee.node, frame)
            self.write(f") is {_NODE} else environment.call(context, ")
            self.write(f"environment.getattr({_ITEM}, {callee.attr!r}){jinjas}))")
            return
        # The condition runs first: the function is evaluated and named, then, in either
        # branch, read before the arguments are evaluated (as in Jinja's code), so a call
        # among the arguments may reuse the name.
        self.write(f"{_CALLEE}({plain.removeprefix(', ')}) if id({_CALLEE} := ")
        self.visit(node.node, frame)
        self.write(") in environment.direct_calls else ")
        if simple:
            # ``Coding(cd)``: a macro called with positional arguments, by what ``call``
            # calls for it (the arguments are written a third time: only simple ones).
            arguments = plain.removeprefix(", ")
            self.write(f"{_CALL_MACRO}({_CALLEE}, ({arguments}{',' if arguments else ''})) ")
            self.write(f"if type({_CALLEE}) is {_MACRO} else ")
        self.write(f"environment.call(context, {_CALLEE}{jinjas}))")

    def _signature_text(
        self, node: nodes.Call, frame: Frame, extra_kwargs: dict[str, str] | None
    ) -> str:
        """What :meth:`signature` writes for ``node`` (a leading comma before each
        argument), as text."""
        stream = self.stream
        self.stream = StringIO()
        try:
            self.signature(node, frame, extra_kwargs)
            return self.stream.getvalue()
        finally:
            self.stream = stream

    def enter_frame(self, frame: Frame) -> None:
        """The names a frame reads from its context, resolved in one call: Jinja writes
        ``l_0_pid = resolve('pid')`` for each. Inside another context (a block's
        ``derived`` one), Jinja's own code."""
        loads = frame.symbols.loads
        resolved = [
            (t, param) for t, (action, param) in loads.items() if action == VAR_LOAD_RESOLVE
        ]
        if len(resolved) < 2 or self._context_reference_stack[-1] != "context":
            super().enter_frame(frame)
            return
        targets = ", ".join(target for target, _ in resolved)
        names = ", ".join(repr(name) for _, name in resolved)
        self.writeline(f"({targets},) = context.resolve_names(({names},))")
        others = {t: load for t, load in loads.items() if load[0] != VAR_LOAD_RESOLVE}
        saved = frame.symbols.loads
        frame.symbols.loads = others
        try:
            super().enter_frame(frame)
        finally:
            frame.symbols.loads = saved

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
