"""``passerelle convert`` and ``passerelle templates``: the converter at the command line.

Exit status: 0 when every input converted, 1 when any failed (one line each on stderr),
2 on usage errors. Bad input never prints a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .cda.xml import DEFAULT_MAX_BYTES
from .convert import Conversion, Converter, ConverterConfig, detect_input_type
from .errors import ConfigurationError, ConversionError
from .printable import printable

__all__ = ["add_commands", "main", "output_name"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``convert`` and ``templates`` on a parent parser."""
    convert = subparsers.add_parser(
        "convert",
        help="convert HL7 v2 files or folders to FHIR bundles",
        description="Convert HL7 v2 messages (files, folders, batch files) to FHIR R4 "
        "transaction bundles. One file prints its bundle on stdout; --out writes "
        "<stem>.json per input (<stem>.<n>.json when a file holds several messages).",
    )
    convert.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    convert.add_argument("--out", type=Path, metavar="DIR", help="write bundles to DIR")
    convert.add_argument("--input-type", choices=("auto", "hl7v2", "cda"), default="auto")
    convert.add_argument("--template", metavar="NAME", help="force a root template")
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
        help="charset of messages with an empty MSH-18 (default utf-8)",
    )
    parser.add_argument(
        "--request-mode", default="put", choices=("put", "conditional-create", "conditional-update")
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


def _config(args: argparse.Namespace, *, validate: bool = True) -> ConverterConfig:
    return ConverterConfig(
        template_dirs=tuple(args.templates),
        validate=validate,
        default_timezone=args.timezone,
        default_charset=args.charset,
        request_mode=args.request_mode,
        strict_values=not args.lenient,
        strict_hl7=args.strict_hl7,
        max_document_bytes=args.max_document_bytes,
    )


@dataclass
class _Summary:
    converted: int = 0
    failed: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    failed_by_type: Counter[str] = field(default_factory=Counter)


def _inputs(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
            )
        else:
            yield path


def run_convert(args: argparse.Namespace) -> int:
    converter = Converter(_config(args, validate=not args.no_validate))
    files = list(_inputs(args.paths))
    if args.out:
        _output_folder(args.out)
    if not files:
        print("passerelle: no files to convert (the folders given are empty)", file=sys.stderr)
    summary = _Summary()
    progress = _Progress(len(files), sys.stderr) if sys.stderr.isatty() and len(files) > 1 else None
    for number, path in enumerate(files, start=1):
        for total, result in _convert_file(converter, path, args):
            if isinstance(result, Conversion):
                try:
                    _write(result, path, args, several=total > 1)
                except OSError as exc:  # disk full, a read-only folder…
                    summary.failed += 1
                    summary.failed_by_type[result.message_type] += 1
                    print(
                        f"FAILED {path}: cannot write its bundle: {exc.strerror}", file=sys.stderr
                    )
                    continue
                summary.converted += 1
                summary.by_type[result.message_type] += 1
                for warning in result.warnings:
                    print(f"WARNING {path}: {warning}", file=sys.stderr)
            else:
                summary.failed += 1
                summary.failed_by_type[result.message_type or "?"] += 1
                print(_failure_line(path, result, verbose=args.verbose), file=sys.stderr)
        if progress:
            progress.update(number)
    if progress:
        progress.close()
    if len(files) > 1 or summary.failed:
        _print_summary(summary, sys.stderr)
    return EXIT_FAILED if summary.failed else EXIT_OK


def _convert_file(
    converter: Converter, path: Path, args: argparse.Namespace
) -> Iterator[tuple[int, Conversion | ConversionError]]:
    """Each message of a file converted or failed, with the file's message count."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        yield 1, ConversionError(f"cannot read file: {exc.strerror}")
        return
    try:
        kind = detect_input_type(data) if args.input_type == "auto" else args.input_type
        if kind == "cda":
            for conversion in converter.convert(
                data, input_type="cda", root_template=args.template
            ):
                yield 1, conversion
            return
        messages = converter.split(data)
    except ConversionError as exc:
        yield 1, exc
        return
    for raw in messages:
        try:
            yield (
                len(messages),
                converter.convert_message(raw.data, root_template=args.template, index=raw.index),
            )
        except ConversionError as exc:
            if len(messages) > 1:
                exc.reason = f"message {raw.index}: {exc.reason}"
            yield len(messages), exc


def output_name(source: Path, index: int, *, several: bool) -> str:
    """``<stem>.json``, or ``<stem>.<n>.json`` for message n of a file holding several."""
    return f"{source.stem}.{index}.json" if several else f"{source.stem}.json"


def _output_folder(folder: Path) -> None:
    """Create ``--out`` (and its parents); a usage error when it cannot be a folder."""
    if folder.exists() and not folder.is_dir():
        raise ConfigurationError(f"--out {folder} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"--out {folder} cannot be created: {exc.strerror}") from None


def _write(result: Conversion, source: Path, args: argparse.Namespace, *, several: bool) -> None:
    text = result.to_json(pretty=args.pretty)
    if args.out is None:
        sys.stdout.write(text + "\n")
        return
    name = output_name(source, result.index, several=several)
    (args.out / name).write_text(text + "\n", encoding="utf-8")


def _failure_line(path: Path, error: ConversionError, *, verbose: bool) -> str:
    parts = [f"FAILED {path}"]
    if error.control_id:
        parts.append(f"control-id={error.control_id}")
    if error.message_type:
        parts.append(f"type={error.message_type}")
    parts.append(f"{type(error).__name__}: {error.reason}")
    if error.location:
        parts.append(f"at {error.location}")
    if error.template:
        parts.append(f"in {error.template}")
    if verbose and error.detail:
        parts.append(f"[{error.detail}]")
    return printable(" ".join(parts))


def _print_summary(summary: _Summary, out: TextIO) -> None:
    types = printable(", ".join(f"{t}: {n}" for t, n in sorted(summary.by_type.items())))
    print(f"converted {summary.converted}, failed {summary.failed}", file=out)
    if types:
        print(f"  converted by type: {types}", file=out)
    if summary.failed_by_type:
        failed = printable(
            ", ".join(f"{t}: {n}" for t, n in sorted(summary.failed_by_type.items()))
        )
        print(f"  failed by type: {failed}", file=out)


class _Progress:
    """A one-line progress bar on a terminal."""

    def __init__(self, total: int, out: TextIO) -> None:
        self._total = total
        self._out = out

    def update(self, done: int) -> None:
        width = 30
        filled = width * done // self._total
        self._out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self._total}")
        self._out.flush()

    def close(self) -> None:
        self._out.write("\n")


def run_templates_list(args: argparse.Namespace) -> int:
    converter = Converter(_config(args, validate=False))
    out = sys.stdout
    print("Routes (hl7v2):", file=out)
    for route in converter.routes.all():
        origin = (
            "override"
            if route.source.parent.parent != converter.config.mappings_dir
            else "built-in"
        )
        print(f"  {route.kind:9} {route.key:12} -> {route.template:20} ({origin})", file=out)
    print("Templates:", file=out)
    for info in converter.templates.list():
        origin = f"override: {info.path}" if info.overridden else "built-in"
        print(f"  {info.name:50} {origin}", file=out)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="passerelle", description="HL7 v2 and CDA to FHIR R4 converter"
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigurationError as exc:
        print(f"passerelle: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
