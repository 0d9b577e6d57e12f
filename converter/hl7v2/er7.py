"""ER7 (pipe-and-hat) reading: files into messages, messages into segments.

This is the hot path: a split-based tokenizer, with no per-field objects until a
template asks for a field. Structure knowledge (groups, field names) is looked up
in the :class:`~converter.hl7v2.structure.StructureCatalog`, compiled once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConversionError, ParseError
from .charset import decode_message, message_codec
from .encoding import Encoding
from .message import Message, Segment
from .peek import header_decoder
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
    #: A UTF-8 byte order mark opened the message (or its batch): a file saved with one.
    #: ``data`` holds no BOM; :attr:`source` gives it back for :func:`parse_message`,
    #: which then reads the message as UTF-8 whatever MSH-18 says.
    bom: bool = False

    @property
    def source(self) -> bytes:
        """The message to parse or convert: ``data``, behind its BOM when it had one."""
        return _BOM + self.data if self.bom else self.data


def split_messages(data: bytes) -> list[RawMessage]:
    """Cut a file into messages: one per MSH, batch envelopes (FHS/BHS/BTS/FTS) dropped.

    Tolerates CR, LF or CRLF separators, UTF-8 byte order marks, blank lines, trailing
    blanks and MLLP framing bytes left in the file.

    A BOM is taken off wherever a message or a batch starts (files saved with one, then
    concatenated, carry one before each MSH or FHS/BHS), and recorded
    (:attr:`RawMessage.bom`): it says the bytes are UTF-8. One before FHS/BHS holds for
    the messages of that file/batch, up to its FTS/BTS or the next FHS/BHS.
    """
    messages: list[list[bytes]] = []
    marked: list[bool] = []
    pending_bom = False  # a BOM on a line of its own, for what starts next
    batch_bom = False  # the batch (FHS/BHS) that the current messages belong to had one
    batch_opener = b""
    for number, line in enumerate(_LINE_BREAK.split(data), start=1):
        line = line.strip(_FRAMING + b" \t")
        if line.startswith(_BOM):
            line = line[len(_BOM) :].lstrip(_FRAMING + b" \t")
            pending_bom = True
        if not line:
            continue
        head = line[:3]
        if head in _BATCH_ENVELOPE:
            if head in (b"FHS", b"BHS"):
                if head == b"FHS" or batch_opener != b"FHS":
                    # A new file (or a batch of its own): its BOM, or none.
                    batch_bom, batch_opener = pending_bom, head
                else:  # BHS inside an FHS file: the file's BOM still holds
                    batch_bom = batch_bom or pending_bom
            elif head == b"FTS" or (head == b"BTS" and batch_opener == b"BHS"):
                batch_bom, batch_opener = False, b""
            pending_bom = False
            continue
        if head == b"MSH":
            messages.append([line])
            marked.append(pending_bom or batch_bom)
            pending_bom = False
        elif messages:
            messages[-1].append(line)
        else:
            # Named by its line number: its first characters may be patient data.
            raise ParseError(
                "data before the first MSH segment is not HL7 v2",
                location=f"line {number}",
                detail=_excerpt(line),
            )
    if not messages:
        raise ParseError("no MSH segment found")
    return [
        RawMessage(b"\r".join(lines), n, bom)
        for n, (lines, bom) in enumerate(zip(messages, marked, strict=True), start=1)
    ]


def parse_message(
    data: bytes, catalog: StructureCatalog, *, default_charset: str = "utf-8"
) -> Message:
    """Parse one message (:attr:`RawMessage.source`, as cut by :func:`split_messages`)
    into its group structure.

    The character set is :func:`~.charset.message_codec`'s: MSH-18, or UTF-8 behind a
    byte order mark whatever MSH-18 (or ``default_charset``) says. Bytes that are not
    UTF-8 after all are a located CharsetError, as in any UTF-8 message.

    Errors name the message by MSH-10 and MSH-9 read as :func:`~.peek.peek_header` reads
    them (:func:`_named`), in that character set, even when the rest cannot be decoded.
    """
    has_bom = data.startswith(_BOM)
    if has_bom:
        data = data[len(_BOM) :]
    if len(data) < 8 or not data.startswith(b"MSH"):
        raise ParseError("message does not start with an MSH segment", location="MSH")
    field_sep = chr(data[3])
    if field_sep.isalnum() or field_sep in "\r\n ":
        raise ParseError("invalid field separator", location="MSH-1", detail=repr(field_sep))
    msh_end = data.find(b"\r")
    msh_line = data if msh_end < 0 else data[:msh_end]
    # MSH-2 and MSH-18 are ASCII in every supported charset: read from the line as
    # Latin-1 (bytes 1:1), they name the codec the message is then read with.
    msh_fields = msh_line.decode("latin-1").split(field_sep)
    encoding_chars = msh_fields[1] if len(msh_fields) > 1 else ""
    if (
        not 2 <= len(encoding_chars) <= 5
        or len(set(encoding_chars)) != len(encoding_chars)
        or any(char.isalnum() or char.isspace() for char in encoding_chars)
    ):
        # The value goes to detail: when MSH-2 is left out, MSH-3 (or, without a CR, the
        # rest of the message) is read in its place.
        control_id, _ = _named(msh_line, msh_fields, None, default_charset, bom=has_bom)
        raise ParseError(
            "invalid encoding characters",
            location="MSH-2",
            control_id=control_id,
            detail=_excerpt(encoding_chars.encode("latin-1")),
        )
    enc = Encoding.from_msh(field_sep, encoding_chars)
    try:
        codec = message_codec(msh_fields, default_charset, bom=has_bom)
        text = decode_message(data, codec)
    except ParseError as exc:
        control_id, message_type = _named(msh_line, msh_fields, enc, default_charset, bom=has_bom)
        raise exc.with_context(control_id=control_id, message_type=message_type) from None

    segments: list[Segment] = []
    occurrences: dict[str, int] = {}
    rows: list[tuple[str, list[str], str]] = []
    for line in text.split("\r"):
        if not line.strip():
            continue
        name = line[:3]
        if not _SEGMENT_NAME.fullmatch(name) or (len(line) > 3 and line[3] != field_sep):
            # Most often a field broken across lines: the line opens with field content
            # (a name, an address), so the error names its number and the segment before
            # (a checked name), and the text goes to detail.
            after = f" after {rows[-1][2]}" if rows else ""
            control_id, message_type = _named(
                msh_line, msh_fields, enc, default_charset, bom=has_bom
            )
            raise ParseError(
                f"invalid segment{after}: a segment starts with its name and the field "
                "separator (a line break inside a field?)",
                location=f"segment {len(rows) + 1}",
                control_id=control_id,
                message_type=message_type,
                detail=repr(line[:20]),
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
        control_id, _ = _named(msh_line, msh_fields, enc, default_charset, bom=has_bom)
        raise ParseError("MSH-9 message type is empty", location="MSH-9", control_id=control_id)
    try:
        version_catalog = catalog.version(version)
    except ConversionError as exc:
        control_id, message_type = _named(msh_line, msh_fields, enc, default_charset, bom=has_bom)
        # code^trigger, as Message.event and every other error name the type.
        raise exc.with_context(control_id=control_id, message_type=message_type) from None
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


def _named(
    msh_line: bytes,
    msh_fields: list[str],
    enc: Encoding | None,
    default_charset: str,
    *,
    bom: bool,
) -> tuple[str | None, str | None]:
    """MSH-10 and MSH-9's ``code^trigger`` of a message an error is about, as
    :func:`~.peek.peek_header` reads them (``None`` when absent or empty).

    In the message's character set, not Latin-1: the control id an error carries reaches
    the dead-letter record and the logs, where it must be the one the message was queued
    and acknowledged under (a UTF-8 ``CTRL-é`` read ``CTRL-Ã©``). Read from the MSH line
    alone, so that it holds when the rest of the message cannot be decoded; a byte not
    valid in that set reads as Latin-1, alone, as the peek reads it. Unescaped with
    ``enc``, as :attr:`Message.control_id`; raw when MSH-2 is unusable (``enc`` None).
    Only called for an error: the hot path decodes nothing twice.
    """
    codec, decode = header_decoder(msh_fields, default_charset, bom=bom)
    fields = decode(msh_line).split(chr(msh_line[3]))
    control_id = fields[9] if len(fields) > 9 else ""
    if enc is None:
        return control_id or None, None
    msh9 = (fields[8] if len(fields) > 8 else "").split(enc.component)
    message_type = "^".join(enc.unescape(part, codec) for part in msh9[:2])
    return enc.unescape(control_id, codec) or None, message_type if msh9[0] else None


def _excerpt(raw: bytes) -> str:
    """The start of some raw bytes for ``detail`` (never for an error's text)."""
    return repr(raw[:20].decode("latin-1"))
