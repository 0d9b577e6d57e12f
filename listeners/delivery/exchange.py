"""One HTTP exchange with a FHIR server (or its token endpoint), bounded in time and size.

httpx's ``timeout`` bounds each network operation (connect, each write, each read), not the
exchange: a server, proxy or firewall that trickles its answer a byte a second keeps the request
open for ever, and with it a worker slot and the patient's later messages, with nothing logged.
Nor does httpx cap the body it reads: an endless (or decompressing) answer fills the memory.
:func:`bounded_exchange` sends the request and reads the whole answer within ``deadline``
seconds, and stops reading past ``max_body`` bytes of decoded body (raising
:class:`AnswerTooLarge`). Past the deadline it raises an ``httpx`` timeout, as httpx's own
timeouts do: ``httpx.ReadTimeout`` when no answer came, :class:`SlowAnswerTimeout` when the
answer began but was not over. httpx's errors pass through (``httpx.HTTPError``: a transport
failure, a body that does not match its ``Content-Encoding``…).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import httpx

__all__ = [
    "MAX_ANSWER_BYTES",
    "MAX_TOKEN_ANSWER_BYTES",
    "AnswerTooLarge",
    "SlowAnswerTimeout",
    "bounded_exchange",
]

#: Largest answer read from a FHIR server (decoded): a transaction-response of the biggest
#: bundles even when the server ignores ``Prefer: return=minimal`` and sends every resource
#: back (a 10 MB HL7 message makes a bundle of a few tens of MB), a CapabilityStatement.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
#: Largest answer read from an OAuth2 token endpoint (a token is a few KB).
MAX_TOKEN_ANSWER_BYTES = 1024 * 1024

#: Headers about the body as sent, which the body handed back (decoded, whole) no longer has.
_BODY_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


class SlowAnswerTimeout(httpx.ReadTimeout):
    """The answer began within the deadline but was not over at it (a trickled body)."""


class AnswerTooLarge(Exception):
    """The answer's body ran past ``limit`` bytes; the rest was not read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"answer larger than {limit} bytes")
        self.limit = limit


async def bounded_exchange(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    deadline: float | None,
    max_body: int,
    content: bytes | None = None,
    data: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """``method url`` through ``client``, the answer read whole (decoded) within ``deadline``
    seconds (None: the client's timeouts only) and ``max_body`` bytes. The response returned
    holds its body: ``.content`` and ``.json()`` work (its ``Content-Encoding`` is dropped,
    the body being decoded already)."""
    request = client.build_request(
        method,
        url,
        content=content,
        data=data,
        headers=headers,
        timeout=httpx.USE_CLIENT_DEFAULT if deadline is None else deadline,
    )
    answered = False
    try:
        async with asyncio.timeout(deadline):
            response = await client.send(request, stream=True)
            answered = True
            try:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    if len(body) + len(chunk) > max_body:
                        raise AnswerTooLarge(max_body)
                    body += chunk
            finally:
                await response.aclose()
    except TimeoutError:
        within = f" within {deadline:g}s" if deadline is not None else ""
        if answered:
            raise SlowAnswerTimeout(f"answer not complete{within}", request=request) from None
        raise httpx.ReadTimeout(f"no answer{within}", request=request) from None
    kept = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _BODY_HEADERS]
    return httpx.Response(
        response.status_code,
        headers=kept,
        content=bytes(body),
        request=request,
        extensions=response.extensions,
    )
