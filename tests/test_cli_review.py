"""``passerelle convert`` under conditions a hospital meets: a full disk, Ctrl-C, a
terminal, a closed stream, a stray archive in a folder, an output folder nobody can
write to. Real processes, the installed ``passerelle`` entry point (listeners.cli)."""

from __future__ import annotations

import json
import os
import pty
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples" / "hl7v2"
ADT_A01 = SAMPLES / "ADT_A01_admission-full.hl7"  # a 40 KB bundle
ADT_A08 = SAMPLES / "ADT_A08_update-patient.hl7"
COMMAND = [sys.executable, "-m", "listeners.cli", "convert"]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def run(
    *args: str | Path, preexec: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
        timeout=120,
        preexec_fn=preexec,
    )


def on_a_terminal(*args: str | Path, stdout_too: bool = False) -> tuple[int, str]:
    """Run with stderr (and stdout) on a pseudo-terminal; what the terminal received."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [*COMMAND, *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=terminal if stdout_too else subprocess.DEVNULL,
        stderr=terminal,
        cwd=REPO,
        env=ENV,
    )
    os.close(terminal)
    received = bytearray()
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        received += chunk
    os.close(controller)
    return process.wait(timeout=120), received.decode()


def _folder(path: Path, count: int, message: Path = ADT_A08) -> Path:
    path.mkdir()
    for number in range(count):
        (path / f"m{number:03}.hl7").write_bytes(message.read_bytes())
    return path


def _file_size_limit(limit: int) -> Callable[[], None]:
    def limit_file_size() -> None:  # in the child, before exec: writes beyond fail EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_file_size


# -- a write that fails midway leaves no broken .json --------------------------------------
def test_a_bundle_that_fails_midway_leaves_no_partial_file_and_keeps_the_earlier_one(
    tmp_path: Path,
) -> None:
    """A full disk (here a file size limit) once left ``first.json`` truncated at the
    limit, or empty, under its final name: a loader sending ``out/*.json`` to the FHIR
    server read broken JSON, and the good file of the previous run was gone."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    (inputs / "big.hl7").write_bytes(ADT_A01.read_bytes())
    (inputs / "small.hl7").write_bytes(ADT_A08.read_bytes())
    (out / "big.json").write_text('{"resourceType": "Bundle", "earlier": true}\n')
    result = run(inputs, "--out", out, preexec=_file_size_limit(20_000))  # 23 KB, 16 KB
    assert result.returncode == 1, result.stderr
    assert f"FAILED {inputs / 'big.hl7'}: cannot write its bundle: File too large" in (
        result.stderr
    )
    assert "converted 1, failed 1" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["big.json", "small.json"]  # no leftovers
    assert json.loads((out / "big.json").read_text()) == {
        "resourceType": "Bundle",
        "earlier": True,
    }
    assert json.loads((out / "small.json").read_text())["resourceType"] == "Bundle"


# -- Ctrl-C --------------------------------------------------------------------------------
def test_ctrl_c_in_a_folder_ends_with_a_summary_status_130_and_whole_files(
    tmp_path: Path,
) -> None:
    """Once exit status 1 (as if an input had failed), no summary, no newline after the
    bar; a bundle being written at that moment stayed truncated."""
    inputs, out = _folder(tmp_path / "in", 400, ADT_A01), tmp_path / "out"
    process = subprocess.Popen(
        [*COMMAND, str(inputs), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=ENV,
    )
    deadline = time.monotonic() + 60
    while not (out.is_dir() and len(list(out.glob("*.json"))) >= 3):
        assert time.monotonic() < deadline, "no bundle written in 60 s"
        assert process.poll() is None, process.communicate()[1]
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    written = sorted(out.iterdir())
    assert 3 <= len(written) < 400, stderr
    counted = re.search(
        r"^interrupted after (\d+) of 400 inputs\nconverted (\d+), failed 0\n", stderr, re.M
    )
    assert counted is not None, stderr
    # The last bundle may be written, not yet counted, when the signal comes.
    assert counted[1] == counted[2] and int(counted[1]) in (len(written) - 1, len(written))
    for bundle in written:  # every file whole; no hidden temporary file left
        assert not bundle.name.startswith("."), bundle
        assert json.loads(bundle.read_text())["resourceType"] == "Bundle"


# -- the progress bar ----------------------------------------------------------------------
def test_failure_lines_start_their_own_line_under_the_progress_bar(tmp_path: Path) -> None:
    """Once ``[########...] 2/4FAILED …``: the line was glued to the bar."""
    inputs = _folder(tmp_path / "in", 3)
    (inputs / "m001b_bad.hl7").write_bytes(b"MSH|^~\\&|A\rPID|broken\r")
    (inputs / "README.md").write_text("# not a message\n")
    status, screen = on_a_terminal(inputs, "--out", tmp_path / "out", "--no-validate")
    assert status == 1, screen
    assert "] 5/5" in screen  # the bar was drawn
    lines = [line.split("\r")[-1].removeprefix("\x1b[K") for line in screen.split("\r\n")]
    failed = [line for line in lines if "FAILED" in line]
    skipped = [line for line in lines if "SKIPPED" in line]
    assert len(failed) == 1 and failed[0].startswith(f"FAILED {inputs / 'm001b_bad.hl7'} "), screen
    assert len(skipped) == 1 and skipped[0].startswith("SKIPPED "), screen
    assert "converted 3, failed 1, skipped 1" in lines, screen


def test_bundles_printed_on_the_terminal_are_not_prefixed_by_the_bar(tmp_path: Path) -> None:
    inputs = _folder(tmp_path / "in", 3)
    status, screen = on_a_terminal(inputs, "--no-validate", stdout_too=True)
    assert status == 0, screen
    assert "] 1/3" not in screen  # once "[##########....] 1/3{"resourceType"…
    assert screen.count('{"resourceType":"Bundle"') == 3


# -- streams closed at start ---------------------------------------------------------------
def test_a_closed_stderr_still_converts() -> None:
    """Once an AttributeError traceback (to nowhere) and exit 1, no bundle printed."""
    result = run(ADT_A08, preexec=lambda: os.close(2))
    assert result.returncode == 0
    assert json.loads(result.stdout)["resourceType"] == "Bundle"


def test_a_closed_stdout_is_a_usage_error_unless_out_takes_the_bundles(tmp_path: Path) -> None:
    # Once "FAILED … internal error AttributeError at converter/cli_output.py", exit 1.
    result = run(ADT_A08, preexec=lambda: os.close(1))
    assert result.returncode == 2, result.stderr
    assert result.stderr == "passerelle: standard output is closed: give --out DIR\n"
    result = run(ADT_A08, "--out", tmp_path, preexec=lambda: os.close(1))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ADT_A08_update-patient.json").is_file()


# -- a folder's stray archive --------------------------------------------------------------
def test_a_large_file_that_is_not_a_message_is_skipped_without_being_loaded(
    tmp_path: Path,
) -> None:
    """A 600 MB backup next to the messages was read whole into memory to look at its
    first bytes (the process grew by its size) before being skipped."""
    inputs, out = _folder(tmp_path / "in", 1), tmp_path / "out"
    with (inputs / "backup.tar").open("wb") as archive:
        archive.truncate(600 * 1024 * 1024)  # sparse: no disk used
    # Measured from a small launcher: a child's maxrss counts what it held before exec,
    # and a child forked from this test process (pytest, hundreds of MB after a full run)
    # would report pytest's size, not the converter's.
    launcher = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(done.returncode)\n"
    )
    process = subprocess.run(
        [sys.executable, "-c", launcher, *COMMAND, str(inputs), "--out", str(out), "--no-validate"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
        check=False,
    )
    stderr, maxrss = process.stderr, int(process.stdout.split()[-1])
    assert process.returncode == 0, stderr
    assert f"SKIPPED {inputs / 'backup.tar'}: neither HL7 v2 nor XML" in stderr
    assert "converted 1, failed 0, skipped 1" in stderr
    assert maxrss < 400 * 1024, maxrss  # kB; about 100 MB once fixed


# -- an output folder that cannot be written -----------------------------------------------
def test_an_out_folder_that_cannot_be_written_is_a_usage_error_at_the_start(
    tmp_path: Path,
) -> None:
    """Once every input was converted, then failed to be written, one line each (10,000
    lines and minutes for a large folder), exit 1."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if _writable(locked):  # root: the mode means nothing; sysfs takes no new file
        locked = Path("/sys")
        if not locked.is_dir() or _writable(locked):
            pytest.skip("no folder this user cannot write to")
    result = run(ADT_A08, ADT_A01, "--out", locked)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"passerelle: --out {locked} is not writable: ")
    assert result.stderr.count("\n") == 1
    assert not list(locked.glob(".passerelle-*"))


def _writable(folder: Path) -> bool:
    probe = folder / "passerelle-test-probe"
    try:
        probe.touch()
    except OSError:
        return False
    probe.unlink()
    return True
