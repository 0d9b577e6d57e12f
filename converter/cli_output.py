"""What ``passerelle convert`` writes: bundles (stdout or ``--out``), failure lines, the
closing summary and the progress bar; and how a run stopped by SIGTERM or SIGHUP removes
the bundle it was writing and ends quietly when stderr went away with the terminal. Split
out of :mod:`converter.cli`; the inputs are walked in :mod:`converter.cli_convert`."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

from .errors import ConversionError
from .printable import printable

__all__ = [
    "BUNDLE_MODE",
    "STOP_SIGNALS",
    "BundleWriter",
    "Bundled",
    "OutputClash",
    "Progress",
    "Summary",
    "Terminated",
    "catch_stop_signals",
    "check_writable",
    "failure_line",
    "output_name",
    "remove_unfinished",
    "silence_closed_pipe",
    "tell_stopping",
    "type_key",
]


def output_name(source: Path, index: int, *, several: bool) -> str:
    """``<stem>.json``, or ``<stem>.<n>.json`` for message n of a file holding several."""
    return f"{source.stem}.{index}.json" if several else f"{source.stem}.json"


class OutputClash(Exception):
    """A bundle would overwrite one written earlier in the same run."""


class Bundled(Protocol):
    """What :class:`BundleWriter` writes: a Conversion, or its text made in a ``--jobs``
    process (:class:`~converter.cli_work.Converted`)."""

    @property
    def index(self) -> int: ...

    def to_json(self, *, pretty: bool = False) -> str: ...


class BundleWriter:
    """Writes each bundle to stdout, or to its ``output_name`` in the ``--out`` folder.

    Two inputs can map to one name (``dup.hl7`` and ``dup.txt``; ``x.hl7`` holding
    several messages and ``x.1.hl7``). A name written in this run is never overwritten:
    the later bundle raises :class:`OutputClash` and is counted as failed, so the summary
    matches the files on disk. A file left by an earlier run is overwritten as before.
    Written files are remembered by device and inode, not by name, so a case-insensitive
    file system (``A.hl7`` and ``a.hl7``) or a symbolic link cannot hide a clash.
    """

    def __init__(self, folder: Path | None, *, pretty: bool, stdout: TextIO) -> None:
        self._folder = folder
        self._pretty = pretty
        self._stdout = stdout
        self._written: dict[tuple[int, int], str] = {}
        #: A bundle is being printed on stdout: stopped now, its JSON there is cut off.
        self.printing = False

    def write(
        self, result: Bundled, source: Path, *, several: bool, label: str | None = None
    ) -> None:
        """``label`` names the input in a clash (``<stdin>``), ``source`` gives the
        file name (``stdin.json``)."""
        text = result.to_json(pretty=self._pretty) + "\n"
        if self._folder is None:
            self.printing = True
            _write_utf8(self._stdout, text)
            self.printing = False  # not in a ``finally``: stopped, the bundle stays cut off
            return
        target = self._folder / output_name(source, result.index, several=several)
        existing = _file_id(target)
        earlier = self._written.get(existing) if existing is not None else None
        if earlier is not None:
            raise OutputClash(
                f"{target} was already written in this run for {earlier} (give the inputs "
                "distinct names, or convert them to separate --out folders)"
            )
        _write_whole(target, text)
        file_id = _file_id(target)
        if file_id is not None:
            name = label or str(source)
            self._written[file_id] = f"{name} message {result.index}" if several else name


def _write_utf8(stream: TextIO, text: str) -> None:
    """JSON is UTF-8 (RFC 8259), whatever the locale: through the byte stream under
    ``stream`` when there is one. In a Latin-9 locale (``LANG=fr_FR.ISO-8859-15``,
    ``PYTHONIOENCODING``) each bundle holding a character the locale's charset lacks
    (``Œdème``) failed as ``internal error UnicodeEncodeError``, and the others were
    printed in the locale's charset."""
    buffer = getattr(stream, "buffer", None)
    if buffer is None:  # a stream without bytes under it (a StringIO in a test)
        stream.write(text)
        stream.flush()
        return
    stream.flush()  # what was written as text before goes first
    buffer.write(text.encode("utf-8"))
    # Bundle by bundle: a reader sees each one at once, and a reader that has gone away
    # (``| head``) is noticed here, not in the flush at exit.
    buffer.flush()


