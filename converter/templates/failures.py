"""What a template's failure becomes: a conversion error naming the template line (and,
for the override templates compiled at start, a configuration error naming each).

A template can provoke any exception (a TypeError in an expression, an undefined name,
a refused operation, a recursion): the message then fails with a
:class:`~converter.errors.ConversionError` subclass that says which template line, never
with a bare exception escaping the converter.
"""

from __future__ import annotations

import jinja2
from jinja2.exceptions import SecurityError

from ..errors import ConfigurationError, ConversionError, MappingError, TemplateError
from .locations import template_frame, template_name, undefined_without_key

__all__ = ["broken_overrides", "syntax_error", "template_failure"]


def syntax_error(exc: jinja2.TemplateSyntaxError, name: str, builtin_root: str) -> TemplateError:
    """A template that does not compile, named by the file read and the line."""
    # exc.name is the logical name (the same for an override and the built-in file);
    # exc.filename says which file was read.
    where = template_name(exc.filename, builtin_root) if exc.filename else exc.name or name
    return TemplateError(f"template syntax error: {exc.message}", template=f"{where}:{exc.lineno}")


def template_failure(exc: Exception, name: str, builtin_root: str) -> ConversionError:
    """The error a rendering of ``name`` that raised ``exc`` (not a ConversionError:
    those keep their own, see :meth:`RenderSession.render`) fails the message with."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return syntax_error(exc, name, builtin_root)
    where = template_frame(exc, name, builtin_root)
    if isinstance(exc, jinja2.TemplateNotFound):
        # The name goes to ``detail``: a template may build it from the message
        # (``{% include "site/" ~ pid[5] %}``), and ``str(error)`` is logged.
        return TemplateError("template not found", template=where, detail=f"template {exc.name!r}")
    if isinstance(exc, jinja2.UndefinedError):
        return TemplateError(
            f"undefined in template: {undefined_without_key(exc.message)}",
            template=where,
            detail=exc.message,
        )
    if isinstance(exc, SecurityError):
        return TemplateError(f"template tried an unsafe operation: {exc}", template=where)
    # TypeError, ValueError, ArithmeticError… and whatever else a template can provoke
    # (RecursionError from a recursive macro, a jinja2 runtime error): the message fails
    # with the template line instead of escaping as a bare exception.
    return MappingError(
        f"{type(exc).__name__} raised in template",
        template=where,
        detail=str(exc)[:300],
    )


def broken_overrides(problems: list[str]) -> ConfigurationError:
    """The error of override templates that do not compile or cannot be read, each of
    ``problems`` (``file:line: reason``) on its line: the engineer fixes them all in one
    pass instead of one per start. One problem is the line alone."""
    if len(problems) == 1:
        return ConfigurationError(problems[0])
    return ConfigurationError(
        f"{len(problems)} override templates are broken:\n"
        + "\n".join(f"  {line}" for line in problems)
    )
