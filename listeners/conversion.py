"""Conversion off the event loop, in worker processes.

Conversion is CPU-bound Python: threads would keep the loop responsive but not use more
than one core, so conversions run in a process pool. Each process builds, on first use,
one :class:`converter.Converter` per route (its own template overrides and settings) and
keeps it for its lifetime. Results cross the process boundary as JSON bytes plus a few
facts; errors as plain data, so nothing unpicklable travels back.

Crash safety of the pool:

* Processes are started from a fork server (spawned on POSIX otherwise), never forked
  from the service itself: a forked child would inherit the queue file's lock (a
  conversion process outliving a ``kill -9`` of the service would then keep the restarted
  service from opening its queue), the open SQLite connection, and the event loop's signal
  wake-up socket (a SIGTERM sent to a conversion process — ``ProcessPoolExecutor`` sends
  one to the survivors when a process dies — would reach the service's loop and stop the
  whole service).
* A process ignores SIGINT and SIGHUP (a Ctrl-C in a terminal, or the terminal closing,
  reaches the whole process group; the service decides when conversions stop, and drains
  the one in progress) and exits when the service that started it is
  gone, instead of lingering as an orphan. It runs at a lower CPU priority (nice 10) than
  the service's main process, so a conversion backlog does not slow the acknowledgements.
  It logs like the service (``log_format``, ``log_level``: :func:`listeners.logs.current_setup`)
  to the stderr it shares with it: a warning it logged was a bare line in a JSON stream.
  Once its converters are loaded, their objects are frozen out of the garbage collector's
  reach and young collections run less often (:mod:`converter.heap`).
* When a process dies (OOM killer, a crash in a C extension), ``ProcessPoolExecutor``
  fails every conversion in progress with ``BrokenProcessPool`` and refuses new ones for
  good; the pool is then replaced, and the failed conversions are retried by the delivery
  workers like any transient failure (the HTTP API answers 503 with Retry-After), each
  one alone, in a process of its own while the pool converts the others
  (:mod:`listeners.conversion_turns`): a message whose conversion process died
  3 times is dead-lettered, ``ConversionProcessDied`` (:mod:`listeners.conversion_deaths`). A
  conversion given to a pool already broken (a process that died idle) goes to the new
  pool: its message did nothing. A process that dies while the pool starts
  (:meth:`ConversionPool.warm_up`) is replaced the same way, once: a second death is a
  :class:`~listeners.errors.ServiceError` (the service cannot start) rather than a pool
  restarted in a loop.
* An unexpected exception from the converter (a bug, not a ConversionError) is a failure
  of kind ``InternalError``, located at the code that raised it: the message is
  dead-lettered rather than retried forever in front of the messages queued after it.
* A conversion has a deadline (``timeout``): a real-time timer of the conversion process
  interrupts it, and the message is a failure of kind ``ConversionTimeout`` (dead-lettered:
  the same bytes would take as long again). A pathological message (a 19 MB ORU takes
  minutes) thus holds neither a process nor the service's shutdown. The process keeps
  its converter: what a converter builds lazily (compiled templates, code maps, model
  checks) is stored only once built, so an interruption leaves nothing half-built, and
  the message's own objects are dropped with it. The timer interrupts Python code; a
  single C call (one regular expression, lxml parsing a document) finishes first,
  bounded by the input size limits. The first message of each type in a process
  compiles its templates (about 2 s; loaded from ``template_cache_dir`` when an earlier
  process compiled them), within its deadline: keep the limit well above that.
  Threads cannot take signals: with ``use_threads`` (tests) there is no deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from functools import partial
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

from converter import ConfigurationError, ConversionError, Converter, ConverterConfig
from converter.heap import settle_long_lived

from .conversion_deadline import DeadlineExceeded, deadline
from .conversion_turns import AloneTurns
from .cpu_limits import cgroup_cpu_limit, usable_cpus
from .errors import ServiceError
from .logs import LogSetup, code_place, current_setup
from .pool_close import close_within
from .service_watch import exit_with_service

__all__ = [
    "CONVERSION_TIMEOUT",
    "INTERNAL_ERROR",
    "ROUTE_NOT_CONFIGURED",
    "ConversionFailure",
    "ConversionPool",
    "ConversionResult",
]

#: ``ConversionFailure.kind`` of a converter bug (an exception that is no ConversionError).
INTERNAL_ERROR = "InternalError"
#: ``ConversionFailure.kind`` of a conversion stopped at its deadline.
CONVERSION_TIMEOUT = "ConversionTimeout"
#: ``ConversionFailure.kind`` of a stored message whose route is no longer configured.
ROUTE_NOT_CONFIGURED = "RouteNotConfigured"

log = logging.getLogger("passerelle.conversion")

#: Conversion processes run at a lower priority than the service's main process: when the
#: CPUs are busy converting a backlog, receiving, storing and acknowledging (what senders
#: wait for) goes first; conversion catches up from the durable queue.
_NICENESS = 10
#: Pools a start-up warm-up tries: a process killed while loading the templates (the OOM
#: killer while the host starts everything at once) is replaced once; a death that comes
#: back (a crash in a C extension at import) fails the start instead of looping.
_WARM_UP_ATTEMPTS = 2


@dataclass(frozen=True, slots=True)
class ConversionResult:
    """One message converted: the bundle as JSON bytes and what to log about it."""

    bundle: bytes
    message_type: str
    control_id: str | None
    entries: int
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class ConversionFailure:
    """Why a message did not convert: safe to log except ``detail`` (may hold values)."""

    kind: str
    reason: str
    hl7_error_code: str
    location: str | None = None
    template: str | None = None
    control_id: str | None = None
    message_type: str | None = None
    detail: str | None = None
    issues: tuple[str, ...] = field(default=())

    @classmethod
    def from_error(cls, error: ConversionError) -> ConversionFailure:
        return cls(
            kind=type(error).__name__,
            reason=error.reason,
            hl7_error_code=error.hl7_error_code,
            location=error.location,
            template=error.template,
            control_id=error.control_id,
            message_type=error.message_type,
            detail=error.detail,
            issues=tuple(getattr(error, "issues", ()) or ()),
        )

    def as_record(self) -> dict[str, Any]:
        """The error as stored with a dead letter."""
        return {
            k: v
            for k, v in {
                "kind": self.kind,
                "reason": self.reason,
                "hl7_error_code": self.hl7_error_code,
                "location": self.location,
                "template": self.template,
                "control_id": self.control_id,
                "message_type": self.message_type,
                "detail": self.detail,
                "issues": list(self.issues) or None,
            }.items()
            if v is not None
        }


class _ProcessState:
    """Converters of one worker process, one per route, built on first use."""

    def __init__(self, configs: Mapping[str, ConverterConfig]) -> None:
        self.configs = configs
        self.converters: dict[str, Converter] = {}

    def converter(self, route: str) -> Converter:
        found = self.converters.get(route)
        if found is None:
            found = self.converters[route] = Converter(self.configs[route])
        return found


# The state of a *worker process*, set by its initializer: the documented way to give
# ProcessPoolExecutor workers long-lived objects. The service process never sets it.
_state: _ProcessState | None = None


def _init_process(configs: Mapping[str, ConverterConfig]) -> None:
    global _state
    _state = _ProcessState(configs)


def _init_worker_process(
    configs: Mapping[str, ConverterConfig], service_pid: int, log_setup: LogSetup | None = None
) -> None:
    """Initializer of a conversion process (see the module docstring)."""
    if log_setup is not None:
        # First: loading the templates below may already log (the template cache).
        log_setup.apply()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(_NICENESS)
    _init_process(configs)
    assert _state is not None
    for route in configs:
        # Templates loaded before the first message; an error is raised again, with its
        # cause, by _warm (at start-up) or _convert.
        with contextlib.suppress(Exception):
            _state.converter(route)
    settle_long_lived()
    threading.Thread(
        target=exit_with_service,
        args=(service_pid, os.getppid()),
        name="service-watch",
        daemon=True,
    ).start()


def _process_context() -> BaseContext:
    """Fork server where available (cheap starts, nothing inherited), else spawn."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # Imported once in the fork server, not in every process it starts.
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


