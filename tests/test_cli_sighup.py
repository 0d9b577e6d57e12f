"""``passerelle convert`` stopped by SIGHUP (the terminal closed, the ssh session dropped):
as with SIGTERM, the bundle being written is removed (no hidden ``.passerelle-*.tmp`` left
in ``--out``) and the exit status is 129 (128 + SIGHUP), even when stderr went away with
the terminal; an ignored SIGHUP (``nohup``) stays ignored. Real processes running the
installed ``passerelle`` console script, on a real pseudo-terminal where it matters."""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable
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

ADT_A01 = SAMPLES / "ADT_A01_admission-full.hl7"


def writing_a_bundle(folder: Path) -> bool:
    """A bundle's hidden file is in ``folder`` (not the probe of --out made at the start)."""
    return any(n.startswith(".passerelle-") and "-probe-" not in n for n in os.listdir(folder))


def copies(folder: Path, count: int) -> Path:
    folder.mkdir()
    for number in range(count):
        (folder / f"adt{number}.hl7").write_bytes(ADT_A01.read_bytes())
    return folder


def launch(
    function: str,
    when: str,
    inputs: Path,
    out: Path,
    *,
    stderr: int,
    preexec_fn: Callable[[], object] | None = None,
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *(sys.executable, "-c", LAUNCHER, str(PASSERELLE), function, when, "bundle"),
            *(str(signal.SIGHUP), "convert", str(inputs), "--out", str(out), "--no-validate"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        cwd=REPO,
        env=ENV,
        preexec_fn=preexec_fn,
    )


@pytest.mark.parametrize(("function", "when"), [("replace", "before"), ("open", "after")])
def test_sighup_while_a_bundle_is_written_leaves_no_hidden_file(
    tmp_path: Path, function: str, when: str
) -> None:
    """SIGHUP's default action ended the process on the spot (exit -1): the hidden file of
    the bundle being written stayed in --out."""
    out = tmp_path / "out"
    process = launch(function, when, copies(tmp_path / "in", 3), out, stderr=subprocess.PIPE)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 129, stderr.decode()
    assert left_over(out) == []
    assert "Traceback" not in stderr.decode()
    assert "hung up after 0 of 3 inputs" in stderr.decode()
    assert_complete_bundles(out)


def test_sighup_with_stderr_gone_still_exits_129(tmp_path: Path) -> None:
    """An ssh session dropped: stderr's pipe has no reader any more when the summary is
    written (EPIPE). The summary is dropped; the run neither fails on it nor leaves the
    hidden file."""
    reader, writer = os.pipe()
    os.close(reader)
    out = tmp_path / "out"
    try:
        process = launch("replace", "before", copies(tmp_path / "in", 3), out, stderr=writer)
    finally:
        os.close(writer)
    assert process.wait(timeout=300) == 129
    assert left_over(out) == []
    assert_complete_bundles(out)


def test_an_ignored_sighup_stays_ignored(tmp_path: Path) -> None:
    """``nohup passerelle convert …``: SIGHUP is ignored from the start, and a hang-up in
    the middle of a write changes nothing; every bundle is written."""
    out = tmp_path / "out"
    process = launch(
        "replace",
        "before",
        copies(tmp_path / "in", 3),
        out,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr.decode()
    assert sorted(p.name for p in out.iterdir()) == ["adt0.json", "adt1.json", "adt2.json"]


def _controlling_terminal() -> None:
    """In the child: a session of its own whose controlling terminal is its stdin (the
    pseudo-terminal), as a login shell's command has; closing the terminal's master side
    then hangs it up and the kernel sends SIGHUP."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def on_a_terminal(arguments: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    """``passerelle ARGUMENTS`` with stdin, stdout and stderr on a new pseudo-terminal;
    returns the process and the master side (closing it closes the terminal)."""
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(
            [PASSERELLE, *arguments],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=REPO,
            env=ENV,
            preexec_fn=_controlling_terminal,
        )
    finally:
        os.close(slave)
    return process, master


def test_closing_the_terminal_during_the_write_of_a_large_bundle(tmp_path: Path) -> None:
    """The terminal window closed while a bundle is written to --out: the kernel sends
    SIGHUP, and the terminal the progress bar and summary go to is gone (EIO)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for number in range(3):
        (inputs / f"oru{number}.hl7").write_bytes(big_oru(1000))
    caught = 0
    for attempt in range(3):
        out = tmp_path / f"out{attempt}"
        out.mkdir()
        process, master = on_a_terminal(
            ["convert", str(inputs), "--out", str(out), "--pretty", "--no-validate"]
        )
        deadline = time.monotonic() + 240
        try:
            while process.poll() is None and time.monotonic() < deadline:
                if writing_a_bundle(out):
                    caught += 1
                    break
                time.sleep(0.0002)
        finally:
            os.close(master)
        assert process.wait(timeout=120) == 129
        assert left_over(out) == []
        assert_complete_bundles(out)
        if caught:
            break
    assert caught, "the hidden file was never seen: the test did not test the write"


def test_closing_the_terminal_the_bundles_are_printed_on(tmp_path: Path) -> None:
    """Without --out the bundles go to the terminal: once it is closed, what stdout still
    holds cannot be written either. Exit 129, not a failed final flush (120)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for number in range(3):
        (inputs / f"oru{number}.hl7").write_bytes(big_oru(300))
    process, master = on_a_terminal(["convert", str(inputs), "--no-validate"])
    try:
        assert os.read(master, 100).startswith(b"{"), "no bundle reached the terminal"
    finally:
        os.close(master)
    assert process.wait(timeout=120) == 129
