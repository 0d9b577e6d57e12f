#!/usr/bin/env python3
"""Systematic perturbation of the samples: what a sender can get wrong, one place at a time.

    .venv/bin/python scripts/perturb_samples.py [--lenient] [--only NAME ...] [--kinds K ...]
        [--hl7-dir DIR] [--cda-dir DIR]

Unlike ``fuzz_inputs.py`` (random edits of bytes and delimiters), each HL7 v2 sample is
edited field by field (every field of every segment replaced by an unknown code, a
coded triplet in a local system, a repetition, a zero, a negative or a 20-digit number,
an impossible date, sub-components, an escaped NUL), segment by segment (removed,
repeated, moved to the end or to the front) and each C-CDA sample element by element
(removed, emptied, replaced by a nullFlavor, its codes and values made odd). Each edited
input is converted; an outcome that is a defect of Passerelle, not of the input, is
printed, grouped by error with where it came from:

* a ``TemplateError`` (a template that fails on an input: a typo's effect, a value read
  that may be absent);
* a ``BundleValidationError`` (the templates wrote invalid FHIR instead of reporting the
  bad value at its field);
* any exception that is not a ``ConversionError``;
* with ``--lenient``, also a ``MappingError`` other than a required value missing or not
  in its table (lenient mode drops bad values with a warning).

A ``ParseError``, an unsupported message, a located ``MappingError`` (strict mode) are
the expected answers to bad input and are only counted. Exit 1 when a defect is found.
Deterministic; about 6 minutes for everything on one core (``--kinds`` and ``--only``
narrow it). ``--hl7-dir`` and ``--cda-dir`` edit other messages and documents than the
samples (the shared corpora: ``../shared/corpus/hl7v2/...``, ``../shared/corpus/ccda/...``).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

from lxml import etree

from converter import ConversionError, Converter, ConverterConfig
from converter.errors import BundleValidationError, MappingError, TemplateError

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
#: What replaces a whole field (the component separator is rewritten to the message's).
FIELD_VALUES = (
    "ZZ9",
    '""',
    "ZZ9^^ZZL",
    "ZZ9~ZZ8",
    "-1",
    "0",
    "99999999999999999999",
    "20991399",
    "X^Y^Z^W^V^U^T",
    "1&2&3^4&5",
    "\\X00\\",
)
#: CDA attributes whose values senders fill from their own tables.
CDA_ATTRIBUTES = frozenset(
    {"code", "value", "extension", "root", "codeSystem", "unit", "moodCode", "classCode"}
)
CDA_VALUES = ("ZZ9", "", " ", "2099", "-1", "1.2.3.4.5", "a&b")
#: MappingErrors that are the right answer in lenient mode too.
EXPECTED_IN_LENIENT = (" is missing", "not a code of its table")

Edit = tuple[str, bytes]


def hl7_field_edits(data: bytes) -> Iterator[Edit]:
    lines = _segments(data)
    for i, line in enumerate(lines):
        fields = line.split(b"|")
        # MSH's split is one off (MSH-1 is the separator itself); MSH-2 is left alone.
        header = line.startswith(b"MSH")
        for j in range(2 if header else 1, len(fields) + 1):
            for value in FIELD_VALUES:
                edited = list(fields)
                raw = value.encode()
                if j < len(edited):
                    edited[j] = raw
                else:
                    edited.append(raw)
                where = f"{line[:3].decode(errors='replace')}#{i}-{j + header}={value}"
                yield where, b"\r".join([*lines[:i], b"|".join(edited), *lines[i + 1 :]])


def hl7_segment_edits(data: bytes) -> Iterator[Edit]:
    lines = _segments(data)
    for i in range(1, len(lines)):
        name = f"{lines[i][:3].decode(errors='replace')}#{i}"
        rest = [*lines[:i], *lines[i + 1 :]]
        yield f"{name} removed", b"\r".join(rest)
        yield f"{name} repeated", b"\r".join([*lines[: i + 1], lines[i], *lines[i + 1 :]])
        yield f"{name} moved to the end", b"\r".join([*rest, lines[i]])
        yield f"{name} moved to the front", b"\r".join([lines[0], lines[i], *rest[1:]])


def cda_element_edits(data: bytes) -> Iterator[Edit]:
    count = sum(1 for _ in etree.fromstring(data).iter(etree.Element))
    edits: tuple[tuple[str, Callable[[etree._Element, int], None]], ...] = (
        ("removed", _remove),
        ("emptied", _empty),
        ("nullFlavor", _null_flavor),
        ("odd values", _odd_values),
    )
    for index in range(1, count):
        for name, edit in edits:
            root = etree.fromstring(data)
            element = list(root.iter(etree.Element))[index]
            where = f"{root.getroottree().getpath(element)} {name}"
            edit(element, index)
            yield where, etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _remove(element: etree._Element, _: int) -> None:
    parent = element.getparent()
    if parent is not None:
        parent.remove(element)


def _empty(element: etree._Element, _: int) -> None:
    for child in list(element):
        element.remove(child)
    element.text = None


def _null_flavor(element: etree._Element, _: int) -> None:
    element.attrib.clear()
    element.set("nullFlavor", "UNK")


def _odd_values(element: etree._Element, index: int) -> None:
    for n, name in enumerate(sorted(element.attrib)):
        if str(name) in CDA_ATTRIBUTES:
            element.set(name, CDA_VALUES[(index + n) % len(CDA_VALUES)])


def _segments(data: bytes) -> list[bytes]:
    text = data.removeprefix(b"\xef\xbb\xbf").replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    return [line for line in text.split(b"\r") if line]


def defect(error: BaseException, lenient: bool) -> bool:
    if not isinstance(error, ConversionError):
        return True
    if isinstance(error, TemplateError | BundleValidationError):
        return True
    if lenient and isinstance(error, MappingError):
        return not any(phrase in str(error) for phrase in EXPECTED_IN_LENIENT)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lenient", action="store_true", help="lenient values mode")
    parser.add_argument("--only", nargs="*", default=[], help="samples whose name contains")
    parser.add_argument(
        "--kinds", nargs="*", default=["fields", "segments", "cda"], help="fields segments cda"
    )
    parser.add_argument(
        "--hl7-dir",
        type=Path,
        default=SAMPLES / "hl7v2",
        help="where the HL7 v2 messages are (*.hl7, in subfolders too); default samples/hl7v2",
    )
    parser.add_argument(
        "--cda-dir",
        type=Path,
        default=SAMPLES / "cda",
        help="where the CDA documents are (*.xml, *.ccda, in subfolders too); default samples/cda",
    )
    args = parser.parse_args()
    converter = Converter(
        ConverterConfig(default_timezone="Europe/Paris", strict_values=not args.lenient)
    )
    plans: list[tuple[Path, Callable[[bytes], Iterator[Edit]]]] = []
    for path in sorted(args.hl7_dir.rglob("*.hl7")):
        if "fields" in args.kinds:
            plans.append((path, hl7_field_edits))
        if "segments" in args.kinds:
            plans.append((path, hl7_segment_edits))
    if "cda" in args.kinds:
        documents = sorted(
            path for path in args.cda_dir.rglob("*") if path.suffix in (".xml", ".ccda")
        )
        plans += [(path, cda_element_edits) for path in documents]
    found: defaultdict[str, list[str]] = defaultdict(list)
    outcomes: Counter[str] = Counter()
    started = time.perf_counter()
    for path, edits in plans:
        if args.only and not any(part in path.name for part in args.only):
            continue
        data = path.read_bytes()
        if data.lstrip(b"\xef\xbb\xbf").startswith((b"FHS", b"BHS")):
            continue  # a batch: its messages are samples of their own elsewhere
        try:
            converter.convert(data)
        except ConversionError:
            continue  # a sample of an error already
        for where, edited in edits(data):
            try:
                converter.convert(edited)
                outcomes["converted"] += 1
            except Exception as error:  # every outcome is sorted: that is the point
                outcomes[type(error).__name__] += 1
                if defect(error, args.lenient):
                    found[_key(error)].append(f"{path.name} {where}")
    seconds = time.perf_counter() - started
    print(f"{sum(outcomes.values())} edited inputs in {seconds:.0f}s: {dict(outcomes)}")
    for key, places in sorted(found.items(), key=lambda item: -len(item[1])):
        print(f"\n{len(places)} x {key}")
        for place in places[:5]:
            print(f"    {place}")
    print(f"\n{len(found)} distinct defect(s)")
    return 1 if found else 0


def _key(error: BaseException) -> str:
    if isinstance(error, ConversionError):
        # The message and the place in the template, without the control id.
        return f"{type(error).__name__}: {str(error).split(' (MSH-10 ')[0].split(' (document ')[0]}"
    last = traceback.format_exception(error)[-2].strip().splitlines()[0]
    return f"{type(error).__name__}: {error} ({last})"


if __name__ == "__main__":
    sys.exit(main())
