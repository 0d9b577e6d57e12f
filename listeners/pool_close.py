"""Closing a process pool within a bound: the conversions in progress at a stop.

``ProcessPoolExecutor.shutdown(wait=True)`` waits for the work in progress, however long
it takes: a conversion running when the service stops (up to ``conversion_timeout``,
60 s by default) held the service's 30-second stop until the container runtime's
SIGKILL. Python has no public way to end a pool's processes before 3.14
(``terminate_workers``): this reads the executor's own table of them.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor

__all__ = ["close_within"]

#: How long a process ended at a stop may take to go (after SIGTERM, then SIGKILL).
_END_WAIT = 5.0


def close_within(executor: ProcessPoolExecutor, grace: float) -> int:
    """Shut ``executor`` down, cancelling what has not started; what runs gets ``grace``
    seconds, then its processes are ended (SIGTERM, then SIGKILL). Returns how many were
    ended."""
    # Read before shutdown() drops them.
    processes = list((getattr(executor, "_processes", None) or {}).values())
    manager = getattr(executor, "_executor_manager_thread", None)
    executor.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    late = [process for process in processes if process.is_alive()]
    for process in late:
        process.terminate()  # a conversion process keeps SIGTERM's default action
    for process in late:
        process.join(_END_WAIT)
        if process.is_alive():
            process.kill()
            process.join(_END_WAIT)
    if manager is not None:
        manager.join(_END_WAIT)  # else the interpreter's exit waits for it
    return len(late)
