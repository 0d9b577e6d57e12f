"""A conversion process exits when the service that started it is gone (moved out of
:mod:`listeners.conversion`, which starts the thread running :func:`exit_with_service`)."""

from __future__ import annotations

import os
import time

__all__ = ["exit_with_service"]

#: How often a conversion process checks that the service that started it is alive.
_PARENT_CHECK_SECONDS = 1.0


def exit_with_service(service_pid: int, parent_pid: int) -> None:
    """Exit as soon as the service (or the fork server between us) has gone away.

    The service holds the other end of the call queue, so without this an orphaned process
    would wait for work forever.
    """
    while True:
        time.sleep(_PARENT_CHECK_SECONDS)
        if os.getppid() != parent_pid or not _alive(service_pid):
            os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a live process of another user
        pass
    return True
