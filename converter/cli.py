"""``passerelle convert`` and ``passerelle templates``: the converter at the command line.

Exit status: 0 when every input converted, 1 when any failed (one line each on stderr),
2 on usage errors, 130 on Ctrl-C, 141 when the reader of the output went away (``| head``),
for every command (:func:`run_command`); 143 when ``convert`` is stopped by SIGTERM, 129
by SIGHUP (the bundle being written removed). Bad input never prints a traceback. This module builds
the command line; the run of ``convert`` is in :mod:`converter.cli_convert`, what is read
(folders, ``-``, backups left out) in :mod:`converter.cli_inputs`, what is written in
:mod:`converter.cli_output`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import jinja2
from jinja2 import meta, nodes

from .assembly.bundle import REQUEST_MODES, is_resource_type_name
from .cda.xml import DEFAULT_MAX_BYTES
from .cli_convert import (
    EXIT_CLOSED_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
    converter_config,
    run_convert,
)
from .cli_inputs import DEFAULT_MAX_STREAM_BYTES
from .cli_output import output_name, silence_closed_pipe
from .convert import Converter
from .errors import ConfigurationError
from .hl7v2.charset import charset_codec
from .templates.environment import TemplateInfo
from .templates.runner import included_name, resolved_name

__all__ = [
    "EXIT_CLOSED_PIPE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "add_commands",
    "main",
    "output_name",
    "run_command",
]


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
        "--jobs",
        type=_positive_int,
        default=1,
        metavar="N",
        help="convert in N processes (default 1); bundles, lines and their order are the "
        "same as with one",
    )
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


def run_templates_list(args: argparse.Namespace) -> int:
    out = sys.stdout
    if out is None:  # ``>&-``: the listing went nowhere, and the exit status was 0
        raise ConfigurationError("standard output is closed")
    converter = Converter(converter_config(args, validate=False))
    builtin = converter.config.mappings_dir
    infos = converter.templates.list()
    reached = _overrides_reached(converter.templates.environment, infos, builtin)
    for family, table in (("hl7v2", converter.routes), ("cda", converter.cda_routes)):
        folder = "messages" if family == "hl7v2" else "documents"
        print(f"Routes ({family}):", file=out)
        for route in table.all():
            origin = "override" if route.source.parent.parent != builtin else "built-in"
            # The route's own origin said "built-in" while its root template, or what that
            # renders, came from the override folder: the override looked unused.
            root = f"{family}/{folder}/{route.template}.j2"
            used = reached.get(root, ())
            origin += f" route{_uses(used)}" if used else ""
            print(f"  {route.kind:9} {route.key:12} -> {route.template:20} ({origin})", file=out)
    print("Templates:", file=out)
    for info in infos:
        origin = f"override: {info.path}" if info.overridden else "built-in"
        used = tuple(name for name in reached.get(info.name, ()) if name != info.name)
        print(f"  {info.name:50} {origin}{_uses(used)}", file=out)
    print("Code maps:", file=out)
    for name, source in converter.codemaps.sources().items():
        origin = "built-in" if source.parent.parent == builtin else f"override: {source}"
        print(f"  {name:50} {origin}", file=out)
    return EXIT_OK


def _uses(overrides: Sequence[str]) -> str:
    return f", uses override {', '.join(overrides)}" if overrides else ""


def _overrides_reached(
    environment: jinja2.Environment, infos: Sequence[TemplateInfo], builtin: Path
) -> dict[str, tuple[str, ...]]:
    """Each template's override templates, itself included, that its rendering loads:
    imported and included by name, or emitted and included with a literal name
    (``emit("Patient")``). An override of ``hl7v2/datatypes/names.j2`` changes every
    template importing it, each listed as built-in. Names computed while rendering are
    not followed."""
    if not any(info.overridden for info in infos):
        return {}
    paths = {info.name: info.path for info in infos}
    overridden = {info.name for info in infos if info.overridden}
    edges: dict[str, set[str]] = {}

    def references(name: str) -> set[str]:
        if name in edges:
            return edges[name]
        edges[name] = set()  # a cycle (a template including itself) ends here
        shipped = name.removeprefix("builtin/")
        path = builtin / shipped if name != shipped else paths.get(name)
        try:
            tree = environment.parse(path.read_text(encoding="utf-8")) if path else None
        except (OSError, UnicodeError, jinja2.TemplateSyntaxError):
            tree = None  # nothing to follow (the overrides were compiled at start-up)
        if tree is not None:
            family = shipped.split("/", 1)[0]
            edges[name] = {
                *(ref for ref in meta.find_referenced_templates(tree) if ref),
                *_rendered_by_name(tree, family),
            }
        return edges[name]

    reached: dict[str, tuple[str, ...]] = {}
    for start in paths:
        seen, todo = {start}, [start]
        while todo:
            for ref in references(todo.pop()):
                if ref not in seen:
                    seen.add(ref)
                    todo.append(ref)
        reached[start] = tuple(sorted(seen & overridden))
    return reached


def _rendered_by_name(tree: nodes.Template, family: str) -> Iterator[str]:
    """The templates ``emit("X")`` and ``include("x")`` name in a template, resolved as
    the rendering session resolves them (converter.templates.runner)."""
    for call in tree.find_all(nodes.Call):
        if not (isinstance(call.node, nodes.Name) and call.node.name in ("emit", "include")):
            continue
        if not (call.args and isinstance(call.args[0], nodes.Const)):
            continue
        name = call.args[0].value
        if isinstance(name, str):
            resolve = included_name if call.node.name == "include" else resolved_name
            yield resolve(family, name)


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