def _convert(
    route: str,
    payload: bytes,
    input_type: str,
    root_template: str | None,
    timeout: float = 0.0,
) -> list[ConversionResult] | ConversionFailure:
    assert _state is not None, "conversion process not initialised"
    # Built outside the deadline (normally by warm_up already): loading a route's
    # templates and code maps is not the message's doing. An error is raised again, and
    # answered, by _convert_now.
    with contextlib.suppress(Exception):
        _state.converter(route)
    try:
        with deadline(timeout):
            return _convert_now(_state, route, payload, input_type, root_template)
    except DeadlineExceeded:
        return ConversionFailure(
            kind=CONVERSION_TIMEOUT,
            reason=f"conversion stopped after {timeout:g} s (delivery.conversion_timeout)",
            hl7_error_code="207",
        )


def _convert_now(
    state: _ProcessState, route: str, payload: bytes, input_type: str, root_template: str | None
) -> list[ConversionResult] | ConversionFailure:
    started = time.perf_counter()
    if route not in state.configs:
        # Stored under a route since renamed or removed from the configuration. Not a
        # converter bug (a KeyError was dead-lettered as one), and never another route's
        # destination or settings (a training route's messages would reach production):
        # a dead letter saying what to do.
        return ConversionFailure(
            kind=ROUTE_NOT_CONFIGURED,
            reason=f"the message was stored for route {route!r}, which is no longer"
            " configured (renamed or removed): configure it again, restart, then"
            " passerelle dead-letters retry",
            hl7_error_code="207",
        )
    try:
        converter = state.converter(route)
        results = []
        for conversion in converter.convert(
            payload,
            input_type=input_type,  # type: ignore[arg-type]
            root_template=root_template,
        ):
            results.append(
                ConversionResult(
                    bundle=conversion.to_json().encode("utf-8"),
                    message_type=conversion.message_type,
                    control_id=conversion.control_id,
                    entries=len(conversion.bundle.get("entry", [])),
                    warnings=conversion.warnings,
                    seconds=time.perf_counter() - started,
                )
            )
        return results
    except ConversionError as exc:
        return ConversionFailure.from_error(exc)
    except (ConfigurationError, MemoryError):
        raise  # a forced root template that does not exist (the API's 400); memory may come back
    except Exception as exc:
        # A converter bug. The same bytes would fail the same way on every retry, and a
        # retried message holds back the ones queued after it: dead-letter it instead, to
        # be retried once the bug is fixed. Kind and place only: the text may quote data.
        return ConversionFailure(
            kind=INTERNAL_ERROR,
            reason=f"unexpected {type(exc).__name__} in the converter (a bug)",
            hl7_error_code="207",
            location=code_place(exc),
            detail=str(exc)[:300],
        )


