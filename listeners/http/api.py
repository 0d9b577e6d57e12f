"""The HTTP API: conversion on demand, health, readiness and metrics.

- ``POST /$convert-data`` takes a FHIR ``Parameters`` resource (``inputData``,
  ``inputDataType`` Hl7v2 | Ccda, ``rootTemplate``) like the Azure FHIR server's operation,
  so its clients work unchanged, and returns the Bundle of the one message it holds. Azure's
  template names (``ADT_A01``: message code and trigger event) select the message's own
  route when no template of that name exists; another unknown name is a 400. Its
  ``inputData`` is text: it is encoded in the character set the input declares (MSH-18,
  the XML declaration) before conversion, as :mod:`.text_input` explains.
- ``POST /convert`` takes the raw message in the body (``?rootTemplate=``,
  ``?inputType=hl7v2|cda``); one message gives a Bundle, several (a batch file) give
  newline-delimited JSON, one bundle per line; a 422 for a batch names the failing
  message by its control id.
- ``GET /health`` (the process answers, and no part of it has stopped for good: 503 once
  one has, such as the SQLite queue's writer thread — ``Metrics.watch_vital``; only a
  restart mends it), ``GET /ready`` (queue writable, destinations reachable), ``GET
  /metrics`` (Prometheus). ``passerelle worker`` serves these three alone
  (:func:`create_probe_app`).

With an API key or a bearer token configured, every route but ``/health`` and ``/ready``
requires it (``X-API-Key: …`` or ``Authorization: Bearer …``).

Errors are OperationOutcome resources: 400 for a malformed request, 422 for input that
does not convert, 401 without valid credentials when an API key or bearer token is set,
503 with ``Retry-After`` when a conversion process died (the OOM killer) during the
conversion, the processes being replaced, or the conversion ran out of memory, 404 and
405 for an unknown path or method (no redirect for a trailing slash: a 307 would replay
the body, patient data, to an address built from the client's Host header), 408 for a
body not received within ``http.body_timeout`` seconds, 413 for a body over 20 MB or
holding more than ``http.max_messages`` messages (counted before anything is converted).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from converter import ConversionError, ParseError
from converter.errors import ConfigurationError
from converter.hl7v2 import peek_header

from ..config import HttpConfig, Secret
from ..errors import ConversionUnavailable
from ..logs import describe_exception
from ..metrics import Metrics
from .bodies import PARSE_IN_THREAD, ParametersRefused, read_parameters, read_raw
from .text_input import content_charset

__all__ = ["ApiBackend", "ProbeBackend", "create_app", "create_probe_app", "operation_outcome"]

log = logging.getLogger("passerelle.http")

FHIR_JSON = "application/fhir+json"
_MAX_BODY = 20 * 1024 * 1024
_INPUT_TYPES = {"hl7v2": "hl7v2", "ccda": "cda", "cda": "cda"}
_HTTP_CODES = {404: "not-found", 405: "not-supported"}
#: Seconds ``/ready`` waits for its checks. Unbounded, a queue writer that did not answer
#: (a disk hung in an fsync) held every probe's request for ever: a probe times out and
#: goes, its request stays, and once ``http.max_connections`` of them were running every
#: other request (conversions included) got a 503. Above the checks' own bounds (5 s
#: a destination), so that a slow destination is named rather than this.
READY_TIMEOUT = 20.0


class ProbeBackend(Protocol):
    """What health, readiness and metrics need from a running process."""

    metrics: Metrics

    async def readiness(self) -> dict[str, str | None]:
        """Component name → None when ready, else the reason it is not."""
        ...


class ApiBackend(ProbeBackend, Protocol):
    """What the whole API needs from the running service."""

    async def convert(
        self, data: bytes, *, input_type: str, root_template: str | None
    ) -> list[bytes]:
        """The bundles of the messages in ``data``, as compact JSON text (UTF-8: one line
        each, sent as they are); raises ConversionError, or ConversionUnavailable."""
        ...


def operation_outcome(
    status: int, code: str, diagnostics: str, expression: str | None = None
) -> JSONResponse:
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return JSONResponse(
        {"resourceType": "OperationOutcome", "issue": [issue]},
        status_code=status,
        media_type=FHIR_JSON,
    )


def _conversion_outcome(error: ConversionError, *, batch: bool = False) -> JSONResponse:
    # In a batch, which message failed: its control id (never content), else a 422 for
    # 100 messages left the client to bisect them.
    which = (
        f"message {error.control_id_label} {error.control_id}" if batch and error.control_id else ""
    )
    where = " ".join(
        part
        for part in (
            f"at {error.location}" if error.location else "",
            f"in {error.template}" if error.template else "",
        )
        if part
    )
    where = ", ".join(part for part in (where, which) if part)
    diagnostics = f"{type(error).__name__}: {error.reason}" + (f" ({where})" if where else "")
    return operation_outcome(422, "processing", diagnostics, error.location)


def _same_secret(given: str, expected: Secret) -> bool:
    """Constant-time comparison of a header value with a secret.

    On bytes: ``hmac.compare_digest`` refuses str with non-ASCII characters (TypeError, a
    500 for any client sending one). Starlette decodes headers as Latin-1, so encoding back
    gives the bytes sent; the secret is compared in UTF-8.
    """
    return hmac.compare_digest(given.encode("latin-1"), expected.reveal().encode("utf-8"))


def _authorized(request: Request, config: HttpConfig) -> bool:
    if config.api_key is None and config.bearer_token is None:
        return True
    if config.api_key is not None:
        given = request.headers.get("x-api-key", "")
        if given and _same_secret(given, config.api_key):
            return True
    if config.bearer_token is not None:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer ") and _same_secret(
            header[7:].strip(), config.bearer_token
        ):
            return True
    return False


def _azure_template_fallback(data: bytes, root: str) -> bool:
    """Whether ``root`` is Azure's template name for this message (``ADT_A01`` for an
    ADT^A01, or its structure): the message's own route then applies."""
    try:
        header = peek_header(data)
    except ParseError:
        return False
    names = {f"{header.message_code}_{header.trigger}", header.structure}
    return root in names - {"", "_"}


