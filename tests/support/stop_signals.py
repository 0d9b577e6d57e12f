"""What the tests of ``passerelle convert`` stopped by a signal (SIGTERM, SIGHUP) share:
a launcher that sends the signal at an exact point of a write, and checks of --out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples" / "hl7v2"
PASSERELLE = Path(sys.executable).parent / "passerelle"
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}

#: Runs the console script after wrapping ``os.<function>`` so that its first call on a
#: hidden file of KIND (``bundle``, or ``probe``: the check that --out is writable) sends
#: the process SIGNUM: the signal lands at an exact point of the write, whatever the
#: speed of the machine. ``after``: once the call is made (the file exists), else before.
LAUNCHER = """
import os, runpy, sys
script, function, when, kind, signum, *args = sys.argv[1:]
original = getattr(os, function)

def interrupting(path, *positional, **named):
    name = os.path.basename(str(path))
    if not name.startswith(".passerelle-") or ("-probe-" in name) != (kind == "probe"):
        return original(path, *positional, **named)
    setattr(os, function, original)
    if when == "after":
        result = original(path, *positional, **named)
        os.kill(os.getpid(), int(signum))
        return result
    os.kill(os.getpid(), int(signum))
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


def start_when_ready(command: list[str]) -> subprocess.Popen[bytes]:
    """Start ``command`` (stdout discarded, stderr piped) and return once it has written a
    byte to ``READY_FD`` (its launcher says when: an import reached, a call made)."""
    reader, writer = os.pipe()
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env={**ENV, "READY_FD": str(writer)},
        pass_fds=(writer,),
    )
    os.close(writer)
    assert os.read(reader, 1) == b"!"
    os.close(reader)
    return process


def interrupt_at_delays(command: list[str], delays: list[float]) -> list[int]:
    """Run ``command`` once per delay (:func:`start_when_ready`), send it SIGINT that long
    after it is ready. The exit statuses, in order; no run may print a traceback."""
    outcomes = []
    for delay in delays:
        process = start_when_ready(command)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        assert b"Traceback" not in stderr, (delay, stderr.decode())
        outcomes.append(process.returncode)
    return outcomes
