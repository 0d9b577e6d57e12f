"""What an operator reads when a listening socket cannot be bound at start-up.

The bare ``OSError`` said ``[Errno 98] error while attempting to bind on address
('0.0.0.0', 2575): address already in use``: neither which part of the service wanted the
port, nor the setting (or variable) that chose it, nor what to do. :func:`bind_error`
turns it into a :class:`~listeners.errors.ServiceError` naming all three, which
``passerelle serve`` and ``passerelle worker`` print as their one ``cannot start`` line.
"""

from __future__ import annotations

import errno
import socket

from .errors import ServiceError

__all__ = ["bind_error"]

#: The remedy for the bind failures an operator meets, by errno.
_REMEDIES: dict[int, str] = {
    errno.EADDRINUSE: (
        "address already in use: another process listens on that port (a second "
        "passerelle, or the previous one still stopping); stop it, or set another {port}"
    ),
    errno.EACCES: (
        "permission denied: ports below 1024 need privileges; set a {port} from 1024 up "
        "(or give the process CAP_NET_BIND_SERVICE)"
    ),
    errno.EADDRNOTAVAIL: (
        "address not available: {address} is not an address of this host; set {host} to "
        "one of its addresses, or 0.0.0.0 for all"
    ),
}


def bind_error(
    what: str,
    host: str,
    port: int,
    exc: OSError,
    *,
    port_setting: str,
    host_setting: str,
    variable: str | None = None,
) -> ServiceError:
    """The start-up error for ``what`` (``MLLP listener chu``, ``the HTTP API``) failing to
    bind ``host:port``; ``port_setting`` and ``host_setting`` are written as the
    configuration file writes them, ``variable`` the environment variable that may set
    the port instead."""
    port_named = f"{port_setting} ({variable})" if variable else port_setting
    if isinstance(exc, socket.gaierror):
        # A host name that does not resolve (a typo, a name of another machine).
        reason = f"host name {host!r} not resolved; check {host_setting}"
    else:
        template = _REMEDIES.get(exc.errno or 0)
        if template is not None:
            reason = template.format(port=port_named, host=host_setting, address=host)
        else:
            reason = f"{exc.strerror or type(exc).__name__}; check {host_setting} and {port_named}"
    return ServiceError(f"{what} cannot listen on {_address(host, port)}: {reason}")


def _address(host: str, port: int) -> str:
    shown = host or "0.0.0.0"
    return f"[{shown}]:{port}" if ":" in shown else f"{shown}:{port}"
