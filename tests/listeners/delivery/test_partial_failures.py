"""A 2xx transaction-response (batch-response) in which some entries failed, one of them
with a status worth retrying (408, 429, 5xx) and another with a rejection: the error is
transient and names the entry the retry waits for, with the answer's Retry-After.

Before, it named the first failed entry: a 400 beside a 429 made a *transient* error of
status 400 — ``/ready`` said "deliveries paused after HTTP 400 Bad Request", the retry
counter was labelled ``400``, and the 429's outcome was not the one kept — and the
answer's Retry-After was dropped, the retry coming after the backoff step (1 s) instead
of the pause the throttling server asked for.
"""

from __future__ import annotations

from typing import Any

import pytest

from listeners.delivery import FhirServerSink, outcome_summary
from listeners.errors import RejectedDeliveryError, TransientDeliveryError
from tests.listeners.delivery.helpers import destination, make_envelope
from tests.support.fhirserver import FhirServer

pytestmark = pytest.mark.anyio


def _outcome(diagnostics: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": diagnostics}],
    }


def _bundle(count: int) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:00000000-0000-4000-8000-00000000000{i}",
                "resource": {"resourceType": "Patient", "id": f"partial-{i}"},
                "request": {"method": "PUT", "url": f"Patient/partial-{i}"},
            }
            for i in range(count)
        ],
    }


def _answer(*statuses: str) -> dict[str, Any]:
    entries = []
    for status in statuses:
        response: dict[str, Any] = {"status": status}
        if not status.startswith("2"):
            response["outcome"] = _outcome(f"entry {status}: GIRARD Thomas 1970-01-01")
        entries.append({"response": response})
    return {"resourceType": "Bundle", "type": "batch-response", "entry": entries}


async def test_the_retried_entry_is_the_one_named_with_the_retry_after(server: FhirServer) -> None:
    answer = _answer("200 OK", "400 Bad Request", "429 Too Many Requests")
    server.control(faults=[{"status": 200, "outcome": answer, "retryAfter": "120"}])
    async with FhirServerSink(destination(server)) as sink:
        with pytest.raises(TransientDeliveryError) as caught:
            await sink.deliver(_bundle(3), make_envelope())
    error = caught.value
    assert error.status == 429
    assert error.retry_after == 120.0
    assert error.outcome is not None
    assert "entry 429" in outcome_summary(error.outcome)
    assert "2 of 3 entries failed" in str(error)
    assert "entry 2 status 429" in str(error)
    assert "GIRARD" not in str(error)


async def test_rejected_entries_alone_stay_a_rejection_naming_the_first(
    server: FhirServer,
) -> None:
    answer = _answer("200 OK", "422 Unprocessable Entity", "400 Bad Request")
    server.control(faults=[{"status": 200, "outcome": answer, "retryAfter": "120"}])
    async with FhirServerSink(destination(server)) as sink:
        with pytest.raises(RejectedDeliveryError) as caught:
            await sink.deliver(_bundle(3), make_envelope())
    assert caught.value.status == 422
    assert caught.value.outcome is not None
    assert "entry 422" in outcome_summary(caught.value.outcome)
    assert "GIRARD" not in str(caught.value)
