"""Code maps: v2 code → FHIR coding tables loaded from CSV files.

A code map is one CSV file, ``<MapName>.csv``, with a header row. Required columns:
``source_code`` and ``target_code``; optional: ``source_system``, ``target_display``,
``target_system`` and ``comment`` (others are ignored). The built-in maps in
``mappings/codemaps`` are generated from the HL7 v2-to-FHIR IG by
``scripts/import_codemaps.py``; users add or replace maps in their own directory.

Override rule: when several directories define the same map name, the file from the
earliest directory replaces the whole map; rows are never merged across files. A user
who overrides a map then sees exactly the rows of their own file, so a code they left out
is unmapped rather than silently answered by the built-in table they meant to replace.

A row with an empty ``target_code`` records "no FHIR equivalent": looking it up gives
``None``, like an unknown code. A row too short to reach the ``target_code`` column, an
unterminated quote, or one source code (and system) mapped twice to different targets
is a ConfigurationError naming the file and line: each would otherwise leave a code
silently unmapped, or mapped by whichever row came first.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigurationError, TemplateError

__all__ = ["CodeMaps", "MappedCode"]

_REQUIRED_COLUMNS = ("source_code", "target_code")
_OPTIONAL_COLUMNS = ("source_system", "target_display", "target_system", "comment")


@dataclass(frozen=True, slots=True)
class MappedCode:
    """The FHIR coding a source code maps to."""

    code: str
    display: str | None
    system: str | None


@dataclass(frozen=True, slots=True)
class _CodeTable:
    """One loaded map, indexed for O(1) lookups; ``None`` values mark unmapped codes."""

    source: Path
    exact: Mapping[str, MappedCode | None]
    exact_by_system: Mapping[tuple[str, str], MappedCode | None]
    folded: Mapping[str, MappedCode | None]
    folded_by_system: Mapping[tuple[str, str], MappedCode | None]
    #: SHA-256 of the bytes the table was read from.
    digest: str


def _system_key(system: str | None) -> str | None:
    """Comparable form of a source code system: ``HL70001``, ``HL7-0001`` and ``0001`` agree."""
    if system is None:
        return None
    key = system.strip().upper()
    if key.startswith("HL7"):
        key = key[3:].lstrip("-_ ")
    return key or None


def _records(path: Path, data: bytes) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(first line number, cells)`` for every record of a CSV file's bytes."""
    line = 1
    try:
        text = data.decode("utf-8-sig")
        # strict: an unterminated quote is an error, not the rest of the file
        # swallowed into one cell.
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        for record in reader:
            yield line, record
            line = reader.line_num + 1
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{path}: code map is not valid UTF-8 ({exc})") from exc
    except csv.Error as exc:
        raise ConfigurationError(f"{path}:{line}: malformed CSV in code map: {exc}") from exc


def _column_index(path: Path, header: list[str]) -> dict[str, int]:
    """Map known column names to their positions; reject a header lacking required ones."""
    names = [cell.strip().lower() for cell in header]
    index: dict[str, int] = {}
    for position, name in enumerate(names):
        if not name:
            continue
        if name in index:
            raise ConfigurationError(f"{path}:1: duplicate column {name!r} in code map header")
        index[name] = position
    missing = [name for name in _REQUIRED_COLUMNS if name not in index]
    if missing:
        raise ConfigurationError(
            f"{path}:1: code map header lacks required column(s) {', '.join(missing)} "
            f"(found: {', '.join(repr(h) for h in header)})"
        )
    return {name: index[name] for name in (*_REQUIRED_COLUMNS, *_OPTIONAL_COLUMNS) if name in index}


