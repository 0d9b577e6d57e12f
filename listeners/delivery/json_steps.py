"""Parsing large JSON bodies without stalling the event loop.

A FHIR server that ignores ``Prefer: return=minimal`` answers a big transaction with every
resource written: tens of MB of transaction-response. ``json.loads`` of that takes seconds,
and during them the event loop (MLLP ACKs, ``/ready``, the other deliveries) does nothing.
Handing ``json.loads`` to ``asyncio.to_thread`` does not help: the C decoder holds the GIL
for the whole document, so the loop's thread waits just as long (measured on a 42 MB
transaction-response: 2.2 s of parsing, a 2.2 s gap between two ticks of the loop, inline or
in a thread alike).

:func:`loads_json` parses a body above :data:`PARSE_IN_THREAD` bytes in a worker thread
*in steps*: the top-level object member by member and the elements of its arrays (a
Bundle's ``entry``) one by one, each with :meth:`json.JSONDecoder.raw_decode`. Between two
steps the thread is back in the interpreter, which hands the GIL to the loop's thread at
each switch interval (5 ms): the loop stalls for one entry's parse, not the document's.
The result is what ``json.loads`` gives. Smaller bodies are parsed inline, at once: a
thread costs more than they do.

With ``entry`` (:func:`loads_json`), each element of the top-level ``entry`` array is cut
down to what will be read of it as soon as it is parsed: the tree held stays small, and
so do the cyclic garbage collector's passes over it (building the whole tree of a 42 MB
answer triggers full collections holding the GIL for up to 0.7 s each; cut down, a
fraction of that).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ..json_steps import Steps, Trim
from ..json_steps import loads_in_steps as read_in_steps
from ..json_steps import skip_whitespace as _skip

__all__ = ["PARSE_IN_THREAD", "loads_json", "member_value_span"]

#: Bodies larger than this (bytes) are parsed in a worker thread, in steps.
PARSE_IN_THREAD = 256 * 1024
#: Containers opened in steps: the top-level object and its arrays (a Bundle's entries);
#: deeper values (one entry) are parsed in one step.
_STEPPED_DEPTH = 2
_DECODER = json.JSONDecoder()


async def loads_json(data: bytes, *, entry: Trim | None = None) -> Any:
    """``json.loads(data)``, off the event loop and in steps when ``data`` is large.
    ``entry``: applied (to a large body) to each element of the top-level ``entry`` array
    as soon as it is parsed, to keep only what is read of it (its ``response``, not the
    resource a server echoes back): the tree held in memory stays small. Raises ``ValueError``
    (``json.JSONDecodeError``, ``UnicodeDecodeError``) as ``json.loads`` does."""
    if len(data) <= PARSE_IN_THREAD:
        return json.loads(data)
    return await asyncio.to_thread(loads_in_steps, data, entry)


def loads_in_steps(data: bytes, entry: Trim | None = None) -> Any:
    """``json.loads(data)``, parsed in steps (see the module docstring and
    :func:`loads_json` for ``entry``)."""
    return read_in_steps(data, Steps(depth=_STEPPED_DEPTH, entry=entry))


def member_value_span(text: str, key: str, *, complete: bool) -> tuple[int, int] | int | None:
    """In ``text``, a JSON object's text or (``complete`` false) its start: the span of its
    top-level ``key`` member's value; else the index of its closing brace; None when the
    text ends before either. The first such member counts (FHIR JSON allows one). Nothing
    is built: an array (a Bundle's ``entry``) is stepped over one element at a time."""
    try:
        index = _skip(text, 0)
        if text[index : index + 1] != "{":
            raise json.JSONDecodeError("Expecting a Bundle, a JSON object", text, index)
        index = _skip(text, index + 1)
        if text[index : index + 1] == "}":
            return index
        while True:
            member, index = _DECODER.raw_decode(text, index)
            index = _skip(text, index)
            if text[index : index + 1] != ":":
                raise json.JSONDecodeError("Expecting ':' delimiter", text, index)
            start = _skip(text, index + 1)
            end = _skip_value(text, start)
            index = _skip(text, end)
            if member == key and text[index : index + 1] in (",", "}"):
                return start, end  # followed by what ends a member: not cut off
            if text[index : index + 1] == "}":
                return index
            if text[index : index + 1] != ",":
                raise json.JSONDecodeError("Expecting ',' delimiter", text, index)
            index = _skip(text, index + 1)
    except json.JSONDecodeError:
        if complete:
            raise
        return None  # maybe cut off at the prefix's end: read all of it


def _skip_value(text: str, index: int) -> int:
    """The index after the JSON value at ``index``; an array is read one element at a
    time (a Bundle's ``entry``: each step short)."""
    if text[index : index + 1] != "[":
        return _DECODER.raw_decode(text, index)[1]
    index = _skip(text, index + 1)
    if text[index : index + 1] == "]":
        return index + 1
    while True:
        index = _skip(text, _DECODER.raw_decode(text, index)[1])
        after = text[index : index + 1]
        if after == "]":
            return index + 1
        if after != ",":
            raise json.JSONDecodeError("Expecting ',' delimiter", text, index)
        index = _skip(text, index + 1)
