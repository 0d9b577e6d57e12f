"""JSON text of template expressions: what every ``{{ expression }}`` writes.

Templates write JSON. Every ``{{ expression }}`` goes through :func:`to_json`, so a value
from a message can never break the JSON it lands in: strings are quoted and escaped,
absent values become ``null`` (pruned later), numbers and booleans stay themselves.
Macro calls and ``emit()`` references are already JSON and pass through unchanged.
Characters FHIR strings cannot hold are a MappingError (strict) or replaced with a
warning naming the field (lenient).
"""

from __future__ import annotations

import functools
import json
import json.encoder
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import jinja2
import simplejson
from markupsafe import Markup

from ..active_session import ACTIVE_SESSION
from ..errors import MappingError
from ..hl7v2.value import Value
from ..printable import printable
from .render import Ref

__all__ = ["as_markup", "is_fhir_string", "to_json"]

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
    return as_markup(encoded)


# What ``json.dumps(text, ensure_ascii=False)`` calls for a string, without its Python
# frames; and Markup built by str's own constructor (Markup.__new__ only adds handling
# of __html__ objects and bytes, which JSON text never is). Both run ~250 times a message.
_encode_string = json.encoder.encode_basestring
_isspace = str.isspace
as_markup: Callable[[str], Markup] = functools.partial(str.__new__, Markup)
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
        if not text:
            return _NULL
        # _string's common case inline (one call less for most expressions): no escape,
        # hence no control character, and no bracket to protect.
        encoded = _encode_string(text)
        if "\\" in encoded or "]" in encoded or "}" in encoded:
            return _string(text, value)
        return as_markup(encoded)
    if value is None:
        return _NULL
    if isinstance(value, str):
        if not value:
            return _NULL
        encoded = _encode_string(value)
        if "\\" in encoded or "]" in encoded or "}" in encoded:
            return _string(value)
        return as_markup(encoded)
    if isinstance(value, Ref):
        return as_markup(value.as_json())
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a JSON number")
        return as_markup(format(value, "f"))
    if isinstance(value, bool | int | float):
        # NaN and Infinity are not JSON (a "1e999" decimal would otherwise be written as
        # ``Infinity``): a ValueError, reported as a MappingError at the template line.
        return as_markup(json.dumps(value, allow_nan=False))
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
        return as_markup(encoded)
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
    return as_markup(encoded)


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
