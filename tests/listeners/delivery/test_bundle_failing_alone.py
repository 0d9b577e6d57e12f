"""A bundle the server fails every time (a 500 on that payload only) while it takes every
other one: the service in front of the real test FHIR server, behind a small proxy that
answers 500 to the POSTs carrying one patient's name and forwards everything else.

Before, each failure paused the whole destination; the next probe (another message)
succeeded, the destination reopened, the failing message went again at once and paused it
again: retried about once per ``backoff_initial`` for ever, never backing off, with a
WARNING "unavailable" and a pause of every delivery each time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.listeners.service.support import adt, make_config, patients, running
from tests.support.fhirserver import FhirServer
from tests.support.log_records import log_records

FAILING_NAME = b"FAILSALONE"
INITIAL = 0.2
RUN = 6.0
_HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "content-encoding", "host"}
_OUTCOME = (
    b'{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"exception",'
    b'"diagnostics":"NullPointerException"}]}'
)


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream
        self.failed_posts: list[float] = []
        self.client = httpx.Client(timeout=30)


class _Handler(BaseHTTPRequestHandler):
    server: _Proxy

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.command == "POST" and FAILING_NAME in body:
            self.server.failed_posts.append(time.monotonic())
            self._answer(500, {"Content-Type": "application/fhir+json"}, _OUTCOME)
            return
        answer = self.server.client.request(
            self.command,
            self.server.upstream + self.path.removeprefix("/fhir/R4"),
            content=body,
            headers={k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP},
        )
        headers = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
        self._answer(answer.status_code, headers, answer.content)

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _forward


@pytest.fixture
def proxy(server: FhirServer) -> Iterator[_Proxy]:
    proxy = _Proxy(server.base_url)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        proxy.client.close()


def test_a_bundle_the_server_fails_alone_backs_off_without_pausing_the_others(
    tmp_path: Path, server: FhirServer, proxy: _Proxy
) -> None:
    url = f"http://127.0.0.1:{proxy.server_address[1]}/fhir/R4"
    settings = {"delivery": {"workers": 4, "backoff_initial": INITIAL, "backoff_max": 30.0}}
    config = make_config(tmp_path, settings, fhir_url=url)
    with log_records("passerelle") as records, running(config) as service:
        service.send([adt("BAD-1", mrn="MRN-BAD", family=FAILING_NAME.decode())])
        began = time.monotonic()
        sent = 0
        while time.monotonic() - began < RUN:
            service.send([adt(f"OK-{sent}", mrn=f"MRN-OK-{sent}", family=f"Ok{sent}")])
            sent += 1
            time.sleep(0.1)
        attempts = len(proxy.failed_posts)
        warnings = [
            r.getMessage()
            for r in records
            if r.levelno == logging.WARNING and "unavailable" in r.getMessage()
        ]
        assert service.service.queue.count_dead_letters() == 0
    # Its own backoff (0.2 s doubling, full jitter) allows about 7 attempts in 6 s; one
    # per reopening of the destination made 25 to 30.
    assert 2 <= attempts <= 14, attempts
    # The first failure paused the destination (it may have been an outage); the later
    # ones, once the destination had taken other bundles, did not.
    assert len(warnings) == 1, warnings
    # The other messages went through meanwhile.
    assert all(patients(server, f"MRN-OK-{n}") for n in range(sent - 5))
