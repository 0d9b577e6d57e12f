"""Delivery of transaction Bundles to a FHIR R4 server (``POST [base]``).

Outcome of one delivery:

* 2xx with a ``transaction-response`` (``batch-response``) Bundle holding one entry per entry
  sent, all of them succeeded → :class:`DeliveryReceipt`;
* any other 2xx — an HTML page (a login page, a firewall, a base url pointing at a web
  application), an empty body, an OperationOutcome, a Bundle of another type or size — is no
  FHIR server's verdict on the bundle: :class:`~listeners.delivery.failures.UnexpectedAnswerError`,
  a transient failure (retried, the destination paused), never a delivery;
* 408, 429, 5xx, timeouts, connection and TLS errors → :class:`TransientDeliveryError`
  (``retry_after`` from ``Retry-After``, seconds or HTTP-date; an unreadable one is ignored);
* 401 → the token is renewed and the request sent once more (OAuth2); a 401 that persists is
  **transient**, not a rejection: wrong or expired credentials are a problem of the destination's
  configuration, not of the bundle, and must not dead-letter every message until they are fixed.
  Likewise a 3xx (the url points at a redirect: an ``UnexpectedAnswerError`` naming the
  Location's scheme, host and port only);
* other 4xx → :class:`RejectedDeliveryError` carrying the server's OperationOutcome.

Each exchange — connecting, sending, waiting, reading the whole answer — ends within the
destination's ``timeout`` (httpx's own timeout bounds each read, not a body trickled a byte at a
time), and an answer is read up to :data:`~listeners.delivery.exchange.MAX_ANSWER_BYTES`
(64 MiB, decoded): see :mod:`listeners.delivery.exchange`. A body not matching its
Content-Encoding is a transient failure too.

Readiness (:meth:`FhirServerSink.check`) reads ``[base]/metadata``, which servers serve without
authentication: it cannot tell wrong credentials. So the sink also remembers a delivery
refused with 401 or 403 and reports not ready, naming the status, until a later delivery
succeeds (a 401 is retried, so the queue's own retries clear it once the credentials are
fixed; a 403 dead-letters the message, and ``dead-letters retry`` after the fix clears it).

What an error says: the destination, the HTTP status (with its standard phrase, not the
server's) or the kind of transport failure, and the URL without its credentials
(:func:`~listeners.delivery.urls.redact_url`). Never the server's diagnostics: real servers
quote patient values in them ("Patient GIRARD Thomas born … invalid"), and error texts end up
in dead-letter listings and logs. The diagnostics stay in the error's ``outcome`` (shown by
``dead-letters show --payload``, and sent back in the AE of ``ack_after = "delivery"`` to the
sender, who has the data already).

Transactions and atomicity: FHIR says a transaction succeeds or fails as a whole, so a conformant
server never answers 2xx with failed entries. Some servers do — Medplum processes a transaction
as a *batch* unless the project has the "transaction-bundles" feature, and even then its entries
are not rolled back when a later one fails. A 2xx transaction-response reporting a failed entry is
therefore treated as a failed delivery, not as success: transient if a failed entry's status is
(408, 429, 5xx), rejected otherwise (with that entry's OperationOutcome). The entries that
succeeded stay written; delivering the bundle again is safe because Passerelle's bundles are
idempotent (PUT with stable ids, or conditional create/update).

A 404/410 about DELETE entries whose targets are already gone (a re-sent A29) is no rejection:
the bundle goes again once without them (:mod:`listeners.delivery.deletes`).

A 404 or 405 to the POST itself may mean that no FHIR server answers at the url (a wrong
base path): ``[base]/metadata`` tells, and then it is the destination's problem, retried
(:mod:`listeners.delivery.endpoint`).

Requests go through ``destination.proxy`` when set (CONNECT for https), never through a
proxy named by the environment (``HTTP(S)_PROXY``): ``trust_env`` is off.

A destination with ``bundle_type = "batch"`` gets the same bundle as a batch, for servers that
cap transactions (Medplum: 50 updates); the answer is judged by the same rules.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from functools import partial
from typing import Any, Self

import httpx

from ..config import ConfigError, DestinationConfig
from ..config.destination_settings import check_url_credentials
from ..errors import DeliveryError, RejectedDeliveryError, TransientDeliveryError
from ..queue.base import Envelope
from .answers import (
    RESPONSE_TYPES,
    answer_description,
    answer_json,
    busy_status,
    entry_status,
    is_outcome,
    outcome_of,
    outcome_summary,
    retried_status,
    transaction_answer_problem,
)
from .auth import Authenticator, build_authenticator
from .base import BundleInput, DeliveryReceipt, EntryResult, entry_count, request_body
from .deletes import AbsentDeletes
from .endpoint import ENDPOINT_STATUSES, NO_SERVER, missing_endpoint
from .exchange import MAX_ANSWER_BYTES, AnswerTooLarge, bounded_exchange
from .failures import UnexpectedAnswerError, http_status_text, transport_failure
from .retry_after import parse_retry_after
from .tls import ssl_context
from .urls import join_url, normalize_base, origin, redact_url

__all__ = ["FhirServerSink", "check_url_credentials", "outcome_summary", "ssl_context"]

_log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
#: Readiness probes give up sooner than deliveries.
CHECK_TIMEOUT = 5.0
_USER_AGENT = "passerelle"
#: Statuses that mean "your credentials were not accepted", whatever the bundle.
_REFUSALS = (401, 403)


class FhirServerSink:
    """POSTs transaction Bundles to ``destination.url`` over a pooled HTTP/1.1 client."""

    def __init__(self, destination: DestinationConfig, *, max_connections: int = 20) -> None:
        if not destination.url:
            raise ConfigError(f"destinations.{destination.name}: no FHIR server url")
        check_url_credentials(destination.name, destination.url, destination.auth.kind)
        self._destination = destination
        self._url = normalize_base(destination.url)
        #: What errors, readiness and logs show of the url (no userinfo, no query).
        self._shown_url = redact_url(self._url)
        # Joined on the path: the query string (an API key, say) stays at the end.
        self._metadata_url = join_url(self._url, "metadata")
        self._timeout = destination.timeout
        self._client = httpx.AsyncClient(
            http1=True,
            http2=False,
            verify=ssl_context(destination),
            timeout=httpx.Timeout(destination.timeout),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            follow_redirects=False,
            # Never HTTP(S)_PROXY, NO_PROXY, .netrc or SSL_CERT_FILE from the environment:
            # set for other tools of the host or image, they would silently send patient
            # data through a proxy or another trust store. The proxy is a setting.
            trust_env=False,
            proxy=destination.proxy,
        )
        #: How requests go out, for errors: `` through the proxy http://…`` or nothing.
        proxy = destination.proxy
        self._via = f" through the proxy {redact_url(proxy)}" if proxy else ""
        self._auth: Authenticator = build_authenticator(
            destination.auth, self._client, timeout=destination.timeout
        )
        headers = {"Accept": FHIR_JSON, "User-Agent": _USER_AGENT, "Prefer": "return=minimal"}
        headers.update(destination.headers)
        self._headers = headers
        self._closed = False
        #: Status of the last delivery refused with 401/403, until one succeeds (readiness).
        self._refused: int | None = None
        self._deletes = AbsentDeletes(destination.name, self._url, partial(self._send, "GET"))

    def __repr__(self) -> str:
        return f"FhirServerSink(name={self.name!r}, url={self._shown_url!r}, auth={self._auth!r})"

    @property
    def name(self) -> str:
        return self._destination.name

    @property
    def url(self) -> str:
        return self._url

    @property
    def authenticator(self) -> Authenticator:
        return self._auth

    async def deliver(self, bundle: BundleInput, envelope: Envelope) -> DeliveryReceipt:
        """POST the bundle; see the module docstring for the outcome rules."""
        started = time.monotonic()
        sent = await entry_count(bundle)
        response = await self._post(bundle)
        payload = await answer_json(response)
        try:
            receipt = self._receipt(response, payload, started, sent)
        except RejectedDeliveryError:
            # A 404/405 to the POST at the base: a wrong url, not the bundle? (endpoint.py)
            missing = await missing_endpoint(
                self.name,
                self._url,
                self._metadata_url,
                response,
                payload,
                self._send,
                what=self._destination.bundle_type,
                timeout=min(self._timeout, CHECK_TIMEOUT),
            )
            if missing is not None:
                raise missing from None
            again = await self._deletes.redelivery(bundle, response, payload, envelope.control_id)
            if again is None:
                raise
            answer = await self._post(again.bundle)
            sent_again = len(again.bundle["entry"])
            receipt = again.receipt(
                self._receipt(answer, await answer_json(answer), started, sent_again)
            )
        _log.debug(
            "destination %s took bundle (message %s): %s",
            self.name,
            envelope.control_id,
            receipt.summary(),
        )
        return receipt

    async def check(self) -> None:
        """``GET [base]/metadata`` with a short timeout; raise DeliveryError if the answer
        is not a 2xx CapabilityStatement (a web page, a login page or a proxy answering
        the url), or if the last delivery was refused (401/403) and none succeeded since.

        A read, never a write: readiness must not create anything on the server. The
        refusal is remembered from real deliveries because ``metadata`` is public on most
        servers (Medplum, HAPI), so the probe alone would pass with wrong credentials.
        """
        timeout = min(self._timeout, CHECK_TIMEOUT)
        response = await self._send("GET", self._metadata_url, timeout=timeout)
        payload = await answer_json(response)  # a CapabilityStatement may be large
        if not 200 <= response.status_code < 300:
            missing = response.status_code in ENDPOINT_STATUSES
            raise DeliveryError(
                f"destination {self.name}: {redact_url(self._metadata_url)} answered "
                f"{http_status_text(response.status_code)}"
                + (f" ({NO_SERVER}: check its base path)" if missing else ""),
                status=response.status_code,
                outcome=outcome_of(payload),
            )
        if not (isinstance(payload, dict) and payload.get("resourceType") == "CapabilityStatement"):
            # A web page, a login page or a proxy answering the url: deliveries there would
            # be refused as no transaction-response; say so before the first one.
            raise DeliveryError(
                f"destination {self.name}: {redact_url(self._metadata_url)} answered "
                f"{http_status_text(response.status_code)} without a CapabilityStatement "
                f"({answer_description(response, payload)}; check the destination url)",
                status=response.status_code,
            )
        refused = self._refused
        if refused is not None:
            check = "credentials" if refused == 401 else "credentials and permissions"
            raise DeliveryError(
                f"destination {self.name}: the last delivery was refused with "
                f"{http_status_text(refused)} (check the destination's {check}); "
                "not ready until a delivery succeeds",
                status=refused,
            )

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- internals -------------------------------------------------------------------------------

    async def _post(self, bundle: BundleInput) -> httpx.Response:
        # Off the event loop for a large bundle: re-typing or writing one held it for
        # seconds (every MLLP ACK and delivery waiting).
        body = await request_body(bundle, batch=self._destination.bundle_type == "batch")
        headers = {"Content-Type": FHIR_JSON}
        return await self._send("POST", self._url, content=body, headers=headers)

    async def _send(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """One request, sent again once if a 401 made the authenticator renew its token.

        Each exchange — sending, waiting, reading the whole answer — ends within ``timeout``
        (the destination's, by default) and reads at most :data:`MAX_ANSWER_BYTES`. Whatever
        keeps it from an HTTP answer is a :class:`TransientDeliveryError`."""
        limit = timeout if timeout is not None else self._timeout
        for attempt in (1, 2):
            authorization = await self._auth.authorization()
            request_headers = dict(self._headers)
            if headers:
                request_headers.update(headers)
            if authorization is not None:
                request_headers["Authorization"] = authorization
            # Errors raised outside their ``except``, with no context: describe_failure
            # then gives their own text (which says more than a bare "timeout").
            failure: TransientDeliveryError | None = None
            try:
                response = await bounded_exchange(
                    self._client,
                    method,
                    url,
                    content=content,
                    headers=request_headers,
                    deadline=limit,
                    max_body=MAX_ANSWER_BYTES,
                )
            except httpx.TimeoutException as exc:  # SlowAnswerTimeout too: a trickled answer
                # ``from None`` keeps tracebacks short; the cause stays in __context__, where
                # failures.describe_failure finds it for the log lines.
                raise TransientDeliveryError(
                    f"destination {self.name}: {method} {redact_url(url)} timed out "
                    f"({transport_failure(exc).reason}; limit {limit:g}s for the whole "
                    "exchange)"
                ) from None
            except AnswerTooLarge as exc:
                failure = TransientDeliveryError(
                    f"destination {self.name}: {method} {redact_url(url)}: the answer "
                    f"exceeds {exc.limit} bytes (not read further)"
                )
            except httpx.DecodingError:
                failure = TransientDeliveryError(
                    f"destination {self.name}: {method} {redact_url(url)}: the answer's "
                    "body does not match its Content-Encoding"
                )
            except (httpx.HTTPError, OSError) as exc:
                # OSError: ssl.SSLError may escape httpx unwrapped, e.g. a TLS 1.3 server
                # refusing our client certificate after the handshake, on the first read.
                # Not str(exc): a library's text may quote what the server sent.
                raise TransientDeliveryError(
                    f"destination {self.name}: cannot reach {redact_url(url)}{self._via}: "
                    f"{transport_failure(exc)}"
                ) from None
            if failure is not None:
                raise failure
            if (
                response.status_code == 401
                and attempt == 1
                and await self._auth.invalidate(authorization)
            ):
                _log.debug("destination %s answered 401; renewing credentials", self.name)
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _error(self, response: httpx.Response, payload: Any) -> DeliveryError:
        status = response.status_code
        outcome = outcome_of(payload)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        # Status and destination only: the outcome's diagnostics may quote patient values
        # (see the module docstring); they travel in ``outcome``.
        message = f"destination {self.name}: {http_status_text(status)}"
        if status == 401:
            message += " (check the destination's credentials)"
        elif status == 403:
            message += " (check the destination's credentials and permissions)"
        elif 300 <= status < 400:
            return self._redirect(response, outcome, retry_after)
        if retried_status(status):
            return TransientDeliveryError(
                message, status=status, outcome=outcome, retry_after=retry_after
            )
        return RejectedDeliveryError(message, status=status, outcome=outcome)

    def _redirect(
        self,
        response: httpx.Response,
        outcome: dict[str, Any] | None,
        retry_after: float | None,
    ) -> DeliveryError:
        """A 3xx: the url points at a redirect. Its errors show where to, as scheme, host and
        port only: a Location's path and query may hold a patient's id or a token (the
        whole Location goes to the record's ``detail``, printed by ``show --payload``)."""
        status = response.status_code
        location = response.headers.get("Location")
        target = origin(location, self._url)
        if not location:
            where = "redirected without a Location"
        elif target is None:
            where = "redirected (Location not shown: unreadable)"
        else:
            ours = origin(self._url)
            same = ours is not None and ours[1] == target[1]
            where = f"redirected to {'the same' if same else 'another'} host, {target[0]}"
        return UnexpectedAnswerError(
            f"destination {self.name}: {http_status_text(status)} ({where}; fix the "
            "destination url)",
            status=status,
            problem=f"{http_status_text(status)}, {where}",
            outcome=outcome,
            retry_after=retry_after,
            detail=f"Location: {location}" if location else None,
        )

    def _unexpected(
        self, response: httpx.Response, payload: Any, problem: str, bundle: bool
    ) -> DeliveryError:
        """A 2xx that is no transaction-response for the bundle sent (see :meth:`_receipt`);
        ``bundle``: the answer is a Bundle (of another type or size)."""
        status = http_status_text(response.status_code)
        hint = (
            "the server did not answer each entry sent"
            if bundle
            else "check the destination url: a web page, a login page or a proxy may answer it"
        )
        return UnexpectedAnswerError(
            f"destination {self.name}: {status} with {problem}: not taken as delivered ({hint})",
            status=response.status_code,
            problem=f"{status} with {problem}",
            outcome=outcome_of(payload),
        )

    def _receipt(
        self, response: httpx.Response, payload: Any, started: float, sent: int | None
    ) -> DeliveryReceipt:
        """The receipt of a 2xx answering a bundle of ``sent`` entries (None: not counted);
        ``payload``: its parsed body (:func:`~listeners.delivery.answers.answer_json`).

        Only a Bundle of type transaction-response (batch-response for a batch) with one
        entry per entry sent proves the delivery: any other 2xx — an HTML page, an empty
        body, an OperationOutcome, a Bundle of another type or size — is no verdict of a
        FHIR server on the bundle (a base url pointing at a web application, a login page
        or firewall in front of the server): an :class:`UnexpectedAnswerError`, retried."""
        if not 200 <= response.status_code < 300:
            if response.status_code in _REFUSALS:
                self._refused = response.status_code
            raise self._error(response, payload)
        # The server took the request as ours: whatever refused us before is fixed.
        self._refused = None
        problem = transaction_answer_problem(
            response, payload, sent, RESPONSE_TYPES[self._destination.bundle_type]
        )
        if problem is not None:
            bundle = isinstance(payload, dict) and payload.get("resourceType") == "Bundle"
            raise self._unexpected(response, payload, problem, bundle)
        assert isinstance(payload, dict)  # checked by _shape_problem
        failed: list[tuple[int, EntryResult, dict[str, Any] | None]] = []
        results = []
        for index, entry in enumerate(payload.get("entry") or []):
            answer = entry.get("response") if isinstance(entry, dict) else None
            answer = answer if isinstance(answer, dict) else {}
            result = EntryResult(
                status=entry_status(answer.get("status")),
                location=_str_or_none(answer.get("location")),
            )
            results.append(result)
            if result.status is None or not 200 <= result.status < 300:
                outcome = answer.get("outcome")
                failed.append((index, result, outcome if is_outcome(outcome) else None))
        entries = tuple(results)
        if failed:
            raise self._partial_failure(response, entries, failed)
        return DeliveryReceipt(
            destination=self.name,
            status=response.status_code,
            location=response.headers.get("Location"),
            entries=entries,
            elapsed=time.monotonic() - started,
        )

    def _partial_failure(
        self,
        response: httpx.Response,
        entries: tuple[EntryResult, ...],
        failed: list[tuple[int, EntryResult, dict[str, Any] | None]],
    ) -> DeliveryError:
        """A 2xx transaction-response with failed entries (a non-atomic server).

        Transient when an entry failed with 408, 429 or 5xx (or no status): the error then
        names *that* entry's status and outcome — the one the retry waits for; a 400 beside
        a 429 would make ``/ready`` and the metrics say "paused after HTTP 400" — and the
        answer's Retry-After (a server throttling entries asks for a pause)."""
        busy = [f for f in failed if f[1].status is None or busy_status(f[1].status)]
        index, first, outcome = (busy or failed)[0]
        written = len(entries) - len(failed)
        message = (
            f"destination {self.name}: HTTP {response.status_code} but {len(failed)} of "
            f"{len(entries)} entries failed (the server did not apply the transaction "
            f"atomically; {written} entries stay written); "
            f"{'first retried' if busy else 'first'}: entry {index} status {first.status}"
        )
        # The entry's diagnostics stay in ``outcome`` (see _error).
        if busy:
            return TransientDeliveryError(
                message,
                status=first.status,
                outcome=outcome,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        return RejectedDeliveryError(message, status=first.status, outcome=outcome)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
