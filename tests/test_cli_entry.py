"""The ``passerelle`` console script handles Ctrl-C from the first line of its entry point
(:mod:`listeners.entry`), before the command's modules are imported. Real processes
running the installed console script."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.support.stop_signals import interrupt_at_delays, start_when_ready

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples" / "hl7v2"
ADT_A01 = SAMPLES / "ADT_A01_admission-full.hl7"
PASSERELLE = Path(sys.executable).parent / "passerelle"
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}

#: Runs the console script as the interpreter would (its argv[0], ``__main__``), after a
#: finder that sends the process SIGINT when MODULE is first imported, or, with a delay
#: (seconds), that writes a byte to READY_FD then, so that the test sends SIGINT itself
#: that long after.
LAUNCHER = """
import os, runpy, signal, sys
script, module, delay, *args = sys.argv[1:]

class At:
    def find_spec(self, name, path=None, target=None):
        if name == module:
            sys.meta_path.remove(self)
            if delay == "-":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                os.write(int(os.environ["READY_FD"]), b"!")
        return None

sys.meta_path.insert(0, At())
sys.argv = [script, *args]
runpy.run_path(script, run_name="__main__")
"""
LAUNCH = [sys.executable, "-c", LAUNCHER, str(PASSERELLE)]


def test_the_console_script_is_the_entry_package() -> None:
    """What the tests below run is what the project declares."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["passerelle"] == "listeners.entry:main"
    assert "from listeners.entry import main" in PASSERELLE.read_text(), (
        "reinstall the package (pip install -e .): the console script predates its entry"
    )


@pytest.mark.parametrize("module", ["listeners.cli", "listeners.errors", "converter"])
def test_ctrl_c_while_the_listeners_package_is_imported_exits_130_quietly(module: str) -> None:
    """The script imported listeners.cli, whose handler came after its imports and the
    loading of the module itself: a KeyboardInterrupt traceback."""
    result = subprocess.run(
        [sys.executable, "-c", LAUNCHER, PASSERELLE, module, "-", "convert", ADT_A01],
        capture_output=True,
        cwd=REPO,
        env=ENV,
        timeout=120,
    )
    assert result.returncode == 130, result.stderr
    assert result.stderr == b""
    assert result.stdout == b""


def test_ctrl_c_at_random_early_delays_never_prints_a_traceback() -> None:
    """SIGINT sent from outside at random delays from the start of the first import after
    the entry's handler (listeners.cli) through the command's imports."""
    chooser = random.Random(20261130)
    delays = [0.0, 0.0005, 0.001] + [chooser.uniform(0, 0.06) for _ in range(17)]
    outcomes = interrupt_at_delays(
        [*LAUNCH, "listeners.cli", "ready", "convert", str(ADT_A01)], delays
    )
    # 0 only if the conversion finished before the signal (a very fast machine).
    assert set(outcomes) <= {130, 0}, outcomes
    assert outcomes[0] == 130


def test_a_command_interrupted_after_start_up_still_reports_how_far_it_went(
    tmp_path: Path,
) -> None:
    """Past the imports, Ctrl-C is a KeyboardInterrupt again: convert stops, says how far
    it went and prints its summary (the entry's quiet exit does not swallow it)."""
    process = start_when_ready(
        [*LAUNCH, "converter.cli_output", "0", "convert", str(SAMPLES), "--out", str(tmp_path)]
    )
    deadline = time.monotonic() + 120
    while not any(tmp_path.glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()
    assert b"interrupted after " in stderr
    assert b"Traceback" not in stderr


def test_importing_the_entry_leaves_the_importers_sigint_alone() -> None:
    code = (
        "import signal, listeners.entry; "
        "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, cwd=REPO, env=ENV, timeout=120
    )
    assert result.returncode == 0, result.stderr
