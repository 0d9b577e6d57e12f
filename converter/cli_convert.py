"""``passerelle convert``'s run: the inputs walked one by one, each converted and written
or failed on its own line, the summary, and the exit status of every way a run ends
(Ctrl-C, SIGTERM, SIGHUP, a reader gone). Split out of :mod:`converter.cli`, which builds
the command line; what is read is in :mod:`converter.cli_inputs`, what is written in
:mod:`converter.cli_output`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

from .cda import CdaDocument, PathCache
from .cli_inputs import Input, StreamTooLarge, inputs, not_for_family, read_input, template_families
from .cli_output import (
    BundleWriter,
    OutputClash,
    Progress,
    Summary,
    Terminated,
    catch_stop_signals,
    check_writable,
    failure_line,
    remove_unfinished,
    silence_closed_pipe,
    tell_stopping,
)
from .convert import Conversion, Converter, ConverterConfig, detect_input_type
from .errors import ConfigurationError, ConversionError
from .heap import settle_long_lived
from .printable import printable
from .private_dirs import make_private_dirs

__all__ = [
    "EXIT_CLOSED_PIPE",
    "EXIT_FAILED",
    "EXIT_HUNG_UP",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "converter_config",
    "run_convert",
]

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
#: SIGHUP (the terminal closed, the ssh session dropped): 128 + SIGHUP.
EXIT_HUNG_UP = 129
#: What a run stopped by each signal of :data:`~converter.cli_output.STOP_SIGNALS` says.
_STOPPED_VERBS: dict[int, str] = {signal.SIGTERM: "terminated", signal.SIGHUP: "hung up"}


def converter_config(args: argparse.Namespace, *, validate: bool = True) -> ConverterConfig:
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
    restore_signals = catch_stop_signals()
    try:
        return _run_convert(args)
    except Terminated as stop:
        # Before anything was converted, or in the closing lines: nothing more to say, and
        # after SIGHUP stdout and stderr may be gone (their last flush must not fail).
        tell_stopping(lambda: None)
        return 128 + stop.signum
    finally:
        # Whatever stopped the run: no hidden file of a bundle cut off stays in --out.
        remove_unfinished()
        restore_signals()


def _run_convert(args: argparse.Namespace) -> int:
    _closed_streams(to_stdout=args.out is None)
    try:
        converter = Converter(converter_config(args, validate=not args.no_validate))
        families = template_families(converter, args.template, args.input_type)
        items = list(inputs(args.paths))
        if args.out:
            _output_folder(args.out)
        if len(items) > 1:
            # A folder converts like the service's processes: the loaded converter out of
            # the collector's reach (a CCD spends a fifth of its time in collections
            # without it). One file is not worth the collection this starts with.
            settle_long_lived()
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
        # Ctrl-C, SIGTERM, SIGHUP: what was written is complete (BundleWriter; the bundle
        # being written is removed), the rest is not converted.
        remove_unfinished()
        if isinstance(stop, Terminated):
            verb, status = _STOPPED_VERBS.get(stop.signum, "terminated"), 128 + stop.signum
        else:
            verb, status = "interrupted", EXIT_INTERRUPTED

        def closing_lines() -> None:
            if progress:
                progress.close()
            # A reader of stdout gets no other sign than the exit status that the last
            # bundle there is cut off (a large one fills a pipe: the signal lands in it).
            cut = " (the bundle being printed was cut off)" if writer.printing else ""
            print(f"{verb} after {done} of {len(items)} inputs{cut}", file=sys.stderr)
            summary.print(sys.stderr)

        # After SIGHUP the terminal (or ssh pipe) of stderr may be gone: the summary is
        # then dropped, never a failure of its own.
        tell_stopping(closing_lines)
        return status
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
        # Owner-only, as the bundles in it (0600): under the usual umask the folders were
        # 0755, listing every patient's file name to every user of the host.
        make_private_dirs(folder)
    except OSError as exc:
        raise ConfigurationError(f"--out {folder} cannot be created: {exc.strerror}") from None
    # A folder where nothing can be written (read-only, another user's) is said once, at
    # the start, not found out by converting every input and failing each one.
    try:
        check_writable(folder)
    except OSError as exc:
        raise ConfigurationError(f"--out {folder} is not writable: {exc.strerror}") from None
