"""A large bundle sent to a ``bundle_type = "batch"`` destination does not stall the event
loop while it is re-typed, and goes out byte for byte but its ``type``.

Before, ``as_batch`` parsed the whole bundle (``json_loads``) and wrote it back
(``json_dumps``) on the event loop: for a 20 MB bundle, seconds during which no MLLP ACK,
``/ready`` answer or other delivery progressed. A real local HTTP server takes the POST.
The measure is relative: the loop's longest gap between two ticks of a 1 ms ticker during
the delivery, against the time that parse and write take for the same bundle here.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from converter import json_dumps, json_loads
from listeners.config import DestinationConfig
from listeners.delivery import FhirServerSink
from listeners.queue.base import Envelope
from tests.support.loop_stall import longest_stall

ENTRIES = 25_000


def _bundle() -> bytes:
    """About 20 MB of Observations, with decimals and accented text as real ones have."""
    entries = [
        {
            "fullUrl": f"urn:uuid:00000000-0000-4000-8000-{n:012d}",
            "resource": {
                "resourceType": "Observation",
                "id": f"o{n}",
                "status": "final",
                "code": {"text": f"Hémoglobine glyquée {n}", "coding": [{"code": f"{n}-4"}]},
                "valueQuantity": {"value": 7.25, "unit": "g/dL"},
                "referenceRange": [{"low": {"value": 4.5}, "high": {"value": 5.9}}],
                "note": [{"text": "résultat contrôlé " * 20}],
            },
            "request": {"method": "PUT", "url": f"Observation/o{n}"},
        }
        for n in range(ENTRIES)
    ]
    bundle = {"resourceType": "Bundle", "id": "b1", "type": "transaction", "entry": entries}
    return json.dumps(bundle, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class _BatchServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[bytes] = []


class _Handler(BaseHTTPRequestHandler):
    server: _BatchServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.bodies.append(body)
        entry = {"response": {"status": "200 OK"}}
        answer = json.dumps(
            {"resourceType": "Bundle", "type": "batch-response", "entry": [entry] * ENTRIES}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture
def batch_server() -> Iterator[_BatchServer]:
    server = _BatchServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_large_bundle_sent_as_a_batch_does_not_stall_the_event_loop(
    batch_server: _BatchServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from listeners.delivery import base

    # Where the re-typing runs is checked directly; the stall only against a bound with
    # room for a loaded host (the whole suite on 2 cores: 0.39 s against 1.38 s inline
    # once, where the stall of sending the body to the server is counted too).
    threads: list[int] = []
    retyped = base._retyped

    def recording(data: bytes) -> bytes:
        threads.append(threading.get_ident())
        return retyped(data)

    monkeypatch.setattr(base, "_retyped", recording)
    bundle = _bundle()
    began = time.perf_counter()
    json_dumps({**json_loads(bundle), "type": "batch"})
    inline = time.perf_counter() - began
    assert inline > 0.4, "the bundle is too small to tell a stall on this machine"
    url = f"http://127.0.0.1:{batch_server.server_address[1]}/fhir"
    sink = FhirServerSink(
        DestinationConfig(name="batch", url=url, timeout=120.0, bundle_type="batch")
    )
    envelope = Envelope(
        payload=b"MSH|^~\\&|LAB|HOSP\r",
        sender="LAB^HOSP",
        listener="mllp",
        received_at=time.time(),
        ordering_key="LAB^HOSP|BIG",
        control_id="BIG-1",
        message_type="ORU^R01",
    )

    loop_threads: list[int] = []

    async def scenario() -> tuple[float, int]:
        loop_threads.append(threading.get_ident())
        async with sink:
            delivery = asyncio.ensure_future(sink.deliver(bundle, envelope))
            stall = await longest_stall(delivery)
            receipt = await delivery
        return stall, len(receipt.entries)

    stall, entries = asyncio.run(scenario())
    assert threads and loop_threads[0] not in threads, (threads, loop_threads)
    assert entries == ENTRIES
    (sent,) = batch_server.bodies
    # Every byte kept but the type's (the server gets the bundle the converter wrote).
    assert sent == bundle.replace(b'"type":"transaction"', b'"type":"batch"', 1)
    assert stall < inline / 2, f"the loop stalled {stall:.3f}s (inline re-typing: {inline:.3f}s)"


@pytest.mark.parametrize(
    "bundle",
    [
        {"resourceType": "Bundle", "type": "transaction", "entry": [{"n": 1}]},
        {"resourceType": "Bundle", "entry": [{"n": 1}]},
        {},
        {"resourceType": "Bundle", "entry": [{"type": "x", "v": 7.20}], "type": "transaction"},
        {"resourceType": "Bundle", "type": "transaction", "entry": [{"t": "é"}] * 400},
    ],
    ids=["type first", "no type", "empty", "type after the entries", "many entries"],
)
@pytest.mark.parametrize("pretty", [False, True], ids=["compact", "pretty"])
@pytest.mark.parametrize("padding", [0, 200_000], ids=["small", "over 64 KiB before type"])
def test_a_batch_body_is_the_bundle_with_type_batch(
    bundle: dict[str, Any], pretty: bool, padding: int
) -> None:
    """Whatever the order of its members and the size of the text, the body sent is the
    bundle with ``type`` batch (added when it had none), its other members unchanged."""
    from listeners.delivery.base import request_body

    bundle = json_loads(json_dumps(bundle))  # decimals as the converter carries them
    if padding:
        bundle = {"id": "x" * padding, **bundle}
    text = json_dumps(bundle, pretty=pretty).encode("utf-8")
    expected = {**bundle, "type": "batch"}
    for given in (text, bundle):
        body = asyncio.run(request_body(given, batch=True))
        assert json_loads(body) == expected
        assert list(json_loads(body)) == list(expected)
    assert asyncio.run(request_body(bundle, batch=False)) == json_dumps(bundle).encode()
    assert asyncio.run(request_body(text, batch=False)) is text
