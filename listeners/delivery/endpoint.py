"""A 404 or 405 to the bundle's POST: a missing endpoint, or the server's verdict?

A FHIR server answers a transaction (or batch) at its base: ``POST [base]``
(http.html#transaction). A 404 or 405 to that POST may be the server's verdict on the
bundle — a conditional reference or a DELETE target it does not hold (Medplum fails the
whole transaction with 404, see :mod:`listeners.delivery.deletes`) — or mean that there is
no FHIR server at that url at all: a wrong base path (``/fhir/R4`` for a server at
``/fhir``), an ingress rule gone, a web application answering the url. Taken as a
rejection, the second one dead-letters every message of the feed for a configuration
mistake.

The status cannot tell them apart, nor can the body: servers and gateways answer an
unknown path with an OperationOutcome too (the test server, HAPI's "Unknown resource
type"). ``GET [base]/metadata`` can: a server at that base answers it with its
CapabilityStatement (it is also the readiness probe, :meth:`FhirServerSink.check`). So:

* metadata answers 2xx with a CapabilityStatement → the base is right: the 404/405 is the
  server's verdict on the bundle, a rejection (and the DELETE handling may still rescue it);
* metadata answers anything else → :class:`EndpointNotFoundError`, a transient failure of
  the destination: the message stays queued, the destination is paused and probed with
  backoff, ``/ready`` and the log line name the cause, and deliveries resume by themselves
  once the url answers (or after a restart with the url fixed);
* metadata cannot be read (timeout, connection lost, 408, 429, 5xx; 401 or 403 from a
  server keeping it behind credentials) → transient as well: with no way to judge, the
  message is kept rather than dead-lettered.

A 404 *inside* a 2xx transaction-response (one entry's status) never gets here: the server
answered at its base.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from ..errors import DeliveryError, TransientDeliveryError
from .answers import answer_description, answer_json, busy_status, outcome_of
from .failures import UnexpectedAnswerError, describe_failure, http_status_text
from .urls import redact_url

__all__ = [
    "ENDPOINT_STATUSES",
    "NO_SERVER",
    "EndpointNotFoundError",
    "capability_problem",
    "missing_endpoint",
]

#: Statuses of the bundle's POST that may mean "nothing at this url" rather than a verdict.
ENDPOINT_STATUSES = frozenset({404, 405})

#: What the errors, the log lines and ``/ready`` say of such a destination.
NO_SERVER = "no FHIR server at the destination url"

#: ``send(method, url, timeout=…)``: one request with the destination's client and credentials.
Send = Callable[..., Awaitable[httpx.Response]]


class EndpointNotFoundError(UnexpectedAnswerError):
    """The bundle's POST was answered 404/405 and ``[base]/metadata`` is no FHIR server's:
    the destination url is wrong (its base path), not the bundle. Transient: the
    destination pauses and the message waits, never a dead letter."""


def capability_problem(response: httpx.Response, payload: Any) -> str | None:
    """What keeps ``response`` to ``GET [base]/metadata`` from being a FHIR server's
    CapabilityStatement, in safe words (status, Content-Type, resourceType), or None."""
    status = http_status_text(response.status_code)
    if not 200 <= response.status_code < 300:
        return status
    if isinstance(payload, dict) and payload.get("resourceType") == "CapabilityStatement":
        return None
    return f"{status} without a CapabilityStatement ({answer_description(response, payload)})"


async def missing_endpoint(
    destination: str,
    base: str,
    metadata_url: str,
    response: httpx.Response,
    payload: Any,
    send: Send,
    *,
    what: str,
    timeout: float,
) -> DeliveryError | None:
    """None when ``response`` (a 404/405 to the POST of a ``what`` bundle at ``base``, its
    body parsed: ``payload``) is the server's verdict on the bundle; else the transient
    error saying that no FHIR server answers at ``base`` (or that it cannot be told now).
    See the module docstring."""
    status = response.status_code
    if status not in ENDPOINT_STATUSES:
        return None
    posted = f"{http_status_text(status)} to the {what} POST at {redact_url(base)}"
    metadata = redact_url(metadata_url)
    unreadable: str | None = None
    try:
        answer = await send("GET", metadata_url, timeout=timeout)
    except TransientDeliveryError as exc:
        unreadable = describe_failure(exc).reason
    else:
        # 408, 429, 5xx: no answer about the base yet; 401, 403: metadata kept from us.
        if busy_status(answer.status_code) or answer.status_code in (401, 403):
            unreadable = http_status_text(answer.status_code)
    if unreadable is not None:
        return TransientDeliveryError(
            f"destination {destination}: {posted}, and {metadata} could not be read "
            f"({unreadable}) to tell a wrong url from a rejection: retried",
            status=status,
            outcome=outcome_of(payload),
        )
    problem = capability_problem(answer, await answer_json(answer))
    if problem is None:
        return None
    return EndpointNotFoundError(
        f"destination {destination}: {posted}; {metadata} answered {problem}: {NO_SERVER} "
        "(check its base path); deliveries wait",
        status=status,
        problem=f"{http_status_text(status)}, {NO_SERVER} (metadata: {problem}; check its "
        "base path)",
        outcome=outcome_of(payload),
    )
