"""``passerelle convert --out`` stopped by SIGTERM: the bundle being written is removed (no
hidden ``.passerelle-*.tmp`` left in the folder) and the exit status is 143. Real
processes running the installed ``passerelle`` console script."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples" / "hl7v2"
PASSERELLE = Path(sys.executable).parent / "passerelle"
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}

#: Runs the console script after wrapping ``os.<function>`` so that its first call on a
#: hidden file of KIND (``bundle``, or ``probe``: the check that --out is writable) sends
#: the process SIGTERM: the signal lands at an exact point of the write, whatever the
#: speed of the machine. ``after``: once the call is made (the file exists), else before.
LAUNCHER = """
import os, runpy, signal, sys
script, function, when, kind, *args = sys.argv[1:]
original = getattr(os, function)

def interrupting(path, *positional, **named):
    name = os.path.basename(str(path))
    if not name.startswith(".passerelle-") or ("-probe-" in name) != (kind == "probe"):
        return original(path, *positional, **named)
    setattr(os, function, original)
    if when == "after":
        result = original(path, *positional, **named)
        os.kill(os.getpid(), signal.SIGTERM)
        return result
    os.kill(os.getpid(), signal.SIGTERM)
    return original(path, *positional, **named)

setattr(os, function, interrupting)
sys.argv = [script, *args]
runpy.run_path(script, run_name="__main__")
"""


def left_over(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


def assert_complete_bundles(folder: Path) -> None:
    for path in folder.glob("*.json"):
        assert json.loads(path.read_text(encoding="utf-8"))["resourceType"] == "Bundle"


def run_interrupted(
    function: str, when: str, kind: str, out: Path
) -> subprocess.CompletedProcess[bytes]:
    launcher = [sys.executable, "-c", LAUNCHER, str(PASSERELLE), function, when, kind]
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


def big_oru(count: int) -> bytes:
    """An ORU^R01 with ``count`` OBX: a bundle of megabytes, long enough to write that a
    SIGTERM sent from outside can land during the write."""
    text = (SAMPLES / "ORU_R01_20-obx.hl7").read_bytes()
    segments = text.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r")
    results = [s for s in segments if s.startswith(b"OBX")]
    others = [s for s in segments if s and not s.startswith((b"OBX", b"NTE"))]
    body = []
    for number in range(1, count + 1):
        fields = results[number % len(results)].split(b"|")
        fields[1] = str(number).encode()
        body.append(b"|".join(fields))
    return b"\r".join(others + body) + b"\r"


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
