"""A site's code map rows may give a target code without a target system (``target_system``
is optional: the loader leaves the empty cell out of the mapped coding). Templates read
the mapped coding's system as ``mapped.system``, which the sandbox's strict undefined
turned into a TemplateError: with such a row in a site's
``codemaps/TelecommunicationEquipmentType.csv``, every message with a phone number failed
(contact.j2); with one in AppointmentCancellationReason-Passerelle, every cancellation
naming that code (codes.j2's CodeableConcept). Data-driven over the samples: every map
that has a ``target_system`` column is copied into an override directory with that column
emptied, and each sample that converts with the built-in maps must still convert."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from converter import ConversionError, Converter, ConverterConfig

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "samples" / "hl7v2").glob("*.hl7")) + sorted(
    (ROOT / "samples" / "cda").glob("*.xml")
)


def without_target_systems(source: Path, site: Path) -> int:
    """Copy ``source``'s maps into ``site/codemaps`` with every target_system emptied; how
    many rows lost one."""
    (site / "codemaps").mkdir(parents=True)
    emptied = 0
    for path in sorted(source.glob("*.csv")):
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
        if not rows or "target_system" not in rows[0]:
            continue
        column = rows[0].index("target_system")
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(rows[0])
        for row in rows[1:]:
            if len(row) > column and row[column]:
                row[column] = ""
                emptied += 1
            writer.writerow(row)
        (site / "codemaps" / path.name).write_text(out.getvalue(), encoding="utf-8")
    return emptied


@pytest.fixture(scope="module")
def converters(tmp_path_factory: pytest.TempPathFactory) -> tuple[Converter, Converter]:
    site = tmp_path_factory.mktemp("site")
    assert without_target_systems(ROOT / "mappings" / "codemaps", site) > 1000
    config = ConverterConfig(default_timezone="Europe/Paris", validate=False)
    blank = ConverterConfig(default_timezone="Europe/Paris", validate=False, template_dirs=(site,))
    return Converter(config), Converter(blank)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_a_row_without_target_system_fails_no_message(
    sample: Path, converters: tuple[Converter, Converter]
) -> None:
    builtin, blank = converters
    data = sample.read_bytes()
    try:
        builtin.convert(data)
    except ConversionError:
        pytest.skip(
            f"{sample.name} does not convert with the built-in maps either (a sample of an error)"
        )
    blank.convert(data)
