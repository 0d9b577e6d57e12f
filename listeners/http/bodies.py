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
:data:`PARSE_IN_THREAD` bytes. A thread alone would not do: the JSON decoder is C code
holding the GIL for a whole value, and ``inputData`` is one string of megabytes. The
resource is read in steps instead: its members and ``parameter`` entries one by one, and
each long string :data:`_STRING_STEP` characters at a time; between two steps the thread
is back in the interpreter, which hands the GIL to the loop's thread at each switch
interval (5 ms). The result is what ``json.loads`` gives.

Only the resource's outer levels are read in steps (its members, ``parameter``, each
parameter's members), and each holds at most :data:`_MAX_ITEMS` items: a $convert-data
request has a handful, and a Python step per item of a 20 MB array of numbers would cost
seconds of CPU.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ServiceError
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
#: Characters of a long JSON string decoded in one step (under a millisecond), and in
#: the first step of any string.
_STRING_STEP = 64 * 1024
_FIRST_PIECE = 256
#: Containers read in steps: the resource, its ``parameter`` list and each parameter.
_STEPPED_DEPTH = 3
#: Items of one of those at most.
_MAX_ITEMS = 100
_INPUT_TYPES = {"hl7v2": "hl7v2", "ccda": "cda", "cda": "cda"}
_INPUT_DATA = "Parameters.parameter.where(name='inputData')"
_XML_START = re.compile(rb"\A(?:\xef\xbb\xbf)?\s*<")
_WHITESPACE = re.compile(r"[ \t\n\r]*")
#: An escaped high surrogate followed by an escaped low one: decoded in halves, the pair
#: would give two lone surrogates instead of one character.
_SURROGATE_PAIR = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F]")
_DECODER = json.JSONDecoder()


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
    decoder = codecs.getincrementaldecoder(json.detect_encoding(data))("surrogatepass")
    view = memoryview(data)
    pieces = [
        decoder.decode(view[at : at + _STRING_STEP]) for at in range(0, len(data), _STRING_STEP)
    ]
    pieces.append(decoder.decode(b"", final=True))
    text = "".join(pieces)
    value, end = _parse(text, _skip(text, 0), 0)
    end = _skip(text, end)
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def _skip(text: str, index: int) -> int:
    match = _WHITESPACE.match(text, index)
    return match.end() if match else index


def _parse(text: str, index: int, depth: int) -> tuple[Any, int]:
    """The value at ``index`` (no whitespace before it) and the index after it."""
    opener = text[index : index + 1]
    if opener == '"':
        return _string(text, index)
    if depth >= _STEPPED_DEPTH or opener not in ("{", "["):
        return _DECODER.raw_decode(text, index)
    is_object = opener == "{"
    close = "}" if is_object else "]"
    members: dict[str, Any] = {}
    elements: list[Any] = []
    index = _skip(text, index + 1)
    if text[index : index + 1] == close:
        return (members if is_object else elements), index + 1
    items = 0
    while True:
        items += 1
        if items > _MAX_ITEMS:
            raise ParametersRefused(
                f"a Parameters resource for $convert-data has at most {_MAX_ITEMS} "
                "parameters and members"
            )
        if is_object:
            if text[index : index + 1] != '"':
                raise json.JSONDecodeError(
                    "Expecting property name enclosed in double quotes", text, index
                )
            key, index = _string(text, index)
            index = _skip(text, index)
            if text[index : index + 1] != ":":
                raise json.JSONDecodeError("Expecting ':' delimiter", text, index)
            members[key], index = _parse(text, _skip(text, index + 1), depth + 1)
        else:
            value, index = _parse(text, index, depth + 1)
            elements.append(value)
        index = _skip(text, index)
        after = text[index : index + 1]
        if after == close:
            return (members if is_object else elements), index + 1
        if after != ",":
            raise json.JSONDecodeError("Expecting ',' delimiter", text, index)
        index = _skip(text, index + 1)


def _string(text: str, index: int) -> tuple[str, int]:
    """The JSON string at ``index`` (its opening quote) and the index after it, decoded in
    pieces: the first of :data:`_FIRST_PIECE` characters, each next one twice as long, up
    to :data:`_STRING_STEP` (a short string costs little more than itself)."""
    pieces: list[str] = []
    at = index + 1
    size = _FIRST_PIECE
    while True:
        target = at + size
        cut = _cut(text, at, target, len(text)) if target < len(text) else len(text)
        given = text[at:cut]
        # The piece closed with a quote of ours: the C decoder stops at the string's own
        # closing quote if the piece holds it, else at ours.
        piece, end = json.decoder.scanstring(f'"{given}"', 1)  # type: ignore[attr-defined]
        pieces.append(piece)
        if end <= len(given) + 1:  # the string's own quote, at given[end - 2]
            return "".join(pieces), at + end - 1
        if cut >= len(text):
            raise json.JSONDecodeError("Unterminated string starting at", text, index)
        at = cut
        size = min(size * 2, _STRING_STEP)


def _cut(text: str, at: int, target: int, end: int) -> int:
    """Where to end the piece of a string's content starting at ``at`` (a boundary between
    two characters or escapes), at ``target`` or a little before: not inside an escape,
    nor between the halves of an escaped surrogate pair (``end``: the string's end, where
    a piece that cannot be cut ends)."""
    last = text.rfind("\\", max(at, target - 6), target)
    if last < 0:
        return target  # no escape spans it: they are six characters at most
    # The first backslash of a run starts an escape (each escape's backslash is followed
    # by one character, a backslash only in "\\\\"): cut there, before the run.
    cut = _run_start(text, at, last)
    if cut - 6 >= at and _SURROGATE_PAIR.match(text, cut - 6):
        high = cut - 6
        if (high - _run_start(text, at, high)) % 2 == 0:  # a real escape, not "\\\\ud83d"
            # Before the pair, or after it when the piece starts with it.
            cut = high if high > at else min(cut + 6, end)
    if cut > at:
        return cut
    # The piece is one run of backslashes up to ``last``: escaped in pairs from ``at``.
    paired = at + (last - at) // 2 * 2
    return paired if paired > at else end


def _run_start(text: str, at: int, index: int) -> int:
    """The first of the backslashes ending at ``index``, not before ``at``."""
    return at + len(text[at:index].rstrip("\\"))
