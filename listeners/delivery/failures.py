"""Why a delivery failed, in a few words that are safe to show anywhere.

Log lines, ``/ready`` (open to anyone), dead-letter reasons and the AE sent back to a sender
need to say *why* a delivery failed — connection refused, a timeout, a TLS problem, an HTTP
status — but never what may quote patient data or secrets: the server's OperationOutcome
diagnostics (real servers quote the offending values), a library's exception text (which may
quote a response), a URL's credentials. :func:`describe_failure` gives an exception's kind
and such a reason, built from the exception's class, its cause chain and the HTTP status
only.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httpx

from ..errors import DeliveryError, ServiceError, TransientDeliveryError
from .backoff import retry_after_capped
from .exchange import SlowAnswerTimeout

__all__ = [
    "FailureReason",
    "UnexpectedAnswerError",
    "describe_failure",
    "http_status_text",
    "retry_detail",
    "transport_failure",
]

#: How far down ``__cause__``/``__context__`` to look for the root of a transport error.
_MAX_CHAIN = 12
_MAX_OWN_TEXT = 160
#: httpx's text for a refused CONNECT starts with the proxy's status code (``407 Proxy …``).
_STATUS_FIRST = re.compile(r"\s*([1-5][0-9]{2})\b")

_TIMEOUTS: tuple[tuple[type[BaseException], str], ...] = (
    # Before ReadTimeout, its base: the answer began, then came too slowly.
    (SlowAnswerTimeout, "timeout: the answer came too slowly"),
    (httpx.ConnectTimeout, "timeout while connecting"),
    (httpx.ReadTimeout, "timeout waiting for the answer"),
    (httpx.WriteTimeout, "timeout while sending the request"),
    (httpx.PoolTimeout, "timeout waiting for a free connection"),
)


@dataclass(frozen=True, slots=True)
class FailureReason:
    """``kind``: the exception class that says what failed (``ConnectError``,
    ``ReadTimeout``, ``TransientDeliveryError``…); ``reason``: a short safe phrase."""

    kind: str
    reason: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.reason}"


class UnexpectedAnswerError(TransientDeliveryError):
    """An HTTP answer that is no verdict of a FHIR server on the bundle: a 2xx that is not a
    transaction-response (a login page, a firewall's page, an empty body, a web application
    the url points at), a redirect. The destination's configuration is at fault, not the
    bundle: retried, and the destination paused, like a 5xx.

    ``problem``: what was wrong, in safe words (status, Content-Type, resourceType, entry
    counts; never the body), for log lines and ``/ready``. ``detail``: what may quote more
    (a redirect's whole Location), stored in the record's ``detail``, which only
    ``dead-letters show --payload`` prints.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        problem: str,
        outcome: dict[str, Any] | None = None,
        retry_after: float | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message, status=status, outcome=outcome, retry_after=retry_after)
        self.problem = problem
        self.detail = detail

    def as_record(self) -> dict[str, Any]:
        record = super().as_record()
        if self.detail:
            record["detail"] = self.detail
        return record


