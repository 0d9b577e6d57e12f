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
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from .cli_inputs import Input, StreamTooLarge, inputs, read_input, template_families
from .cli_jobs import Converting, InProcess, JobPool, Pending
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
from .cli_work import Converted, ConvertOptions, Work, internal_error, split_input
from .convert import Conversion, Converter, ConverterConfig
from .errors import ConfigurationError, ConversionError
from .heap import long_lived_settled
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
        config = converter_config(args, validate=not args.no_validate)
        converter = Converter(config)
        families = template_families(converter, args.template, args.input_type)
        items = list(inputs(args.paths))
        if args.out:
            _output_folder(args.out)
        options = ConvertOptions(
            args.input_type,
            args.template,
            args.max_document_bytes,
            frozenset(families),
            pretty=args.pretty,
        )
        converting: Converting
        # Even for one input: a batch file of many messages converts in parallel.
        if args.jobs > 1:
            converting = JobPool(config, options, args.jobs)
        else:
            converting = InProcess(converter, options)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED  # Ctrl-C before anything was converted
    if not items:
        print("passerelle: no files to convert (the folders given are empty)", file=sys.stderr)
    writer = BundleWriter(args.out, pretty=args.pretty, stdout=sys.stdout)
    # Several inputs convert like the service's processes: the loaded converter out of
    # the collector's reach (a CCD spends a fifth of its time in collections without it).
    # One is not worth the collection this starts with.
    settled = isinstance(converting, InProcess) and len(items) > 1
    try:
        with long_lived_settled() if settled else nullcontext():
            status = _convert_all(converting, converter, items, writer, args, options)
    except BrokenPipeError:
        # The reader went away: stop quietly, like other Unix tools. Inputs not converted
        # are not failures, and the summary would only go to the same closed pipe.
        converting.stop()
        silence_closed_pipe()
        return EXIT_CLOSED_PIPE
    except BaseException:
        converting.stop()  # a usage error midway (exit 2), a bug: no process left behind
        raise
    converting.close()
    return status


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
    converting: Converting,
    converter: Converter,
    items: list[Input],
    writer: BundleWriter,
    args: argparse.Namespace,
    options: ConvertOptions,
) -> int:
    summary = Summary()
    # No bar when the bundles themselves go to the terminal: it would prefix each one.
    tty = sys.stderr.isatty() and len(items) > 1 and (args.out or not sys.stdout.isatty())
    progress = Progress(len(items), sys.stderr) if tty else None
    say = progress.say if progress else _say
    queue = _InputQueue(converting, converter, items, args, options)
    done = 0
    try:
        for item, outcome in queue.outcomes():
            if outcome is None:  # the input is done
                done += 1
                if progress:
                    progress.update(done)
                continue
            try:
                _record(item, outcome, writer, summary, args, say)
            except (BrokenPipeError, ConfigurationError, KeyboardInterrupt, Terminated):
                raise  # the reader went away (run_convert); a usage error (main); Ctrl-C
            except Exception as exc:  # a bug outside a conversion (internal_error)
                summary.add_failed(None)
                say(failure_line(item.label, internal_error(exc), verbose=False))
    except (KeyboardInterrupt, Terminated) as stop:
        # Ctrl-C, SIGTERM, SIGHUP: what was written is complete (BundleWriter; the bundle
        # being written is removed), the rest is not converted.
        converting.stop()
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


@dataclass(frozen=True, slots=True)
class _NotConverted:
    """Why an input is not converted: nothing to read, a backup, unreadable."""

    line: str
    failed: bool = False
    backup: bool = False


#: One outcome of an input: why it was not converted, or one message's result with the
#: input's message count (one failure when it could not be cut into messages).
Outcome = _NotConverted | tuple[int, Conversion | Converted | ConversionError]


@dataclass(slots=True)
class _Ahead:
    """An input read: its outcome when it has no Work, else its Works and those of them
    submitted and not yet taken."""

    item: Input
    outcome: Outcome | None = None
    works: list[Work] = field(default_factory=list)
    next_work: int = 0
    submitted: deque[Pending] = field(default_factory=deque)

    @property
    def finished(self) -> bool:
        return self.outcome is None and not self.submitted and self.next_work == len(self.works)


