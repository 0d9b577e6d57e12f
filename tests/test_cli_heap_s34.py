"""Session 34: ``passerelle convert`` given a folder settles its heap as the service's
conversion processes do (converter.heap): the loaded converter frozen out of the
collector's reach, young collections less often. One file keeps CPython's settings (the
first collection would cost more than it saves), and so does the process once the
command returned. Run in a real process: the test's own collector is left alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from converter.heap import YOUNG_THRESHOLD
from tests.listeners.service.support import adt

REPO = Path(__file__).resolve().parents[1]
#: A converter with its code maps and structures loaded holds far more objects than this.
LOADED_OBJECTS = 20_000
#: CPython's own young-generation threshold.
DEFAULT_YOUNG = 700
#: Runs ``main`` and reports the collector's settings while the inputs convert (seen from
#: the conversion loop) and after the command returned.
REPORT = """
import gc, sys
from converter import cli_convert
from converter.cli import main
during = []
convert_all = cli_convert._convert_all
def watched(*args, **kwargs):
    during.append((gc.get_freeze_count(), gc.get_threshold()[0]))
    return convert_all(*args, **kwargs)
cli_convert._convert_all = watched
status = main(sys.argv[1:])
print("heap", status, *during[0], gc.get_freeze_count(), gc.get_threshold()[0])
"""


def convert_and_report(*args: object) -> tuple[int, int, int, int, int]:
    """Exit status; frozen objects and young threshold during the run, then after it."""
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
    status, frozen, young, frozen_after, young_after = (int(p) for p in lines[-1].split()[1:])
    return status, frozen, young, frozen_after, young_after


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for number in range(3):
        (inputs / f"adt{number}.hl7").write_bytes(adt(f"HEAP-{number}"))
    return inputs


def test_a_folder_converts_with_the_loaded_converter_frozen(folder: Path, tmp_path: Path) -> None:
    status, frozen, young, frozen_after, young_after = convert_and_report(
        folder, "--out", tmp_path / "out"
    )
    assert status == 0
    assert frozen > LOADED_OBJECTS
    assert young == YOUNG_THRESHOLD
    assert len(list((tmp_path / "out").iterdir())) == 3
    # Run in a process that goes on (a test, a script): its collector as it was.
    assert (frozen_after, young_after) == (0, DEFAULT_YOUNG)


def test_one_file_keeps_the_collector_as_it_was(folder: Path, tmp_path: Path) -> None:
    status, frozen, young, *_ = convert_and_report(folder / "adt0.hl7", "--out", tmp_path / "out")
    assert status == 0
    assert (frozen, young) == (0, DEFAULT_YOUNG)


def test_jobs_leave_the_runs_own_collector_alone(folder: Path, tmp_path: Path) -> None:
    """With --jobs the conversion processes settle their heaps; the run's process, which
    only reads and writes, keeps CPython's settings."""
    status, frozen, young, *_ = convert_and_report(folder, "--out", tmp_path / "out", "--jobs", "2")
    assert status == 0
    assert (frozen, young) == (0, DEFAULT_YOUNG)