class Terminated(BaseException):
    """SIGTERM or SIGHUP during ``convert``: unwinds like Ctrl-C (not an ``Exception``: no
    input's error handling takes it), so that the bundle being written is removed, not
    left as a hidden ``.passerelle-*.tmp`` file in ``--out`` (the default action of both
    signals ends the process on the spot). ``signum`` is the signal received: the exit
    status is 128 + it."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = signum


#: The signals that stop a run the way SIGTERM does. SIGHUP: the terminal was closed or
#: the ssh session dropped (stderr may be gone with it).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _terminate(signum: int, frame: object) -> None:
    # A second stop signal during the unwinding ends the process at once, as it used to
    # (and cannot raise a second Terminated into the cleanup of the first).
    for other in STOP_SIGNALS:
        if signal.getsignal(other) is _terminate:
            signal.signal(other, signal.SIG_DFL)
    raise Terminated(signum)


def catch_stop_signals() -> Callable[[], None]:
    """Make SIGTERM and SIGHUP raise :class:`Terminated`; return what puts the defaults
    back.

    Not over an ignored signal (``nohup`` ignores SIGHUP; a supervisor may ignore SIGTERM:
    it stays ignored) nor over another program's handler (``convert`` run from a test or
    a service), and only where Python can install one (the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    caught = [s for s in STOP_SIGNALS if signal.getsignal(s) is signal.SIG_DFL]
    for signum in caught:
        signal.signal(signum, _terminate)

    def restore() -> None:
        for signum in caught:
            if signal.getsignal(signum) is _terminate:
                signal.signal(signum, signal.SIG_DFL)

    return restore


_temporary_numbers = itertools.count()
#: Hidden files of bundles being written, from just before each is created until it is
#: renamed or removed: what :func:`remove_unfinished` deletes when the run is stopped
#: (SIGTERM, SIGHUP) at a point where ``_write_whole``'s own cleanup may not run.
_unfinished: set[Path] = set()


def remove_unfinished() -> None:
    """Delete the hidden files of bundles whose writing was cut off (the run is stopping).

    A name may be listed just before its file exists, or just after it was renamed: the
    file is then absent, which is not an error. Each name holds this process's id and a
    number of its own, so nothing another run is writing is touched."""
    for temporary in list(_unfinished):
        with contextlib.suppress(OSError):
            temporary.unlink()
        _unfinished.discard(temporary)


def check_writable(folder: Path) -> None:
    """Create and remove a hidden file in ``folder``: ``OSError`` when nothing can be
    written there. Listed in the unfinished files while it exists, as a bundle's."""
    while True:
        probe = folder / f".passerelle-{os.getpid()}-probe-{next(_temporary_numbers)}.tmp"
        _unfinished.add(probe)
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            _unfinished.discard(probe)  # not ours
            continue
        except OSError:
            _unfinished.discard(probe)
            raise
        probe.unlink()
        _unfinished.discard(probe)
        return


#: A bundle file's mode: the owner's only, as the service's folder destinations write
#: them. Bundles hold patient data; with the umask's mode (``0644`` under the usual
#: ``022``) every user of the host could read them.
BUNDLE_MODE = 0o600


def _write_whole(target: Path, text: str) -> None:
    """Write ``target`` whole or not at all: through a hidden file in the same folder,
    renamed over the target once complete. A full disk, a write error or Ctrl-C midway
    leaves no empty or truncated ``.json`` for a loader to pick up, and keeps the file of
    an earlier run intact; the hidden file is removed (and never read as an input). The
    file is :data:`BUNDLE_MODE` (a stricter umask still applies)."""
    while True:
        # A short name of its own: ``.<target>.tmp`` would pass the 255-byte limit of a
        # file name first, and fail a bundle whose own name fits. O_EXCL: never write
        # through a link planted under that name, nor into one left by a run killed
        # (kill -9) with the same process id (a container's).
        temporary = target.with_name(f".passerelle-{os.getpid()}-{next(_temporary_numbers)}.tmp")
        _unfinished.add(temporary)  # before it exists: a signal may come in between
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, BUNDLE_MODE)
            break
        except FileExistsError:
            _unfinished.discard(temporary)  # not ours
            continue
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    finally:
        _unfinished.discard(temporary)


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:  # not written yet (or unreadable: the write then reports it)
        return None
    return stat.st_dev, stat.st_ino


