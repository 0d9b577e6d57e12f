"""ER7 (pipe-and-hat) reading: files into messages, messages into segments.

This is the hot path: a split-based tokenizer, with no per-field objects until a
template asks for a field. Structure knowledge (groups, field names) is looked up
in the :class:`~converter.hl7v2.structure.StructureCatalog`, compiled once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConversionError, ParseError
from .charset import codec_for, decode_message
from .encoding import Encoding
from .message import Message, Segment
from .structure import StructureCatalog, group_segments

__all__ = ["RawMessage", "parse_message", "split_messages"]

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}")
_BATCH_ENVELOPE = (b"FHS", b"BHS", b"BTS", b"FTS")
_FRAMING = b"\x0b\x1c"
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message cut out of a file or stream, still undecoded."""

    data: bytes
    #: 1-based position of the message in its file (batch files hold several).
    index: int


def split_messages(data: bytes) -> list[RawMessage]:
    """Cut a file into messages: one per MSH, batch envelopes (FHS/BHS/BTS/FTS) dropped.

    Tolerates CR, LF or CRLF separators, a UTF-8 byte order mark, blank lines, trailing
    blanks and MLLP framing bytes left in the file.
    """
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    messages: list[list[bytes]] = []
    for line in _LINE_BREAK.split(data):
        line = line.strip(_FRAMING + b" \t")
        if not line:
            continue
        head = line[:3]
        if head in _BATCH_ENVELOPE:
            continue
        if head == b"MSH":
            messages.append([line])
        elif messages:
            messages[-1].append(line)
        else:
            raise ParseError(
                "data before the first MSH segment is not HL7 v2",
                location=f"line starting {line[:3].decode('ascii', 'replace')!r}",
            )
    if not messages:
        raise ParseError("no MSH segment found")
    return [RawMessage(b"\r".join(lines), n) for n, lines in enumerate(messages, start=1)]


def parse_message(
    data: bytes, catalog: StructureCatalog, *, default_charset: str = "utf-8"
) -> Message:
    """Parse one message (as cut by :func:`split_messages`) into its group structure."""
    if len(data) < 8 or not data.startswith(b"MSH"):
        raise ParseError("message does not start with an MSH segment", location="MSH")
    field_sep = chr(data[3])
    if field_sep.isalnum() or field_sep in "\r\n ":
        raise ParseError(f"invalid field separator {field_sep!r}", location="MSH-1")
    msh_end = data.find(b"\r")
    msh_line = data if msh_end < 0 else data[:msh_end]
    # MSH itself is ASCII in every supported charset; read MSH-2 and MSH-18 from it.
    msh_fields = msh_line.decode("latin-1").split(field_sep)
    control_id = msh_fields[9] if len(msh_fields) > 9 else None
    encoding_chars = msh_fields[1] if len(msh_fields) > 1 else ""
    if (
        not 2 <= len(encoding_chars) <= 5
        or len(set(encoding_chars)) != len(encoding_chars)
        or any(char.isalnum() or char.isspace() for char in encoding_chars)
    ):
        raise ParseError(
            f"invalid encoding characters {encoding_chars!r}",
            location="MSH-2",
            control_id=control_id,
        )
    enc = Encoding.from_msh(field_sep, encoding_chars)
    msh18 = msh_fields[17] if len(msh_fields) > 17 else ""
    msh18 = msh18.split(enc.repetition, 1)[0]
    try:
        codec = codec_for(msh18, default_charset)
        text = decode_message(data, codec)
    except ParseError as exc:
        raise exc.with_context(control_id=control_id) from None

    segments: list[Segment] = []
    occurrences: dict[str, int] = {}
    rows: list[tuple[str, list[str], str]] = []
    for line in text.split("\r"):
        if not line.strip():
            continue
        name = line[:3]
        if not _SEGMENT_NAME.fullmatch(name) or (len(line) > 3 and line[3] != field_sep):
            raise ParseError(
                f"invalid segment {line[:12]!r}",
                location=f"segment {len(rows) + 1}",
                control_id=control_id,
            )
        count = occurrences.get(name, 0) + 1
        occurrences[name] = count
        label = name if count == 1 else f"{name}[{count}]"
        rows.append((name, line.split(field_sep), label))

    msh9 = rows[0][1][8] if len(rows[0][1]) > 8 else ""
    msh9_parts = msh9.split(enc.component)
    msh12 = rows[0][1][11] if len(rows[0][1]) > 11 else ""
    version = msh12.split(enc.component, 1)[0]
    event = "^".join(msh9_parts[:2]) if len(msh9_parts) > 1 else msh9
    if not msh9_parts[0]:
        raise ParseError("MSH-9 message type is empty", location="MSH-9", control_id=control_id)
    try:
        version_catalog = catalog.version(version)
    except ConversionError as exc:
        raise exc.with_context(control_id=control_id, message_type=msh9) from None
    for name, fields, label in rows:
        segments.append(
            Segment(name, fields, enc, codec, label, version_catalog.segment_names.get(name))
        )
    structure = version_catalog.structure_for(msh9_parts[2] if len(msh9_parts) > 2 else "", event)
    message = Message(
        segments=segments,
        encoding=enc,
        codec=codec,
        structure=structure or event.replace("^", "_"),
        known_segments=version_catalog.known_segments,
        segment_names=version_catalog.segment_names,
        known_groups=version_catalog.known_groups,
    )
    group_segments(version_catalog.structure(structure) if structure else None, segments, message)
    return message