class ConversionPool:
    """Converts messages for the service; ``processes=0`` means one per usable CPU
    (:func:`listeners.cpu_limits.usable_cpus`)."""

    def __init__(
        self,
        configs: Mapping[str, ConverterConfig],
        *,
        processes: int = 0,
        use_threads: bool = False,
        timeout: float = 0.0,
        template_cache_dir: Path | None = None,
    ) -> None:
        """``template_cache_dir``: where the processes keep compiled templates for the
        next ones (the service's ``data_dir / "template-cache"``): a process then loads
        the templates of a message type instead of compiling them, ~2 s of its first
        message of that type. Routes whose configuration names none use it."""
        self._configs = {
            name: config
            if template_cache_dir is None or config.template_cache_dir is not None
            else replace(config, template_cache_dir=template_cache_dir)
            for name, config in configs.items()
        }
        self._timeout = timeout
        self._workers = processes or usable_cpus(cgroup_cpu_limit())
        self._lock = threading.Lock()
        self._closed = False
        # The processes log in the service's format (a process configures its own
        # logging: it inherits stderr, not the service's handlers).
        self._log_setup = current_setup()
        #: Times the process pool was replaced after one of its processes died.
        self.restarts = 0
        self._use_threads = use_threads
        self._executor: Executor
        if use_threads:
            _init_process(self._configs)
            self._executor = ThreadPoolExecutor(max_workers=self._workers)
        else:
            self._executor = self._process_pool()
        #: The process converting alone (a message whose conversion process died), beside
        #: the pool: started on first need, replaced when it dies.
        self._alone: Executor | None = None
        self._alone_turns = AloneTurns()

    @property
    def processes(self) -> int:
        """How many conversion processes (threads with ``use_threads``) the pool runs."""
        return self._workers

    def _process_pool(self, processes: int = 0) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=processes or self._workers,
            mp_context=_process_context(),
            initializer=_init_worker_process,
            initargs=(self._configs, os.getpid(), self._log_setup),
        )

    def _replace_broken(self, broken: Executor, *, starting: bool = False) -> None:
        """A process of ``broken`` (the pool, or the process converting alone) died: put
        a new one in its place (once per executor)."""
        with self._lock:
            if self._closed:
                return
            if self._executor is broken:
                self._executor = self._process_pool()
                what = (
                    "a conversion process died while loading the templates at start-up; the"
                    " conversion processes were restarted"
                    if starting
                    else "a conversion process died; the conversion processes were restarted"
                    " (the conversions in progress failed: deliveries are retried, API"
                    " requests answered 503)"
                )
            elif self._alone is broken:
                self._alone = None  # a new one at the next need
                what = "the process converting a message alone died; no other conversion failed"
            else:
                return
            self.restarts += 1
        log.error(what, extra={"count": self.restarts, "event": "conversion_pool_restarted"})
        broken.shutdown(wait=False, cancel_futures=True)

    def _alone_executor(self) -> Executor:
        with self._lock:
            if self._closed:  # as a shut executor would: no process started after close
                raise RuntimeError("cannot convert after the conversion pool was closed")
            if self._alone is None:
                threads = self._use_threads
                self._alone = ThreadPoolExecutor(1) if threads else self._process_pool(1)
            return self._alone

    def warm_up(self) -> None:
        """Start the worker processes and build every route's converter now (template
        set, override checks, code maps), not on the first message (a slow first ACK or
        delivery would look like a hang). Templates still load on their first use:
        compiled, the first message of a type costs about 2 s more (compiling all of them
        would cost each process 10 s at every start); from ``template_cache_dir`` once a
        process compiled them, a few milliseconds. Each process loads every route's
        converter when it starts (errors are raised here, by ``_warm``); one task per
        process makes the pool start all of them (a fork-server pool starts processes on
        demand). A process that dies meanwhile broke the pool: it is replaced and warmed
        again, once (:data:`_WARM_UP_ATTEMPTS`); then :class:`ServiceError`.
        """
        for attempt in range(1, _WARM_UP_ATTEMPTS + 1):
            executor = self._executor
            try:  # submit() too raises BrokenProcessPool, on a pool already broken
                futures = [
                    executor.submit(_warm, tuple(self._configs)) for _ in range(self._workers)
                ]
                for future in futures:
                    future.result()
                return
            except BrokenProcessPool:
                if attempt == _WARM_UP_ATTEMPTS:
                    break
                self._replace_broken(executor, starting=True)
        raise ServiceError(
            f"a conversion process died while loading the templates, {_WARM_UP_ATTEMPTS}"
            " times (killed for lack of memory? see the system log)"
        ) from None

    async def convert(
        self,
        route: str,
        payload: bytes,
        *,
        input_type: str = "auto",
        root_template: str | None = None,
        alone: bool = False,
    ) -> list[ConversionResult] | ConversionFailure:
        """``alone``: in the process converting alone, one message at a time, for a
        message whose conversion process died (:mod:`listeners.conversion_turns`); the
        pool converts the others meanwhile."""
        call = partial(_convert, route, payload, input_type, root_template, self._timeout)
        pick = self._alone_executor if alone else lambda: self._executor
        used: list[Executor] = []

        def submit() -> Future[list[ConversionResult] | ConversionFailure]:
            executor = pick()
            try:
                future = executor.submit(call)
            except BrokenProcessPool:
                # Broken before this message was handed over (died idle): not its doing.
                self._replace_broken(executor)
                executor = pick()
                future = executor.submit(call)
            used.append(executor)
            return future

        try:
            if alone:
                return await self._alone_turns.run(submit)
            return await asyncio.wrap_future(submit())
        except BrokenProcessPool:
            if used:
                self._replace_broken(used[-1])
            raise

    def close(self, grace: float | None = None) -> None:
        """Stop the processes: conversions not started are cancelled; those in progress
        get ``grace`` seconds (None: until they end), after which their processes are
        ended (:func:`listeners.pool_close.close_within`)."""
        with self._lock:
            self._closed = True
            executors = [e for e in (self._executor, self._alone) if e is not None]
        ended = 0
        until = time.monotonic() + (grace or 0.0)
        for executor in executors:
            if grace is None or not isinstance(executor, ProcessPoolExecutor):
                executor.shutdown(wait=True, cancel_futures=True)
            else:
                ended += close_within(executor, max(0.0, until - time.monotonic()))
        if ended:
            log.warning(
                "conversions still running at the stop were ended; their messages are"
                " converted again after the restart",
                extra={"count": ended, "event": "conversions_ended_at_stop"},
            )


def _warm(routes: tuple[str, ...]) -> None:
    assert _state is not None
    for route in routes:
        _state.converter(route)
