"""The bodies of ``POST /$convert-data`` (a FHIR ``Parameters`` resource) and ``POST
/convert`` (raw messages), read into the bytes to convert without holding the event loop.

``POST /convert``'s body (:func:`read_raw`) has its messages counted (``http.max_messages``)
and, for HL7 v2 sent with a content type naming a ``charset``, each message without MSH-18
re-encoded as the converter will read it, as the AMQP consumer does
(:func:`.text_input.apply_batch_charset`): a Latin-1 message posted as ``text/plain;
charset=iso-8859-1`` was a 422 (``CharsetError``: not UTF-8).

Parsing the JSON, encoding ``inputData`` in its character set and counting its messages
took 1.4 s for a 20 MB body (the message count's regular expression alone 1.3 s), on the
event loop: every MLLP ACK, ``/ready`` answer and delivery waited that long.
:func:`read_parameters` therefore runs in a worker thread for a body over
:data:`PARSE_IN_THREAD` bytes, and reads the resource in steps (:mod:`listeners.json_steps`:
a thread alone would not do, the JSON decoder holds the GIL for a whole value, and
``inputData`` is one string of megabytes): its members and ``parameter`` entries one by
one, long strings in pieces, each of those levels holding at most :data:`_MAX_ITEMS`
items (a $convert-data request has a handful).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import ServiceError
from ..json_steps import Steps, TooManyItems
from ..json_steps import loads_in_steps as read_in_steps
from .text_input import UnencodableText, apply_batch_charset, encode_input, message_starts

__all__ = [
    "PARSE_IN_THREAD",
    "ConvertRequest",
    "ParametersRefused",
    "count_messages",
    "loads_in_steps",
    "read_parameters",
    "read_raw",
]

#: Bodies larger than this (bytes) are read in a worker thread; smaller ones inline, at
#: once (a thread costs more than they do).
PARSE_IN_THREAD = 256 * 1024
#: Containers read in steps: the resource, its ``parameter`` list and each parameter.
_STEPPED_DEPTH = 3
#: Items of one of those at most.
_MAX_ITEMS = 100
_STEPS = Steps(depth=_STEPPED_DEPTH, max_items=_MAX_ITEMS, strings=True)
_INPUT_TYPES = {"hl7v2": "hl7v2", "ccda": "cda", "cda": "cda"}
_INPUT_DATA = "Parameters.parameter.where(name='inputData')"
_XML_START = re.compile(rb"\A(?:\xef\xbb\xbf)?\s*<")


class ParametersRefused(ServiceError):
    """A body ``$convert-data`` cannot use: answered 400 with this ``code`` and
    ``expression`` (the text names the problem, never the body's content)."""

    def __init__(self, diagnostics: str, code: str = "structure", expression: str | None = None):
        super().__init__(diagnostics)
        self.code = code
        self.expression = expression


@dataclass(frozen=True)
class ConvertRequest:
    """What a Parameters resource asks to convert."""

    data: bytes
    kind: str
    root_template: str | None


def count_messages(data: bytes, kind: str, stop_after: int) -> int:
    """HL7 v2 messages in ``data`` (counting stops past ``stop_after``); a CDA document: 1.

    Cheap (a ``find`` for each MSH, no parsing), so that an oversized batch is refused
    before any of it is converted.
    """
    if kind == "cda" or (kind == "auto" and _XML_START.match(data)):
        return 1
    count = 0
    for _ in message_starts(data):
        count += 1
        if count > stop_after:
            break
    return count


def read_raw(
    body: bytes, kind: str, *, charset: str | None, default_charset: str, max_messages: int
) -> tuple[bytes, int]:
    """``POST /convert``'s ``body`` (``kind``: ``hl7v2``, ``cda`` or ``auto``) as the
    converter must read it, and the number of messages it holds (counting stops past
    ``max_messages``); ``CharsetError`` for a ``charset`` unknown or that cannot read the
    bytes. Synchronous: a large body belongs in a thread."""
    held = count_messages(body, kind, max_messages)
    if held > max_messages or kind == "cda" or (kind == "auto" and _XML_START.match(body)):
        return body, held  # refused before anything is read; an XML document says its own
    return apply_batch_charset(body, charset, default_charset), held


def read_parameters(body: bytes, *, default_charset: str, max_messages: int) -> ConvertRequest:
    """The message a ``$convert-data`` body asks to convert, as the converter reads it
    (``default_charset``: see :func:`~listeners.http.create_app`); raises
    :class:`ParametersRefused`. Synchronous: a large body belongs in a thread."""
    try:
        parameters = loads_in_steps(body)
    except (ValueError, RecursionError):
        # JSONDecodeError and UnicodeDecodeError are ValueErrors, and so is an integer
        # past Python's digit limit; RecursionError: nesting deeper than the stack.
        raise ParametersRefused("body is not JSON") from None
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise ParametersRefused("body must be a FHIR Parameters resource")
    listed = parameters.get("parameter") or []
    if not isinstance(listed, list):
        raise ParametersRefused(
            "Parameters.parameter must be a list", "structure", "Parameters.parameter"
        )
    values: dict[str, str] = {}
    for parameter in listed:
        if isinstance(parameter, dict) and isinstance(parameter.get("name"), str):
            value = parameter.get("valueString")
            if isinstance(value, str):
                values[parameter["name"]] = value
    if "inputData" not in values:
        raise ParametersRefused("parameter inputData is required", "required", _INPUT_DATA)
    kind = _INPUT_TYPES.get(values.get("inputDataType", "Hl7v2").lower())
    if kind is None:
        raise ParametersRefused(
            "inputDataType must be Hl7v2 or Ccda",
            "not-supported",
            "Parameters.parameter.where(name='inputDataType')",
        )
    try:
        data = encode_input(values["inputData"], kind, default_charset)
    except UnencodableText as exc:
        raise ParametersRefused(str(exc), "structure", _INPUT_DATA) from None
    except UnicodeEncodeError:  # a lone surrogate escape (\ud800) in the JSON string
        raise ParametersRefused(
            "inputData is not valid Unicode text", "structure", _INPUT_DATA
        ) from None
    held = count_messages(data, kind, max_messages)
    if held > 1:
        number = str(held) if held <= max_messages else f"more than {held - 1}"
        raise ParametersRefused(
            f"inputData holds {number} messages; $convert-data converts one "
            "(POST /convert takes several)",
            "not-supported",
            _INPUT_DATA,
        )
    return ConvertRequest(data, kind, values.get("rootTemplate") or None)


def loads_in_steps(data: bytes) -> Any:
    """``json.loads(data)``, read in steps (see the module docstring); raises ``ValueError``
    as ``json.loads`` does, and :class:`ParametersRefused` for a container of the outer
    levels holding more than :data:`_MAX_ITEMS` items."""
    try:
        return read_in_steps(data, _STEPS)
    except TooManyItems:
        raise ParametersRefused(
            f"a Parameters resource for $convert-data has at most {_MAX_ITEMS} "
            "parameters and members"
        ) from None
