"""What every family of template filters shares: the converter's configuration, reading a
value's text and HL7 location, and the answer to an invalid value (a MappingError in
strict mode, a warning and an absent element in lenient mode)."""

from __future__ import annotations

from typing import Any

from jinja2.runtime import Context

from ..active_session import ACTIVE_SESSION
from ..datetimes import TimestampConverter
from ..errors import MappingError
from .codemaps import CodeMaps

__all__ = ["FilterBase", "path_of", "text_of"]


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

    def _invalid(self, ctx: Context, value: Any, reason: str) -> None:
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
