"""``passerelle convert --out`` stopped by SIGTERM: the bundle being written is removed (no
hidden ``.passerelle-*.tmp`` left in the folder) and the exit status is 143. Real
processes running the installed ``passerelle`` console script."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.stop_signals import (
    ENV,
    LAUNCHER,
    PASSERELLE,
    REPO,
    SAMPLES,
    assert_complete_bundles,
    big_oru,
    left_over,
)


def run_interrupted(
    function: str, when: str, kind: str, out: Path
) -> subprocess.CompletedProcess[bytes]:
    launcher = [sys.executable, "-c", LAUNCHER, str(PASSERELLE), function, when, kind]
    launcher.append(str(signal.SIGTERM))
    return subprocess.run(
        [*launcher, "convert", str(SAMPLES), "--out", str(out), "--no-validate"],
        capture_output=True,
        cwd=REPO,
        env=ENV,
        timeout=300,
    )


def test_sigterm_while_a_bundle_is_renamed_into_place_leaves_no_hidden_file(
    tmp_path: Path,
) -> None:
    """SIGTERM's default action ended the process on the spot: the hidden file of the
    bundle being written stayed in --out (exit -15)."""
    result = run_interrupted("replace", "before", "bundle", tmp_path)
    stderr = result.stderr.decode()
    assert result.returncode == 143, stderr
    assert left_over(tmp_path) == []
    assert "Traceback" not in stderr
    assert "terminated after 0 of " in stderr
    assert_complete_bundles(tmp_path)


@pytest.mark.parametrize("kind", ["bundle", "probe"])
def test_sigterm_just_after_a_hidden_file_is_created_leaves_none(tmp_path: Path, kind: str) -> None:
    """The signal lands between the creation of a hidden file and the code that removes it
    on failure (a bundle's; the probe of --out, a tempfile that SIGTERM and Ctrl-C could
    leave too): the run's own cleanup removes it."""
    result = run_interrupted("open", "after", kind, tmp_path)
    assert result.returncode == 143, result.stderr.decode()
    assert left_over(tmp_path) == []
    assert "Traceback" not in result.stderr.decode()


def test_sigterm_from_outside_during_the_write_of_a_large_bundle(tmp_path: Path) -> None:
    """``kill`` (a scheduler's timeout, ``docker stop``) while a bundle is written: the
    moment its hidden file appears in --out."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for number in range(3):
        (inputs / f"oru{number}.hl7").write_bytes(big_oru(1000))
    caught = 0
    for attempt in range(3):
        out = tmp_path / f"out{attempt}"
        out.mkdir()
        process = subprocess.Popen(
            [PASSERELLE, "convert", str(inputs), "--out", str(out), "--pretty", "--no-validate"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=REPO,
            env=ENV,
        )
        deadline = time.monotonic() + 240
        while process.poll() is None and time.monotonic() < deadline:
            if any(name.startswith(".passerelle-") for name in os.listdir(out)):
                caught += 1
                break
            time.sleep(0.0002)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 143, stderr.decode()
        assert b"Traceback" not in stderr
        assert left_over(out) == []
        assert_complete_bundles(out)
        if caught:
            break
    assert caught, "the hidden file was never seen: the test did not test the write"


def test_an_ignored_sigterm_stays_ignored(tmp_path: Path) -> None:
    """Started with SIGTERM ignored (``nohup``-like supervisors), convert does not make it
    fatal."""
    process = subprocess.Popen(
        [PASSERELLE, "convert", str(SAMPLES / "ADT_A01_admission-full.hl7"), "--out", tmp_path],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=ENV,
        preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN),
    )
    for _ in range(5):
        time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr.decode()
    assert (tmp_path / "ADT_A01_admission-full.json").is_file()
