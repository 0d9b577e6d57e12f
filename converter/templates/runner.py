"""Running one template for a conversion: names, the active session, failures.

:class:`TemplateRunner` is the part of :class:`~converter.templates.render.RenderSession`
that renders a template by its name: it resolves ``emit``/``include`` names to files,
makes the session reachable from filters and macros (``ACTIVE_SESSION``) while the
template runs, and turns whatever the template raises into a
:class:`~converter.errors.ConversionError` naming the file and line (an override by its
full path). What the renderings produce (resources, ids, merges, deletes) is the
session's business (render.py).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import jinja2

from ..active_session import ACTIVE_SESSION
from ..errors import ConversionError, TemplateError
from .failures import syntax_error, template_failure
from .locations import input_location, template_frame, template_name
from .memo import Frame, blind_templates, position_blind
from .template_json import json_from_template

__all__ = ["TemplateRunner", "included_name", "resolved_name"]


def resolved_name(family: str, template: str) -> str:
    """The template ``emit(template)`` renders: ``Patient`` →
    ``<family>/resources/Patient.j2``; ``sections/x`` → ``<family>/sections/x.j2``; a
    name with its family (``cda/resources/X``) or its ``.j2`` is taken as written."""
    if template.endswith(".j2"):
        return template
    if template.startswith(family + "/"):
        return f"{template}.j2"
    if "/" in template:
        return f"{family}/{template}.j2"
    return f"{family}/resources/{template}.j2"


def included_name(family: str, template: str) -> str:
    """The template ``include(template)`` renders: as :func:`resolved_name`, but a bare
    name is ``<family>/<name>.j2`` (CDA section templates)."""
    if "/" in template or template.endswith(".j2"):
        return resolved_name(family, template)
    return f"{family}/{template}.j2"


class TemplateRunner:
    """Renders the templates of one conversion (the base of RenderSession)."""

    def __init__(
        self,
        *,
        environment: jinja2.Environment,
        family: str,
        context: dict[str, Any],
        builtin_root: str,
    ) -> None:
        self._env = environment
        self._builtin_root = builtin_root
        self._family = family
        #: The template ``emit(name)`` renders (:func:`resolved_name`); a partial, not a
        #: method calling it: one call per emit on the hot path, as before.
        self.resolve: Callable[[str], str] = functools.partial(resolved_name, family)
        # emit / emitted / include / warn are environment globals that reach this
        # session through ACTIVE_SESSION (see environment.py).
        self._context = dict(context)
        #: The emit() renderings under way, innermost last, while reuse is on.
        self._frames: list[Frame] = []
        #: Templates known to read nothing but their inputs' values (see memo.py).
        self._blind = blind_templates(environment)

    def render(self, name: str, variables: dict[str, Any]) -> str:
        try:
            compiled = self._env.get_template(name)
        except jinja2.TemplateNotFound as exc:
            # Name the template line that asked for it (emit/include), if any.
            caller = self.current_template_line()
            # The name in ``detail``, as template_failure() gives it: it may quote the
            # message.
            raise TemplateError(
                "template not found", template=caller or name, detail=f"template {exc.name!r}"
            ) from None
        except jinja2.TemplateSyntaxError as exc:
            raise syntax_error(exc, name, self._builtin_root) from None
        # Checked at a template's first rendering, when it is loaded: the file read is the
        # one compiled.
        blind = self._blind.get(name)
        if blind is None:
            blind = position_blind(self._env, name)
        if not blind and self._frames:
            self._frames[-1].blind = False
        # Only a RenderSession renders (this class is its base); no cast(): a call per
        # rendering on the hot path.
        token = ACTIVE_SESSION.set(self)  # type: ignore[arg-type]
        try:
            return _render(compiled, {**compiled.globals, **self._context, **variables})
        except ConversionError as exc:
            if exc.template is None:
                exc.template = template_frame(exc, name, self._builtin_root)
            if exc.location is None:
                # The innermost rendering first: the outer ones find it set.
                exc.location = input_location(variables)
            raise
        except Exception as exc:
            error = template_failure(exc, name, self._builtin_root)
            if error.location is None:
                error.location = input_location(variables)
            raise error from None
        finally:
            ACTIVE_SESSION.reset(token)

    def current_template_line(self) -> str | None:
        """``file:line`` of the template expression being evaluated (innermost template
        frame on the stack), for warnings about a value that carries no HL7 location.
        Walks the stack: for rare paths only."""
        self._impure()
        # From the innermost Python frame, this method's own included: compiled (the
        # container's build), this method and its callers make no frame, and
        # ``_getframe(1)`` would skip the template frame that called them.
        frame: FrameType | None = sys._getframe(0)
        while frame is not None:
            template = frame.f_globals.get("__jinja_template__")
            if template is not None:
                line = template.get_corresponding_lineno(frame.f_lineno)
                return f"{template_name(frame.f_code.co_filename, self._builtin_root)}:{line}"
            frame = frame.f_back
        return None

    def _impure(self) -> None:
        """The rendering under way read or changed the conversion's state: not reused."""
        if self._frames:
            self._frames[-1].pure = False

    def _json(self, text: str, name: str, variables: dict[str, Any]) -> Any:
        """The JSON value template ``name`` rendered with ``variables`` wrote."""
        try:
            return json_from_template(text, name)
        except TemplateError as exc:
            # Looked up on failure only: get_template on every emit costs a cache check.
            exc.template = self._file_name(name)
            exc.location = input_location(variables)
            raise

    def _file_name(self, name: str) -> str:
        """``name`` as errors show it: an override by its full path (it is loaded by now)."""
        filename = self._env.get_template(name).filename
        return template_name(filename, self._builtin_root) if filename else name


def _render(template: jinja2.Template, parent: dict[str, Any]) -> str:
    """``template.render(variables)`` given the context's parent as Jinja makes it (the
    template's globals, then the variables): Template.render copies the variables into
    a dict and new_context copies them again behind the globals, on every render."""
    environment = template.environment
    if environment.is_async:
        return template.render(parent)
    context = template.new_context(parent, shared=True)
    try:
        return environment.concat(template.root_render_func(context))
    except Exception:
        environment.handle_exception()
