"""Reading a FHIR server's answers: JSON bodies, OperationOutcomes, entry statuses, and
which statuses are worth retrying.

Shared by the delivery of bundles (:mod:`listeners.delivery.fhir`) and the check of DELETE
targets (:mod:`listeners.delivery.deletes`), so that both judge an answer alike.
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = [
    "busy_status",
    "entry_status",
    "is_outcome",
    "json_body",
    "operation_outcome",
    "retried_status",
]


def json_body(response: httpx.Response) -> Any:
    """The parsed body, or None when it is empty or not JSON."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:  # not JSON, or not text (UnicodeDecodeError is a ValueError)
        return None


def is_outcome(value: Any) -> bool:
    return isinstance(value, dict) and value.get("resourceType") == "OperationOutcome"


def operation_outcome(response: httpx.Response) -> dict[str, Any] | None:
    """The body when it is a FHIR OperationOutcome: the FHIR server's own answer, not the
    page of an ingress, proxy or gateway in front of it (whatever its Content-Type says)."""
    payload = json_body(response)
    return payload if is_outcome(payload) else None


def entry_status(value: Any) -> int | None:
    """A transaction-response entry's status: ``"201 Created"`` / ``"201"`` → 201."""
    if not isinstance(value, str):
        return None
    head = value.strip().split(" ", 1)[0]
    return int(head) if head.isdigit() else None


def busy_status(status: int) -> bool:
    """408, 429, 5xx: the server cannot take it now; the same request may pass later."""
    return status in (408, 429) or status >= 500


def retried_status(status: int) -> bool:
    """What a whole answer is retried for: :func:`busy_status`, and 401 / 3xx (the
    destination's configuration, not the bundle's fault: fixed, the queue drains)."""
    return busy_status(status) or status == 401 or 300 <= status < 400
