"""The signals that stop ``passerelle serve`` and ``passerelle worker`` gracefully.

SIGTERM, SIGINT and SIGHUP, unless SIGHUP is ignored (``nohup``: the operator asked the
process to outlive its terminal). Python's default for SIGHUP ends the process on the
spot: a closed terminal, ssh session or multiplexer pane, ``docker kill -s HUP`` or a
supervisor sending it cut off the senders waiting for their ACKs and the deliveries in
flight, skipping the drain SIGTERM gets. There is nothing to reload (the configuration is
read once, and a reload that re-read routes would change how queued messages are
delivered), so it stops the process the way SIGTERM does; the supervisor restarts it.
A second signal while draining exits at once (status 1): everything acknowledged is
already committed, and messages in flight are delivered again after the restart.

A signal that came before these handlers, while the command's modules were imported
(:func:`listeners.entry.defer_stops` kept it), counts as the first: the service stops
without starting.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from .entry import pending_stop

__all__ = ["install_stop_handlers", "stop_signals"]


def stop_signals() -> tuple[signal.Signals, ...]:
    """SIGTERM, SIGINT, and SIGHUP unless it is ignored."""
    hangup = () if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN else (signal.SIGHUP,)
    return (signal.SIGTERM, signal.SIGINT, *hangup)


def install_stop_handlers(stop: asyncio.Event, log: logging.Logger) -> None:
    """On the running loop: the first stop signal sets ``stop``; a second one exits now."""

    def on_signal(name: str) -> None:
        if stop.is_set():
            log.warning("second signal while stopping: exiting now")
            os._exit(1)
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
