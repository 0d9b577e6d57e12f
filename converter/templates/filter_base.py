"""What every family of template filters shares: the converter's configuration, reading a
value's text and HL7 location, and the answer to an invalid value (a MappingError in
strict mode, a warning and an absent element in lenient mode)."""

from __future__ import annotations

from typing import Any, TypeVar

from jinja2.runtime import Context

from ..active_session import ACTIVE_SESSION
from ..datetimes import TimestampConverter
from ..errors import MappingError
from .codemaps import CodeMaps

__all__ = ["MAX_REMEMBERED", "FilterBase", "path_of", "remember", "text_of"]

_K = TypeVar("_K")
_V = TypeVar("_V")

#: How many answers each of the filters' memos keeps (hd_system, code_system…).
MAX_REMEMBERED = 4096


def text_of(value: Any) -> str:
    """A value's text without surrounding blanks; "" for None."""
    return "" if value is None else str(value).strip()


def path_of(value: Any) -> str | None:
    """Where a value comes from: HL7 (``PID-7``, ``OBX[2]``) or CDA (``…/value/@value``).

    Plain strings have no location; CDA attribute values are strings that carry one.
    """
    if value is None:
        return None
    path = getattr(value, "path", None)
    if isinstance(path, str):
        return path
    return None if isinstance(value, str) else getattr(value, "label", None)


def remember(answers: dict[_K, _V], key: _K, value: _V) -> _V:
    """Keep a filter's answer for ``key`` (a name read from messages) and return it.

    The names come from what senders send, so a memo is bounded: when full it forgets
    everything and starts again, so that a long-running service keeps remembering the
    names its senders use now rather than the first ones it ever met."""
    if len(answers) >= MAX_REMEMBERED:
        answers.clear()
    answers[key] = value
    return value


class FilterBase:
    """Filters bound to one converter configuration (time zone, strictness, code maps)."""

    def __init__(self, timestamps: TimestampConverter, codemaps: CodeMaps, *, strict: bool):
        self._timestamps = timestamps
        self._codemaps = codemaps
        self._strict = strict

    def configuration_key(self) -> str:
        """Everything the filters' answers depend on besides their arguments: a template
        compiled with them may hold some of those answers (see :meth:`CodeMaps.digest`)."""
        return "|".join((self._timestamps.zone_name, str(self._strict), self._codemaps.digest()))

    def _invalid(self, ctx: Context | None, value: Any, reason: str) -> None:
        if self._strict:
            raise MappingError(  # 102: data type error
                reason, location=path_of(value), detail=text_of(value)[:100], hl7_error_code="102"
            )
        session = ACTIVE_SESSION.get()
        if session is not None:
            where = path_of(value)
            session.warn(
                f"{reason} at {where}; value dropped" if where else f"{reason}; value dropped"
            )
        return None
