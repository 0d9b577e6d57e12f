"""Reading a large JSON document in steps, so that the event loop keeps running.

``json.loads`` is C code that holds the GIL for the whole document: handed to a worker
thread, it stalls the event loop's thread just as long (a 42 MB transaction-response:
2.2 s without an MLLP ACK, a ``/ready`` answer or a delivery; a 20 MB ``$convert-data``
body: 2 s). :func:`loads_in_steps` reads the document's outer levels one member or element
at a time, each with :meth:`json.JSONDecoder.raw_decode`; between two steps the thread is
back in the interpreter, which hands the GIL to the loop's thread at each switch interval
(5 ms): the loop stalls for one step, not the document. The result is what ``json.loads``
gives. Two users, two shapes:

- the FHIR server's answers (:mod:`listeners.delivery.json_steps`): a Bundle's members and
  its ``entry`` elements, each cut down by a ``trim`` as soon as it is parsed (the tree
  held stays small, and so do the garbage collector's passes over it);
- ``$convert-data``'s Parameters resource (:mod:`listeners.http.bodies`): three levels,
  at most ``max_items`` items in each (a Python step per item of a 20 MB array of numbers
  would cost seconds of CPU), and long strings (``inputData``, megabytes) read
  ``_STRING_STEP`` characters at a time, never cut inside an escape nor between the
  halves of an escaped surrogate pair.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Steps", "TooManyItems", "Trim", "loads_in_steps", "skip_whitespace"]

#: What keeps of one parsed element only what will be read of it.
Trim = Callable[[Any], Any]

#: Characters decoded in one step: of the body's bytes, and of a long string.
_STRING_STEP = 64 * 1024
#: The first piece of a string read in pieces (each next one twice as long).
_FIRST_PIECE = 256
_WHITESPACE = re.compile(r"[ \t\n\r]*")
#: An escaped high surrogate followed by an escaped low one: decoded in halves, the pair
#: would give two lone surrogates instead of one character.
_SURROGATE_PAIR = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F]")
_DECODER = json.JSONDecoder()


class TooManyItems(ValueError):
    """A container of the stepped levels holds more than :attr:`Steps.max_items` items."""


@dataclass(frozen=True, slots=True)
class Steps:
    """How a document is read: ``depth`` levels in steps (deeper values in one step),
    at most ``max_items`` items in each of them (None: no limit), long strings in
    pieces (``strings``), and ``entry`` applied to each element of the top-level
    ``entry`` array as soon as it is parsed."""

    depth: int
    max_items: int | None = None
    strings: bool = False
    entry: Trim | None = None


def loads_in_steps(data: bytes, steps: Steps) -> Any:
    """``json.loads(data)``, read in steps; raises ``ValueError`` as ``json.loads`` does
    (:class:`TooManyItems` past ``steps.max_items``)."""
    # Decoded in pieces too: one decode of 20 MB holds the GIL as long as a parse.
    decoder = codecs.getincrementaldecoder(json.detect_encoding(data))("surrogatepass")
    view = memoryview(data)
    pieces = [
        decoder.decode(view[at : at + _STRING_STEP]) for at in range(0, len(data), _STRING_STEP)
    ]
    pieces.append(decoder.decode(b"", final=True))
    text = "".join(pieces)
    value, end = _parse(text, skip_whitespace(text, 0), 0, steps, steps.entry)
    end = skip_whitespace(text, end)
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def skip_whitespace(text: str, index: int) -> int:
    """The index of the first non-whitespace character from ``index``."""
    match = _WHITESPACE.match(text, index)
    return match.end() if match else index


def _parse(text: str, index: int, depth: int, steps: Steps, trim: Trim | None) -> tuple[Any, int]:
    """The value at ``index`` (no whitespace before it) and the index after it; ``trim``:
    applied to the elements of this array (the top-level ``entry``)."""
    opener = text[index : index + 1]
    if opener == '"' and steps.strings:
        return _string(text, index)
    if depth >= steps.depth or opener not in ("{", "["):
        return _DECODER.raw_decode(text, index)
    is_object = opener == "{"
    close = "}" if is_object else "]"
    members: dict[str, Any] = {}
    elements: list[Any] = []
    index = skip_whitespace(text, index + 1)
    if text[index : index + 1] == close:
        return (members if is_object else elements), index + 1
    items = 0
    while True:
        items += 1
        if steps.max_items is not None and items > steps.max_items:
            raise TooManyItems(f"more than {steps.max_items} items")
        if is_object:
            if text[index : index + 1] != '"':
                raise json.JSONDecodeError(
                    "Expecting property name enclosed in double quotes", text, index
                )
            key, index = _string(text, index) if steps.strings else _DECODER.raw_decode(text, index)
            index = skip_whitespace(text, index)
            if text[index : index + 1] != ":":
                raise json.JSONDecodeError("Expecting ':' delimiter", text, index)
            hook = steps.entry if depth == 0 and key == "entry" else None
            members[key], index = _parse(
                text, skip_whitespace(text, index + 1), depth + 1, steps, hook
            )
        else:
            value, index = _parse(text, index, depth + 1, steps, None)
            elements.append(value if trim is None else trim(value))
        index = skip_whitespace(text, index)
        after = text[index : index + 1]
        if after == close:
            return (members if is_object else elements), index + 1
        if after != ",":
            raise json.JSONDecodeError("Expecting ',' delimiter", text, index)
        index = skip_whitespace(text, index + 1)


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
