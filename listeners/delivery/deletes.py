"""A DELETE of what the server no longer holds: done, not a dead letter.

ADT^A29 and A23 bundles hold ``DELETE Type/id`` entries (``DELETE Type?identifier=…`` in the
conditional request modes). FHIR R4 lets a server answer the delete of an absent or
already deleted resource with 200, 204 or 404 (http.html#delete); some (Medplum) answer 404
and fail the whole transaction. A message sent twice — an interface engine re-sending on a
lost ACK, a retry after a timeout where the server had in fact committed, an A29 whose A28
never reached this server — would then be a dead letter, while re-sending must be harmless.

A 404 or 410 counts only when it is the FHIR server's own answer: its body is an
OperationOutcome (http.html: a server answers errors with one). An ingress, reverse proxy or
API gateway answers 404 with a page of its own ("default backend - 404" while the FHIR pod
restarts, "no Route matched"): taken as "absent", it would drop the DELETE of a Patient the
server still holds and acknowledge the message. Such a 404 stays a rejection, as any 404.

So when a delivery of a bundle with DELETE entries is rejected with 404 or 410 and an
OperationOutcome (the whole bundle), or answered with a 2xx transaction-response Bundle whose
failed entries are all DELETEs answered 404 or 410, :meth:`AbsentDeletes.redelivery` reads
each such target:

* ``GET [base]/Type/id`` answered 404 or 410 with an OperationOutcome: absent;
* ``GET [base]/Type?search&_summary=count`` answered 2xx with ``total`` 0: absent;
* anything else that is an answer (the target is there, a 403, a 404 that is not an
  OperationOutcome, a search without total): the 404 was about something else, or we
  cannot tell — the rejection stands;
* 408, 429, 5xx, 401, 3xx, timeouts and connection errors: a
  :class:`~listeners.errors.TransientDeliveryError`, as for a delivery.

If some targets are absent, the bundle is delivered again once without their entries (the
MessageHeader and Provenance that remain record that the message was processed), and that
answer is the delivery's, judged by the usual rules. Its receipt gets back one entry per
entry of the original bundle: a dropped DELETE's is the status its check found (404 or 410;
404 for a conditional DELETE that matched nothing), with no location. The receipt's
``absent_deletes`` lists the resource types of the dropped entries: once the delivery is
done, ``passerelle_deletes_not_found_total{destination,resource_type}`` counts them
(:func:`listeners.delivery.deliver_results`).

"Absent" is all a server tells: a resource deleted before (the same A29 again) and one it
never held (an A29 whose A28 went elsewhere, or whose sender changed the patient's
identifiers in between, so that the id or the search matches nothing) answer the same. The
rest of the bundle is delivered all the same (an A29 for a patient this warehouse never
received is plausible and must not fill the dead letters), with one WARNING line for the
operator: what the message deletes is not on the server; if unexpected, check the
identifiers the sender uses.

Logs and errors name the destination, the control id, counts, resource types and HTTP
statuses: never an id, a search value or a URL path (the id of a Patient is patient data).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from ..errors import TransientDeliveryError
from .answers import answer_json, entry_status, is_outcome, retried_status
from .base import BundleInput, DeliveryReceipt, EntryResult, bundle_bytes
from .failures import describe_failure, http_status_text
from .json_steps import loads_json
from .retry_after import parse_retry_after
from .urls import join_url

__all__ = ["AbsentDeletes", "Redelivery"]

_log = logging.getLogger(__name__)

#: What a server answers a DELETE of what it does not hold (besides 200/204).
_GONE = (404, 410)


@dataclass(frozen=True, slots=True)
class Redelivery:
    """The bundle to deliver again, and the entries taken out of it (index → status)."""

    bundle: dict[str, Any]
    dropped: Mapping[int, int]
    #: Entries of the original bundle.
    size: int
    #: Resource type of each dropped entry, in bundle order (for the receipt, and metrics).
    absent: tuple[str, ...] = ()

    def receipt(self, receipt: DeliveryReceipt) -> DeliveryReceipt:
        """``receipt`` of the redelivery with the dropped entries back in their places,
        and their resource types in ``absent_deletes``."""
        receipt = replace(receipt, absent_deletes=self.absent)
        total = self.size
        if len(receipt.entries) != total - len(self.dropped):
            return receipt  # the server listed no entries (or not as many): nothing to align
        kept = iter(receipt.entries)
        entries = tuple(
            EntryResult(status=self.dropped[i]) if i in self.dropped else next(kept)
            for i in range(total)
        )
        return replace(receipt, entries=entries)


class AbsentDeletes:
    """Finds the DELETE targets a destination no longer holds (see the module docstring).

    ``get`` sends one GET through the sink (its client, authentication, timeouts)."""

    def __init__(
        self, name: str, base: str, get: Callable[[str], Awaitable[httpx.Response]]
    ) -> None:
        self._name = name
        self._base = base
        self._get = get

    async def redelivery(
        self,
        bundle: BundleInput,
        response: httpx.Response,
        payload: Any,
        control_id: str | None = None,
    ) -> Redelivery | None:
        """What to deliver again after ``response`` (its body parsed: ``payload``) rejected
        ``bundle``, or ``None`` when the rejection stands. Raises TransientDeliveryError
        when a check could not be made."""
        if not _about_absence(response.status_code, payload):
            return None  # a 400, a 409, a failed PUT…: no DELETE answer to check
        try:
            # A large bundle (a laboratory report of thousands of results) is parsed off the
            # event loop, in steps, keeping of each entry its request only (json.loads of
            # 22 MB held MLLP ACKs and /ready for 1.4 s; the whole tree built, the
            # collector's passes over it for 0.4 s): all of it is read again below only
            # when some entries are dropped.
            data = (
                bundle
                if isinstance(bundle, Mapping)
                else await loads_json(bundle_bytes(bundle), entry=_request_only)
            )
        except ValueError:  # not JSON: whatever the 404 was about, not a DELETE of ours
            return None
        entries = data.get("entry") if isinstance(data, Mapping) else None
        if not isinstance(entries, list):
            return None
        deletes = {i: url for i, entry in enumerate(entries) if (url := _delete_url(entry))}
        suspects = _suspects(deletes, entries, response.status_code, payload)
        if not suspects:
            return None
        dropped: dict[int, int] = {}
        for index in suspects:
            status = await self._absent(deletes[index])
            if status is not None:
                dropped[index] = status
        if not dropped:
            return None
        kinds = sorted({_resource_type(deletes[i]) for i in dropped})
        what = (
            f"the {kinds[0]} this message deletes is"
            if len(dropped) == 1
            else f"the {len(dropped)} resources ({', '.join(kinds)}) this message deletes are"
        )
        _log.warning(
            "destination %s: control id %s: %s not on the server (already deleted, or never "
            "written there: if unexpected, check the identifiers the sender uses); the rest "
            "of the bundle is delivered",
            self._name,
            control_id,
            what,
        )
        if not isinstance(bundle, Mapping):
            data = await loads_json(bundle_bytes(bundle))  # read above: JSON, with entries
            entries = data["entry"]
        rest = [entry for i, entry in enumerate(entries) if i not in dropped]
        return Redelivery(
            bundle={**data, "entry": rest},
            dropped=dropped,
            size=len(entries),
            absent=tuple(_resource_type(deletes[i]) for i in sorted(dropped)),
        )

    async def _absent(self, url: str) -> int | None:
        """404/410 if the target of ``DELETE url`` is absent, else ``None`` (present, or
        cannot tell)."""
        path, _, search = url.partition("?")
        target = join_url(self._base, path)
        if search:
            parts = urlsplit(target)
            query = "&".join(q for q in (parts.query, search, "_summary=count") if q)
            target = urlunsplit(parts._replace(query=query))
        try:
            response = await self._get(target)
        except TransientDeliveryError as exc:
            # Its text names the URL, whose path holds the id: say why, not where (the
            # transport error stays in the chain, where describe_failure finds it).
            failure = describe_failure(exc)
            reason = failure.reason if failure.kind != type(exc).__name__ else "no answer"
            raise TransientDeliveryError(
                f"destination {self._name}: checking whether a DELETE target is absent "
                f"failed ({reason})"
            ) from None
        status = response.status_code
        if retried_status(status):  # as for a delivery
            raise TransientDeliveryError(
                f"destination {self._name}: {http_status_text(status)} (checking whether "
                "a DELETE target is absent)",
                status=status,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        if not search:
            if status not in _GONE:
                return None
            return status if is_outcome(await answer_json(response)) else None
        if not 200 <= status < 300:
            return None
        body = await answer_json(response)
        total = body.get("total") if isinstance(body, dict) else None
        return 404 if total == 0 else None


def _delete_url(entry: Any) -> str | None:
    """The relative url of a DELETE entry (``Type/id`` or ``Type?search``), else ``None``."""
    request = entry.get("request") if isinstance(entry, Mapping) else None
    if not isinstance(request, Mapping) or request.get("method") != "DELETE":
        return None
    url = request.get("url")
    if not isinstance(url, str) or not url or "://" in url.split("?", 1)[0]:
        return None  # an absolute url is another server's business
    path, sep, search = url.lstrip("/").partition("?")
    if not path or (not sep and path.count("/") != 1):
        return None
    return path + sep + search


def _request_only(entry: Any) -> Any:
    """What is kept of a bundle's entry to find its DELETEs: its ``request``."""
    if not isinstance(entry, dict):
        return entry
    return {"request": entry["request"]} if "request" in entry else {}


