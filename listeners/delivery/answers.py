"""Reading a FHIR server's answers: JSON bodies, OperationOutcomes, entry statuses, and
which statuses are worth retrying.

Shared by the delivery of bundles (:mod:`listeners.delivery.fhir`) and the check of DELETE
targets (:mod:`listeners.delivery.deletes`), so that both judge an answer alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx

from .json_steps import PARSE_IN_THREAD, loads_json

#: The Bundle type answering each bundle type sent.
RESPONSE_TYPES = {"transaction": "transaction-response", "batch": "batch-response"}
_MAX_ISSUES_IN_MESSAGE = 5
_MEDIA_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]{1,64}/[a-z0-9!#$&^_.+-]{1,64}")
_FHIR_NAME = re.compile(r"[A-Za-z]{1,64}")
_CODE = re.compile(r"[a-z-]{1,40}")

__all__ = [
    "RESPONSE_TYPES",
    "answer_description",
    "answer_json",
    "busy_status",
    "entry_status",
    "is_outcome",
    "json_body",
    "operation_outcome",
    "outcome_of",
    "outcome_summary",
    "retried_status",
    "transaction_answer_problem",
]


def json_body(response: httpx.Response) -> Any:
    """The parsed body, or None when it is empty or not JSON."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:  # not JSON, or not text (UnicodeDecodeError is a ValueError)
        return None


async def answer_json(response: httpx.Response) -> Any:
    """:func:`json_body`, parsed off the event loop and in steps when the body is large (a
    transaction-response echoing every resource: see :mod:`listeners.delivery.json_steps`).
    Of a Bundle's entries only their ``response`` is kept: all that is read of them."""
    if len(response.content) <= PARSE_IN_THREAD:
        return json_body(response)
    try:
        return await loads_json(response.content, entry=_entry_response)
    except ValueError:
        return None


def _entry_response(entry: Any) -> Any:
    """An answer's entry cut down to its ``response`` (status, location, outcome)."""
    if not isinstance(entry, dict):
        return entry
    return {"response": entry["response"]} if "response" in entry else {}


def outcome_of(payload: Any) -> dict[str, Any] | None:
    """``payload`` when it is a FHIR OperationOutcome (see :func:`operation_outcome`)."""
    return payload if is_outcome(payload) else None


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


def transaction_answer_problem(
    response: httpx.Response, payload: Any, sent: int | None, expected: str
) -> str | None:
    """What keeps a 2xx answer from being an ``expected`` Bundle answering ``sent`` entries, in
    safe words (Content-Type, resourceType, Bundle.type, counts: never the body), or
    None. A transaction may be answered as a batch (Medplum without its transaction
    feature) and the reverse: each entry's status is read all the same."""
    if not isinstance(payload, dict) or payload.get("resourceType") != "Bundle":
        described = answer_description(response, payload)
        if not response.content or described.startswith("JSON"):
            return described
        if payload is None:
            return f"{described}, not FHIR JSON"
        return f"{described}, not a {expected} Bundle"
    bundle_type = payload.get("type")
    if bundle_type not in RESPONSE_TYPES.values():
        shown = (
            bundle_type
            if isinstance(bundle_type, str) and _CODE.fullmatch(bundle_type)
            else "an unreadable type"
        )
        return f"a Bundle of type {shown}, not {expected}"
    answers = payload.get("entry")
    if answers is None:
        answers = []
    if not isinstance(answers, list):
        return f"a {bundle_type} whose entry is not a list"
    if sent is not None and len(answers) != sent:
        return f"a {bundle_type} of {_entries(len(answers))} for {sent} sent"
    return None


def _content_type(response: httpx.Response) -> str:
    """``a text/html body``: the media type of the answer if it looks like one."""
    header = response.headers.get("Content-Type")
    if not header:
        return "a body without Content-Type"
    media = header.split(";", 1)[0].strip().lower()
    return (
        f"a {media} body" if _MEDIA_TYPE.fullmatch(media) else "a body of unreadable Content-Type"
    )


def _entries(count: int) -> str:
    return f"{count} entry" if count == 1 else f"{count} entries"


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def outcome_summary(outcome: Mapping[str, Any]) -> str:
    """``severity code: diagnostics @ expression`` for the first issues of an OperationOutcome."""
    parts = []
    issues = outcome.get("issue") or []
    for issue in issues[:_MAX_ISSUES_IN_MESSAGE]:
        if not isinstance(issue, dict):
            continue
        text = issue.get("diagnostics")
        if not text:
            details = issue.get("details")
            text = details.get("text") if isinstance(details, dict) else None
        where = issue.get("expression") or issue.get("location") or []
        part = f"{issue.get('severity', '?')} {issue.get('code', '?')}"
        if text:
            part += f": {text}"
        if where:
            part += f" @ {', '.join(str(w) for w in where)}"
        parts.append(part)
    if len(issues) > _MAX_ISSUES_IN_MESSAGE:
        parts.append(f"(+{len(issues) - _MAX_ISSUES_IN_MESSAGE} more issues)")
    return "; ".join(parts) if parts else "OperationOutcome without issues"


def answer_description(response: httpx.Response, payload: Any) -> str:
    """What an answer holds, in safe words (never the body): ``a text/html body``, ``an
    empty body``, ``a Bundle``, ``JSON that is not a FHIR resource``."""
    if not response.content:
        return "an empty body"
    if not isinstance(payload, dict):
        return _content_type(response) if payload is None else "JSON that is not a FHIR resource"
    kind = payload.get("resourceType")
    if not isinstance(kind, str):
        return "JSON that is not a FHIR resource"
    name = kind if _FHIR_NAME.fullmatch(kind) else "resource of an unreadable type"
    return f"{_article(name)} {name}"
