"""A large answer of the FHIR server is read without stalling the event loop.

A server that ignores ``Prefer: return=minimal`` answers a big transaction with every
resource written back: here a real local HTTP server answering a bundle of 20,000 entries
with a 22 MB transaction-response. Before, ``_receipt`` parsed it with ``response.json()``
on the event loop: nothing else ran (MLLP ACKs, ``/ready``, other deliveries) for as long
as the parse took, seconds. Handing ``json.loads`` to a thread would not do either (the C
decoder holds the GIL throughout: see listeners/delivery/json_steps.py).

The measure is relative: the loop's longest gap between two ticks of a 1 ms ticker during
the delivery, against the time ``json.loads`` takes for the same body on this machine.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from listeners.config import DestinationConfig
from listeners.delivery import FhirServerSink
from listeners.delivery.json_steps import PARSE_IN_THREAD, loads_in_steps, loads_json
from tests.listeners.delivery.helpers import make_envelope
from tests.support.loop_stall import longest_stall

ENTRIES = 20_000
#: What the server sends back of each resource: many small values, as real resources have
#: (parsing costs by the value, not by the byte).
_ECHOED_PARTS = [
    {"code": {"text": f"part {k}"}, "valueQuantity": {"value": k, "unit": "mg"}} for k in range(12)
]


def _bundle() -> bytes:
    entries = [
        {
            "fullUrl": f"urn:uuid:00000000-0000-4000-8000-{n:012d}",
            "resource": {"resourceType": "Basic", "id": f"b{n}", "code": {"text": "t"}},
            "request": {"method": "PUT", "url": f"Basic/b{n}"},
        }
        for n in range(ENTRIES)
    ]
    return json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}).encode()


def _answer() -> bytes:
    """The transaction-response of a server sending every resource back."""
    entries = [
        {
            "response": {"status": "201 Created", "location": f"Basic/b{n}/_history/1"},
            "resource": {
                "resourceType": "Basic",
                "id": f"b{n}",
                "code": {"text": "t"},
                "extension": _ECHOED_PARTS,
                "meta": {"versionId": "1"},
            },
        }
        for n in range(ENTRIES)
    ]
    return json.dumps(
        {"resourceType": "Bundle", "type": "transaction-response", "entry": entries}
    ).encode()


class _Verbose(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answer: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = answer


class _Handler(BaseHTTPRequestHandler):
    server: _Verbose

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(self.server.answer)))
        self.end_headers()
        self.wfile.write(self.server.answer)


@pytest.fixture(scope="module")
def answer() -> bytes:
    return _answer()


@pytest.fixture
def verbose_server(answer: bytes) -> Iterator[str]:
    server = _Verbose(answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/fhir"
    finally:
        server.shutdown()
        server.server_close()


def test_a_large_transaction_response_does_not_stall_the_event_loop(
    verbose_server: str, answer: bytes
) -> None:
    began = time.perf_counter()
    json.loads(answer)
    parse = time.perf_counter() - began
    assert parse > 0.2, "the answer is too small to tell a stall on this machine"
    bundle = _bundle()
    sink = FhirServerSink(DestinationConfig(name="test", url=verbose_server, timeout=120.0))

    async def scenario() -> tuple[float, int, set[int | None]]:
        async with sink:
            delivery = asyncio.ensure_future(sink.deliver(bundle, make_envelope()))
            stall = await longest_stall(delivery)
            receipt = await delivery
        return stall, len(receipt.entries), {entry.status for entry in receipt.entries}

    stall, entries, statuses = asyncio.run(scenario())
    assert (entries, statuses) == (ENTRIES, {201})
    # Inline, the loop stood still for the whole parse; in steps, a few ms at a time
    # (a third leaves room for a busy machine's scheduling and a collector pass).
    assert stall < parse / 3, (stall, parse)


@pytest.mark.parametrize(
    "text",
    [
        b"{}",
        b"[]",
        b' { "a" : [ 1 , 2 , {"b": [3]} ] , "c": null } ',
        b"[1,[2,[3]]]",
        b'"x"',
        b"3.5",
        b'{"a":1,"a":2}',
        b"\xef\xbb\xbf{}",
        '{"é":"ü"}'.encode("utf-16"),
        b"[NaN, Infinity]",
    ],
)
def test_a_body_parsed_in_steps_is_what_json_loads_gives(text: bytes) -> None:
    # Compared as JSON text: NaN is no equal of itself.
    assert json.dumps(loads_in_steps(text)) == json.dumps(json.loads(text))


@pytest.mark.parametrize(
    "text", [b'{"a":1}x', b'{"a" 1}', b"[1 2]", b'{"a":[1,]}', b"{,}", b"", b"\xff\xff"]
)
def test_a_body_that_is_no_json_is_refused_in_steps_as_by_json_loads(text: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        loads_in_steps(text)


def test_only_large_bodies_go_to_a_thread() -> None:
    async def scenario() -> tuple[str, str]:
        seen: list[str] = []

        def trim(entry: object) -> object:
            seen.append(threading.current_thread().name)
            return entry

        small = b'{"entry": [1]}'
        large = b'{"entry": [' + b",".join([b"1"] * (PARSE_IN_THREAD // 2 + 1)) + b"]}"
        assert await loads_json(small, entry=trim) == {"entry": [1]}  # inline, as is
        assert not seen
        await loads_json(large, entry=trim)
        return seen[0], threading.current_thread().name

    in_steps, loop = asyncio.run(scenario())
    assert in_steps != loop
