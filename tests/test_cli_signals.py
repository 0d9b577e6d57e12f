"""Every ``passerelle`` command on a closed stdout (exit 141, silent, as ``convert``) and
on Ctrl-C at any point, the imports of start-up included (exit 130, no traceback). Real
processes running the installed ``passerelle`` console script."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.stop_signals import interrupt_at_delays

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples" / "hl7v2"
ADT_A01 = SAMPLES / "ADT_A01_admission-full.hl7"
PASSERELLE = Path(sys.executable).parent / "passerelle"
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


# -- a closed standard output -----------------------------------------------------------------
@pytest.mark.parametrize(
    "command",
    [
        ["templates", "list"],
        ["serve", "--print-config"],
        ["convert", str(ADT_A01)],
    ],
)
def test_every_command_ends_quietly_with_141_on_a_closed_stdout(
    command: list[str], tmp_path: Path
) -> None:
    # A pipe whose reader is gone before the child writes (`| head -1` done reading):
    # templates list and serve --print-config exited 0, convert 141.
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = subprocess.run(
            [PASSERELLE, *command],
            stdout=writer,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
            env=ENV,
            timeout=120,
        )
    finally:
        os.close(writer)
    assert result.returncode == 141, result.stderr
    assert result.stderr == b""


@pytest.mark.parametrize("command", [["templates", "list"], ["convert", str(ADT_A01)]])
def test_a_stdout_closed_from_the_start_is_a_usage_error(command: list[str]) -> None:
    # `passerelle templates list >&-` printed nothing and exited 0; convert said so (2).
    result = subprocess.run(
        [PASSERELLE, *command],
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
        env=ENV,
        timeout=120,
        preexec_fn=lambda: os.close(1),
    )
    assert result.returncode == 2
    assert result.stderr.decode().startswith("passerelle: standard output is closed")


# -- Ctrl-C during start-up ---------------------------------------------------------------------
#: Runs the console script as the interpreter would (same argv[0], ``__main__``), after
#: a finder that sends the process SIGINT when MODULE is first imported: an interrupt at
#: an exact point of the start-up, whatever the speed of the machine.
LAUNCHER = """
import os, runpy, signal, sys
script, module, *args = sys.argv[1:]

class InterruptAt:
    def find_spec(self, name, path=None, target=None):
        if name == module:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, InterruptAt())
sys.argv = [script, *args]
runpy.run_path(script, run_name="__main__")
"""


@pytest.mark.parametrize(
    "module",
    [
        "argparse",  # the first import after the handler
        "asyncio",
        "converter",
        "converter.cda.document",
        "jinja2",
        "listeners.config",
        "listeners.mllp.client",
    ],
)
def test_ctrl_c_while_importing_exits_130_without_a_traceback(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", LAUNCHER, PASSERELLE, module, "convert", ADT_A01],
        capture_output=True,
        cwd=REPO,
        env=ENV,
        timeout=120,
    )
    # It was a KeyboardInterrupt traceback through the imports, status 1 or -SIGINT.
    assert result.returncode == 130, result.stderr
    assert result.stderr == b""
    assert result.stdout == b""


#: The same, with SIGINT sent when the program calls FUNCTION (module.attribute) first.
LAUNCHER_AT_CALL = """
import importlib, os, runpy, signal, sys
script, function, *args = sys.argv[1:]
module_name, *attributes, name = function.split(".")
owner = importlib.import_module(module_name)
for attribute in attributes:
    owner = getattr(owner, attribute)
original = getattr(owner, name)

def interrupting(*positional, **named):
    setattr(owner, name, original)
    os.kill(os.getpid(), signal.SIGINT)
    return original(*positional, **named)

setattr(owner, name, interrupting)
sys.argv = [script, *args]
runpy.run_path(script, run_name="__main__")
"""


@pytest.mark.parametrize(
    "function",
    [
        "argparse.ArgumentParser",  # building the parser (it was outside main's handlers)
        "argparse.ArgumentParser.parse_args",
        "sys.exit",  # main has returned: the way out
    ],
)
def test_ctrl_c_around_the_command_exits_130_without_a_traceback(function: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", LAUNCHER_AT_CALL, PASSERELLE, function, "templates", "list"],
        capture_output=True,
        cwd=REPO,
        env=ENV,
        timeout=120,
    )
    assert result.returncode == 130, result.stderr
    assert b"Traceback" not in result.stderr


def test_ctrl_c_at_any_delay_after_the_handler_exits_130_without_a_traceback() -> None:
    """SIGINT at several delays, from just after the handler is installed through the
    imports, the option parsing, the template loading and the conversion."""
    ready = """
import os, sys
class Ready:
    def find_spec(self, name, path=None, target=None):
        if name == "argparse":  # listeners.cli's first import after its handler
            sys.meta_path.remove(self)
            os.write(int(os.environ["READY_FD"]), b"!")
        return None
sys.meta_path.insert(0, Ready())
"""
    launcher = ready + LAUNCHER.replace("import os, runpy, signal, sys", "import runpy, signal")
    outcomes = interrupt_at_delays(
        [sys.executable, "-c", launcher, str(PASSERELLE), "-", "convert", str(SAMPLES)],
        [0.0, 0.01, 0.03, 0.06, 0.1, 0.2, 0.35, 0.5, 0.8, 1.2],
    )
    # 0 only if the whole folder was converted before the signal (a very fast machine).
    assert set(outcomes) <= {130, 0}, outcomes
    assert outcomes[0] == 130


def test_an_ignored_sigint_stays_ignored() -> None:
    """``passerelle convert … &`` in a script starts with SIGINT ignored: the start-up
    handler must not make it interruptible."""
    process = subprocess.Popen(
        [PASSERELLE, "convert", ADT_A01],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=ENV,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    for _ in range(5):
        time.sleep(0.1)
        process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert stdout.startswith(b'{"resourceType":"Bundle"')


def test_importing_the_cli_leaves_the_importers_sigint_alone() -> None:
    """Only the program installs the start-up handler: a test run (or any program)
    importing listeners.cli keeps its own Ctrl-C."""
    code = (
        "import signal, listeners.cli as cli; "
        "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler; "
        "assert cli.main(['templates', 'list']) == 0; "
        "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, cwd=REPO, env=ENV, timeout=120
    )
    assert result.returncode == 0, result.stderr
