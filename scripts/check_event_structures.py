#!/usr/bin/env python3
"""Check converter/hl7v2/data/event_structures.toml against hl7apy.

For every version table of the TOML file ("2.3", "2.5.1", ...) the effective
mapping is [default] overlaid with that version's table (an empty string
removes the entry for that version).  Every structure of the effective
mapping must exist in hl7apy's message definitions for that version
(``hl7apy.v2_5_1.messages.MESSAGES`` ...).

Also checked: key syntax ("CODE^TRIGGER" or "CODE^*"), that a structure
belongs to the key's message code (ADT^... -> ADT_...), and that [default]
entries are used by at least one version.  Redundant overrides (a version
value equal to [default]) are reported as warnings.

Usage: python scripts/check_event_structures.py [path/to/event_structures.toml]
Exit status: 0 when everything matches, 1 otherwise.
"""

from __future__ import annotations

import importlib
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PATH = REPO / "converter" / "hl7v2" / "data" / "event_structures.toml"
KEY_RE = re.compile(r"^[A-Z][A-Z0-9]{2}\^(?:[A-Z0-9]{3}|\*)$")


def hl7apy_structures(version: str) -> set[str]:
    module = importlib.import_module(f"hl7apy.v{version.replace('.', '_')}.messages")
    return set(module.MESSAGES)


def check(path: Path) -> int:
    with path.open("rb") as fh:
        data = tomllib.load(fh)

    errors: list[str] = []
    warnings: list[str] = []

    default = data.get("default")
    if not isinstance(default, dict):
        print(f"{path}: missing [default] table")
        return 1
    versions = [name for name in data if name != "default"]
    if not versions:
        errors.append("no version tables")

    for table_name, table in data.items():
        if not isinstance(table, dict):
            errors.append(f"[{table_name}] is not a table")
            continue
        for key, value in table.items():
            if not KEY_RE.match(key):
                errors.append(f"[{table_name}] bad key {key!r} (expected CODE^TRIGGER or CODE^*)")
            if not isinstance(value, str):
                errors.append(f"[{table_name}] {key}: value must be a string, got {value!r}")
            elif value and value.split("_")[0] != key.split("^")[0]:
                errors.append(
                    f"[{table_name}] {key} = {value!r}: structure of another message code"
                )

    used_defaults: set[str] = set()
    checked = 0
    for version in versions:
        table = data[version]
        if not isinstance(table, dict):
            continue
        try:
            known = hl7apy_structures(version)
        except ImportError:
            errors.append(f"[{version}] hl7apy has no module for version {version}")
            continue
        for key, value in table.items():
            if key in default and default[key] == value:
                warnings.append(f"[{version}] {key} = {value!r} repeats [default]")
        effective = {**default, **table}
        for key, structure in sorted(effective.items()):
            if not isinstance(structure, str) or not structure:
                continue
            if key not in table:
                used_defaults.add(key)
            checked += 1
            if structure not in known:
                source = f"[{version}]" if key in table else "[default]"
                errors.append(
                    f"{version}: {key} -> {structure} (from {source}) is not a structure "
                    f"in hl7apy v{version}"
                )

    for key in sorted(set(default) - used_defaults):
        if all(key in data[v] for v in versions if isinstance(data[v], dict)):
            warnings.append(f"[default] {key} is overridden by every version table")

    for line in warnings:
        print(f"warning: {line}")
    for line in errors:
        print(f"error: {line}")
    status = "FAILED" if errors else "OK"
    print(
        f"{path.name}: {len(versions)} versions, {len(default)} default entries, "
        f"{checked} version/entry pairs checked against hl7apy: {status} "
        f"({len(errors)} errors, {len(warnings)} warnings)"
    )
    return 1 if errors else 0


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else DEFAULT_PATH
    return check(path)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