def type_key(message_type: str | None) -> str:
    """A message type as the summary counts it: HL7 v2 ``code^trigger`` (MSH-9.3, the
    structure, left out: ``ADT^A01^ADT_A01`` is ``ADT^A01``), a CDA document type as it
    is, ``?`` when unknown."""
    if not message_type:
        return "?"
    return "^".join(message_type.split("^")[:2])


@dataclass
class Summary:
    converted: int = 0
    failed: int = 0
    #: Files in a folder that are neither HL7 v2 nor XML (a README), pipes, editor backups
    #: and unfinished transfers: not counted as failed.
    skipped: int = 0
    #: Of ``skipped``, those left out by their name (``a.hl7~``, ``a.tmp``).
    skipped_backups: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    failed_by_type: Counter[str] = field(default_factory=Counter)

    def add_converted(self, message_type: str | None) -> None:
        self.converted += 1
        self.by_type[type_key(message_type)] += 1

    def add_failed(self, message_type: str | None) -> None:
        self.failed += 1
        self.failed_by_type[type_key(message_type)] += 1

    def add_skipped(self, *, backup: bool = False) -> None:
        self.skipped += 1
        if backup:
            self.skipped_backups += 1

    def print(self, out: TextIO) -> None:
        counts = f"converted {self.converted}, failed {self.failed}"
        if self.skipped:
            counts += f", skipped {self.skipped}"
            if self.skipped_backups:
                counts += f" ({self.skipped_backups} backup or temporary)"
        print(counts, file=out)
        if self.by_type:
            print(f"  converted by type: {_counts(self.by_type)}", file=out)
        if self.failed_by_type:
            print(f"  failed by type: {_counts(self.failed_by_type)}", file=out)


def _counts(counter: Counter[str]) -> str:
    return printable(", ".join(f"{t}: {n}" for t, n in sorted(counter.items())))


def failure_line(path: Path | str, error: ConversionError, *, verbose: bool) -> str:
    parts = [f"FAILED {path}"]
    if error.control_id:
        parts.append(f"control-id={error.control_id}")
    if error.message_type:
        parts.append(f"type={error.message_type}")
    parts.append(f"{type(error).__name__}: {error.reason}")
    if error.location:
        parts.append(f"at {error.location}")
    if error.template:
        parts.append(f"in {error.template}")
    if verbose and error.detail:
        parts.append(f"[{error.detail}]")
    return printable(" ".join(parts))


class Progress:
    """A one-line progress bar on a terminal. Lines printed during the run go through
    :meth:`say`, which clears the bar first: a ``FAILED`` line starts its own line instead
    of trailing the bar (``[#####...] 9/11FAILED …``), and the bar is drawn again below."""

    def __init__(self, total: int, out: TextIO) -> None:
        self._total = total
        self._out = out
        self._done = 0
        self._drawn = False

    def update(self, done: int) -> None:
        self._done = done
        width = 30
        filled = width * done // self._total
        self._out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self._total}")
        self._out.flush()
        self._drawn = True

    def say(self, line: str) -> None:
        if self._drawn:
            self._out.write("\r\x1b[K")  # back to the start of the line, and erase it
        self._out.write(line + "\n")
        if self._drawn:
            self.update(self._done)

    def close(self) -> None:
        """End the bar's line (once), so that what follows starts a line of its own."""
        if self._drawn:
            self._out.write("\n")
            self._out.flush()
            self._drawn = False


def silence_closed_pipe() -> None:
    """After a reader closed our stdout or stderr (``| head``): point both at /dev/null,
    so that what is still buffered is dropped at exit instead of raising a second
    ``BrokenPipeError`` ("Exception ignored ...") from the interpreter's final flush."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        # A stream without a descriptor (replaced in a test) has nothing left to flush.
        # None: started without it (``>&-``).
        with contextlib.suppress(AttributeError, OSError, ValueError):
            os.dup2(devnull, stream.fileno())
    os.close(devnull)


def tell_stopping(write: Callable[[], None]) -> None:
    """Run ``write`` (the closing lines of a stopped run) and flush stdout and stderr, none
    of it an error when they are gone: after SIGHUP the terminal they went to is closed
    (a write there fails with EIO) or the pipe of a dropped ssh session has no reader
    (EPIPE). What cannot be written is dropped, as :func:`silence_closed_pipe` does for a
    closed pipe, so that neither this run nor the interpreter's last flush fails on it."""
    try:
        write()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):  # ValueError: a stream already closed
        silence_closed_pipe()
