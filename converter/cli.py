"""``passerelle convert`` and ``passerelle templates``: the converter at the command line.

Exit status: 0 when every input converted, 1 when any failed (one line each on stderr),
2 on usage errors, 130 on Ctrl-C, 141 when the reader of the output went away (``| head``),
for every command (:func:`run_command`); 143 when ``convert`` is stopped by SIGTERM (the
bundle being written removed). Bad input never prints a traceback. What is read
(folders, ``-``, backups left out) is in :mod:`converter.cli_inputs`, what is written in
:mod:`converter.cli_output`.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .assembly.bundle import REQUEST_MODES, is_resource_type_name
from .cda import CdaDocument, PathCache
from .cda.xml import DEFAULT_MAX_BYTES
from .cli_inputs import (
    DEFAULT_MAX_STREAM_BYTES,
    Input,
    StreamTooLarge,
    inputs,
    not_for_family,
    read_input,
    template_families,
)
from .cli_output import (
    BundleWriter,
    OutputClash,
    Progress,
    Summary,
    Terminated,
    catch_sigterm,
    check_writable,
    failure_line,
    output_name,
    remove_unfinished,
    silence_closed_pipe,
)
from .convert import Conversion, Converter, ConverterConfig, detect_input_type
from .errors import ConfigurationError, ConversionError
from .hl7v2.charset import charset_codec
from .printable import printable

__all__ = ["add_commands", "main", "output_name", "run_command"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: The reader of stdout (or stderr) went away: 128 + SIGPIPE, what a shell reports for
#: ``cat``, ``grep``… killed by the closed pipe. Not 0: the run stopped before converting
#: every input; not 1: no input failed. ``cmd | head`` ignores it, ``set -o pipefail``
#: sees an incomplete run, as with those tools.
EXIT_CLOSED_PIPE = 141
#: Ctrl-C (SIGINT): 128 + SIGINT, what a shell reports for a command it interrupted. Not
#: 1: no input failed, the run was stopped; the summary says how far it went.
EXIT_INTERRUPTED = 130
#: SIGTERM (``kill``, a job scheduler's timeout, ``docker stop``): 128 + SIGTERM.
EXIT_TERMINATED = 143


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``convert`` and ``templates`` on a parent parser."""
    convert = subparsers.add_parser(
        "convert",
        help="convert HL7 v2 files or folders to FHIR bundles",
        description="Convert HL7 v2 messages and CDA documents (files, folders, batch "
        "files) to FHIR R4 transaction bundles. One file prints its bundle on stdout; --out "
        "writes <stem>.json per input (<stem>.<n>.json when a file holds several messages); "
        "a name already written in the run is never overwritten (that input fails). In a "
        "folder, files that neither start like HL7 v2 or XML nor end in .hl7 or .xml are "
        "skipped (a README), as are editor backups and unfinished transfers (a.hl7~, "
        "#a.hl7#, *.swp, *.bak, *.tmp, *.part), and subfolders and hidden files are not "
        "read. A PATH of - reads standard input (stdin.json in --out).",
    )
    convert.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="a file, a folder, or - (stdin)"
    )
    convert.add_argument("--out", type=Path, metavar="DIR", help="write bundles to DIR")
    convert.add_argument("--input-type", choices=("auto", "hl7v2", "cda"), default="auto")
    convert.add_argument(
        "--template",
        metavar="NAME",
        help="force a root template: hl7v2/messages/NAME.j2 for HL7 v2 inputs, "
        "cda/documents/NAME.j2 for CDA ones (an input of a family without it fails)",
    )
    convert.add_argument(
        "--max-stream-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_STREAM_BYTES,
        metavar="N",
        help="read at most N bytes of standard input or a pipe "
        f"(default {DEFAULT_MAX_STREAM_BYTES})",
    )
    _add_converter_options(convert)
    convert.add_argument(
        "--no-validate", action="store_true", help="skip FHIR validation of the bundles"
    )
    convert.add_argument("--pretty", action="store_true", help="indent the JSON output")
    convert.add_argument(
        "--verbose",
        action="store_true",
        help="print the offending value of failures (may show patient data)",
    )
    convert.set_defaults(handler=run_convert)

    templates = subparsers.add_parser("templates", help="inspect the template set")
    templates_sub = templates.add_subparsers(dest="templates_command", required=True)
    listing = templates_sub.add_parser("list", help="routes and templates, overrides marked")
    _add_converter_options(listing)
    listing.set_defaults(handler=run_templates_list)