def http_status_text(status: int) -> str:
    """``HTTP 503 Service Unavailable``: the standard phrase, never the server's own (the
    reason phrase of a status line is free text chosen by the server)."""
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its causes and contexts (httpx and anyio chain the socket's error
    with ``from None`` at times: the context is still there), then the members of any
    exception group on the way."""
    seen: set[int] = set()
    pending = [exc]
    while pending and len(seen) < _MAX_CHAIN:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        following = current.__cause__ or current.__context__
        if following is not None:
            pending.append(following)


def _socket_reason(error: BaseException) -> str | None:
    """A phrase for the OS-level error at the root of a transport failure, if it is one."""
    if isinstance(error, ssl.SSLCertVerificationError):
        detail = f" ({error.verify_message})" if error.verify_message else ""
        return f"TLS failure: {error.reason or 'CERTIFICATE_VERIFY_FAILED'}{detail}"
    if isinstance(error, ssl.SSLError):
        return f"TLS failure: {error.reason or type(error).__name__}"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ConnectionResetError):
        return "connection reset by the peer"
    if isinstance(error, socket.gaierror):
        return "host name not resolved"
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, OSError) and error.errno is not None and error.errno > 0:
        # The system's text for the errno ("No route to host"): no data of ours in it.
        return os.strerror(error.errno)
    return None


def transport_failure(exc: BaseException) -> FailureReason:
    """Kind and reason of an error of the HTTP client itself (no HTTP answer): connection
    refused, name resolution, TLS, timeouts, a connection the server dropped, a proxy
    refusing the tunnel…"""
    kind = type(exc).__name__
    if isinstance(exc, httpx.ProxyError):
        return FailureReason(kind, _proxy_refusal(exc))
    for timeout_type, phrase in _TIMEOUTS:
        if isinstance(exc, timeout_type):
            return FailureReason(kind, phrase)
    for error in _chain(exc):
        found = _socket_reason(error)
        if found is not None:
            return FailureReason(kind, found)
    if isinstance(exc, httpx.TimeoutException):
        return FailureReason(kind, "timeout")
    if isinstance(exc, httpx.RemoteProtocolError):
        # httpx's text for a dropped connection is fixed; other protocol errors may quote
        # the bytes the server sent, so they are not shown.
        if "disconnected" in str(exc).lower():
            return FailureReason(kind, "the server closed the connection without answering")
        return FailureReason(kind, "the server's answer broke the HTTP protocol")
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        return FailureReason(kind, "connection lost")
    if isinstance(exc, httpx.ConnectError):
        return FailureReason(kind, "connection failed")
    return FailureReason(kind, "transport error")


def _proxy_refusal(exc: httpx.ProxyError) -> str:
    """What a proxy answered the CONNECT with: its status with the standard phrase (the
    proxy's own text is not shown), or that it refused the tunnel."""
    match = _STATUS_FIRST.match(str(exc))
    if match is None:
        return "the proxy refused the tunnel to the server"
    return f"the proxy refused the tunnel to the server ({http_status_text(int(match[1]))})"


def describe_failure(exc: BaseException) -> FailureReason:
    """Kind and reason of any delivery failure: the HTTP status when there was an answer,
    else the transport error it came from (its cause chain), else our own error's text
    (our messages name statuses, destinations and redacted URLs only), else the class."""
    if isinstance(exc, UnexpectedAnswerError):
        return FailureReason(type(exc).__name__, exc.problem)
    status = exc.status if isinstance(exc, DeliveryError) else None
    if status is not None:
        return FailureReason(type(exc).__name__, http_status_text(status))
    for error in _chain(exc):
        if isinstance(error, httpx.TransportError):
            return transport_failure(error)
    for error in _chain(exc):
        if error is not exc and isinstance(error, OSError):  # a folder destination's disk
            phrase = _socket_reason(error) or type(error).__name__
            return FailureReason(type(error).__name__, phrase)
    if isinstance(exc, ServiceError):
        text = str(exc).splitlines()[0] if str(exc) else ""
        return FailureReason(type(exc).__name__, text[:_MAX_OWN_TEXT] or "failed")
    return FailureReason(type(exc).__name__, "unexpected error")


def retry_detail(failure: FailureReason, *, retry_after: float | None, maximum: float) -> str:
    """The reason of a retry log line, plus a note when the server's Retry-After was more
    than ``maximum`` (``delivery.backoff_max``) and the wait was capped: the operator sees
    both that the server asked for longer and that Passerelle did not comply."""
    if retry_after is not None and retry_after_capped(retry_after, maximum=maximum):
        return (
            f"{failure.reason}; Retry-After {retry_after:.0f}s capped at "
            f"delivery.backoff_max {maximum:g}s"
        )
    return failure.reason