Handler = Callable[[Request], Awaitable[Response]]


def _protected(handler: Handler, config: HttpConfig) -> Handler:
    async def wrapper(request: Request) -> Response:
        if not _authorized(request, config):
            response = operation_outcome(401, "login", "missing or invalid credentials")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        try:
            return await handler(request)
        except ClientDisconnect:
            # The client went away mid-upload: its doing, not a server error; nobody is
            # left to answer.
            log.info("HTTP %s %s: the client disconnected", request.method, request.url.path)
            return Response(status_code=499)
        except Exception as exc:
            # Answered as FHIR, and logged by kind and place only: the text of a
            # library's exception may quote the message it choked on.
            log.error(
                "HTTP %s %s failed: %s", request.method, request.url.path, describe_exception(exc)
            )
            return operation_outcome(500, "exception", "internal error; see the service log")

    return wrapper


def _probe_routes(backend: ProbeBackend, config: HttpConfig) -> list[Route]:
    async def health(request: Request) -> Response:
        # Liveness: green while the process can still do its work, even if not now (a
        # destination down, a full disk: /ready); red once a part of it has stopped for
        # good (the queue's writer thread ended), which only a restart mends.
        stopped = backend.metrics.stopped()
        if stopped:
            return JSONResponse({"status": "stopped", "stopped": stopped}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                checks = await backend.readiness()
        except TimeoutError:
            checks = {
                "readiness": f"the checks did not answer within {READY_TIMEOUT:g}s (the"
                " queue's writer or a destination not answering)"
            }
        # What stopped for good says so in its own words (the backend's check may only
        # have seen its calls fail).
        checks.update(backend.metrics.stopped())
        failing = {name: reason for name, reason in checks.items() if reason}
        body = {
            "status": "ready" if not failing else "not ready",
            "checks": {name: reason or "ok" for name, reason in checks.items()},
        }
        return JSONResponse(body, status_code=200 if not failing else 503)

    async def metrics(request: Request) -> Response:
        return Response(
            backend.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    return [
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", _protected(metrics, config), methods=["GET"]),
    ]


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (404, 405) as OperationOutcome."""
    assert isinstance(exc, HTTPException)
    response = operation_outcome(
        exc.status_code, _HTTP_CODES.get(exc.status_code, "processing"), str(exc.detail)
    )
    response.headers.update(exc.headers or {})
    return response


def _application(routes: list[Route], config: HttpConfig) -> Starlette:
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    # POST /convert/ would be a 307 to an address built from the Host header, and a 307
    # replays the body: a 404 instead.
    app.router.redirect_slashes = False
    # For EmbeddedHttpServer: the connection limits of this app.
    app.state.http_config = config
    return app


def create_probe_app(backend: ProbeBackend, config: HttpConfig) -> Starlette:
    """Health, readiness and metrics alone: the HTTP side of ``passerelle worker``."""
    return _application(_probe_routes(backend, config), config)


def create_app(
    backend: ApiBackend, config: HttpConfig, *, default_charset: str = "utf-8"
) -> Starlette:
    """The ASGI application, bound to one running service.

    ``default_charset``: the converter's charset for a message whose MSH-18 is empty
    (``converter.charset``), used to encode ``$convert-data``'s text as it will be read.
    """

    async def read_body(request: Request) -> bytes | Response:
        too_large = operation_outcome(413, "too-costly", f"body larger than {_MAX_BODY} bytes")
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > _MAX_BODY:
            return too_large
        # Streamed, so that a chunked body without Content-Length is not read (into memory)
        # past the limit.
        chunks: list[bytes] = []
        size = 0
        try:
            # The whole body within body_timeout: a client trickling it (or stalled
            # mid-upload) would otherwise hold a connection slot for as long as it likes.
            async with asyncio.timeout(config.body_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > _MAX_BODY:
                        return too_large
                    chunks.append(chunk)
        except TimeoutError:
            slow = operation_outcome(
                408, "timeout", f"the request body took over {config.body_timeout:g}s to arrive"
            )
            # The rest of the body is never read: the connection cannot serve another request.
            slow.headers["connection"] = "close"
            return slow
        # A 20 MB copy on the loop held every MLLP ACK and /ready answer 5-50 ms; in a
        # thread it does not (bytes.join releases the GIL while copying large parts).
        if size > PARSE_IN_THREAD:
            return await asyncio.to_thread(b"".join, chunks)
        return b"".join(chunks)

    async def convert_data(request: Request) -> Response:
        body = await read_body(request)
        if isinstance(body, Response):
            return body
        read = functools.partial(
            read_parameters,
            body,
            default_charset=default_charset,
            max_messages=config.max_messages,
        )
        try:
            # Off the loop, in steps, when large (see .bodies): 1.4 s for 20 MB held
            # every MLLP ACK and /ready answer.
            wanted = await asyncio.to_thread(read) if len(body) > PARSE_IN_THREAD else read()
        except ParametersRefused as exc:
            return operation_outcome(400, exc.code, str(exc), exc.expression)
        data, kind, root = wanted.data, wanted.kind, wanted.root_template
        if root is not None and kind == "hl7v2" and _azure_template_fallback(data, root):
            response = await _convert(data, kind, root, single=True, fallback=True)
        else:
            response = await _convert(data, kind, root, single=True)
        return response

    async def convert_raw(request: Request) -> Response:
        body = await read_body(request)
        if isinstance(body, Response):
            return body
        if not body or body.isspace():  # without strip()'s copy of 20 MB
            return operation_outcome(400, "required", "the request body is empty")
        requested = request.query_params.get("inputType", "auto").lower()
        kind = "auto" if requested == "auto" else _INPUT_TYPES.get(requested)
        if kind is None:
            return operation_outcome(400, "not-supported", "inputType must be hl7v2 or cda")
        read = functools.partial(
            read_raw,
            body,
            kind,
            charset=content_charset(request.headers.get("content-type")),
            default_charset=default_charset,
            max_messages=config.max_messages,
        )
        try:
            data, held = await asyncio.to_thread(read) if len(body) > PARSE_IN_THREAD else read()
        except ConversionError as exc:  # CharsetError: the content type's charset
            return _conversion_outcome(exc)
        if held > config.max_messages:
            return operation_outcome(
                413,
                "too-costly",
                f"the body holds more than {config.max_messages} messages, the limit of one "
                "request (http.max_messages); send the batch in several requests",
            )
        return await _convert(
            data, kind, request.query_params.get("rootTemplate"), single=False, batch=held > 1
        )

    async def _convert(
        data: bytes,
        kind: str,
        root: str | None,
        *,
        single: bool,
        fallback: bool = False,
        batch: bool = False,
    ) -> Response:
        try:
            try:
                bundles = await backend.convert(data, input_type=kind, root_template=root)
            except ConfigurationError:
                if not fallback:
                    raise
                bundles = await backend.convert(data, input_type=kind, root_template=None)
        except ConversionError as exc:
            return _conversion_outcome(exc, batch=batch)
        except ConfigurationError as exc:  # an unknown rootTemplate
            return operation_outcome(400, "not-supported", str(exc), "rootTemplate")
        except ConversionUnavailable as exc:  # our text: no message content
            response = operation_outcome(503, "transient", f"{exc}; retry later")
            response.headers["retry-after"] = str(exc.retry_after)
            return response
        if single and len(bundles) != 1:
            return operation_outcome(
                400,
                "not-supported",
                f"inputData holds {len(bundles)} messages; $convert-data converts one "
                "(POST /convert takes several)",
                "Parameters.parameter.where(name='inputData')",
            )
        # The conversion's own text, not parsed and written again here: on the event loop,
        # that held MLLP ACKs, /ready and the deliveries for seconds for a large lab report.
        if len(bundles) == 1:
            return Response(bundles[0], media_type=FHIR_JSON)
        return Response(b"\n".join(bundles) + b"\n", media_type="application/x-ndjson")

    if config.api_key is None and config.bearer_token is None:
        log.warning(
            "the HTTP API requires no credentials: anyone reaching port %d can convert "
            "messages and read /metrics (set http.api_key or http.bearer_token)",
            config.port,
        )
    return _application(
        [
            Route("/$convert-data", _protected(convert_data, config), methods=["POST"]),
            Route("/convert", _protected(convert_raw, config), methods=["POST"]),
            *_probe_routes(backend, config),
        ],
        config,
    )
