"""Session 34: ``passerelle convert`` given a folder settles its heap as the service's
conversion processes do (converter.heap): the loaded converter frozen out of the
collector's reach, young collections less often. One file keeps CPython's settings (the
first collection would cost more than it saves). Run in a real process: the test's own
collector is left alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from converter.heap import YOUNG_THRESHOLD
from tests.test_cli import ADT_A08

REPO = Path(__file__).resolve().parents[1]
#: A converter with its code maps and structures loaded holds far more objects than this.
LOADED_OBJECTS = 20_000
REPORT = """
import gc, sys
from converter.cli import main
status = main(sys.argv[1:])
print("heap", status, gc.get_freeze_count(), gc.get_threshold()[0])
"""


def convert_and_report(*args: object) -> tuple[int, int, int]:
    result = subprocess.run(
        [sys.executable, "-c", REPORT, "convert", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("heap ")]
    assert lines, result.stdout + result.stderr
    status, frozen, young = (int(part) for part in lines[-1].split()[1:])
    return status, frozen, young


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    inputs = tmp_path / "in"
    inputs.mkdir()
    message = ADT_A08.read_bytes()
    for number in range(3):
        (inputs / f"adt{number}.hl7").write_bytes(message.replace(b"000102|", b"%03d|" % number))
    return inputs


def test_a_folder_converts_with_the_loaded_converter_frozen(folder: Path, tmp_path: Path) -> None:
    status, frozen, young = convert_and_report(folder, "--out", tmp_path / "out")
    assert status == 0
    assert frozen > LOADED_OBJECTS
    assert young == YOUNG_THRESHOLD
    assert len(list((tmp_path / "out").iterdir())) == 3


def test_one_file_keeps_the_collector_as_it_was(folder: Path, tmp_path: Path) -> None:
    status, frozen, young = convert_and_report(folder / "adt0.hl7", "--out", tmp_path / "out")
    assert status == 0
    assert frozen == 0
    assert young != YOUNG_THRESHOLD
