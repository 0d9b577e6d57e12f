#!/usr/bin/env python3
"""Import the HL7 v2-to-FHIR IG vocabulary maps into normalised code-map CSV files.

The IG publishes one spreadsheet export per map (``HL7 Concept Map_ <Name> - Sheet1.csv``)
with two header rows: a group row (``HL7 v2`` / ``Condition (IF True)`` / ``HL7 FHIR`` /
``Comments``) and a column row (``Code``, ``Text``, ``Code System``, ...). The column layout
varies between files, so columns are located from the header text, never by position.

Each map is written to ``<dest>/<MapName>.csv`` with the columns
``source_code,source_system,target_code,target_display,target_system,comment``:

* rows without a v2 code (FHIR-only codes, stray notes) are dropped;
* rows with a v2 code but no FHIR code are kept: they document "no FHIR equivalent";
* conditions (``Computable ANTLR``, ``Narrative``, ...) and stray text in unnamed FHIR
  columns are preserved in ``comment``;
* v2 code-system spellings such as ``HL7-0354`` or ``HL0207`` become ``HL70354``/``HL70207``;
* a file with no v2 code at all is skipped (reported), since it holds no mapping.

Usage: ``python scripts/import_codemaps.py [--source DIR] [--dest DIR]``
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO_ROOT.parent / "shared/reference/v2-to-fhir/mappings/codesystems"
DEFAULT_DEST = REPO_ROOT / "mappings" / "codemaps"

OUTPUT_HEADER = (
    "source_code",
    "source_system",
    "target_code",
    "target_display",
    "target_system",
    "comment",
)
FILE_PREFIX = "HL7 Concept Map_ "
MAP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
V2_TABLE_RE = re.compile(r"^HL7?[-_ ]?(\d{4})$", re.IGNORECASE)


class SkipFile(Exception):
    """The file is not an importable concept map; the message says why."""


@dataclass
class Layout:
    """Column indexes found in a concept-map header."""

    v2_code: int
    v2_system: int | None
    fhir_code: int
    fhir_display: int | None
    fhir_system: int | None
    #: unnamed columns inside the FHIR group (some files put the display in the one
    #: between Code and Display; any other text found there is kept as a comment)
    fhir_unnamed: list[int]
    #: (header text, index) of every condition column
    conditions: list[tuple[str, int]]
    comment: int | None
    width: int


@dataclass
class ImportedMap:
    """One normalised map ready to be written."""

    name: str
    source: Path
    rows: list[tuple[str, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def map_name_for(path: Path) -> str:
    """Derive the map name from an IG file name (``PatientClass[EncounterClass]`` → dashed)."""
    name = path.name
    if not name.startswith(FILE_PREFIX):
        raise SkipFile(f"file name does not start with {FILE_PREFIX!r}")
    name = name[len(FILE_PREFIX) :]
    if not name.lower().endswith(".csv"):
        raise SkipFile("not a .csv file")
    name = name[: -len(".csv")]
    if " - " in name:  # the spreadsheet tab name: " - Sheet1"
        name = name.rsplit(" - ", 1)[0]
    name = re.sub(r"\[\s*([^\]]*?)\s*\]", r"-\1", name)
    name = re.sub(r"\s+", "", name)
    if not MAP_NAME_RE.match(name):
        raise SkipFile(f"derived map name {name!r} is not a valid file name")
    return name


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def parse_layout(groups: list[str], columns: list[str]) -> Layout:
    """Locate the columns from the two header rows."""
    width = max(len(groups), len(columns))
    groups = groups + [""] * (width - len(groups))
    columns = columns + [""] * (width - len(columns))
    starts: dict[str, int] = {}
    for index, label in enumerate(groups):
        text = _norm(label)
        for key, prefix in (
            ("v2", "hl7 v2"),
            ("condition", "condition"),
            ("fhir", "hl7 fhir"),
            ("comment", "comment"),
        ):
            if text.startswith(prefix) and key not in starts:
                starts[key] = index
    if "v2" not in starts or "fhir" not in starts:
        raise SkipFile(f"header row 1 has no 'HL7 v2'/'HL7 FHIR' groups: {groups}")
    bounds = [*sorted(starts.values()), width]

    def group(key: str) -> range:
        if key not in starts:
            return range(0)
        begin = starts[key]
        return range(begin, next(b for b in bounds if b > begin))

    def find(key: str, name: str) -> int | None:
        hits = [i for i in group(key) if _norm(columns[i]) == name]
        return hits[0] if hits else None

    v2_code = find("v2", "code")
    fhir_code = find("fhir", "code")
    if v2_code is None or fhir_code is None:
        raise SkipFile(f"header row 2 has no v2/FHIR 'Code' column: {columns}")
    fhir_display = find("fhir", "display")
    return Layout(
        v2_code=v2_code,
        v2_system=find("v2", "code system"),
        fhir_code=fhir_code,
        fhir_display=fhir_display,
        fhir_system=find("fhir", "code system"),
        fhir_unnamed=[i for i in group("fhir") if not columns[i].strip()],
        conditions=[(columns[i].strip() or groups[i].strip(), i) for i in group("condition")],
        comment=starts.get("comment"),
        width=width,
    )


def _canonical_system(value: str) -> str:
    match = V2_TABLE_RE.match(value)
    return f"HL7{match.group(1)}" if match else value


def import_file(path: Path) -> ImportedMap:
    """Read one IG concept-map CSV into normalised rows."""
    result = ImportedMap(name=map_name_for(path), source=path)
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            records = list(csv.reader(handle))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SkipFile(f"unreadable CSV: {exc}") from exc
    if len(records) < 2:
        raise SkipFile("fewer than the two header rows")
    layout = parse_layout(records[0], records[1])
    fixed_systems: set[str] = set()
    extra_cells = 0
    for record in records[2:]:
        cells = [cell.strip() for cell in record]
        if len(cells) > layout.width:
            extra = [cell for cell in cells[layout.width :] if cell]
            extra_cells += len(extra)
        else:
            extra = []
        cells += [""] * (layout.width - len(cells))

        def cell(index: int | None, cells: list[str] = cells) -> str:
            return "" if index is None else cells[index]

        source_code = cell(layout.v2_code)
        if not source_code:
            continue
        source_system = cell(layout.v2_system)
        canonical = _canonical_system(source_system)
        if canonical != source_system:
            fixed_systems.add(f"{source_system}->{canonical}")
        target_code = cell(layout.fhir_code)
        display = cell(layout.fhir_display)
        system = cell(layout.fhir_system)
        notes: list[str] = []
        for index in layout.fhir_unnamed:
            value = cells[index]
            if not value or value == display:
                continue
            if not display and target_code and index < (layout.fhir_system or layout.width):
                display = value  # display shifted into the unnamed column
            else:
                notes.append(value)
        if not target_code and (display or system):
            notes = [v for v in (display, system) if v] + notes
            display = system = ""
        comment_parts = [
            f"condition ({label}): {cells[i]}" for label, i in layout.conditions if cells[i]
        ]
        comment_parts += notes
        if cell(layout.comment):
            comment_parts.append(cell(layout.comment))
        comment_parts += extra
        result.rows.append(
            (source_code, canonical, target_code, display, system, " | ".join(comment_parts))
        )
    _fold_alternatives(result)
    if fixed_systems:
        result.notes.append("normalised v2 code system " + ", ".join(sorted(fixed_systems)))
    if extra_cells:
        result.notes.append(f"{extra_cells} cell(s) beyond the header moved to comment")
    missing_system = sum(1 for row in result.rows if row[2] and not row[4])
    if missing_system:
        result.notes.append(f"{missing_system} mapped row(s) without a FHIR code system")
    if not result.rows:
        if any(any(cell.strip() for cell in record) for record in records[2:]):
            raise SkipFile("no row has a v2 code (FHIR-only code list, nothing to map from)")
        raise SkipFile("no data rows (header only)")
    return result


def _fold_alternatives(result: ImportedMap) -> None:
    """One row per source code and system: the loader refuses a map that sends one code
    to two targets. Where the IG offers alternatives, the first is kept and the others
    are named in its comment."""
    kept: dict[tuple[str, str], int] = {}
    rows: list[tuple[str, ...]] = []
    folded = 0
    for row in result.rows:
        key = (row[0], row[1].upper())
        first = kept.get(key)
        if first is None:
            kept[key] = len(rows)
            rows.append(row)
            continue
        if row[2:5] != rows[first][2:5]:
            alternative = f"alternative in the IG: {row[2] or '(no target)'}"
            comment = " | ".join(part for part in (rows[first][5], alternative) if part)
            rows[first] = (*rows[first][:5], comment)
            folded += 1
    result.rows[:] = rows
    if folded:
        result.notes.append(f"{folded} alternative target(s) folded into the first row's comment")


def write_map(imported: ImportedMap, dest: Path) -> Path:
    """Write one normalised map; returns the file written."""
    target = dest / f"{imported.name}.csv"
    with target.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(OUTPUT_HEADER)
        writer.writerows(imported.rows)
    return target


def write_source_md(
    maps: Sequence[ImportedMap], skipped: Sequence[tuple[str, str]], dest: Path
) -> Path:
    """Describe where the generated maps come from and list them (and the IG files skipped)."""
    lines = [
        "# Built-in code maps",
        "",
        "The `*.csv` files in this directory are **generated** from the vocabulary maps of the",
        "[HL7 Version 2 to FHIR Implementation Guide](https://build.fhir.org/ig/HL7/v2-to-fhir/)",
        "(`mappings/codesystems/HL7 Concept Map_ <Name> - Sheet1.csv`), published by",
        "HL7 International under the Apache License 2.0.",
        "",
        "They are produced by `scripts/import_codemaps.py`. **Do not edit them by hand**: re-run",
        "the script instead. Add project-specific maps in separate files (another name, or a",
        "user code-map directory, which overrides a built-in map of the same name as a whole).",
        "",
        "Columns: `source_code,source_system,target_code,target_display,target_system,comment`.",
        "A row with an empty `target_code` documents a v2 code with no FHIR equivalent: lookups",
        "return nothing for it. IG conditions and comments are kept in `comment`.",
        "",
        f"## Maps ({len(maps)})",
        "",
        "| Map | Rows | Mapped | IG file |",
        "| --- | ---: | ---: | --- |",
    ]
    for imported in maps:
        mapped = sum(1 for row in imported.rows if row[2])
        lines.append(
            f"| {imported.name} | {len(imported.rows)} | {mapped} | `{imported.source.name}` |"
        )
    ig_skipped = [(name, reason) for name, reason in skipped if name.startswith(FILE_PREFIX)]
    if ig_skipped:
        lines += ["", f"## IG files not imported ({len(ig_skipped)})", ""]
        lines += [f"- `{name}`: {reason}" for name, reason in ig_skipped]
    target = dest / "SOURCE.md"
    target.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="IG codesystems dir")
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="output directory")
    args = parser.parse_args(argv)
    source: Path = args.source
    dest: Path = args.dest
    if not source.is_dir():
        print(f"error: source directory {source} does not exist", file=sys.stderr)
        return 2
    dest.mkdir(parents=True, exist_ok=True)

    imported: list[ImportedMap] = []
    skipped: list[tuple[str, str]] = []
    seen: dict[str, Path] = {}
    for path in sorted(p for p in source.iterdir() if p.is_file()):
        try:
            result = import_file(path)
        except SkipFile as exc:
            skipped.append((path.name, str(exc)))
            continue
        if result.name in seen:
            skipped.append((path.name, f"map name {result.name!r} also from {seen[result.name]}"))
            continue
        seen[result.name] = path
        imported.append(result)

    imported.sort(key=lambda m: m.name)
    for result in imported:
        write_map(result, dest)
    write_source_md(imported, skipped, dest)

    total = sum(len(m.rows) for m in imported)
    mapped = sum(1 for m in imported for row in m.rows if row[2])
    print(f"wrote {len(imported)} maps, {total} rows ({mapped} mapped) to {dest}")
    for result in imported:
        for note in result.notes:
            print(f"  note: {result.name}: {note}")
    print(f"skipped {len(skipped)} file(s):")
    for name, reason in skipped:
        print(f"  {name}: {reason}")
    generated = {f"{m.name}.csv" for m in imported}
    strays = sorted(p.name for p in dest.glob("*.csv") if p.name not in generated)
    for name in strays:
        print(f"  warning: {dest / name} was not generated by this run (left untouched)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