def _add_converter_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--templates",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="override directory searched before the built-in mappings (repeatable)",
    )
    parser.add_argument(
        "--timezone",
        default="UTC",
        metavar="ZONE",
        help="IANA zone for timestamps without an offset (default UTC)",
    )
    parser.add_argument(
        "--charset",
        default="utf-8",
        type=_charset_option,
        help="charset of messages with an empty MSH-18 (default utf-8): an MSH-18 value "
        "(8859/1) or a Python/IANA name (latin-1)",
    )
    parser.add_argument(
        "--request-mode", default="put", choices=("put", "conditional-create", "conditional-update")
    )
    parser.add_argument(
        "--request-mode-for",
        action="append",
        default=[],
        type=_type_mode_option,
        metavar="TYPE=MODE",
        help="the request mode of one resource type (repeatable): Patient=conditional-create",
    )
    parser.add_argument(
        "--lenient",
        action="store_true",
        help="drop invalid values with a warning instead of failing",
    )
    parser.add_argument(
        "--strict-hl7",
        action="store_true",
        help="refuse messages that break their HL7 version's definition (hl7apy; slow)",
    )
    parser.add_argument(
        "--max-document-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        metavar="N",
        help=f"refuse larger CDA documents (default {DEFAULT_MAX_BYTES})",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text[:100]!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return value


def _charset_option(text: str) -> str:
    """The codec for ``--charset``, by the rules MSH-18 follows: a usage error here rather
    than a traceback (``nope``) or garbled ParseErrors (``utf-16``) later."""
    try:
        return charset_codec(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(f"{exc}: {text[:100]!r}") from None


def _type_mode_option(text: str) -> tuple[str, str]:
    resource_type, equals, mode = text.partition("=")
    if not equals or mode not in REQUEST_MODES or not is_resource_type_name(resource_type):
        raise argparse.ArgumentTypeError(
            f"expected TYPE=MODE with MODE one of {', '.join(REQUEST_MODES)}: {text[:100]!r}"
        )
    return resource_type, mode


def _config(args: argparse.Namespace, *, validate: bool = True) -> ConverterConfig:
    return ConverterConfig(
        template_dirs=tuple(args.templates),
        validate=validate,
        default_timezone=args.timezone,
        default_charset=args.charset,
        request_mode=args.request_mode,
        request_modes=tuple(args.request_mode_for),
        strict_values=not args.lenient,
        strict_hl7=args.strict_hl7,
        max_document_bytes=args.max_document_bytes,
    )


def run_convert(args: argparse.Namespace) -> int:
    restore_sigterm = catch_sigterm()
    try:
        return _run_convert(args)
    except Terminated:
        return EXIT_TERMINATED  # before anything was converted, or in the closing lines
    finally:
        # Whatever stopped the run: no hidden file of a bundle cut off stays in --out.
        remove_unfinished()
        restore_sigterm()


def _run_convert(args: argparse.Namespace) -> int:
    _closed_streams(to_stdout=args.out is None)
    try:
        converter = Converter(_config(args, validate=not args.no_validate))
        families = template_families(converter, args.template, args.input_type)
        items = list(inputs(args.paths))
        if args.out:
            _output_folder(args.out)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED  # Ctrl-C before anything was converted
    if not items:
        print("passerelle: no files to convert (the folders given are empty)", file=sys.stderr)
    writer = BundleWriter(args.out, pretty=args.pretty, stdout=sys.stdout)
    try:
        return _convert_all(converter, items, writer, args, families)
    except BrokenPipeError:
        # The reader went away: stop quietly, like other Unix tools. Inputs not converted
        # are not failures, and the summary would only go to the same closed pipe.
        silence_closed_pipe()
        return EXIT_CLOSED_PIPE


def _closed_streams(*, to_stdout: bool) -> None:
    """Started with stdout or stderr closed (``2>&-``, a daemon's spawn): Python's stream
    is then None, and every print became an internal error or an AttributeError
    traceback. Without stderr there is no one to tell: its lines are dropped. Without
    stdout the bundles have nowhere to go: a usage error, unless ``--out`` takes them."""
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (kept open)
    if sys.stdout is None:
        if to_stdout:
            raise ConfigurationError("standard output is closed: give --out DIR")
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (kept open)


def _convert_all(
    converter: Converter,
    items: list[Input],
    writer: BundleWriter,
    args: argparse.Namespace,
    families: frozenset[str],
) -> int:
    summary = Summary()
    # No bar when the bundles themselves go to the terminal: it would prefix each one.
    tty = sys.stderr.isatty() and len(items) > 1 and (args.out or not sys.stdout.isatty())
    progress = Progress(len(items), sys.stderr) if tty else None
    say = progress.say if progress else _say
    done = 0
    try:
        for number, item in enumerate(items, start=1):
            try:
                _convert_input(converter, item, writer, summary, args, families, say)
            except (BrokenPipeError, ConfigurationError, KeyboardInterrupt, Terminated):
                raise  # the reader went away (run_convert); a usage error (main); Ctrl-C
            except Exception as exc:  # a bug outside one message's conversion (_internal)
                summary.add_failed(None)
                say(failure_line(item.label, _internal(exc), verbose=False))
            done = number
            if progress:
                progress.update(number)
    except (KeyboardInterrupt, Terminated) as stop:
        # Ctrl-C, SIGTERM: what was written is complete (BundleWriter; the bundle being
        # written is removed), the rest is not converted.
        remove_unfinished()
        if progress:
            progress.close()
        interrupted = isinstance(stop, KeyboardInterrupt)
        verb = "interrupted" if interrupted else "terminated"
        print(f"{verb} after {done} of {len(items)} inputs", file=sys.stderr)
        summary.print(sys.stderr)
        return EXIT_INTERRUPTED if interrupted else EXIT_TERMINATED
    finally:
        if progress:
            progress.close()  # a usage error midway: its message on a line of its own
    if len(items) > 1 or summary.failed or summary.skipped:
        summary.print(sys.stderr)
    return EXIT_FAILED if summary.failed else EXIT_OK


def _say(line: str) -> None:
    print(line, file=sys.stderr)


def _convert_input(
    converter: Converter,
    item: Input,
    writer: BundleWriter,
    summary: Summary,
    args: argparse.Namespace,
    families: frozenset[str],
    say: Callable[[str], None],
) -> None:
    label = item.label
    if item.problem is not None:
        summary.add_failed(None)
        say(printable(f"FAILED {label}: {item.problem}"))
        return
    if item.not_a_file or item.backup:
        summary.add_skipped(backup=item.backup)
        why = "backup or temporary file (by its name)" if item.backup else "not a regular file"
        say(printable(f"SKIPPED {label}: {why}"))
        return
    try:
        data = read_input(item, max_stream_bytes=args.max_stream_bytes)
    except (OSError, StreamTooLarge) as exc:
        summary.add_failed(None)
        reason = f"cannot read file: {exc.strerror}" if isinstance(exc, OSError) else str(exc)
        say(failure_line(label, ConversionError(reason), verbose=args.verbose))
        return
    if data is None:
        summary.add_skipped()
        say(printable(f"SKIPPED {label}: neither HL7 v2 nor XML"))
        return
    for total, result in _convert_data(converter, data, args, families):
        if not isinstance(result, Conversion):
            summary.add_failed(result.message_type)
            say(failure_line(label, result, verbose=args.verbose))
            continue
        try:
            writer.write(result, item.source, several=total > 1, label=label)
        except BrokenPipeError:
            raise  # the reader went away: not this bundle's failure (run_convert)
        except (OSError, OutputClash) as exc:  # disk full, a read-only folder, a clash…
            summary.add_failed(result.message_type)
            cause = exc.strerror if isinstance(exc, OSError) else str(exc)
            where = f"{label}: message {result.index}" if total > 1 else label
            say(printable(f"FAILED {where}: cannot write its bundle: {cause}"))
            continue
        summary.add_converted(result.message_type)
        for warning in result.warnings:
            # The file name and the warning may hold anything (an ESC in a name).
            say(printable(f"WARNING {label}: {warning}"))


def _convert_data(
    converter: Converter, data: bytes, args: argparse.Namespace, families: frozenset[str]
) -> Iterator[tuple[int, Conversion | ConversionError]]:
    """Each message of a file converted or failed, with the file's message count."""
    try:
        kind = detect_input_type(data) if args.input_type == "auto" else args.input_type
        if kind == "cda":
            if kind not in families:
                # Read all the same: the failure line names the document and its type.
                document = CdaDocument(data, PathCache(), max_bytes=args.max_document_bytes)
                yield (
                    1,
                    not_for_family(args.template, kind).with_context(
                        control_id=document.control_id,
                        message_type=document.document_type,
                        control_id_label="document",
                    ),
                )
                return
            for conversion in converter.convert(
                data, input_type="cda", root_template=args.template
            ):
                yield 1, conversion
            return
        messages = converter.split(data)
    except ConversionError as exc:
        yield 1, exc
        return
    except ConfigurationError:
        raise  # a usage error (a template folder gone midway): exit 2, not this file's
    except Exception as exc:  # a bug: see _internal
        yield 1, _internal(exc)
        return
    for raw in messages:
        try:
            if kind not in families:
                # Parsed all the same: the failure line names the message and its type.
                message = converter.parse(raw.source)
                raise not_for_family(args.template, kind).with_context(
                    control_id=message.control_id or None, message_type=message.event
                )
            result: Conversion | ConversionError = converter.convert_message(
                raw.source, root_template=args.template, index=raw.index
            )
        except ConversionError as exc:
            result = exc
        except ConfigurationError:
            raise
        except Exception as exc:  # a bug: this message fails, the others still convert
            result = _internal(exc)
        if len(messages) > 1 and isinstance(result, ConversionError):
            result.reason = f"message {raw.index}: {result.reason}"
        yield len(messages), result


def _internal(exc: Exception) -> ConversionError:
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


def _output_folder(folder: Path) -> None:
    """Create ``--out`` (and its parents); a usage error when it cannot be a folder."""
    if folder.exists() and not folder.is_dir():
        raise ConfigurationError(f"--out {folder} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"--out {folder} cannot be created: {exc.strerror}") from None
    # A folder where nothing can be written (read-only, another user's) is said once, at
    # the start, not found out by converting every input and failing each one.
    try:
        check_writable(folder)
    except OSError as exc:
        raise ConfigurationError(f"--out {folder} is not writable: {exc.strerror}") from None


def run_templates_list(args: argparse.Namespace) -> int:
    out = sys.stdout
    if out is None:  # ``>&-``: the listing went nowhere, and the exit status was 0
        raise ConfigurationError("standard output is closed")
    converter = Converter(_config(args, validate=False))
    builtin = converter.config.mappings_dir
    for family, table in (("hl7v2", converter.routes), ("cda", converter.cda_routes)):
        print(f"Routes ({family}):", file=out)
        for route in table.all():
            origin = "override" if route.source.parent.parent != builtin else "built-in"
            print(f"  {route.kind:9} {route.key:12} -> {route.template:20} ({origin})", file=out)
    print("Templates:", file=out)
    for info in converter.templates.list():
        origin = f"override: {info.path}" if info.overridden else "built-in"
        print(f"  {info.name:50} {origin}", file=out)
    print("Code maps:", file=out)
    for name, source in converter.codemaps.sources().items():
        origin = "built-in" if source.parent.parent == builtin else f"override: {source}"
        print(f"  {name:50} {origin}", file=out)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="passerelle", description="HL7 v2 and CDA to FHIR R4 converter"
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_commands(subparsers)
    return parser


def run_command(
    build: Callable[[], argparse.ArgumentParser],
    argv: Sequence[str] | None = None,
    *,
    usage_errors: tuple[type[Exception], ...] = (ConfigurationError,),
) -> int:
    """Build the parser, parse ``argv`` and run the chosen command's handler, all under
    the exit statuses every ``passerelle`` command shares: 2 on a usage error (one line),
    130 on Ctrl-C (while the parser is built too), 141 when the reader of the output went
    away (``passerelle templates list | head -1`` exited 0, ``convert`` 141), never a
    traceback."""
    try:
        try:
            args = build().parse_args(argv)
            status = int(args.handler(args))
            # Output still buffered (a short listing to a pipe) meets a closed pipe here,
            # not in the interpreter's last flush ("Exception ignored…", status 120).
            if sys.stdout is not None:
                sys.stdout.flush()
            return status
        except usage_errors as exc:
            print(f"passerelle: {exc}", file=sys.stderr)
            return EXIT_USAGE
    except BrokenPipeError:
        silence_closed_pipe()
        return EXIT_CLOSED_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