def _about_absence(status: int, body: Any) -> bool:
    """Whether an answer may be about DELETE targets that are absent (what
    :func:`_suspects` looks for), told from the answer alone, before the bundle is read:
    a 404 or 410 with an OperationOutcome, or a 2xx Bundle whose failed entries were all
    answered 404 or 410."""
    if status in _GONE:
        return is_outcome(body)
    if not 200 <= status < 300 or not isinstance(body, Mapping):
        return False
    if body.get("resourceType") != "Bundle" or not isinstance(body.get("entry"), list):
        return False
    for answer in body["entry"]:
        result = answer.get("response") if isinstance(answer, Mapping) else None
        code = entry_status(str(result.get("status", ""))) if isinstance(result, Mapping) else None
        if not (code is not None and 200 <= code < 300) and code not in _GONE:
            return False
    return True


def _suspects(deletes: Mapping[int, str], entries: list[Any], status: int, body: Any) -> list[int]:
    """The DELETE entries the rejection may be about: all of them for a whole-bundle 404 or
    410 with an OperationOutcome; for a 2xx transaction-response Bundle, its failed entries
    if each is a DELETE answered 404 or 410 (any other failure: none)."""
    if not deletes:
        return []
    if status in _GONE:
        return list(deletes) if is_outcome(body) else []
    if not 200 <= status < 300:
        return []
    if not isinstance(body, Mapping) or body.get("resourceType") != "Bundle":
        return []
    answers = body.get("entry")
    if not isinstance(answers, list) or len(answers) != len(entries):
        return []
    failed = []
    for index, answer in enumerate(answers):
        result = answer.get("response") if isinstance(answer, Mapping) else None
        code = entry_status(str(result.get("status", ""))) if isinstance(result, Mapping) else None
        if code is not None and 200 <= code < 300:
            continue
        if index not in deletes or code not in _GONE:
            return []
        failed.append(index)
    return failed


def _resource_type(url: str) -> str:
    return url.split("?", 1)[0].split("/", 1)[0]