def _read_table(path: Path) -> _CodeTable:
    """Parse one code-map file and build its lookup dictionaries."""
    exact: dict[str, MappedCode | None] = {}
    exact_by_system: dict[tuple[str, str], MappedCode | None] = {}
    folded: dict[str, MappedCode | None] = {}
    folded_by_system: dict[tuple[str, str], MappedCode | None] = {}
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read code map: {exc}") from exc
    records = _records(path, data)
    first = next(records, None)
    if first is None:
        raise ConfigurationError(
            f"{path}:1: empty code map (expected a header with source_code,target_code)"
        )
    columns = _column_index(path, first[1])
    width = len(first[1])
    target_column = columns["target_code"]
    rows_of: dict[tuple[str, str | None], tuple[int, MappedCode | None]] = {}
    for line, record in records:
        if not any(cell.strip() for cell in record):
            continue
        if len(record) > width:
            raise ConfigurationError(
                f"{path}:{line}: {len(record)} fields but the header has {width} "
                "(quote values that contain commas)"
            )

        def cell(name: str, record: list[str] = record) -> str:
            position = columns.get(name)
            if position is None or position >= len(record):
                return ""
            return record[position].strip()

        source_code = cell("source_code")
        if not source_code:
            continue
        if len(record) <= target_column:
            raise ConfigurationError(
                f"{path}:{line}: {len(record)} field(s), no target_code column; write the "
                "row's commas, with an empty target_code for a code without FHIR equivalent"
            )
        target_code = cell("target_code")
        mapped = (
            MappedCode(target_code, cell("target_display") or None, cell("target_system") or None)
            if target_code
            else None
        )
        system = _system_key(cell("source_system"))
        earlier = rows_of.setdefault((source_code, system), (line, mapped))
        if earlier[1] != mapped:
            raise ConfigurationError(
                f"{path}:{line}: code {source_code!r} is already mapped at line {earlier[0]} "
                "to another target; one row per source code and system"
            )
        folded_code = source_code.casefold()
        exact.setdefault(source_code, mapped)
        folded.setdefault(folded_code, mapped)
        if system is not None:
            exact_by_system.setdefault((source_code, system), mapped)
            folded_by_system.setdefault((folded_code, system), mapped)
    digest = hashlib.sha256(data).hexdigest()
    return _CodeTable(path, exact, exact_by_system, folded, folded_by_system, digest)


class CodeMaps:
    """Code maps loaded from CSV files; earlier directories override later ones (user dir first)."""

    __slots__ = ("_tables",)

    def __init__(self, tables: Mapping[str, _CodeTable]) -> None:
        """Wrap already-loaded tables; use :meth:`load` to read directories."""
        self._tables: Mapping[str, _CodeTable] = dict(tables)

    @classmethod
    def load(cls, directories: Sequence[Path]) -> CodeMaps:
        """Read every ``*.csv`` in ``directories``; a name found earlier hides later files."""
        tables: dict[str, _CodeTable] = {}
        for directory in directories:
            if not directory.is_dir():
                raise ConfigurationError(f"code map directory {directory} does not exist")
            for path in sorted(directory.glob("*.csv")):
                if path.stem in tables or path.name.startswith(".") or not path.is_file():
                    continue
                tables[path.stem] = _read_table(path)
        return cls(tables)

    def sources(self) -> dict[str, Path]:
        """Each map's name and the file it was read from (an override's, if any)."""
        return {name: table.source for name, table in sorted(self._tables.items())}

    def _table(self, map_name: str) -> _CodeTable:
        try:
            return self._tables[map_name]
        except KeyError:
            raise TemplateError(f"unknown code map {map_name!r}") from None

    def knows(self, map_name: str, code: str) -> bool:
        """Whether the map has a row for ``code`` (mapped or marked as without FHIR
        equivalent), compared as :meth:`lookup` does."""
        table = self._table(map_name)
        key = code.strip()
        return key in table.exact or key.casefold() in table.folded

    def lookup(
        self, map_name: str, code: str | None, source_system: str | None = None
    ) -> MappedCode | None:
        """Map ``code`` through ``map_name``; ``None`` when empty, unknown or unmapped.

        Exact match first, then case-insensitive. Among rows sharing the code, the one whose
        ``source_system`` matches (``HL70001`` == ``0001``) wins, else the first row.
        """
        table = self._table(map_name)
        if code is None:
            return None
        exact_code = code.strip()
        if not exact_code:
            return None
        system = _system_key(source_system)
        folded_code = exact_code.casefold()
        for key, codes, by_system in (
            (exact_code, table.exact, table.exact_by_system),
            (folded_code, table.folded, table.folded_by_system),
        ):
            if key in codes:
                if system is not None and (key, system) in by_system:
                    return by_system[(key, system)]
                return codes[key]
        return None

    def digest(self) -> str:
        """A checksum of every map's name and content: what a compiled template may
        hold of them (Jinja computes a filter with constant arguments, ``{{ "F" |
        map_code("AdministrativeSex") }}``, once, when it compiles the template)."""
        return hashlib.sha256(
            "\n".join(
                f"{name} {table.digest}" for name, table in sorted(self._tables.items())
            ).encode()
        ).hexdigest()

    def names(self) -> list[str]:
        """Names of all loaded maps, sorted."""
        return sorted(self._tables)

    def source_of(self, map_name: str) -> Path:
        """The file that defines ``map_name``."""
        return self._table(map_name).source

    def __contains__(self, map_name: object) -> bool:
        return isinstance(map_name, str) and map_name in self._tables

    def __repr__(self) -> str:
        return f"<CodeMaps: {len(self._tables)} maps>"
