"""The signals that stop ``passerelle serve`` and ``passerelle worker`` gracefully.

SIGTERM, SIGINT and SIGHUP, unless SIGHUP is ignored (``nohup``: the operator asked the
process to outlive its terminal). Python's default for SIGHUP ends the process on the
spot: a closed terminal, ssh session or multiplexer pane, ``docker kill -s HUP`` or a
supervisor sending it cut off the senders waiting for their ACKs and the deliveries in
flight, skipping the drain SIGTERM gets. There is nothing to reload (the configuration is
read once, and a reload that re-read routes would change how queued messages are
delivered), so it stops the process the way SIGTERM does; the supervisor restarts it.
A second signal while draining exits at once (status 1): everything acknowledged is
already committed, and messages in flight are delivered again after the restart. Only the
named semaphores of the conversion pools' queues are released first (:func:`_exit_now`).

Each step of a stop runs through :func:`stop_step`: one that fails is logged and the
stop goes on (a destination's close raising skipped the queue's close after it).

A signal that came before these handlers, while the command's modules were imported
(:func:`listeners.entry.defer_stops` kept it), counts as the first: the service stops
without starting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing.util
import os
import signal
from collections.abc import Awaitable
from typing import NoReturn

from .entry import pending_stop
from .logs import describe_exception, log_fields

__all__ = ["install_stop_handlers", "stop_signals", "stop_step"]


async def stop_step(logger: logging.Logger, step: str, action: Awaitable[object]) -> int:
    """Await one step of a stop: 0 once done, 1 when it failed (logged at ERROR with the
    error's kind and place, its text only when ours, which carries no message content)."""
    try:
        await action
    except Exception as exc:
        logger.error(
            "stopping %s failed: %s; the stop goes on",
            step,
            describe_exception(exc),
            extra=log_fields(event="stop_step_failed"),
        )
        return 1
    return 0


def stop_signals() -> tuple[signal.Signals, ...]:
    """SIGTERM, SIGINT, and SIGHUP unless it is ignored."""
    hangup = () if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN else (signal.SIGHUP,)
    return (signal.SIGTERM, signal.SIGINT, *hangup)


def install_stop_handlers(stop: asyncio.Event, log: logging.Logger) -> None:
    """On the running loop: the first stop signal sets ``stop``; a second one exits now."""

    def on_signal(name: str) -> None:
        if stop.is_set():
            log.warning("second signal while stopping: exiting now")
            _exit_now(1)
        log.info("%s received: stopping gracefully", name)
        stop.set()

    loop = asyncio.get_running_loop()
    signals = stop_signals()
    # The handlers replaced: listeners.entry's keeps a signal that came before this.
    replaced = [signal.getsignal(sig) for sig in signals]
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig.name)
    early = pending_stop(replaced)  # read after the handlers are in place: none slips
    if early is not None:
        on_signal(signal.Signals(early).name)


def _exit_now(status: int) -> NoReturn:
    """Exit at once, without the drain nor the interpreter's exit (which would wait for
    the threads still draining), the named semaphores of multiprocessing unlinked first.

    ``os._exit`` alone skips multiprocessing's exit hook, which unlinks them (the locks of
    a conversion pool's queues: a fork server's processes need them named). Its resource
    tracker, a process of its own writing to our stderr, then found them still registered
    and printed ``resource_tracker: There appear to be 5 leaked semaphore objects to
    clean up at shutdown``, sending the operator after a leak that is not there. Only
    the hook's first pass (finalizers of priority 0 and up: unlinking the semaphores,
    telling the queues' feeder threads to finish) is run: its second joins the
    conversion processes, which end by themselves once we are gone
    (:mod:`listeners.service_watch`). ``_run_finalizers`` is that hook's own step,
    unchanged since Python 2.6; should it go, the exit is as before, warning included.
    """
    run_finalizers = getattr(multiprocessing.util, "_run_finalizers", None)
    if run_finalizers is not None:
        with contextlib.suppress(Exception):
            run_finalizers(0)
    os._exit(status)
