"""The rendering session of the conversion under way in this thread or task.

Set by :class:`~converter.templates.render.RenderSession` while it renders; read by code
that has no other way to reach it: the filters of imported macro modules (which do not see
the render context) and the HL7 v2 value decoder, whose lenient mode replaces an
undecodable escape with a warning. Its own module so that the parsing layer reads it
without depending on the templates layer.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .templates.render import RenderSession

__all__ = ["ACTIVE_SESSION"]

ACTIVE_SESSION: ContextVar[RenderSession | None] = ContextVar(
    "passerelle_render_session", default=None
)