class _InputQueue:
    """The inputs read, cut into Works and submitted ahead of the one being written, as
    far as the converting side's window allows; their outcomes come out in input order."""

    def __init__(
        self,
        converting: Converting,
        converter: Converter,
        items: list[Input],
        args: argparse.Namespace,
        options: ConvertOptions,
    ) -> None:
        self._converting = converting
        self._converter = converter
        self._items = iter(items)
        self._args = args
        self._options = options
        self._ahead: deque[_Ahead] = deque()

    def outcomes(self) -> Iterator[tuple[Input, Outcome | None]]:
        """Each outcome of each input, then ``(input, None)`` once it has no more."""
        ahead = self._ahead
        while True:
            while ahead and ahead[0].finished:
                yield ahead.popleft().item, None
            self._fill()
            if not ahead:
                return
            head = ahead[0]
            if head.outcome is not None:
                outcome, head.outcome = head.outcome, None
                yield head.item, outcome
            elif head.submitted:
                pending = head.submitted.popleft()
                yield head.item, (pending.work.total, self._converting.result(pending))

    def _fill(self) -> None:
        """Submit Works until the window is full: the last input's, then the next ones'.
        An input's outcome without Work (skipped, unreadable) holds a place in it too, so
        that a folder of such files is not read whole before its first line is said."""
        ahead = self._ahead
        while self._held() < self._converting.window:
            last = ahead[-1] if ahead else None
            if last is not None and last.next_work < len(last.works):
                last.submitted.append(self._converting.submit(last.works[last.next_work]))
                last.next_work += 1
                continue
            item = next(self._items, None)
            if item is None:
                return
            try:
                read = self._read(item)
            except (ConfigurationError, KeyboardInterrupt, Terminated):
                raise
            except Exception as exc:  # a bug while reading: this input fails, not the run
                read = _Ahead(item, (1, internal_error(exc)))
            ahead.append(read)

    def _held(self) -> int:
        """Works submitted and outcomes read that the loop has not taken yet (counted, not
        kept: a counter kept beside them once missed the outcomes)."""
        return sum(len(read.submitted) + (read.outcome is not None) for read in self._ahead)

    def _read(self, item: Input) -> _Ahead:
        label = item.label
        if item.problem is not None:
            return _Ahead(item, _NotConverted(f"FAILED {label}: {item.problem}", failed=True))
        if item.not_a_file or item.backup:
            why = "backup or temporary file (by its name)" if item.backup else "not a regular file"
            return _Ahead(item, _NotConverted(f"SKIPPED {label}: {why}", backup=item.backup))
        try:
            data = read_input(item, max_stream_bytes=self._args.max_stream_bytes)
        except (OSError, StreamTooLarge) as exc:
            reason = f"cannot read file: {exc.strerror}" if isinstance(exc, OSError) else str(exc)
            line = failure_line(label, ConversionError(reason), verbose=self._args.verbose)
            return _Ahead(item, _NotConverted(line, failed=True))
        if data is None:
            return _Ahead(item, _NotConverted(f"SKIPPED {label}: neither HL7 v2 nor XML"))
        works = split_input(self._converter, data, self._options)
        if isinstance(works, ConversionError):
            return _Ahead(item, (1, works))
        return _Ahead(item, works=works)


def _record(
    item: Input,
    outcome: Outcome,
    writer: BundleWriter,
    summary: Summary,
    args: argparse.Namespace,
    say: Callable[[str], None],
) -> None:
    """Write one outcome's bundle, say its lines and count it."""
    label = item.label
    if isinstance(outcome, _NotConverted):
        if outcome.failed:
            summary.add_failed(None)
        else:
            summary.add_skipped(backup=outcome.backup)
        say(printable(outcome.line))
        return
    total, result = outcome
    if isinstance(result, ConversionError):
        summary.add_failed(result.message_type)
        say(failure_line(label, result, verbose=args.verbose))
        return
    try:
        writer.write(result, item.source, several=total > 1, label=label)
    except BrokenPipeError:
        raise  # the reader went away: not this bundle's failure (run_convert)
    except (OSError, OutputClash) as exc:  # disk full, a read-only folder, a clash…
        summary.add_failed(result.message_type)
        cause = exc.strerror if isinstance(exc, OSError) else str(exc)
        where = f"{label}: message {result.index}" if total > 1 else label
        say(printable(f"FAILED {where}: cannot write its bundle: {cause}"))
        return
    summary.add_converted(result.message_type)
    for warning in result.warnings:
        # The file name and the warning may hold anything (an ESC in a name).
        say(printable(f"WARNING {label}: {warning}"))


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
