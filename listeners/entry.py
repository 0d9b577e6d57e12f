"""The ``passerelle`` console script's entry point: Ctrl-C is handled from its first line.

The console script imports this module, then calls :func:`main`. When it imported
``listeners.cli`` directly, the command's imports and the loading of ``listeners/cli.py``
itself ran before that module could install its handler, under Python's default one: a
Ctrl-C in those milliseconds printed a KeyboardInterrupt traceback. Only the
``listeners`` package's ``__init__`` runs before the handler below, and it imports
nothing (its public names are loaded on first use for that reason). What Python itself
does before any package's code (its standard streams, ``site`` and the ``.pth`` files of
the environment) stays out of reach.
"""

from __future__ import annotations

# _signal: the C module Python loads at start-up; ``signal`` would first build its enums,
# a millisecond more of the window this package exists to close.
import _signal  # type: ignore[import-not-found]
import os
import sys

TYPE_CHECKING = False  # not typing's: importing it alone takes milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["main", "quiet_interrupts", "run_quietly"]

#: 128 + SIGINT, what a shell reports for a command it interrupted.
_EXIT_INTERRUPTED = 130


def _exit_interrupted(signum: int, frame: object) -> None:
    """Ctrl-C while the command's modules are imported, or on the way out: exit 130 with
    nothing more than what was already written (only what is buffered is flushed)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, RuntimeError, ValueError):  # closed pipe; a write interrupted
            pass
    os._exit(_EXIT_INTERRUPTED)


def _started_as_program(as_main: bool) -> bool:
    """The ``passerelle`` script (or ``python -m listeners.cli``), not an import by another
    program (a test run: its Ctrl-C stays its own)."""
    return as_main or os.path.basename(sys.argv[0] if sys.argv else "") in (
        "passerelle",
        "passerelle.exe",
    )


def quiet_interrupts(as_main: bool = False) -> bool:
    """Install the quiet Ctrl-C handler when this process is the ``passerelle`` command
    and SIGINT has Python's default handler (an ignored one, ``nohup`` or ``cmd &`` in a
    script, stays ignored); whether it did."""
    quiet = _started_as_program(as_main) and (
        _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler
    )
    if quiet:
        _signal.signal(_signal.SIGINT, _exit_interrupted)
    return bool(quiet)


def run_quietly(command: Callable[[], int]) -> int:
    """Run ``command`` with Ctrl-C as a KeyboardInterrupt again (``convert`` says how far
    it went, ``serve``'s event loop installs its own handler over it), and quiet again on
    the way out (``sys.exit``, the interpreter's shutdown)."""
    import signal

    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return command()
    except KeyboardInterrupt:  # between the line above and the command's own handlers
        return _EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, _exit_interrupted)


_QUIET = quiet_interrupts()


def main() -> int:
    """Import the command line (the slow part) under the quiet handler, then run it."""
    from listeners import cli

    return run_quietly(cli.main) if _QUIET else cli.main()
