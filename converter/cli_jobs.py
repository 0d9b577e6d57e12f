"""Where ``passerelle convert`` converts: in its own process, or in ``--jobs N`` others.

The run's loop (:mod:`converter.cli_convert`) reads the inputs, writes the bundles and
prints the lines in input order whatever converts them; it hands each :class:`Work` to
one of these and takes the results back in the order it submitted them.

* :class:`InProcess` converts when the result is asked for: one message at a time, as
  the loop streams a batch file.
* :class:`JobPool` converts in N processes (spawned: nothing inherited, each builds its
  own converter from the run's frozen configuration). They ignore Ctrl-C and SIGHUP,
  which a terminal sends to the whole process group: the run's process decides, stops
  them (:meth:`JobPool.stop`) and ends as it does alone. A process that dies (killed
  by the kernel for memory, a crash in a library) takes down what it and the others
  were converting: those are converted again one at a time in new processes, so that
  only the input that kills its process fails, with that reason, and the run goes on.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from .cli_work import Converted, ConvertOptions, Work, convert_work, internal_error
from .convert import Conversion, Converter, ConverterConfig
from .errors import ConfigurationError, ConversionError
from .heap import settle_long_lived

__all__ = [
    "PROCESS_DIED",
    "Converting",
    "InProcess",
    "JobPool",
    "Pending",
    "convert_in_worker",
]

Result = Conversion | Converted | ConversionError
#: The failure of an input whose conversion killed its process, alone.
PROCESS_DIED = (
    "its conversion process died (killed: out of memory? or a crash in a library); "
    "the other inputs converting beside it were converted again"
)


@dataclass(slots=True)
class Pending:
    """A submitted Work, until its result is taken."""

    work: Work
    future: Future[Result] | None = None
    result: Result | None = None


class Converting:
    """Converts the Works submitted to it; results are taken in submission order."""

    #: How many Works the loop keeps submitted ahead of the one it waits for.
    window: int = 1

    def submit(self, work: Work) -> Pending:
        raise NotImplementedError

    def result(self, pending: Pending) -> Result:
        raise NotImplementedError

    def stop(self) -> None:
        """The run is stopping (Ctrl-C, SIGTERM…): what is converting is abandoned."""

    def close(self) -> None:
        """The run is over: release what it used."""


class InProcess(Converting):
    """Converts in the run's own process, when the result is taken."""

    def __init__(self, converter: Converter, options: ConvertOptions) -> None:
        self._converter = converter
        self._options = options

    def submit(self, work: Work) -> Pending:
        return Pending(work)

    def result(self, pending: Pending) -> Result:
        return convert_work(self._converter, pending.work, self._options)


class JobPool(Converting):
    """Converts in ``jobs`` processes; keeps twice as many Works submitted, so that none
    waits while the run writes, and a folder of large documents is never read whole."""

    def __init__(
        self,
        config: ConverterConfig,
        options: ConvertOptions,
        jobs: int,
        *,
        task: Callable[[Work], Result] | None = None,
    ) -> None:
        """``task`` converts one Work in a worker process (a module-level function: it is
        pickled by name); by default, with the converter the worker built."""
        self.window = 2 * jobs
        self._task = task or convert_in_worker
        self._jobs = jobs
        self._config = config
        self._options = options
        self._submitted: list[Pending] = []
        self._executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self._jobs,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self._config, self._options),
        )

    def submit(self, work: Work) -> Pending:
        pending = Pending(work, self._submit(work))
        self._submitted.append(pending)
        return pending

    def _submit(self, work: Work) -> Future[Result]:
        # The executor starts its processes in submit(). Until their initializer ignores
        # them, a Ctrl-C or SIGHUP sent to the group would end one with a traceback
        # mid-import: they are blocked while it starts them (a process inherits the
        # blocked set), and dropped once ignored.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _IGNORED_SIGNALS)
        try:
            return self._executor.submit(self._task, work)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def result(self, pending: Pending) -> Result:
        if pending.result is None:
            assert pending.future is not None
            try:
                pending.result = pending.future.result()
            except BrokenProcessPool:
                self._convert_again()
            except ConfigurationError:
                raise  # a usage error (a template folder gone midway): exit 2
            except Exception as exc:  # a result that could not be sent back, say
                pending.result = internal_error(exc)
        self._submitted.remove(pending)
        assert pending.result is not None
        return pending.result

    def _convert_again(self) -> None:
        """A process died: every Work it and the others did not finish converts again,
        alone, in new processes; one that kills its process again is the culprit."""
        self._restart()
        for pending in self._submitted:
            future = pending.future
            if pending.result is not None or future is None:
                continue
            if future.done() and not future.cancelled() and future.exception() is None:
                pending.result = future.result()
                continue
            work = pending.work
            try:
                pending.result = self._submit(work).result()
            except BrokenProcessPool:
                where = f"message {work.index}: " if work.total > 1 else ""
                pending.result = ConversionError(where + PROCESS_DIED)
                self._restart()
            except ConfigurationError:
                raise
            except Exception as exc:
                pending.result = internal_error(exc)

    def _restart(self) -> None:
        """A broken executor ended, its processes with it, and a new one in its place.

        Not ``shutdown(wait=True)``: a process the executor started as it broke is left
        running (CPython 3.11 terminates those it had), blocked sending a result no one
        reads, while the executor's thread waits to hand it a task: the run hung."""
        self.stop()
        self._executor = self._start()

    def stop(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        # The executor cannot stop a conversion under way; its processes are the only
        # ones this run started.
        for child in multiprocessing.active_children():
            child.terminate()
        for child in multiprocessing.active_children():
            child.join(5)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


#: What a terminal sends every process of the group, and only the run's process acts on.
_IGNORED_SIGNALS = {signal.SIGINT, signal.SIGHUP}


# -- in the worker processes ----------------------------------------------------------------------
#: The worker process's converter and options, built once by its initializer (a process
#: of the pool converts nothing else), or why it could not be built.
_worker: tuple[Converter, ConvertOptions] | ConfigurationError | None = None


def _start_worker(config: ConverterConfig, options: ConvertOptions) -> None:
    global _worker
    for signum in _IGNORED_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _IGNORED_SIGNALS)
    try:
        _worker = (Converter(config), options)
    except ConfigurationError as exc:
        # Kept for the first task to raise in the run's process (a usage error, exit 2,
        # as when the run itself loads them: an override folder removed since), not a
        # failed initializer, which the executor reports as a process that died.
        _worker = exc
        return
    settle_long_lived()


def convert_in_worker(work: Work) -> Converted | ConversionError:
    """Convert one Work with the worker process's converter; a bundle comes back as its
    JSON text."""
    assert _worker is not None, "a conversion process without its converter"
    if isinstance(_worker, ConfigurationError):
        raise _worker
    converter, options = _worker
    result = convert_work(converter, work, options)
    if isinstance(result, ConversionError):
        return result
    return Converted.of(result, pretty=options.pretty)
