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
    from collections.abc import Callable, Iterable

__all__ = [
    "EarlyStops",
    "defer_stops",
    "main",
    "pending_stop",
    "quiet_interrupts",
    "run_quietly",
]

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


#: The commands whose event loop stops them gracefully (listeners.stop_signals).
_SERVICES = ("serve", "worker")


class EarlyStops:
    """The handler :func:`defer_stops` installs for SIGTERM and SIGHUP: it keeps the first
    of them that comes. The signal module holds it, so the service's
    :func:`~listeners.stop_signals.install_stop_handlers` finds it among the handlers it
    replaces (:func:`pending_stop`): no module state, and nothing stale for a later
    service of the same process (a test's), whose handlers are the event loop's."""

    __slots__ = ("signum",)

    def __init__(self) -> None:
        #: The first stop signal that came before the event loop took the signals over.
        self.signum: int | None = None

    def __call__(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum = signum


def defer_stops(as_main: bool = False) -> bool:
    """For ``passerelle serve`` and ``worker``: keep a SIGTERM or SIGHUP that comes before
    their event loop installs its handlers (the imports alone take seconds on a loaded
    host) in an :class:`EarlyStops` handler, instead of Python's default, which ended the
    process on the spot (status -15). Nothing was lost then (no port bound, the queue not
    yet opened), but the supervisor saw a killed process, not a stop; now the service
    stops as for a later signal: without starting, exit status 0. A signal the parent
    ignores (``nohup``) stays ignored. Whether it did."""
    if not _started_as_program(as_main) or "multiprocessing" in sys.modules:
        # A conversion process re-runs the script (spawned, it imports __main__ again)
        # with the service's argv: there SIGTERM must keep its default, which is how
        # ProcessPoolExecutor ends the survivors of a broken pool.
        return False
    words = [word for word in sys.argv[1:] if not word.startswith("-")]
    if not words or words[0] not in _SERVICES:
        return False
    keeper = EarlyStops()
    for signum in (_signal.SIGTERM, _signal.SIGHUP):
        if _signal.getsignal(signum) == _signal.SIG_DFL:
            _signal.signal(signum, keeper)
    return True


def pending_stop(replaced: Iterable[object]) -> int | None:
    """The stop signal an :class:`EarlyStops` among ``replaced`` (the handlers the event
    loop's took the place of) kept, if one came."""
    for handler in replaced:
        if isinstance(handler, EarlyStops) and handler.signum is not None:
            return handler.signum
    return None


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


defer_stops()  # first: once SIGINT is quiet (a test waits for it), SIGTERM is kept too
_QUIET = quiet_interrupts()


def main() -> int:
    """Import the command line (the slow part) under the quiet handler, then run it."""
    from listeners import cli

    return run_quietly(cli.main) if _QUIET else cli.main()
