"""What ``passerelle convert`` converts, one unit at a time: an input cut into its
messages (a batch file) or taken whole (a CDA document), and each of them converted or
failed. Shared by the run in one process (:mod:`converter.cli_convert`) and in several
(:mod:`converter.cli_jobs`): a :class:`Work` and its result cross a process boundary,
so both are plain, picklable values, and an unexpected exception becomes a
:class:`~converter.errors.ConversionError` where its traceback still is.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path

from .cda import CdaDocument, PathCache
from .cli_inputs import not_for_family
from .convert import Conversion, Converter, detect_input_type
from .errors import ConfigurationError, ConversionError

__all__ = ["ConvertOptions", "Converted", "Work", "convert_work", "internal_error", "split_input"]


@dataclass(frozen=True, slots=True)
class ConvertOptions:
    """The options of a run that choose how each input converts."""

    input_type: str  # auto, hl7v2 or cda
    template: str | None
    max_document_bytes: int
    #: The input families the run's root template (``--template``) exists for.
    families: frozenset[str]
    #: Bundles indented (``--pretty``): how a conversion process writes their text.
    pretty: bool = False


@dataclass(frozen=True, slots=True)
class Converted:
    """A :class:`~converter.convert.Conversion` as a conversion process sends it back:
    its bundle already JSON text. The run's process then only writes it; unpickling and
    serialising every bundle there (~6 ms for a CCD) would cap what N processes give."""

    text: str
    pretty: bool
    message_type: str
    control_id: str | None
    index: int
    warnings: tuple[str, ...]

    @classmethod
    def of(cls, conversion: Conversion, *, pretty: bool) -> Converted:
        text = conversion.to_json(pretty=pretty)
        return cls(
            text,
            pretty,
            conversion.message_type,
            conversion.control_id,
            conversion.index,
            conversion.warnings,
        )

    def to_json(self, *, pretty: bool = False) -> str:
        if pretty != self.pretty:
            raise ValueError("a bundle converted for the other layout")  # a bug in the run
        return self.text


@dataclass(frozen=True, slots=True)
class Work:
    """One message of an input (HL7 v2), or the input whole (CDA)."""

    kind: str  # hl7v2 or cda
    data: bytes
    #: 1-based place of the message in its input, and the input's message count.
    index: int = 1
    total: int = 1


def split_input(
    converter: Converter, data: bytes, options: ConvertOptions
) -> list[Work] | ConversionError:
    """The messages of an input (none for a file without MSH), or why it cannot be cut."""
    try:
        kind = detect_input_type(data) if options.input_type == "auto" else options.input_type
        if kind == "cda":
            return [Work("cda", data)]
        messages = converter.split(data)
    except ConversionError as exc:
        return exc
    except ConfigurationError:
        raise  # a usage error (a template folder gone midway): exit 2, not this file's
    except Exception as exc:  # a bug: see internal_error
        return internal_error(exc)
    return [Work("hl7v2", raw.source, raw.index, len(messages)) for raw in messages]


def convert_work(
    converter: Converter, work: Work, options: ConvertOptions
) -> Conversion | ConversionError:
    """One message or document converted, or its failure (a bug in it included)."""
    result: Conversion | ConversionError
    try:
        if work.kind not in options.families:
            raise _not_for_family(converter, work, options)
        if work.kind == "cda":
            (result,) = converter.convert(
                work.data, input_type="cda", root_template=options.template
            )
        else:
            result = converter.convert_message(
                work.data, root_template=options.template, index=work.index
            )
    except ConversionError as exc:
        result = exc
    except ConfigurationError:
        raise
    except Exception as exc:  # a bug: this message fails, the others still convert
        result = internal_error(exc)
    if work.total > 1 and isinstance(result, ConversionError):
        result.reason = f"message {work.index}: {result.reason}"
    return result


def _not_for_family(converter: Converter, work: Work, options: ConvertOptions) -> ConversionError:
    """The failure of an input of a family ``--template`` has no root template for; read
    all the same, so that the failure line names the message or document and its type."""
    if work.kind == "cda":
        document = CdaDocument(work.data, PathCache(), max_bytes=options.max_document_bytes)
        return not_for_family(options.template, work.kind).with_context(
            control_id=document.control_id,
            message_type=document.document_type,
            control_id_label="document",
        )
    message = converter.parse(work.data)
    return not_for_family(options.template, work.kind).with_context(
        control_id=message.control_id or None, message_type=message.event
    )


def internal_error(exc: Exception) -> ConversionError:
    """An unexpected exception (a bug) as a failure: its kind and the code line that
    raised it, never its text, which may quote the message (``KeyError('DUPONT')``)."""
    return ConversionError(f"internal error {type(exc).__name__} at {_code_place(exc)}")


def _code_place(exc: BaseException) -> str:
    """``converter/hl7v2/value.py:123``: the innermost frame in the converter package,
    else the innermost frame of all (by file name: a library's, or a template's)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "an unknown place"
    package = Path(__file__).resolve().parent
    for frame in reversed(frames):
        try:
            relative = Path(frame.filename).resolve().relative_to(package.parent)
        except ValueError:
            continue
        if relative.parts[0] == package.name:
            return f"{relative.as_posix()}:{frame.lineno}"
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}"
